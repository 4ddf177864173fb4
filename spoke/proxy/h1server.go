package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedgate/fedgate/spoke/proxy/internal/h1"
)

// Gateway ports are served by a lean HTTP/1.1 connection loop instead of net/http's server: one goroutine per
// connection, pooled buffers, a strict parser (internal/h1) that refuses every ambiguous message instead of repairing
// it, and a response writer that writes straight into the connection's buffer. On two shared cores this roughly
// halves the per-request CPU of a net/http + httputil proxy (see docs/benchmarks.md). Connections that open with the
// HTTP/2 preface (h2c prior knowledge) are handed to a net/http server with unencrypted HTTP/2 enabled, so every
// request, whichever protocol, reaches the same handler.
//
// Everything a client controls is bounded (Options.Limits): the head's size, field count and read time, the wait
// between body reads, the idle time between requests. A request in flight whose client goes away is cancelled: if the
// upstream exchange outlasts watchDelay, the connection is watched for EOF in the background (net/http watches every
// request; watching only slow ones keeps the fast path free of a goroutine per request).

const (
	maxDrainBody   = 256 << 10
	h2Preface      = "PRI "
	readBufferSize = 4 << 10
	// watchDelay: how long a request may be in flight before its client connection is watched for EOF.
	watchDelay = 50 * time.Millisecond
	// lingerTimeout and lingerBytes bound how long and how much a refused client may still send after the refusal is
	// written, so the refusal is read instead of lost to a reset.
	lingerTimeout = 250 * time.Millisecond
	lingerBytes   = 1 << 20
)

// connBufs are one connection's reusable buffers.
type connBufs struct {
	br *bufio.Reader
	bw *bufio.Writer
	hr *h1.Reader
}

var connPool = sync.Pool{New: func() any {
	br := bufio.NewReaderSize(nil, readBufferSize)
	return &connBufs{br: br, bw: bufio.NewWriterSize(nil, 4<<10), hr: h1.NewReader(br)}
}}

// portServer owns one gateway listening socket and its connections.
type portServer struct {
	s       *Server
	key     portKey
	ln      net.Listener
	h2      *http.Server
	h2ln    *connListener
	handler http.Handler
	// tlsConf terminates TLS on an HTTPS port; nil on an HTTP one.
	tlsConf *tls.Config

	// open counts the port's client connections, h2c ones handed to the HTTP/2 server included, against
	// Limits.MaxClientConnections.
	open atomic.Int64

	mu       sync.Mutex
	shutting bool
	conns    map[*h1Conn]struct{}
	wg       sync.WaitGroup
	done     chan struct{}
}

type h1Conn struct {
	// raw is the accepted connection, nc what requests are read from: raw itself, or the TLS connection over it once
	// the handshake is done. Other goroutines (stopAccepting, shutdown) close raw, never nc: a TLS close may block on
	// a write in flight.
	raw  net.Conn
	nc   net.Conn
	br   *bufio.Reader
	idle bool // guarded by portServer.mu

	// The in-flight request's cancellation and the client watch (see watch).
	wmu     sync.Mutex
	req     *reqCtx       // the request in flight (cancelled when its client leaves); nil between requests
	body    h1.Body       // the request's body, nil without one
	stopped bool          // the request finished: the watch must not start
	running bool          // a watch is reading
	wdone   chan struct{} // closed when the running watch returns
	watchT  *time.Timer
}

func newPortServer(s *Server, k portKey, ln net.Listener) *portServer {
	ps := &portServer{s: s, key: k, ln: ln, conns: map[*h1Conn]struct{}{}, done: make(chan struct{})}
	port := k.port
	ps.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveGateway(w, r, port) })
	ps.h2ln = &connListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	lim := s.opts.Limits
	h2p := protocols(false, true)
	h2p.SetHTTP2(true) // ALPN h2 connections of an HTTPS port, handed over as *tls.Conn
	ps.h2 = &http.Server{
		Handler:   firstHeadersSeen(ps.handler),
		Protocols: h2p,
		// A TLS connection must send its first request headers within Limits.RequestHeaderTimeout (h2c ones: see
		// h2cConn).
		ConnContext: func(ctx context.Context, nc net.Conn) context.Context {
			if tc, ok := nc.(*tls.Conn); ok {
				return withHeaderDeadline(ctx, tc.NetConn(), lim.RequestHeaderTimeout)
			}
			return ctx
		},
		// An h2c connection leaves the port's count when it closes (h2cConn.closed); a TLS one, which the HTTP/2
		// server must receive as the *tls.Conn itself, when the server reports it closed.
		ConnState: func(nc net.Conn, st http.ConnState) {
			if _, ok := nc.(*tls.Conn); ok && (st == http.StateClosed || st == http.StateHijacked) {
				ps.open.Add(-1)
			}
		},
		IdleTimeout:    lim.KeepaliveIdleTimeout,
		MaxHeaderBytes: lim.MaxRequestHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:      lim.H2CMaxConcurrentStreams,
			MaxDecoderHeaderTableSize: 4096,
			MaxEncoderHeaderTableSize: 4096,
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if k.tls {
		ps.tlsConf = ps.tlsConfig()
	}
	return ps
}

func (ps *portServer) serve() {
	defer close(ps.done)
	go ps.h2.Serve(ps.h2ln)
	var backoff time.Duration
	for {
		nc, err := ps.ln.Accept()
		if err != nil {
			ps.mu.Lock()
			stop := ps.shutting
			ps.mu.Unlock()
			if stop || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and similar: back off instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			ps.s.log.Warn("accept", "addr", ps.key.addr, "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := &h1Conn{raw: nc, nc: nc}
		ps.mu.Lock()
		if ps.shutting {
			ps.mu.Unlock()
			nc.Close()
			return
		}
		if ps.open.Load() >= int64(ps.s.opts.Limits.MaxClientConnections) {
			ps.mu.Unlock()
			// Counted before the close, so whoever sees the close also sees the count.
			refused := ps.s.stats.ConnectionsRefused.Add(1)
			nc.Close()
			if refused%1000 == 1 {
				ps.s.log.Warn("client connection limit reached; closing new connections", "addr", ps.key.addr,
					"limit", ps.s.opts.Limits.MaxClientConnections, "refused", ps.s.stats.ConnectionsRefused.Load())
			}
			continue
		}
		ps.open.Add(1)
		ps.conns[c] = struct{}{}
		ps.wg.Add(1)
		ps.mu.Unlock()
		go ps.serveConn(c)
	}
}

// stopAccepting closes the socket (so the port can be bound again at once) and the idle connections; connections with
// a request in flight close after their response.
func (ps *portServer) stopAccepting() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.shutting {
		return
	}
	ps.shutting = true
	ps.ln.Close()
	for c := range ps.conns {
		if c.idle {
			c.raw.Close()
		}
	}
}

// shutdown stops accepting, lets in-flight requests finish (up to timeout) and then closes whatever is left.
func (ps *portServer) shutdown(timeout time.Duration) {
	ps.stopAccepting()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h2done := make(chan struct{})
	go func() {
		defer close(h2done)
		if ps.h2.Shutdown(ctx) != nil {
			ps.h2.Close()
		}
	}()
	h1done := make(chan struct{})
	go func() { ps.wg.Wait(); close(h1done) }()
	select {
	case <-h1done:
	case <-ctx.Done():
		// Time is up: cut the connections and cancel their upstream exchanges, which would otherwise go on as long
		// as the backend takes.
		ps.mu.Lock()
		for c := range ps.conns {
			c.raw.Close()
			c.wmu.Lock()
			if c.req != nil {
				c.req.cancel()
			}
			c.wmu.Unlock()
		}
		ps.mu.Unlock()
		<-h1done
	}
	<-h2done
	ps.s.log.Info("closed gateway port", "addr", ps.key.addr)
}

// setIdle marks c idle or busy and reports whether the port is shutting down (an idle connection then closes).
func (ps *portServer) setIdle(c *h1Conn, idle bool) (shutting bool) {
	ps.mu.Lock()
	c.idle = idle
	shutting = ps.shutting
	ps.mu.Unlock()
	return shutting
}

func (ps *portServer) serveConn(c *h1Conn) {
	lim := &ps.s.opts.Limits
	handedOff := false // an h2c connection, which took br along
	tlsHandedOff := false
	cb := connPool.Get().(*connBufs)
	br, bw, hr := cb.br, cb.bw, cb.hr
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			ps.s.log.Error("panic serving request", "addr", ps.key.addr, "panic", p)
		}
		c.endRequest()
		ps.mu.Lock()
		delete(ps.conns, c)
		ps.mu.Unlock()
		bw.Reset(nil)
		if handedOff {
			// br now belongs to the HTTP/2 connection; the pool gets fresh buffers.
			cb = &connBufs{bw: bw}
			cb.br = bufio.NewReaderSize(nil, readBufferSize)
			cb.hr = h1.NewReader(cb.br)
		} else if !tlsHandedOff {
			c.nc.Close()
			ps.open.Add(-1)
			br.Reset(nil)
		}
		connPool.Put(cb)
		ps.wg.Done()
	}()

	var tlsState *tls.ConnectionState
	if ps.tlsConf != nil {
		// A handshaking connection counts as idle: a port shutting down closes it.
		if ps.setIdle(c, true) {
			return
		}
		tc, st, ok := ps.handshake(c)
		if !ok {
			return
		}
		c.nc, tlsState = tc, st
		if st.NegotiatedProtocol == "h2" {
			// The HTTP/2 server gets the *tls.Conn itself (net/http serves h2 only on one), and owns it from here: its
			// ConnState hook takes it off the port's count when it closes.
			select {
			case ps.h2ln.ch <- tc:
				tlsHandedOff = true
			case <-ps.h2ln.done:
			}
			return
		}
	}
	br.Reset(c.nc)
	bw.Reset(c.nc)
	c.br = br

	// The first request gets the header timeout from the moment the connection opens (an HTTPS one's from the end of
	// its handshake); later ones the keep-alive idle timeout until their first byte, then the header timeout.
	c.nc.SetReadDeadline(time.Now().Add(lim.RequestHeaderTimeout))
	if ps.setIdle(c, true) {
		return
	}
	// h2c is sniffed on cleartext connections only: over TLS, ALPN chose HTTP/1.1 (or nothing), and a preface is then
	// refused as a malformed HTTP/1.1 request.
	if tlsState == nil {
		b, err := br.Peek(len(h2Preface))
		if err != nil {
			return
		}
		if string(b) == h2Preface {
			// h2c with prior knowledge: the preface bytes already read stay in br, which the connection now owns.
			// The header timeout runs on until the client's first request headers (h2cConn clears it then); after
			// that the HTTP/2 server's idle timeout applies.
			hc := &h2cConn{Conn: c.nc, r: br, w: newBatchWriter(c.nc), closed: func() { ps.open.Add(-1) }}
			handedOff = true
			select {
			case ps.h2ln.ch <- hc:
			case <-ps.h2ln.done:
				hc.Close()
			}
			return
		}
	}
	remote := c.nc.RemoteAddr().String()
	w := &h1Writer{bw: bw, h: make(http.Header, 8), nc: c.nc, sendIdle: lim.ResponseSendIdleTimeout}
	bodyOpts := h1.BodyOptions{Deadline: c.nc.SetReadDeadline, IdleTimeout: lim.RequestBodyIdleTimeout}
	headLim := h1.Limits{MaxLine: lim.MaxRequestLineBytes, MaxBytes: lim.MaxRequestHeaderBytes, MaxFields: lim.MaxRequestHeaders}
	first := true
	for {
		if ps.setIdle(c, true) {
			return
		}
		if !first {
			if br.Buffered() == 0 {
				c.nc.SetReadDeadline(time.Now().Add(lim.KeepaliveIdleTimeout))
				if _, err := br.Peek(1); err != nil {
					return
				}
			}
			// Also when the next request's first bytes are already buffered (pipelined, or read by the client watch,
			// which clears the deadline): its head gets the header timeout like any other.
			c.nc.SetReadDeadline(time.Now().Add(lim.RequestHeaderTimeout))
		}
		first = false
		ctx := &reqCtx{}
		req, err := hr.ReadRequest(ctx, headLim, bodyOpts)
		if err != nil {
			var he *h1.Error
			if errors.As(err, &he) {
				ps.s.stats.BadRequests.Add(1)
				ps.refuse(c.nc, bw, he.Status)
			}
			return
		}
		ps.setIdle(c, false)
		req.RemoteAddr = remote
		req.TLS = tlsState
		if e, ok := req.Header["Expect"]; ok {
			if len(e) != 1 || !strings.EqualFold(e[0], "100-continue") {
				ps.refuse(c.nc, bw, http.StatusExpectationFailed)
				return
			}
			// Answer 100-continue here rather than relaying the backend's: simpler and the body is wanted anyway.
			delete(req.Header, "Expect")
			if req.ContentLength != 0 && req.ProtoMinor == 1 {
				// (RFC 9110 §10.1.1: never to an HTTP/1.0 client, which just sends its body.)
				bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				c.nc.SetWriteDeadline(time.Now().Add(lim.ResponseSendIdleTimeout))
				if bw.Flush() != nil {
					return
				}
			}
		}
		c.startRequest(ctx, req.Body)
		w.reset(req)
		ps.handler.ServeHTTP(w, req)
		c.endRequest()
		ctx.cancel() // like net/http: a request's context ends with its handler
		if w.finish() != nil {
			return
		}
		if body, ok := req.Body.(h1.Body); ok && !body.Complete() {
			// Whatever the handler left unread must be read (within limits) before the next request begins.
			if n, err := io.CopyN(io.Discard, body, maxDrainBody+1); n > maxDrainBody || err != io.EOF {
				return
			}
			if !body.Complete() {
				return
			}
		}
		if req.Close || w.closeAfter {
			return
		}
	}
}

// refuse answers a request the connection cannot go on from and closes it gracefully: the client may still be
// sending (a 256 MiB header), and closing with unread data would reset the connection before it reads the answer.
func (ps *portServer) refuse(nc net.Conn, bw *bufio.Writer, status int) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(status))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(status))
	bw.WriteString("\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	nc.SetWriteDeadline(time.Now().Add(ps.s.opts.Limits.ResponseSendIdleTimeout))
	if bw.Flush() != nil {
		return
	}
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
		nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, nc, lingerBytes)
	}
}

// startRequest arms the client watch for a request that is now being served.
func (c *h1Conn) startRequest(req *reqCtx, body io.ReadCloser) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.req = req
	c.body, _ = body.(h1.Body)
	c.stopped = false
	if c.watchT == nil {
		c.watchT = time.AfterFunc(watchDelay, c.watch)
	} else {
		c.watchT.Reset(watchDelay)
	}
}

// endRequest stops the watch, waiting for a running one so the connection's reader has a single owner again.
func (c *h1Conn) endRequest() {
	c.wmu.Lock()
	c.stopped = true
	c.req = nil
	c.body = nil
	running, done := c.running, c.wdone
	if c.watchT != nil {
		c.watchT.Stop()
	}
	c.wmu.Unlock()
	if running {
		c.nc.SetReadDeadline(aLongTimeAgo)
		<-done
	}
}

// watch runs (on the timer's goroutine) once a request has been in flight for watchDelay: it waits for the client
// connection to close and then cancels the request, so a client that leaves stops its upstream exchange. While the
// request body is still being read the reader belongs to the handler, and the watch tries again later.
func (c *h1Conn) watch() {
	c.wmu.Lock()
	if c.stopped || c.running {
		// Finished, or a timer that fired late for the previous request while this one's watch already runs.
		c.wmu.Unlock()
		return
	}
	if c.body != nil && !c.body.Complete() {
		c.watchT.Reset(watchDelay)
		c.wmu.Unlock()
		return
	}
	// The deadline is cleared before running is set, under the lock: endRequest's abort can only come after it.
	c.nc.SetReadDeadline(time.Time{})
	c.running = true
	done := make(chan struct{})
	c.wdone = done
	req := c.req
	c.wmu.Unlock()
	// Peek neither consumes nor loses bytes: a pipelined next request stays buffered for the connection loop.
	_, err := c.br.Peek(1)
	if err != nil && !isTimeout(err) {
		req.cancel()
	}
	c.wmu.Lock()
	c.running = false
	close(done)
	c.wmu.Unlock()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// h1Writer is an http.ResponseWriter writing HTTP/1.1 straight into the connection's buffered writer.
type h1Writer struct {
	bw *bufio.Writer
	// nc and sendIdle bound every write that may block: a client that stops reading is cut off after sendIdle
	// (nginx's send_timeout).
	nc          net.Conn
	sendIdle    time.Duration
	h           http.Header
	req         *http.Request
	wroteHeader bool
	noBody      bool
	chunked     bool
	closeAfter  bool
	err         error
	scratch     [32]byte
}

func (w *h1Writer) reset(req *http.Request) {
	clear(w.h)
	w.req = req
	w.wroteHeader, w.noBody, w.chunked, w.closeAfter, w.err = false, false, false, false, nil
}

func (w *h1Writer) Header() http.Header { return w.h }

func (w *h1Writer) WriteHeader(code int) {
	if w.wroteHeader || code < 200 && code != http.StatusSwitchingProtocols {
		// Informational responses other than 101 are not relayed (the proxy answers 100-continue itself).
		return
	}
	w.wroteHeader = true
	bw := w.bw
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	_, hasLength := w.h["Content-Length"]
	if !hasLength && !w.noBody {
		if w.req.ProtoAtLeast(1, 1) {
			w.chunked = true
		} else {
			w.closeAfter = true // HTTP/1.0 without a length: the body ends when the connection does
		}
	}
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(w.scratch[:0], int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	for k, vs := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter || w.req.Close:
		w.closeAfter = true
		bw.WriteString("Connection: close\r\n")
	case !w.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n")
	}
	_, w.err = bw.WriteString("\r\n")
}

// armSend renews the write deadline before a write that may reach the socket.
func (w *h1Writer) armSend() { w.nc.SetWriteDeadline(time.Now().Add(w.sendIdle)) }

func (w *h1Writer) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	if len(p)+32 > w.bw.Available() {
		w.armSend()
	}
	if w.chunked {
		w.bw.Write(strconv.AppendInt(w.scratch[:0], int64(len(p)), 16))
		w.bw.WriteString("\r\n")
		w.bw.Write(p)
		_, w.err = w.bw.WriteString("\r\n")
		if w.err != nil {
			return 0, w.err
		}
		return len(p), nil
	}
	var n int
	n, w.err = w.bw.Write(p)
	return n, w.err
}

// Flush sends buffered data to the client (streaming responses).
func (w *h1Writer) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil {
		w.armSend()
		w.err = w.bw.Flush()
	}
}

// finish completes the response: the default status, the last chunk and trailers, and the final flush.
func (w *h1Writer) finish() error {
	if !w.wroteHeader {
		if _, ok := w.h["Content-Length"]; !ok {
			w.h["Content-Length"] = []string{"0"}
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		for k, vs := range w.h {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vs {
					w.bw.WriteString(name)
					w.bw.WriteString(": ")
					w.bw.WriteString(v)
					w.bw.WriteString("\r\n")
				}
			}
		}
		w.bw.WriteString("\r\n")
	}
	w.armSend()
	return w.bw.Flush()
}

// connListener feeds connections accepted elsewhere (h2c prior knowledge) to a net/http server.
type connListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *connListener) Addr() net.Addr { return l.addr }

// h2cConn replays the bytes already buffered while sniffing the protocol, and clears the header timeout set before
// the hand-off once the client's first HEADERS frame has fully arrived: a client that opens an h2c connection must
// send its preface and first request within Limits.RequestHeaderTimeout, like an HTTP/1.1 client its first head.
type h2cConn struct {
	net.Conn
	r *bufio.Reader
	w *batchWriter

	seen int     // bytes of the stream tracked so far (preface included)
	skip int     // payload bytes of the current frame still to pass
	hdr  [9]byte // frame header being assembled
	hdrN int
	// headersDone: the frame being skipped ends the first header block.
	headersDone bool
	cleared     atomic.Bool
	// closed runs once, at the first Close.
	closed    func()
	closeOnce sync.Once
}

// SetReadDeadline and SetDeadline keep the header timeout in force until the first request headers have arrived:
// net/http clears the read deadline when it hands the connection to its HTTP/2 server.
func (c *h2cConn) SetReadDeadline(t time.Time) error {
	if !c.cleared.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *h2cConn) SetDeadline(t time.Time) error {
	if !c.cleared.Load() {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

func (c *h2cConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *h2cConn) Close() error {
	c.closeOnce.Do(c.closed)
	return c.w.Close()
}

const h2PrefaceLen = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func (c *h2cConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 && !c.cleared.Load() {
		c.track(p[:n])
	}
	return n, err
}

// track follows frame boundaries until a HEADERS or CONTINUATION frame with END_HEADERS has been read.
func (c *h2cConn) track(b []byte) {
	if c.seen < h2PrefaceLen {
		k := min(h2PrefaceLen-c.seen, len(b))
		c.seen += k
		b = b[k:]
	}
	for len(b) > 0 && !c.cleared.Load() {
		if c.skip > 0 {
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
			if c.skip == 0 && c.headersDone {
				c.clear()
			}
			continue
		}
		k := copy(c.hdr[c.hdrN:], b)
		c.hdrN += k
		b = b[k:]
		if c.hdrN < len(c.hdr) {
			return
		}
		c.hdrN = 0
		length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		typ, flags := c.hdr[3], c.hdr[4]
		c.skip = length
		if (typ == 0x1 || typ == 0x9) && flags&0x4 != 0 {
			// The header block ends with this frame's payload: clear once all of it has arrived.
			c.headersDone = true
			if length == 0 {
				c.clear()
			}
		}
	}
}

func (c *h2cConn) clear() {
	c.cleared.Store(true)
	c.Conn.SetReadDeadline(time.Time{})
}

package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Gateway ports are served by a lean HTTP/1.1 connection loop instead of net/http's server: one goroutine per
// connection, no background reader, pooled buffers and a response writer that writes straight into the connection's
// buffer. On two shared cores this roughly halves the per-request CPU of a net/http + httputil proxy (see
// docs/benchmarks.md). Connections that open with the HTTP/2 preface (h2c prior knowledge) are handed to a net/http
// server with unencrypted HTTP/2 enabled, so every request, whichever protocol, reaches the same handler.

const (
	idleTimeout    = 2 * time.Minute
	maxDrainBody   = 256 << 10
	h2Preface      = "PRI "
	readBufferSize = 4 << 10
)

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// portServer owns one gateway listening socket and its connections.
type portServer struct {
	s       *Server
	key     portKey
	ln      net.Listener
	h2      *http.Server
	h2ln    *connListener
	handler http.Handler

	mu       sync.Mutex
	shutting bool
	conns    map[*h1Conn]struct{}
	wg       sync.WaitGroup
	done     chan struct{}
}

type h1Conn struct {
	nc   net.Conn
	idle bool // guarded by portServer.mu
}

func newPortServer(s *Server, k portKey, ln net.Listener) *portServer {
	ps := &portServer{s: s, key: k, ln: ln, conns: map[*h1Conn]struct{}{}, done: make(chan struct{})}
	port := k.port
	ps.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveGateway(w, r, port) })
	ps.h2ln = &connListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	ps.h2 = &http.Server{
		Handler:   ps.handler,
		Protocols: protocols(false, true),
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
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
		c := &h1Conn{nc: nc}
		ps.mu.Lock()
		if ps.shutting {
			ps.mu.Unlock()
			nc.Close()
			return
		}
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
			c.nc.Close()
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
		ps.mu.Lock()
		for c := range ps.conns {
			c.nc.Close()
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
	handedOff := false
	br := readers.Get().(*bufio.Reader)
	br.Reset(c.nc)
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			ps.s.log.Error("panic serving request", "addr", ps.key.addr, "panic", p)
		}
		ps.mu.Lock()
		delete(ps.conns, c)
		ps.mu.Unlock()
		if !handedOff {
			c.nc.Close()
			br.Reset(nil)
			readers.Put(br)
		}
		bw.Reset(nil)
		writers.Put(bw)
		ps.wg.Done()
	}()

	c.nc.SetReadDeadline(time.Now().Add(idleTimeout))
	if ps.setIdle(c, true) {
		return
	}
	if b, err := br.Peek(len(h2Preface)); err != nil {
		return
	} else if string(b) == h2Preface {
		// h2c with prior knowledge: the preface bytes already read stay in br, which the connection now owns.
		c.nc.SetReadDeadline(time.Time{})
		select {
		case ps.h2ln.ch <- &bufferedConn{Conn: c.nc, r: br}:
			handedOff = true
		case <-ps.h2ln.done:
		}
		return
	}
	remote := c.nc.RemoteAddr().String()
	w := &h1Writer{bw: bw, h: make(http.Header, 8)}
	for {
		if ps.setIdle(c, true) {
			return
		}
		c.nc.SetReadDeadline(time.Now().Add(idleTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				io.WriteString(c.nc, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			}
			return
		}
		ps.setIdle(c, false)
		if req.ContentLength != 0 {
			// The idle deadline must not cut off a slow upload.
			c.nc.SetReadDeadline(time.Time{})
		}
		req.RemoteAddr = remote
		if e, ok := req.Header["Expect"]; ok {
			if len(e) != 1 || !strings.EqualFold(e[0], "100-continue") {
				io.WriteString(c.nc, "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
				return
			}
			// Answer 100-continue here rather than relaying the backend's: simpler and the body is wanted anyway.
			delete(req.Header, "Expect")
			if req.ContentLength != 0 {
				bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				if bw.Flush() != nil {
					return
				}
			}
		}
		w.reset(req)
		ps.handler.ServeHTTP(w, req)
		if w.finish() != nil {
			return
		}
		if req.Body != http.NoBody {
			if n, _ := io.CopyN(io.Discard, req.Body, maxDrainBody+1); n > maxDrainBody {
				return
			}
			if req.Body.Close() != nil {
				return
			}
		}
		if req.Close || w.closeAfter {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// h1Writer is an http.ResponseWriter writing HTTP/1.1 straight into the connection's buffered writer.
type h1Writer struct {
	bw          *bufio.Writer
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

// bufferedConn replays bytes already buffered while sniffing the protocol.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

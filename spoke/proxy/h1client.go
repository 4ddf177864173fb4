package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fedgate/fedgate/spoke/proxy/internal/h1"
)

// h1Client is the HTTP/1.1 keep-alive client for local endpoints. Unlike http.Transport it runs each exchange on the
// caller's goroutine (no per-connection read and write loops, no channel hand-offs), which is most of the saving on a
// proxy whose requests are small. Request bodies are written before the response is read, so it suits
// request/response traffic; streaming in both directions at once needs h2c.
//
// Responses are read as strictly as requests (internal/h1): an invalid head is an error (the proxy answers 502), and
// a connection goes back to the pool only after a response whose framing was complete and unambiguous, with nothing
// buffered past it and nothing arrived on it while it sat idle.
type h1Client struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration
	head        h1.Limits
	max1xx      int
	// headerTimeout bounds the wait for the response head when the request's context has no deadline of its own (a
	// route timeout overrides it).
	headerTimeout time.Duration
	// bodyIdle bounds each wait for response body bytes.
	bodyIdle time.Duration

	mu   sync.Mutex
	idle map[string][]*upConn
}

type upConn struct {
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	hr       *h1.Reader
	probe    *quietProbe
	addr     string
	key      string // the pool key: addr, and the TLS identity for a TLS connection (poolKey)
	lastUsed time.Time
}

// poolKey is the idle-pool key of connections to addr with bt's TLS settings (nil: cleartext). The TLS identity follows
// a NUL, which no address contains, so a cleartext connection and TLS ones of different settings never share a pool.
func poolKey(addr string, bt *backendTLS) string {
	if bt == nil {
		return addr
	}
	return addr + "\x00" + bt.key
}

// newH1Client returns a client dialling with dial, or with a net.Dialer when dial is nil.
func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error), lim Limits) *h1Client {
	if dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	return &h1Client{
		dial:          dial,
		maxIdle:       256,
		idleTimeout:   90 * time.Second,
		head:          h1.Limits{MaxLine: lim.MaxResponseHeaderBytes, MaxBytes: lim.MaxResponseHeaderBytes, MaxFields: lim.MaxResponseHeaders},
		max1xx:        lim.MaxInformationalResponses,
		headerTimeout: lim.UpstreamResponseHeaderTimeout,
		bodyIdle:      lim.UpstreamResponseBodyIdleTimeout,
		idle:          map[string][]*upConn{},
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// quietAfter: a pooled connection idle at least this long is probed for stray bytes or a close before reuse.
const quietAfter = time.Millisecond

func (c *h1Client) get(ctx context.Context, addr string, bt *backendTLS, backendID string) (*upConn, bool, error) {
	now := time.Now()
	key := poolKey(addr, bt)
	c.mu.Lock()
	for l := c.idle[key]; len(l) > 0; l = c.idle[key] {
		uc := l[len(l)-1]
		l[len(l)-1] = nil
		c.idle[key] = l[:len(l)-1]
		if idle := now.Sub(uc.lastUsed); idle < c.idleTimeout {
			c.mu.Unlock()
			// Bytes that came with the response were caught when it was put back (Buffered); the probe catches what
			// arrived later, and a connection reused within quietAfter of its last response skips it: under load the
			// syscall costs ~5% of a request, and a backend's stray bytes could as well arrive just after the probe.
			if idle < quietAfter || uc.probe.quiet() {
				return uc, true, nil
			}
			uc.nc.Close()
			c.mu.Lock()
			continue
		}
		uc.nc.Close()
	}
	c.mu.Unlock()
	var nc net.Conn
	var err error
	if bt != nil {
		nc, err = bt.dial(ctx, c.dial, backendID, addr)
	} else {
		nc, err = c.dial(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, false, err
	}
	br := bufio.NewReaderSize(nc, 4<<10)
	return &upConn{nc: nc, br: br, bw: bufio.NewWriterSize(nc, 4<<10), hr: h1.NewReader(br), probe: newQuietProbe(nc),
		addr: addr, key: key}, false, nil
}

func (c *h1Client) put(uc *upConn) {
	if uc.br.Buffered() > 0 {
		// Bytes past the end of the response: whatever they are, they must not become the next client's response.
		uc.nc.Close()
		return
	}
	uc.lastUsed = time.Now()
	c.mu.Lock()
	if l := c.idle[uc.key]; len(l) < c.maxIdle {
		c.idle[uc.key] = append(l, uc)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	uc.nc.Close()
}

// sweep closes pooled connections that idled past idleTimeout, that something arrived on (a close, stray bytes), or
// whose address keep rejects (an endpoint gone from the table). Without it a retired endpoint's connections would stay
// open, half-closed by the backend, until the proxy stops.
func (c *h1Client) sweep(now time.Time, keep func(addr string) bool) {
	c.mu.Lock()
	var stale []*upConn
	for key, l := range c.idle {
		if addr, _, _ := strings.Cut(key, "\x00"); keep != nil && !keep(addr) {
			stale = append(stale, l...)
			delete(c.idle, key)
			continue
		}
		kept := l[:0]
		for _, uc := range l {
			if now.Sub(uc.lastUsed) >= c.idleTimeout || !uc.probe.quiet() {
				stale = append(stale, uc)
			} else {
				kept = append(kept, uc)
			}
		}
		clear(l[len(kept):])
		if len(kept) == 0 {
			delete(c.idle, key)
		} else {
			c.idle[key] = kept
		}
	}
	c.mu.Unlock()
	for _, uc := range stale {
		uc.nc.Close()
	}
}

func (c *h1Client) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, l := range c.idle {
		for _, uc := range l {
			uc.nc.Close()
		}
		delete(c.idle, addr)
	}
}

// RoundTrip sends req on a pooled connection. A request without a body that fails on a reused connection (the backend
// closed it while idle) is retried once on a fresh one, which is only safe because nothing was consumed from the body.
func (c *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.roundTrip(req, nil, "")
}

// h1TLS is the h1Client sending to a TLS backend (BackendTLSPolicy): HTTP/1.1 over TLS with the backend's settings.
type h1TLS struct {
	c         *h1Client
	bt        *backendTLS
	backendID string
}

func (t *h1TLS) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.c.roundTrip(req, t.bt, t.backendID)
}

// roundTrip sends req to req.URL.Host, over TLS with bt's settings when bt is not nil.
func (c *h1Client) roundTrip(req *http.Request, bt *backendTLS, backendID string) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		uc, reused, err := c.get(ctx, req.URL.Host, bt, backendID)
		if err != nil {
			return nil, err
		}
		resp, wrote, err := c.exchange(ctx, uc, req)
		if err == nil {
			return resp, nil
		}
		uc.nc.Close()
		noBody := req.Body == nil || req.Body == http.NoBody
		var invalid *h1.Error
		if reused && attempt == 0 && noBody && (!wrote || idempotent(req.Method)) && ctx.Err() == nil &&
			!errors.As(err, &invalid) && !isTimeout(err) {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// exchange writes req and reads the response head. wrote reports whether the request reached the socket.
func (c *h1Client) exchange(ctx context.Context, uc *upConn, req *http.Request) (*http.Response, bool, error) {
	// Cancellation and timeouts interrupt blocking I/O through the deadline; only contexts that can end pay for it.
	var es exchangeStop
	if rc, ok := ctx.(*reqCtx); ok {
		if !rc.watchConn(uc.nc) {
			return nil, false, context.Canceled
		}
		es.rc = rc
	} else if ctx.Done() != nil {
		es.fn = context.AfterFunc(ctx, func() { uc.nc.SetDeadline(aLongTimeAgo) })
	}
	stop := es.stop
	var timeout time.Duration
	if _, ok := ctx.Deadline(); !ok {
		timeout = c.headerTimeout
	}
	if timeout > 0 {
		// The read deadline bounds the wait for the head; writes are bounded per body chunk in writeRequest (a head
		// alone fits the socket's send buffer).
		uc.nc.SetReadDeadline(time.Now().Add(timeout))
	}
	if err := writeRequest(uc, req, timeout); err != nil {
		var be *h1.BodyError
		if errors.As(err, &be) || ctx.Err() != nil {
			stop()
			return nil, false, err
		}
		// The backend stopped reading the request (a reset or broken pipe mid-body): it may have answered early, a
		// 413 say, and closed. That answer is the response, and no fault of the endpoint's.
		if resp := c.earlyResponse(uc, req); resp != nil {
			stop()
			return resp, true, nil
		}
		stop()
		return nil, false, err
	}
	var resp *http.Response
	var err error
	for n := 0; ; n++ {
		resp, err = uc.hr.ReadResponse(c.head, req.Method, h1.BodyOptions{})
		if err != nil {
			stop()
			return nil, true, err
		}
		if resp.StatusCode >= 200 {
			break
		}
		// Informational responses (100 Continue, 103 Early Hints) are not relayed; 101 was never asked for (the proxy
		// forwards no Upgrade), so it is invalid here.
		if resp.StatusCode == http.StatusSwitchingProtocols {
			stop()
			return nil, true, &h1.Error{Status: http.StatusBadGateway, Reason: "unrequested 101 Switching Protocols"}
		}
		if n >= c.max1xx {
			stop()
			return nil, true, &h1.Error{Status: http.StatusBadGateway, Reason: "too many informational responses"}
		}
	}
	if timeout > 0 {
		uc.nc.SetReadDeadline(time.Time{})
		if ctx.Err() != nil {
			// Cancelled between the head and the line above, which undid the cancellation's deadline.
			uc.nc.SetDeadline(aLongTimeAgo)
		}
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		if stop() && keep {
			c.put(uc)
		} else {
			uc.nc.Close()
		}
		return resp, true, nil
	}
	resp.Body = &upBody{rc: resp.Body.(h1.Body), c: c, uc: uc, stop: es, keep: keep, ctx: ctx}
	return resp, true, nil
}

// earlyResponseWait bounds the wait for a response after the backend stopped reading the request.
const earlyResponseWait = time.Second

// earlyResponse reads a final response the backend sent before it stopped reading the request, if there is one. The
// connection is not reused after it: the request was not sent whole.
func (c *h1Client) earlyResponse(uc *upConn, req *http.Request) *http.Response {
	uc.nc.SetReadDeadline(time.Now().Add(earlyResponseWait))
	for n := 0; n <= c.max1xx; n++ {
		resp, err := uc.hr.ReadResponse(c.head, req.Method, h1.BodyOptions{})
		if err != nil {
			return nil
		}
		if resp.StatusCode < 200 {
			continue
		}
		resp.Close = true
		if resp.Body != http.NoBody {
			resp.Body = &upBody{rc: resp.Body.(h1.Body), c: c, uc: uc, ctx: context.Background()}
		} else {
			uc.nc.Close()
		}
		return resp
	}
	return nil
}

// writeRequest writes an origin-form HTTP/1.1 request with exactly one framing field of its own: Content-Length when
// the length is known, chunked otherwise. Header names and values were validated when the request was parsed (or by
// the HTTP/2 server) or the route was built, so they are written as they are. A body that ends short of its declared
// length, or runs past it, fails the exchange (the connection is closed, never reused). With timeout > 0, every body
// chunk renews the write deadline, so a backend that stops reading cannot hold the exchange forever.
func writeRequest(uc *upConn, req *http.Request, timeout time.Duration) error {
	bw := uc.bw
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.EscapedPath())
	if req.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(req.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	if req.Host != "" {
		bw.WriteString(req.Host)
	} else {
		// An HTTP/1.0 client may send no Host; HTTP/1.1 requires one, so the backend gets its own address (nginx's
		// default, $proxy_host, does the same).
		bw.WriteString(req.URL.Host)
	}
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength < 0
	var scratch [24]byte
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(scratch[:0], req.ContentLength, 10))
		bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if hasBody {
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		buf := *bp
		var sent int64
		for {
			n, rerr := req.Body.Read(buf)
			if n > 0 {
				sent += int64(n)
				if !chunked && sent > req.ContentLength {
					return &h1.BodyError{Err: errors.New("request body longer than its Content-Length")}
				}
				if timeout > 0 {
					uc.nc.SetWriteDeadline(time.Now().Add(timeout))
				}
				var werr error
				if chunked {
					bw.Write(strconv.AppendInt(scratch[:0], int64(n), 16))
					bw.WriteString("\r\n")
					bw.Write(buf[:n])
					_, werr = bw.WriteString("\r\n")
				} else {
					_, werr = bw.Write(buf[:n])
				}
				if werr != nil {
					return werr
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return rerr
			}
		}
		if !chunked && sent != req.ContentLength {
			return &h1.BodyError{Err: io.ErrUnexpectedEOF}
		}
		if chunked {
			bw.WriteString("0\r\n\r\n")
		}
		if timeout > 0 {
			err := bw.Flush()
			// A pooled connection must not carry this request's write deadline into the next one.
			uc.nc.SetWriteDeadline(time.Time{})
			return err
		}
	}
	return bw.Flush()
}

// upBody returns the connection to the pool once the response body has been read to its end, and closes it
// otherwise. Each read is bounded by the client's bodyIdle.
type upBody struct {
	rc    h1.Body
	c     *h1Client
	uc    *upConn
	stop  exchangeStop
	ctx   context.Context // the exchange's: its cancellation also sets the connection's deadline
	keep  bool
	done  bool
	armed bool // a read deadline is set on uc.nc
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	// Armed at every Read, also with bytes buffered: what is buffered may be framing only (a chunk's CRLF), and the
	// read then waits for the backend all the same.
	if b.c.bodyIdle > 0 {
		b.uc.nc.SetReadDeadline(time.Now().Add(b.c.bodyIdle))
		b.armed = true
		if b.ctx.Err() != nil {
			// Cancelled before the line above, which undid the cancellation's deadline.
			b.uc.nc.SetDeadline(aLongTimeAgo)
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.release(true)
	} else if err != nil {
		b.release(false)
	}
	return n, err
}

// buffered reports how many response body bytes are already read from the backend and waiting (framing excluded:
// a chunk's CRLF is no reason to hold back a flush).
func (b *upBody) buffered() int {
	if b.done {
		return 0
	}
	return b.rc.Available()
}

func (b *upBody) Close() error {
	b.release(false)
	return nil
}

func (b *upBody) release(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop.stop() && complete && b.keep && b.rc.Complete() {
		if b.armed {
			b.uc.nc.SetReadDeadline(time.Time{})
		}
		b.c.put(b.uc)
		return
	}
	b.uc.nc.Close()
}

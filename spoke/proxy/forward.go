package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/proxy/internal/h1"
)

// Headers that carry east-west routing decisions between spokes. They are only honoured on the east-west listener
// (mTLS-authenticated peers in a later issue) and are stripped from everything a client sends to a gateway port and
// from everything forwarded to a backend.
const (
	HeaderBackend  = "X-Fedgate-Backend"
	HeaderEndpoint = "X-Fedgate-Endpoint"
)

// hopHeaders are connection-scoped (RFC 9110 §7.6.1) and never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// checkH2Request applies to an HTTP/2 request what internal/h1 applies to an HTTP/1.1 head, for what net/http's HTTP/2
// server lets through and an HTTP/1.1 backend could misread once the request is downgraded (RFC 9113 §8.1.1, §8.2.1):
// a method that is not a token, CONNECT, content-length fields that are not one run of digits equal to what the
// stream carries, field values with leading or trailing whitespace, an invalid :authority, and a :path an HTTP/1.1
// request line could not carry. It cleans r.URL's path as internal/h1 cleans an HTTP/1.1 one, and returns the status
// to refuse with, or 0.
func checkH2Request(r *http.Request) (int, string) {
	if !h1.ValidFieldName(r.Method) {
		return http.StatusBadRequest, "invalid method"
	}
	if r.Method == http.MethodConnect {
		return http.StatusMethodNotAllowed, "CONNECT is not supported"
	}
	if !h1.ValidHost(r.Host) {
		return http.StatusBadRequest, "invalid host"
	}
	// :path must be what an HTTP/1.1 request-target may be: visible ASCII, no fragment (it is written verbatim into
	// the upstream request line), and its path is cleaned exactly like an HTTP/1.1 one.
	target := r.RequestURI
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return http.StatusBadRequest, "invalid character in :path"
		}
	}
	path, _, _ := strings.Cut(target, "?")
	if path == "" || path[0] != '/' {
		return http.StatusBadRequest, "unsupported :path form"
	}
	clean, decoded, ok := h1.CleanPath(path)
	if !ok {
		return http.StatusBadRequest, "invalid path (percent-encoding, or dot-segments above the root)"
	}
	r.URL.Path, r.URL.RawPath = decoded, ""
	if clean != decoded {
		r.URL.RawPath = clean
	}
	if cl, ok := r.Header["Content-Length"]; ok {
		if len(cl) != 1 {
			return http.StatusBadRequest, "more than one content-length"
		}
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || cl[0][0] == '+' || n != r.ContentLength {
			return http.StatusBadRequest, "invalid content-length"
		}
		if n > 0 && (r.Body == nil || r.Body == http.NoBody) {
			return http.StatusBadRequest, "content-length without a body"
		}
	}
	for _, vs := range r.Header {
		for _, v := range vs {
			if v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
				return http.StatusBadRequest, "field value with leading or trailing whitespace"
			}
		}
	}
	return 0, ""
}

// serveGateway routes a request that arrived on gateway port `port`.
func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request, port int32) {
	s.stats.Requests.Add(1)
	if r.ProtoMajor == 2 {
		if status, reason := checkH2Request(r); status != 0 {
			s.stats.BadRequests.Add(1)
			http.Error(w, reason, status)
			return
		}
	}
	t := s.table.Load()
	var pt *portTable
	if t != nil {
		pt = t.ports[port]
	}
	if pt == nil {
		s.notFound(w)
		return
	}
	req := request{host: normaliseHost(r.Host), path: r.URL.Path, method: r.Method, header: r.Header, rawQuery: r.URL.RawQuery}
	if pt.misdirected(r, req.host) {
		s.stats.Misdirected.Add(1)
		http.Error(w, "misdirected request: the host is not served on this TLS connection", http.StatusMisdirectedRequest)
		return
	}
	vh := pt.lookupVhost(req.host)
	if vh == nil {
		s.notFound(w)
		return
	}
	rt := vh.match(&req)
	if rt == nil {
		s.notFound(w)
		return
	}
	a := rt.action
	switch {
	case a.direct != nil:
		if a.respHeaders != nil {
			a.respHeaders.apply(w.Header())
		}
		if a.direct.Body != "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(a.direct.Body)))
		}
		w.WriteHeader(a.direct.Status)
		io.WriteString(w, a.direct.Body)
		return
	case a.redirect != nil:
		s.redirect(w, r, a, pt.port)
		return
	}
	now := s.now()
	var started time.Time
	var b *backend
	var ep *endpoint
	if a.sticky != nil {
		if p, st, ok := a.sticky.lookup(r, now); ok {
			b, ep, started = p.b, p.ep, st
			s.stats.SessionHits.Add(1)
		}
	}
	if ep == nil {
		var res pickResult
		b, ep, res = a.pick(now.UnixNano(), nil)
		switch res {
		case pickAllZero:
			s.stats.Invalid.Add(1)
			http.Error(w, "no backend has a non-zero weight", http.StatusInternalServerError)
			return
		case pickInvalid:
			s.stats.Invalid.Add(1)
			http.Error(w, "invalid backend", http.StatusInternalServerError)
			return
		case pickNoHealthy:
			s.stats.NoEndpoints.Add(1)
			http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
			return
		}
		started = now
	}
	s.forward(w, r, a, b, ep, started)
}

func (s *Server) notFound(w http.ResponseWriter) {
	s.stats.NotFound.Add(1)
	http.Error(w, "no route", http.StatusNotFound)
}

// redirect answers per HTTPRoute RequestRedirect. listenerPort is the Gateway listener's port, used when neither the
// redirect's scheme nor its port says otherwise.
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, a *action, listenerPort int32) {
	rd := a.redirect
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	port := int(listenerPort)
	if rd.Scheme != "" {
		scheme = rd.Scheme
		port = 80
		if scheme == "https" {
			port = 443
		}
	}
	if rd.Port != 0 {
		port = int(rd.Port)
	}
	host := rd.Hostname
	if host == "" {
		host = hostOnly(r.Host)
	}
	if !wellKnownPort(scheme, port) {
		host = net.JoinHostPort(host, strconv.Itoa(port))
	}
	path := rewritePath(r.URL.Path, a.prefix, rd.Path)
	u := url.URL{Scheme: scheme, Host: host, Path: path, RawQuery: r.URL.RawQuery}
	code := rd.StatusCode
	if code == 0 {
		code = http.StatusFound
	}
	if a.respHeaders != nil {
		a.respHeaders.apply(w.Header())
	}
	w.Header().Set("Location", u.String())
	w.WriteHeader(code)
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// forward proxies r to ep. a is nil for east-west requests (the originating spoke already applied the route's
// filters, picked the endpoint and owns retries); eastWest requests keep the forwarding headers the originating spoke
// set. started is when the request's session began (sticky routes only).
//
// Retries (gateway requests without a body only, since a consumed body cannot be replayed): a connection failure on
// an idempotent request is retried once on another endpoint, in any cluster, even without a policy; a rule's Retry
// adds attempts for connection failures and for its status codes, with its backoff. Each retry is taken from the
// backend's RetryBudget; when it is spent the client gets 503.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, a *action, b *backend, ep *endpoint, started time.Time) {
	ctx := r.Context()
	eastWest := a == nil
	if a != nil {
		timeout := a.requestTimeout
		if a.backendTimeout > 0 && (timeout == 0 || a.backendTimeout < timeout) {
			timeout = a.backendTimeout
		}
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
	}

	// One allocation for the outgoing request with its context (the zero template stays on the stack).
	out := (&http.Request{}).WithContext(ctx)
	out.Method = r.Method
	out.URL = &url.URL{Scheme: "http", Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Header = make(http.Header, len(r.Header)+4)
	out.Body = r.Body
	out.ContentLength = r.ContentLength
	out.Host = r.Host
	// An HTTP/2 request has no body only when its HEADERS ended the stream, which net/http reports as a zero
	// ContentLength without a content-length field (an open stream without one is -1); one that declared
	// content-length: 0 and still sends DATA must fail, not be forwarded bodyless with the DATA dropped.
	bodyless := r.ContentLength == 0 && (r.ProtoMajor != 2 || r.Body == nil || r.Body == http.NoBody ||
		r.Header["Content-Length"] == nil)
	var cb *clientBody
	if bodyless {
		out.Body = http.NoBody
	} else {
		cb = &clientBody{rc: r.Body}
		if r.ProtoMajor == 2 {
			// HTTP/1.1 bodies bound their own reads; an HTTP/2 stream's are bounded here.
			rc := http.NewResponseController(w)
			cb.deadline, cb.idle = rc.SetReadDeadline, s.opts.Limits.RequestBodyIdleTimeout
		}
		out.Body = cb
	}
	copyRequestHeaders(out.Header, r.Header)
	// Trailers are end-to-end (gRPC): keep "TE: trailers" although TE is hop-by-hop.
	if te := r.Header["Te"]; len(te) > 0 && strings.EqualFold(te[0], "trailers") {
		out.Header["Te"] = []string{"trailers"}
	}
	if !eastWest {
		setForwarded(out.Header, r)
	}
	if a != nil {
		if a.rewriteHost != "" {
			out.Host = a.rewriteHost
		}
		if a.rewritePath != nil {
			// Rewrite the escaped path when the matched prefix stands in it literally, so encoded characters after the
			// prefix (an encoded slash, say) reach the backend as the client encoded them.
			if esc := r.URL.EscapedPath(); esc != r.URL.Path && strings.HasPrefix(esc, a.prefix) {
				raw := rewritePath(esc, a.prefix, a.rewritePath)
				if p, err := url.PathUnescape(raw); err == nil {
					out.URL.Path, out.URL.RawPath = p, raw
				} else {
					out.URL.Path, out.URL.RawPath = rewritePath(r.URL.Path, a.prefix, a.rewritePath), ""
				}
			} else {
				out.URL.Path = rewritePath(r.URL.Path, a.prefix, a.rewritePath)
				out.URL.RawPath = ""
			}
		}
		if a.reqHeaders != nil {
			a.reqHeaders.apply(out.Header)
		}
	}

	var policy *retryPolicy
	if a != nil {
		policy = a.retry
	}
	builtin := !eastWest && bodyless && idempotent(r.Method)
	attempts := 0 // retries taken
	b.budget.request(s.now().UnixNano())
	for {
		resp, err := s.roundTrip(out, b, ep)
		now := s.now()
		var retryable bool
		if err != nil {
			if be := cb.fault(err); be != nil {
				// The client's body, not the endpoint, failed: answer the client, and count nothing against the
				// endpoint (a client must not be able to eject healthy endpoints).
				s.stats.BadRequests.Add(1)
				r.Close = true
				if be.Timeout {
					http.Error(w, "request body timeout", http.StatusRequestTimeout)
				} else {
					http.Error(w, "malformed or incomplete request body", http.StatusBadRequest)
				}
				return
			}
			if ctx.Err() != nil || isTimeout(err) {
				if errors.Is(ctx.Err(), context.DeadlineExceeded) || (ctx.Err() == nil && isTimeout(err)) {
					s.outlier.Failure(ep.state, b.readyStates, now)
					s.stats.Timeouts.Add(1)
					http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
					return
				}
				// Otherwise the client went away (or the port is closing): nobody to answer, and no default response
				// may be written for this request; the connection or stream is aborted.
				panic(http.ErrAbortHandler)
			}
			s.noteConnError(b, ep, err, now)
			retryable = !eastWest && bodyless && (policy != nil && attempts < policy.attempts || builtin && attempts == 0)
		} else {
			if resp.StatusCode >= 500 {
				s.outlier.Failure(ep.state, b.readyStates, now)
			} else {
				s.outlier.Success(ep.state)
			}
			retryable = !eastWest && bodyless && policy != nil && attempts < policy.attempts && policy.retriesStatus(resp.StatusCode)
		}
		if retryable {
			nb, nep, res := a.pickOthers(now.UnixNano(), ep, -1)
			if res != picked {
				// Nowhere else to go: the same endpoint may still answer (a 503 from an overloaded pod, say).
				nb, nep = b, ep
				if err != nil && (ep.remote != nil || !ep.state.Available(now.UnixNano())) {
					retryable = false
				}
			}
			if retryable && !b.budget.allow(now.UnixNano()) {
				if resp != nil {
					discard(resp)
				}
				s.stats.BudgetExhausted.Add(1)
				http.Error(w, "retry budget exhausted", http.StatusServiceUnavailable)
				return
			}
			if retryable {
				if resp != nil {
					discard(resp)
				}
				attempts++
				s.stats.Retries.Add(1)
				if policy != nil && policy.backoff > 0 {
					t := time.NewTimer(policy.backoff)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						s.stats.Timeouts.Add(1)
						http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
						return
					}
				}
				if nep != ep {
					// A session moves with the retry: the token names the endpoint that answered.
					started = now
				}
				b, ep = nb, nep
				continue
			}
		}
		if err != nil {
			s.upstreamError(w, ep, err)
			return
		}
		s.writeResponse(w, r, a, ep, resp, started)
		return
	}
}

// roundTrip sends out to ep (directly, or through its cluster's east-west listener), counting it in ep's state.
func (s *Server) roundTrip(out *http.Request, b *backend, ep *endpoint) (*http.Response, error) {
	var rt http.RoundTripper
	switch {
	case ep.remote != nil:
		if ep.remote.rt == nil {
			return nil, errors.New("no east-west transport for cluster " + ep.cluster)
		}
		rt = ep.remote.rt
		out.URL.Host = ep.remote.addr
		out.Header[HeaderBackend] = []string{b.id}
		out.Header[HeaderEndpoint] = []string{ep.addr}
	case b.tls != nil:
		// HTTP/1.1 over TLS, h2c backends included (h2c is cleartext by definition; a policy asking for TLS wins).
		rt = b.tlsRT(s.localH1)
		out.URL.Host = ep.addr
		delete(out.Header, HeaderBackend)
		delete(out.Header, HeaderEndpoint)
	case b.h2c:
		rt = s.localH2C
		out.URL.Host = ep.addr
		delete(out.Header, HeaderBackend)
		delete(out.Header, HeaderEndpoint)
	default:
		rt = s.localH1
		out.URL.Host = ep.addr
		delete(out.Header, HeaderBackend)
		delete(out.Header, HeaderEndpoint)
	}
	ep.state.InFlight.Add(1)
	s.inFlight.Add(1)
	ep.state.Requests.Add(1)
	var resp *http.Response
	var err error
	if _, hasDeadline := out.Context().Deadline(); ep.remote == nil && (b.tls != nil || !b.h2c) || hasDeadline {
		// h1Client applies the response-header timeout itself; a route timeout replaces it.
		resp, err = rt.RoundTrip(out)
	} else {
		resp, err = s.roundTripHeaderTimeout(rt, out)
	}
	ep.state.InFlight.Add(-1)
	s.inFlight.Add(-1)
	return resp, err
}

// errHeaderTimeout is the cause of a request cancelled for want of a response head.
var errHeaderTimeout = errors.New("upstream response header timeout")

// roundTripHeaderTimeout bounds the wait for the response head only (not a streaming body, as a context timeout
// would): the request is cancelled if no head arrives within Limits.UpstreamResponseHeaderTimeout.
func (s *Server) roundTripHeaderTimeout(rt http.RoundTripper, out *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(out.Context())
	t := time.AfterFunc(s.opts.Limits.UpstreamResponseHeaderTimeout, func() { cancel(errHeaderTimeout) })
	resp, err := rt.RoundTrip(out.WithContext(ctx))
	if !t.Stop() || err != nil {
		cancel(nil)
		if context.Cause(ctx) == errHeaderTimeout {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, errHeaderTimeoutErr{}
		}
		return resp, err
	}
	// The body may stream for as long as it takes; its end (or the client's) releases the context.
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// errHeaderTimeoutErr is returned for an exchange cut by the response-header timeout; it reads as a timeout.
type errHeaderTimeoutErr struct{}

func (errHeaderTimeoutErr) Error() string { return errHeaderTimeout.Error() }
func (errHeaderTimeoutErr) Timeout() bool { return true }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}

// clientBody is the request body as the upstream transport reads it. It records the client's failures (a short or
// malformed body, a stall) so they are told apart from the endpoint's, and bounds each wait for HTTP/2 body data.
type clientBody struct {
	rc       io.ReadCloser
	deadline func(time.Time) error
	idle     time.Duration
	err      atomic.Pointer[h1.BodyError]
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.deadline != nil {
		b.deadline(time.Now().Add(b.idle))
	}
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		be, ok := err.(*h1.BodyError)
		if !ok {
			be = &h1.BodyError{Err: err, Timeout: isTimeout(err)}
		}
		b.err.Store(be)
		return n, be
	}
	return n, err
}

func (b *clientBody) Close() error { return b.rc.Close() }

// fault returns the client's body error behind err, if that is what failed the exchange (nil-safe).
func (b *clientBody) fault(err error) *h1.BodyError {
	var be *h1.BodyError
	if errors.As(err, &be) {
		return be
	}
	if b == nil {
		return nil
	}
	return b.err.Load()
}

// noteConnError feeds a failed exchange to outlier detection. A transport error on the east-west hop (refused dial,
// reset, connection cut mid-response: the remote spoke answers backend failures with a status, not a broken
// connection) says the cluster, not the endpoint, is in trouble: it is marked suspect at once, ahead of gossip's
// verdict, so the retry and the next requests go elsewhere.
func (s *Server) noteConnError(b *backend, ep *endpoint, err error, now time.Time) {
	if ep.remote != nil {
		if ep.remote.state.Usable(now.UnixNano()) {
			s.log.Warn("east-west exchange failed: cluster suspect", "cluster", ep.cluster, "addr", ep.remote.addr,
				"hold", s.opts.SuspectHold, "dial", isDialError(err), "err", err)
		}
		ep.remote.state.Suspect(now, s.opts.SuspectHold)
		return
	}
	s.outlier.Failure(ep.state, b.readyStates, now)
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// discard drops a response that is being retried, keeping its connection when the body is small.
func discard(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// writeResponse relays resp to the client, stamping a session token on sticky routes.
func (s *Server) writeResponse(w http.ResponseWriter, r *http.Request, a *action, ep *endpoint, resp *http.Response, started time.Time) {
	defer resp.Body.Close()
	h := w.Header()
	copyHeaders(h, resp.Header)
	if a != nil {
		if a.respHeaders != nil {
			a.respHeaders.apply(h)
		}
		if a.sticky != nil {
			a.sticky.stamp(h, ep, started, s.now(), r.TLS != nil)
		}
	}
	w.WriteHeader(resp.StatusCode)
	// Stream: flush as data arrives when the length is unknown (SSE, gRPC streams, chunked responses).
	var fl http.Flusher
	if resp.ContentLength < 0 {
		fl, _ = w.(http.Flusher)
	}
	// A flush costs a write to the client: skip it while more of the response is already buffered from upstream.
	pending, _ := resp.Body.(interface{ buffered() int })
	var sendDeadline func(time.Time) error
	if r.ProtoMajor == 2 {
		// HTTP/1.1 responses bound their writes in h1Writer; an HTTP/2 stream's are bounded here.
		sendDeadline = http.NewResponseController(w).SetWriteDeadline
	}
	// Each wait for body bytes is bounded: upBody bounds its own reads with the connection's deadline; a body from a
	// net/http transport (east-west, h2c backends) is closed by a timer that every read re-arms, which ends a read
	// blocked on it.
	var idleT *time.Timer
	var idleFired atomic.Bool
	if _, own := resp.Body.(*upBody); !own && s.opts.Limits.UpstreamResponseBodyIdleTimeout > 0 {
		body := resp.Body
		idleT = time.AfterFunc(time.Hour, func() { idleFired.Store(true); body.Close() })
		idleT.Stop() // armed only around reads: time spent writing to the client is not the backend's
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		if idleT != nil {
			idleT.Reset(s.opts.Limits.UpstreamResponseBodyIdleTimeout)
		}
		n, rerr := resp.Body.Read(buf)
		if idleT != nil {
			idleT.Stop()
		}
		if n > 0 {
			if sendDeadline != nil {
				sendDeadline(time.Now().Add(s.opts.Limits.ResponseSendIdleTimeout))
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil && (pending == nil || pending.buffered() == 0) {
				fl.Flush()
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				if errors.Is(rerr, context.DeadlineExceeded) || isTimeout(rerr) || idleFired.Load() {
					s.stats.Timeouts.Add(1)
				}
				s.log.Debug("upstream body", "endpoint", ep.addr, "cluster", ep.cluster, "err", rerr)
				// Abort the client response so a truncated body is not mistaken for a complete one.
				panic(http.ErrAbortHandler)
			}
			break
		}
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
}

func (s *Server) upstreamError(w http.ResponseWriter, ep *endpoint, err error) {
	s.stats.UpstreamErrors.Add(1)
	var te *backendTLSError
	if errors.As(err, &te) {
		s.log.Warn("backend TLS connection failed", "backend", te.backend, "endpoint", te.addr, "cluster", ep.cluster,
			"reason", te.err.Error())
		http.Error(w, "upstream connect error", http.StatusBadGateway)
		return
	}
	s.log.Debug("upstream error", "endpoint", ep.addr, "cluster", ep.cluster, "err", err)
	http.Error(w, "upstream connect error", http.StatusBadGateway)
}

// copyRequestHeaders copies a client's request header like copyHeaders, and also drops what the proxy writes itself
// (Content-Length: exactly one framing field goes upstream, the proxy's) and names with an underscore, which some
// backends (CGI, WSGI) fold into the same variable as a hyphenated name the proxy sets — nginx's default too.
func copyRequestHeaders(dst, src http.Header) {
	conn := src["Connection"]
	for k, vs := range src {
		if isHopHeader(k) || k == "Content-Length" || k == "Host" || strings.HasPrefix(k, "X-Fedgate-") ||
			strings.IndexByte(k, '_') >= 0 || listedIn(conn, k) {
			continue
		}
		dst[k] = vs
	}
}

// copyHeaders copies src into dst without hop-by-hop headers, headers named by Connection, or X-Fedgate-* headers.
func copyHeaders(dst, src http.Header) {
	conn := src["Connection"]
	for k, vs := range src {
		if isHopHeader(k) || strings.HasPrefix(k, "X-Fedgate-") || listedIn(conn, k) {
			continue
		}
		dst[k] = vs
	}
}

func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// listedIn reports whether canonical header name k is one of the comma-separated tokens of the Connection header.
func listedIn(conn []string, k string) bool {
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// Shared values of X-Forwarded-Proto: header maps are never changed in place (filters replace or append to a
// cap-limited slice), so one slice serves every request.
var (
	forwardedHTTP  = []string{"http"}
	forwardedHTTPS = []string{"https"}
)

func setForwarded(h http.Header, r *http.Request) {
	vals := make([]string, 2) // one allocation for both per-request values
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		vals[0] = ip
		h["X-Forwarded-For"] = vals[0:1:1]
	}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = forwardedHTTPS
	} else {
		h["X-Forwarded-Proto"] = forwardedHTTP
	}
	vals[1] = r.Host
	h["X-Forwarded-Host"] = vals[1:2:2]
}

// rewritePath applies a PathRewrite (nil keeps the path). prefix is the matched PathPrefix without trailing slash;
// ReplacePrefixMatch replaces exactly that prefix, element-wise, so "/foo" → "/bar" maps "/foo/x" to "/bar/x" and
// "/" → "/x" maps "/a" to "/x/a".
func rewritePath(path, prefix string, pr *spokeconfig.PathRewrite) string {
	switch {
	case pr == nil:
		return path
	case pr.ReplaceFullPath != nil:
		return *pr.ReplaceFullPath
	case pr.ReplacePrefixMatch != nil:
		repl := *pr.ReplacePrefixMatch
		rest := path[min(len(prefix), len(path)):]
		if strings.HasSuffix(repl, "/") && strings.HasPrefix(rest, "/") {
			rest = rest[1:]
		}
		if out := repl + rest; out != "" {
			return out
		}
		return "/"
	}
	return path
}

package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// HTTPS gateway ports terminate TLS on the connection's own goroutine (never in the accept loop), bounded by
// Limits.TLSHandshakeTimeout. The certificate comes from the table current at the handshake (tls.Config.
// GetCertificate reads Server.table), so an Apply or Reload rotates certificates without reopening the socket and
// without touching open connections. ALPN "h2" connections go to the port's net/http HTTP/2 server, "http/1.1" (and
// no ALPN) to the strict HTTP/1.1 connection loop, so every limit of an HTTP port applies to an HTTPS one.

// tlsPort is an HTTPS port's listeners, looked up by SNI (and by Host, for 421) like virtual hosts: exact, longest
// wildcard, then "*".
type tlsPort struct {
	exact     map[string]*tlsListener
	wildcards []tlsWildcard // longest suffix first
	catchAll  *tlsListener
}

type tlsWildcard struct {
	suffix string // ".example.com" for "*.example.com"
	l      *tlsListener
}

// tlsListener is one HTTPS listener: its usable certificates in certificateRefs order (possibly none: its handshakes
// then fail).
type tlsListener struct {
	hostname string
	certs    []*tls.Certificate
	cv       *clientValidation // nil: no client certificate is requested
}

// clientValidation is an HTTPS listener's client-certificate validation (spokeconfig.ClientValidation), built once
// per table. Its handshakes request a client certificate (tls.RequestClientCert, with the CA names as a hint) and
// verifyClient checks it at the end of every handshake, resumed ones included, against the pool of the listener the
// handshake selected: chained to the pool, unexpired, with client-auth extended key usage when it names any.
type clientValidation struct {
	// insecureFallback: AllowInsecureFallback, a client whose certificate is missing or fails verification is
	// admitted (counted in Stats.ClientCertUnverified). Otherwise (AllowValidOnly, the default, and any unknown mode)
	// its handshake fails.
	insecureFallback bool
	// pool is nil when the CA bundle is unusable: every certificate then fails verification (AllowValidOnly: every
	// handshake on the listener is refused; never no validation).
	pool *x509.CertPool
	// verified caches, for this table's lifetime, whether a connection's client certificate verifies against pool,
	// by its leaf (the same *x509.Certificate for every request of a connection), so that requests on connections
	// opened under an earlier table are checked against this one's pool once (misdirected). Cleared when it holds
	// maxVerifiedCache entries.
	verified sync.Map // *x509.Certificate → bool
	cached   atomic.Int64
}

const maxVerifiedCache = 4096

// admits reports whether a TLS connection's client certificate chain verifies against the pool (cached per leaf).
func (cv *clientValidation) admits(certs []*x509.Certificate) bool {
	if len(certs) == 0 {
		return false
	}
	now := time.Now()
	// A verdict holds until the leaf expires: a long-lived connection is refused once its certificate has.
	if v, ok := cv.verified.Load(certs[0]); ok && (!v.(bool) || now.Before(certs[0].NotAfter)) {
		return v.(bool)
	}
	ok := cv.verify(certs, now) == nil
	cv.remember(certs[0], ok)
	return ok
}

func (cv *clientValidation) remember(leaf *x509.Certificate, ok bool) {
	if cv.cached.Add(1) > maxVerifiedCache {
		cv.verified.Clear()
		cv.cached.Store(1)
	}
	cv.verified.Store(leaf, ok)
}

var (
	errClientCAUnusable    = errors.New("the HTTPS listener's client CA bundle is unusable")
	errNoClientCertificate = errors.New("the client sent no certificate")
)

// verify checks a client's certificate chain (leaf first, as sent) against the pool at now.
func (cv *clientValidation) verify(certs []*x509.Certificate, now time.Time) error {
	if cv.pool == nil {
		return errClientCAUnusable
	}
	if len(certs) == 0 {
		return errNoClientCertificate
	}
	opts := x509.VerifyOptions{Roots: cv.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	_, err := certs[0].Verify(opts)
	return err
}

// parseCABundle parses a PEM bundle of CA certificates. Text between blocks is ignored (as in bundles that carry
// openssl's subject lines), but every block must be a certificate that parses, and there must be at least one: a
// bundle that is partly broken is unusable rather than silently narrower.
func parseCABundle(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE", n+1, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return pool, nil
}

// lookup selects the listener for a normalised host name ("" selects "*"); nil when none matches.
func (p *tlsPort) lookup(host string) *tlsListener {
	if l, ok := p.exact[host]; ok {
		return l
	}
	for i := range p.wildcards {
		w := &p.wildcards[i]
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return w.l
		}
	}
	return p.catchAll
}

// certificate returns the first certificate valid for sni, else the first; nil when the listener has none.
func (l *tlsListener) certificate(sni string) *tls.Certificate {
	if len(l.certs) == 0 {
		return nil
	}
	if sni != "" {
		for _, c := range l.certs {
			if c.Leaf != nil && c.Leaf.VerifyHostname(sni) == nil {
				return c
			}
		}
	}
	return l.certs[0]
}

// certLoader parses the certificates of one table build, each Secret once: a Secret several listeners share is parsed
// and, when unusable, logged once.
type certLoader struct {
	local  func(namespace, name string) (certPEM, keyPEM []byte, err error)
	log    *slog.Logger
	parsed map[certKey]*tls.Certificate // nil value: unusable (already logged)
	pools  map[string]*x509.CertPool    // client CA bundles by content; nil value: unusable (already logged)
}

type certKey struct {
	local           bool
	namespace, name string
}

func newCertLoader(opts Options) *certLoader {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &certLoader{local: opts.LocalSecret, log: log.With("component", "proxy"), parsed: map[certKey]*tls.Certificate{},
		pools: map[string]*x509.CertPool{}}
}

// load returns c's parsed certificate, or nil (logged with the Secret's name, never its data) when it cannot be used.
func (cl *certLoader) load(c *spokeconfig.Certificate) *tls.Certificate {
	k := certKey{local: c.Local, namespace: c.Namespace, name: c.Name}
	if cert, ok := cl.parsed[k]; ok {
		return cert
	}
	cert, err := cl.parse(c)
	if err != nil {
		cl.log.Warn("TLS certificate skipped", "secret", c.Namespace+"/"+c.Name, "local", c.Local, "err", err)
		cert = nil
	}
	cl.parsed[k] = cert
	return cert
}

// clientValidation builds a listener's client validation; a CA bundle several listeners share is parsed, and when
// unusable logged, once per build.
func (cl *certLoader) clientValidation(in *spokeconfig.ClientValidation, port int32, hostname string) *clientValidation {
	cv := &clientValidation{}
	switch in.Mode {
	case spokeconfig.AllowInsecureFallback:
		cv.insecureFallback = true
	case spokeconfig.AllowValidOnly, "":
	default:
		cl.log.Warn("HTTPS listener's client validation mode is unknown; treated as AllowValidOnly", "port", port,
			"hostname", hostname, "mode", in.Mode)
	}
	pool, ok := cl.pools[string(in.CACertificatesPEM)]
	if !ok {
		var err error
		if pool, err = parseCABundle(in.CACertificatesPEM); err != nil {
			cl.log.Warn("HTTPS client CA bundle is unusable: AllowValidOnly listeners refuse every handshake, "+
				"AllowInsecureFallback ones admit every client unverified", "port", port, "hostname", hostname, "err", err)
		}
		cl.pools[string(in.CACertificatesPEM)] = pool
	}
	cv.pool = pool
	return cv
}

func (cl *certLoader) parse(c *spokeconfig.Certificate) (*tls.Certificate, error) {
	certPEM, keyPEM := c.CertPEM, c.KeyPEM
	if c.Local {
		if cl.local == nil {
			return nil, errors.New("the Secret is local to this cluster and this spoke cannot read local Secrets")
		}
		var err error
		if certPEM, keyPEM, err = cl.local(c.Namespace, c.Name); err != nil {
			return nil, fmt.Errorf("reading the local Secret: %w", err)
		}
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("tls.crt or tls.key is missing")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// (crypto/tls's errors name what is wrong, never the key's bytes.)
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

// buildTLS builds an HTTPS port's listeners. It never fails: an unusable certificate is skipped (and logged), and a
// listener left without one stays in the lookup so that handshakes for its hostnames fail instead of falling through
// to a less specific listener.
func buildTLS(p *spokeconfig.Port, opts Options, cl *certLoader) *tlsPort {
	tp := &tlsPort{exact: map[string]*tlsListener{}}
	for i := range p.TLS.Listeners {
		in := &p.TLS.Listeners[i]
		l := &tlsListener{hostname: in.Hostname}
		if in.ClientValidation != nil {
			l.cv = cl.clientValidation(in.ClientValidation, p.Port, in.Hostname)
		}
		for j := range in.Certificates {
			if cert := cl.load(&in.Certificates[j]); cert != nil {
				l.certs = append(l.certs, cert)
			}
		}
		if len(l.certs) == 0 {
			cl.log.Warn("HTTPS listener has no usable certificate; its handshakes fail", "port", p.Port, "hostname", in.Hostname)
		}
		host := strings.ToLower(strings.TrimSuffix(in.Hostname, "."))
		switch {
		case host == "*" || host == "":
			tp.catchAll = l
		case strings.HasPrefix(host, "*."):
			tp.wildcards = append(tp.wildcards, tlsWildcard{suffix: host[1:], l: l})
		default:
			tp.exact[host] = l
		}
	}
	sort.SliceStable(tp.wildcards, func(a, b int) bool { return len(tp.wildcards[a].suffix) > len(tp.wildcards[b].suffix) })
	return tp
}

// tlsConfig is an HTTPS port's TLS configuration: certificates come from the current table at each handshake.
// GetConfigForClient runs for every ClientHello, resumptions included (GetCertificate does not: a resumed session
// presents no certificate), so a session ticket cannot reopen a listener the current table no longer serves. A
// listener with client validation gets a configuration of its own for the handshake (ClientAuth, ClientCAs and
// VerifyConnection are per tls.Config, and the listener is known only from the ClientHello); session tickets stay
// the port's (crypto/tls uses the original configuration's keys when the returned one sets none), and a resumed
// session's client certificate is verified again against the listener the resumption selected.
func (ps *portServer) tlsConfig() *tls.Config {
	conf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: ps.getCertificate,
	}
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		l, err := ps.listenerFor(hello.ServerName)
		if err != nil || l.cv == nil {
			return nil, err
		}
		cv := l.cv
		if cv.pool == nil && !cv.insecureFallback {
			// Fail closed, before any certificate is sent.
			ps.s.stats.ClientCertRefused.Add(1)
			return nil, errClientCAUnusable
		}
		return &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: conf.NextProtos,
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return l.certificate(normaliseHost(hello.ServerName)), nil
			},
			ClientAuth:       tls.RequestClientCert,
			ClientCAs:        cv.pool,
			VerifyConnection: func(cs tls.ConnectionState) error { return ps.verifyClient(cv, &cs) },
		}, nil
	}
	return conf
}

// verifyClient decides, at the end of a handshake on a listener with client validation, whether the client is
// admitted. Nothing about the client's identity is passed on to backends (no header is added).
func (ps *portServer) verifyClient(cv *clientValidation, cs *tls.ConnectionState) error {
	err := cv.verify(cs.PeerCertificates, time.Now())
	if err == nil {
		cv.remember(cs.PeerCertificates[0], true)
		return nil
	}
	if cv.insecureFallback {
		ps.s.stats.ClientCertUnverified.Add(1)
		ps.s.log.Debug("TLS client admitted unverified (AllowInsecureFallback)", "addr", ps.key.addr, "sni", cs.ServerName, "err", err)
		return nil
	}
	ps.s.stats.ClientCertRefused.Add(1)
	return fmt.Errorf("client certificate refused: %w", err)
}

var (
	errNoTLSPort     = errors.New("the port serves no TLS in the current config")
	errNoTLSListener = errors.New("no HTTPS listener for the server name")
	errNoCertificate = errors.New("the HTTPS listener has no usable certificate")
)

// listenerFor returns the current table's listener for a ClientHello's server name, or why there is none to serve.
func (ps *portServer) listenerFor(serverName string) (*tlsListener, error) {
	t := ps.s.table.Load()
	if t == nil {
		return nil, errNoTLSPort
	}
	pt := t.ports[ps.key.port]
	if pt == nil || pt.tls == nil {
		return nil, errNoTLSPort
	}
	l := pt.tls.lookup(normaliseHost(serverName))
	if l == nil {
		return nil, errNoTLSListener
	}
	if len(l.certs) == 0 {
		return nil, errNoCertificate
	}
	return l, nil
}

func (ps *portServer) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	l, err := ps.listenerFor(hello.ServerName)
	if err != nil {
		return nil, err
	}
	return l.certificate(normaliseHost(hello.ServerName)), nil
}

// handshake terminates TLS on c's raw connection within Limits.TLSHandshakeTimeout, on the connection's goroutine. On
// success it returns the TLS connection, with its deadlines cleared, and its state.
func (ps *portServer) handshake(c *h1Conn) (*tls.Conn, *tls.ConnectionState, bool) {
	tc := tls.Server(c.raw, ps.tlsConf)
	tc.SetDeadline(time.Now().Add(ps.s.opts.Limits.TLSHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		ps.s.stats.TLSHandshakeErrors.Add(1)
		// A cleartext HTTP request on an HTTPS port is told so (as net/http does) instead of seeing a bare close.
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
			const msg = "client sent an HTTP request to an HTTPS port\n"
			re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(re.Conn, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"+
				"Content-Length: "+strconv.Itoa(len(msg))+"\r\n\r\n"+msg)
		}
		ps.s.log.Debug("TLS handshake", "addr", ps.key.addr, "remote", c.raw.RemoteAddr().String(), "err", err)
		return nil, nil, false
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	return tc, &st, true
}

// looksLikeHTTP reports whether a TLS record header's five bytes are the start of a cleartext HTTP/1 request.
func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE", "TRACE":
		return true
	}
	return false
}

// misdirected reports whether a request on a TLS connection names (by Host) another HTTPS listener than the one its
// connection's SNI selected: such a request must be answered 421 (RFC 9110 §15.5.20), as a client that reuses a
// connection for another host name would otherwise be served with the wrong listener's certificate and routes, and
// would bypass the Host's listener's client validation (the handshake validated the client for the SNI's listener
// only: another listener, whatever its validation, is another listener). It is also misdirected when the SNI's
// listener requires a valid client certificate (AllowValidOnly) and the connection, opened under an earlier table,
// presented none or one that does not verify against the current CA bundle: the client retries on a new connection,
// whose handshake applies the current validation. (Verified once per connection and table, see
// clientValidation.verified; an Apply that keeps the bundle keeps the connections.)
func (pt *portTable) misdirected(r *http.Request, host string) bool {
	if pt.tls == nil || r.TLS == nil {
		return false
	}
	l := pt.tls.lookup(normaliseHost(r.TLS.ServerName))
	if l != pt.tls.lookup(host) {
		return true
	}
	return l != nil && l.cv != nil && !l.cv.insecureFallback && !l.cv.admits(r.TLS.PeerCertificates)
}

// Reload rebuilds the table from the last applied config and swaps it in, as Apply does: for when a certificate's
// local Secret changed (Options.LocalSecret now returns something else). Without an applied config, or when that
// config has no local certificates, it does nothing.
func (s *Server) Reload() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.lastCfg == nil || !hasLocalCertificates(s.lastCfg) {
		return nil
	}
	return s.applyLocked(s.lastCfg)
}

func hasLocalCertificates(cfg *spokeconfig.SpokeConfig) bool {
	for _, p := range cfg.Ports {
		if p.TLS == nil {
			continue
		}
		for _, l := range p.TLS.Listeners {
			for _, c := range l.Certificates {
				if c.Local {
					return true
				}
			}
		}
	}
	return false
}

// An HTTP/2 connection over TLS reaches net/http as the *tls.Conn itself, which cannot be wrapped like an h2c one to
// hold a read deadline until its first request headers; instead a timer closes it unless a request has reached the
// handler by then (net/http calls the handler once a request's headers are complete).
type headerDeadlineKey struct{}

type headerDeadline struct {
	seen  atomic.Bool
	timer *time.Timer
}

// withHeaderDeadline arms the timer for one connection (raw is closed, not the TLS connection: a TLS close may wait
// on a write).
func withHeaderDeadline(ctx context.Context, raw interface{ Close() error }, d time.Duration) context.Context {
	hd := &headerDeadline{}
	hd.timer = time.AfterFunc(d, func() {
		if !hd.seen.Load() {
			raw.Close()
		}
	})
	return context.WithValue(ctx, headerDeadlineKey{}, hd)
}

// firstHeadersSeen disarms a connection's header timer at its first request.
func firstHeadersSeen(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			if hd, ok := r.Context().Value(headerDeadlineKey{}).(*headerDeadline); ok && !hd.seen.Load() {
				hd.seen.Store(true)
				hd.timer.Stop()
			}
		}
		h.ServeHTTP(w, r)
	})
}

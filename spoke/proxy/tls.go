package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
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
	return &certLoader{local: opts.LocalSecret, log: log.With("component", "proxy"), parsed: map[certKey]*tls.Certificate{}}
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
// presents no certificate), so a session ticket cannot reopen a listener the current table no longer serves.
func (ps *portServer) tlsConfig() *tls.Config {
	conf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: ps.getCertificate,
	}
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		_, err := ps.listenerFor(hello.ServerName)
		return nil, err
	}
	return conf
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
// connection for another host name would otherwise be served with the wrong listener's certificate and routes.
func (pt *portTable) misdirected(r *http.Request, host string) bool {
	if pt.tls == nil || r.TLS == nil {
		return false
	}
	return pt.tls.lookup(normaliseHost(r.TLS.ServerName)) != pt.tls.lookup(host)
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

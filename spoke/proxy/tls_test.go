package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// gatewayCA issues serving certificates for the HTTPS tests; each names itself in its CommonName so a client can tell
// which one the handshake chose.
type gatewayCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial atomic.Int64
}

func newGatewayCA(t *testing.T) *gatewayCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &gatewayCA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.serial.Store(1)
	return ca
}

// issue returns tls.crt and tls.key of a certificate named cn, valid for dnsNames.
func (ca *gatewayCA) issue(t *testing.T, cn string, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		DNSNames: dnsNames, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// inline is a certificate applied at the hub, carried in the config.
func (ca *gatewayCA) inline(t *testing.T, name string, dnsNames ...string) spokeconfig.Certificate {
	c, k := ca.issue(t, name, dnsNames...)
	return spokeconfig.Certificate{Namespace: "ns", Name: name, CertPEM: c, KeyPEM: k}
}

func listener(hostname string, certs ...spokeconfig.Certificate) spokeconfig.TLSListener {
	return spokeconfig.TLSListener{Hostname: hostname, Certificates: certs}
}

// tlsBackend answers with its name, the Host and X-Forwarded-Proto it was sent.
func tlsBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// httpsPort is an HTTPS port whose vhosts (hostname → backend ID) each forward everything to their backend.
func httpsPort(p int32, vhosts map[string]string, listeners ...spokeconfig.TLSListener) spokeconfig.Port {
	pt := spokeconfig.Port{Port: p, Protocol: spokeconfig.ProtocolHTTPS, BindAddress: "127.0.0.1",
		TLS: &spokeconfig.PortTLS{Listeners: listeners}}
	for _, h := range slices.Sorted(maps.Keys(vhosts)) {
		pt.VirtualHosts = append(pt.VirtualHosts, spokeconfig.VirtualHost{Hostname: h,
			Routes: []spokeconfig.Route{forwardRoute("r-"+h, "/", spokeconfig.WeightedBackend{BackendID: vhosts[h], Weight: 1})}})
	}
	return pt
}

func tlsConfigFor(rev int64, p spokeconfig.Port, backends map[string]string) *spokeconfig.SpokeConfig {
	cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: rev, Ports: []spokeconfig.Port{p}}
	for _, id := range slices.Sorted(maps.Keys(backends)) {
		cfg.Backends = append(cfg.Backends, spokeconfig.Backend{ID: id, Namespace: "ns", Name: id, Port: 80,
			Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: backends[id], Ready: true}}})
	}
	return cfg
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func httpsServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Cluster = "c"
	opts.DrainTimeout = 2 * time.Second
	opts.DisableHealthChecks = true
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

// handshakeCN opens a TLS connection with the given SNI (none when "") and returns the CommonName of the certificate
// served, or the handshake's error.
func handshakeCN(addr, sni string, roots *x509.CertPool) (string, error) {
	conf := &tls.Config{RootCAs: roots, ServerName: sni, NextProtos: []string{"http/1.1"}}
	if sni == "" {
		// Without ServerName crypto/tls sends no SNI; verify the chain by hand then.
		conf.InsecureSkipVerify = true
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// httpsClient sends to addr whatever the URL says, with the given SNI and ALPN.
func httpsClient(addr, sni string, roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: sni},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		DisableCompression: true,
	}
	tr.Protocols = &http.Protocols{}
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func doHost(t *testing.T, c *http.Client, host, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://"+host+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET https://%s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHTTPSCertificateSelection(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	port := httpsPort(p, map[string]string{"*": "b"},
		listener("*", ca.inline(t, "star", "fallback.test")),
		listener("*.b.example.com", ca.inline(t, "deep-wild", "*.b.example.com")),
		listener("*.example.com", ca.inline(t, "wild", "*.example.com")),
		listener("a.example.com", ca.inline(t, "exact-a", "a.example.com")),
		// The first certificate valid for the SNI, not the first listed.
		listener("x.example.com", ca.inline(t, "x-other", "other.example.net"), ca.inline(t, "x-valid", "x.example.com")),
		// None valid: the first.
		listener("y.example.com", ca.inline(t, "y-first", "nope.test"), ca.inline(t, "y-second", "nope2.test")),
	)
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]string{
		"a.example.com":   "exact-a",
		"A.Example.COM":   "exact-a",
		"z.example.com":   "wild",
		"q.b.example.com": "deep-wild",
		"b.example.com":   "wild",
		"example.com":     "star",
		"unrelated.test":  "star",
		"":                "star",
		"x.example.com":   "x-valid",
	} {
		// Hosts the chosen certificate does not cover fail verification; what matters here is which was served.
		got, err := handshakeCN(addr, sni, nil)
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ce) {
			got = ce.UnverifiedCertificates[0].Subject.CommonName
		} else if err != nil {
			t.Errorf("SNI %q: %v", sni, err)
			continue
		}
		if got != want {
			t.Errorf("SNI %q: served %q, want %q", sni, got, want)
		}
	}
	conf := &tls.Config{InsecureSkipVerify: true, ServerName: "y.example.com"}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "y-first" {
		t.Errorf("SNI y.example.com with no valid certificate: served %q, want the first, y-first", cn)
	}
	c.Close()
	if cn, err := handshakeCN(addr, "a.example.com", ca.pool); err != nil || cn != "exact-a" {
		t.Errorf("verified handshake for a.example.com: %q, %v", cn, err)
	}

	// Without a "*" listener, an SNI no listener matches (and no SNI at all) fails the handshake.
	port = httpsPort(p, map[string]string{"*": "b"}, listener("a.example.com", ca.inline(t, "exact-a", "a.example.com")))
	if err := s.Apply(tlsConfigFor(2, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"b.example.com", ""} {
		if cn, err := handshakeCN(addr, sni, nil); err == nil {
			t.Errorf("SNI %q without a matching listener: handshake served %q, want it to fail", sni, cn)
		}
	}
	if cn, err := handshakeCN(addr, "a.example.com", ca.pool); err != nil || cn != "exact-a" {
		t.Errorf("a.example.com after the second Apply: %q, %v", cn, err)
	}
	if n := s.Stats().TLSHandshakeErrors.Load(); n < 2 {
		t.Errorf("TLSHandshakeErrors = %d, want at least 2", n)
	}
}

func TestHTTPSALPNRoutingAndScheme(t *testing.T) {
	ca := newGatewayCA(t)
	beA, beB := tlsBackend(t, "A"), tlsBackend(t, "B")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	port := httpsPort(p, map[string]string{"a.example.com": "a", "b.example.com": "b"},
		listener("*.example.com", ca.inline(t, "wild", "*.example.com")))
	redirect := spokeconfig.Route{Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: "redir"},
		Match:  spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/moved"},
		Action: spokeconfig.Action{Redirect: &spokeconfig.Redirect{Hostname: "b.example.com"}}}
	port.VirtualHosts[0].Routes = append([]spokeconfig.Route{redirect}, port.VirtualHosts[0].Routes...)
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"a": addrOf(beA), "b": addrOf(beB)})); err != nil {
		t.Fatal(err)
	}
	for _, h2 := range []bool{false, true} {
		for host, want := range map[string]string{"a.example.com": "A", "b.example.com": "B"} {
			c := httpsClient(addr, host, ca.pool, h2)
			resp, body := doHost(t, c, host, "/x")
			wantProto := map[bool]int{false: 1, true: 2}[h2]
			if resp.StatusCode != 200 || body != want || resp.ProtoMajor != wantProto {
				t.Errorf("h2=%v %s: %d %q over HTTP/%d, want 200 %q over HTTP/%d", h2, host, resp.StatusCode, body, resp.ProtoMajor, want, wantProto)
			}
			if got := resp.Header.Get("X-Seen-Proto"); got != "https" {
				t.Errorf("h2=%v %s: backend saw X-Forwarded-Proto %q, want https", h2, host, got)
			}
			if got := resp.Header.Get("X-Seen-Host"); got != host {
				t.Errorf("h2=%v %s: backend saw Host %q", h2, host, got)
			}
			// A redirect that names no scheme keeps the request's: https.
			resp, _ = doHost(t, c, "a.example.com", "/moved/y")
			if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || loc != fmt.Sprintf("https://b.example.com:%d/moved/y", p) {
				t.Errorf("h2=%v redirect: %d Location %q, want 302 https://b.example.com:%d/moved/y", h2, resp.StatusCode, loc, p)
			}
			c.CloseIdleConnections()
		}
	}
	// Every connection, h2 ones handed to the HTTP/2 server included, leaves the port's count when it closes.
	s.mu.Lock()
	var ps *portServer
	for _, v := range s.ports {
		ps = v
	}
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for ps.open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ps.open.Load(); n != 0 {
		t.Errorf("open connections after every client closed: %d, want 0", n)
	}
}

// TestHTTPSMisdirectedRequests follows the Gateway API conformance test HTTPRouteHTTPSListenerDetectMisdirectedRequests:
// a request whose Host selects another listener than its connection's SNI did is answered 421, over h2 and HTTP/1.1.
func TestHTTPSMisdirectedRequests(t *testing.T) {
	ca := newGatewayCA(t)
	be1, be2, be3 := tlsBackend(t, "v1"), tlsBackend(t, "v2"), tlsBackend(t, "v3")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	cert := ca.inline(t, "conformance", "*.wildcard.org", "example.org", "second-example.org", "unknown-example.org")
	port := httpsPort(p, map[string]string{"example.org": "v1", "second-example.org": "v2", "*.wildcard.org": "v3",
		"fourth-example.wildcard.org": "v1"},
		listener("*", cert), listener("*.wildcard.org", cert), listener("fourth-example.wildcard.org", cert),
		listener("second-example.org", cert))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"v1": addrOf(be1), "v2": addrOf(be2), "v3": addrOf(be3)})); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		sni, host string
		status    int
		backend   string
	}{
		{"example.org", "example.org", 200, "v1"},
		{"example.org", "second-example.org", 421, ""},
		{"example.org", "unknown-example.org", 404, ""},
		{"second-example.org", "second-example.org", 200, "v2"},
		{"second-example.org", "example.org", 421, ""},
		{"second-example.org", "unknown-example.org", 421, ""},
		{"third-example.wildcard.org", "third-example.wildcard.org", 200, "v3"},
		{"third-example.wildcard.org", "fith-example.wildcard.org", 200, "v3"},
		{"third-example.wildcard.org", "fourth-example.wildcard.org", 421, ""},
		{"third-example.wildcard.org", "second-example.org", 421, ""},
		{"third-example.wildcard.org", "unknown-example.org", 421, ""},
		{"fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, "v1"},
		{"fourth-example.wildcard.org", "fith-example.wildcard.org", 421, ""},
		{"unknown-example.org", "example.org", 200, "v1"},
		{"unknown-example.org", "unknown-example.org", 404, ""},
	}
	for _, h2 := range []bool{true, false} {
		for _, tc := range cases {
			c := httpsClient(addr, tc.sni, nil, h2)
			c.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
			resp, _ := doHost(t, c, tc.host, "/detect-misdirected-requests")
			if resp.StatusCode != tc.status || resp.Header.Get("X-Backend") != tc.backend {
				t.Errorf("h2=%v SNI %s Host %s: %d from %q, want %d from %q", h2, tc.sni, tc.host, resp.StatusCode,
					resp.Header.Get("X-Backend"), tc.status, tc.backend)
			}
			c.CloseIdleConnections()
		}
	}
	if s.Stats().Misdirected.Load() == 0 {
		t.Error("Misdirected not counted")
	}
}

func TestHTTPSRotationKeepsOpenConnections(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	apply := func(rev int64, cn string) {
		t.Helper()
		port := httpsPort(p, map[string]string{"*": "b"}, listener("*", ca.inline(t, cn, "a.example.com")))
		if err := s.Apply(tlsConfigFor(rev, port, map[string]string{"b": addrOf(be)})); err != nil {
			t.Fatal(err)
		}
	}
	apply(1, "old")
	clients := map[bool]*http.Client{false: httpsClient(addr, "a.example.com", ca.pool, false), true: httpsClient(addr, "a.example.com", ca.pool, true)}
	for h2, c := range clients {
		resp, body := doHost(t, c, "a.example.com", "/")
		if resp.StatusCode != 200 || body != "b" || resp.TLS.PeerCertificates[0].Subject.CommonName != "old" {
			t.Fatalf("h2=%v before rotation: %d %q", h2, resp.StatusCode, body)
		}
	}
	apply(2, "new")
	if cn, err := handshakeCN(addr, "a.example.com", ca.pool); err != nil || cn != "new" {
		t.Errorf("new handshake after the rotation: %q, %v; want the new certificate", cn, err)
	}
	for h2, c := range clients {
		// The pooled connection is still open and still the old handshake's.
		resp, body := doHost(t, c, "a.example.com", "/")
		if resp.StatusCode != 200 || body != "b" {
			t.Errorf("h2=%v on the open connection after rotation: %d %q", h2, resp.StatusCode, body)
		}
		if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "old" {
			t.Errorf("h2=%v: request after rotation went over a new connection (certificate %q): the open one was dropped", h2, cn)
		}
		c.CloseIdleConnections()
		resp, _ = doHost(t, c, "a.example.com", "/")
		if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "new" {
			t.Errorf("h2=%v: new connection served %q, want new", h2, cn)
		}
		c.CloseIdleConnections()
	}
}

func TestHTTPSLocalCertificatesAndReload(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	var mu sync.Mutex
	secrets := map[string][2][]byte{}
	var calls atomic.Int64
	logs := &logBuffer{}
	s := httpsServer(t, Options{
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		LocalSecret: func(ns, name string) ([]byte, []byte, error) {
			calls.Add(1)
			mu.Lock()
			defer mu.Unlock()
			kv, ok := secrets[ns+"/"+name]
			if !ok {
				return nil, nil, fmt.Errorf("secret %s/%s not found", ns, name)
			}
			return kv[0], kv[1], nil
		},
	})
	local := spokeconfig.Certificate{Namespace: "gw", Name: "local-cert", Local: true}
	brokenCert, _ := ca.issue(t, "broken", "broken.example.com")
	_, otherKey := ca.issue(t, "other", "other.example.com")
	broken := spokeconfig.Certificate{Namespace: "gw", Name: "mismatched-key", CertPEM: brokenCert, KeyPEM: otherKey}
	port := httpsPort(p, map[string]string{"*": "b"},
		// The local certificate serves two listeners: read once per build.
		listener("local.example.com", local), listener("*.local.example.com", local),
		listener("broken.example.com", broken),
		listener("*", ca.inline(t, "star", "star.example.com")))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatalf("a missing local Secret and an unusable certificate must not fail Apply: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("LocalSecret called %d times for one Secret in one build, want 1", n)
	}
	for _, sni := range []string{"local.example.com", "broken.example.com"} {
		if cn, err := handshakeCN(addr, sni, nil); err == nil {
			t.Errorf("SNI %s, whose listener has no usable certificate: served %q, want a failed handshake", sni, cn)
		}
	}
	if cn, err := handshakeCN(addr, "star.example.com", ca.pool); err != nil || cn != "star" {
		t.Errorf("other listeners keep working: %q, %v", cn, err)
	}
	out := logs.String()
	for _, want := range []string{"secret=gw/local-cert ", "secret=gw/mismatched-key "} {
		if strings.Count(out, want) != 1 {
			t.Errorf("log names %s %d times, want once per build:\n%s", want, strings.Count(out, want), out)
		}
	}
	if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, string(otherKey[40:80])) {
		t.Errorf("log carries key material:\n%s", out)
	}

	setSecret := func(cn string) {
		c, k := ca.issue(t, cn, "local.example.com", "*.local.example.com")
		mu.Lock()
		secrets["gw/local-cert"] = [2][]byte{c, k}
		mu.Unlock()
	}
	setSecret("local-1")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	c1 := httpsClient(addr, "local.example.com", ca.pool, false)
	resp, body := doHost(t, c1, "local.example.com", "/")
	if resp.StatusCode != 200 || body != "b" || resp.TLS.PeerCertificates[0].Subject.CommonName != "local-1" {
		t.Fatalf("after Reload: %d %q", resp.StatusCode, body)
	}
	if cn, err := handshakeCN(addr, "w.local.example.com", ca.pool); err != nil || cn != "local-1" {
		t.Errorf("wildcard listener sharing the local Secret: %q, %v", cn, err)
	}
	setSecret("local-2")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn, err := handshakeCN(addr, "local.example.com", ca.pool); err != nil || cn != "local-2" {
		t.Errorf("after the Secret changed and Reload: %q, %v; want local-2", cn, err)
	}
	resp, body = doHost(t, c1, "local.example.com", "/")
	if resp.StatusCode != 200 || body != "b" || resp.TLS.PeerCertificates[0].Subject.CommonName != "local-1" {
		t.Errorf("the connection opened before Reload: %d %q", resp.StatusCode, body)
	}
	c1.CloseIdleConnections()
	if s.Table().Revision != 1 {
		t.Errorf("Reload changed the revision to %d", s.Table().Revision)
	}

	// Without LocalSecret, local certificates are unusable, and still no NACK.
	s2 := httpsServer(t, Options{})
	p2 := freePort(t)
	port2 := httpsPort(p2, map[string]string{"*": "b"}, listener("*", local))
	if err := s2.Apply(tlsConfigFor(1, port2, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	if cn, err := handshakeCN(fmt.Sprintf("127.0.0.1:%d", p2), "local.example.com", nil); err == nil {
		t.Errorf("local certificate without LocalSecret served %q", cn)
	}
	if err := s2.Reload(); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPSHandshakeTimeout(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{Limits: Limits{TLSHandshakeTimeout: 200 * time.Millisecond}})
	port := httpsPort(p, map[string]string{"*": "b"}, listener("*", ca.inline(t, "star", "a.example.com")))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	for name, send := range map[string][]byte{
		"silent": nil,
		// A ClientHello record header announcing more than is ever sent.
		"partial hello": {0x16, 0x03, 0x01, 0x02, 0x00, 0x01},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(send)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, c)
		took := time.Since(start)
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: connection still open after 5s, want it closed after the 200ms handshake timeout", name)
		} else if took < 150*time.Millisecond {
			t.Errorf("%s: closed after %v, before the handshake timeout", name, took)
		}
	}
	// Cleartext HTTP on the HTTPS port is told so.
	if out := exchangeRaw(t, addr, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 400 ") {
		t.Errorf("cleartext request on the HTTPS port: %q, want 400", out)
	}
	// Meanwhile and afterwards, handshakes that do finish are served: the slow ones never held the accept loop.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if cn, err := handshakeCN(addr, "a.example.com", ca.pool); err != nil || cn != "star" {
		t.Errorf("handshake while a silent client waits: %q, %v", cn, err)
	}
}

func TestHTTPSStrictHTTP1(t *testing.T) {
	ca := newGatewayCA(t)
	rb := newRawBackend(t, okBackend)
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	port := httpsPort(p, map[string]string{"*": "b"}, listener("*", ca.inline(t, "star", "a.example.com")))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": rb.ln.Addr().String()})); err != nil {
		t.Fatal(err)
	}
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	for name, raw := range map[string]string{
		"CL space before colon":    "POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length : 5\r\n\r\nhello" + smuggled,
		"CL.TE":                    "POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"h2 preface over http/1.1": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "a.example.com", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, raw)
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		out := string(b)
		if !strings.HasPrefix(out, "HTTP/1.1 4") && !strings.HasPrefix(out, "HTTP/1.1 5") || strings.Count(out, "HTTP/1.1 ") != 1 {
			t.Errorf("%s over TLS: answer %q, want exactly one 4xx/5xx refusal", name, out)
		}
	}
	if got := rb.received(); got != "" {
		t.Fatalf("refused requests reached the backend:\n%s", got)
	}
	// A valid request over the same path works, and the backend is told https.
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "a.example.com", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("valid request over TLS: %v %v", resp, err)
	}
	if got := rawField(rb.received(), "X-Forwarded-Proto"); got != "https" {
		t.Errorf("backend saw X-Forwarded-Proto %q, want https", got)
	}
}

func TestHTTPSPortSwitchesProtocol(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	backends := map[string]string{"b": addrOf(be)}
	plainCfg := func(rev int64) *spokeconfig.SpokeConfig {
		pt := httpsPort(p, map[string]string{"*": "b"})
		pt.Protocol, pt.TLS = spokeconfig.ProtocolHTTP, nil
		return tlsConfigFor(rev, pt, backends)
	}
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	plainOK := func() bool {
		resp, err := plain.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	tlsOK := func() bool {
		cn, err := handshakeCN(addr, "a.example.com", ca.pool)
		return err == nil && cn == "star"
	}
	if err := s.Apply(plainCfg(1)); err != nil {
		t.Fatal(err)
	}
	if !plainOK() || tlsOK() {
		t.Fatalf("HTTP port: plain %v, TLS %v", plainOK(), tlsOK())
	}
	if err := s.Apply(tlsConfigFor(2, httpsPort(p, map[string]string{"*": "b"}, listener("*", ca.inline(t, "star", "a.example.com"))), backends)); err != nil {
		t.Fatal(err)
	}
	if !tlsOK() || plainOK() {
		t.Fatalf("port switched to HTTPS: TLS %v, plain %v", tlsOK(), plainOK())
	}
	c := httpsClient(addr, "a.example.com", ca.pool, true)
	if resp, body := doHost(t, c, "a.example.com", "/"); resp.StatusCode != 200 || body != "b" {
		t.Fatalf("h2 on the switched port: %d %q", resp.StatusCode, body)
	}
	c.CloseIdleConnections()
	if err := s.Apply(plainCfg(3)); err != nil {
		t.Fatal(err)
	}
	if !plainOK() || tlsOK() {
		t.Fatalf("port switched back to HTTP: plain %v, TLS %v", plainOK(), tlsOK())
	}
	s.mu.Lock()
	n := len(s.ports)
	s.mu.Unlock()
	if n != 1 {
		t.Errorf("%d port servers after switching back and forth, want 1", n)
	}
}

// An h2 connection over TLS, like an h2c one, must send its first request headers within RequestHeaderTimeout; once
// it has, the keep-alive idle timeout governs it.
func TestHTTPSH2FirstHeadersTimeout(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{Limits: Limits{RequestHeaderTimeout: 300 * time.Millisecond}})
	port := httpsPort(p, map[string]string{"*": "b"}, listener("*", ca.inline(t, "star", "a.example.com")))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "a.example.com", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if np := c.ConnectionState().NegotiatedProtocol; np != "h2" {
		t.Fatalf("ALPN %q, want h2", np)
	}
	io.WriteString(c, http2.ClientPreface)
	http2.NewFramer(c, c).WriteSettings()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if el := time.Since(start); errors.As(err, &ne) && ne.Timeout() || el > 3*time.Second {
		t.Fatalf("h2 connection without a request still open after %v (header timeout 300ms)", el)
	}

	// A connection that sent its request in time outlives the header timeout.
	cl := httpsClient(addr, "a.example.com", ca.pool, true)
	defer cl.CloseIdleConnections()
	resp, _ := doHost(t, cl, "a.example.com", "/")
	first := resp.TLS.PeerCertificates[0].SerialNumber
	time.Sleep(500 * time.Millisecond)
	var reused bool
	req, _ := http.NewRequest("GET", "https://a.example.com/", nil)
	req = req.WithContext(httptraceGotConn(req.Context(), &reused))
	resp, err = cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !reused || resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first) != 0 {
		t.Errorf("second request after the header timeout: status %d, connection reused %v; want the first connection kept", resp.StatusCode, reused)
	}
}

func httptraceGotConn(ctx context.Context, reused *bool) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { *reused = i.Reused }})
}

// A port switching protocol must give its socket up before binding it again; when another port of the same config
// cannot be bound, Apply fails and the switched port serves its old protocol again.
func TestHTTPSPortSwitchRolledBackOnBindFailure(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := int32(busy.Addr().(*net.TCPAddr).Port)
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	backends := map[string]string{"b": addrOf(be)}
	plainPort := func(n int32) spokeconfig.Port {
		pt := httpsPort(n, map[string]string{"*": "b"})
		pt.Protocol, pt.TLS = spokeconfig.ProtocolHTTP, nil
		return pt
	}
	if err := s.Apply(tlsConfigFor(1, plainPort(p), backends)); err != nil {
		t.Fatal(err)
	}
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 4 {
		cfg := tlsConfigFor(int64(2+i), httpsPort(p, map[string]string{"*": "b"}, listener("*", ca.inline(t, "star", "a.example.com"))), backends)
		cfg.Ports = append(cfg.Ports, plainPort(busyPort))
		if err := s.Apply(cfg); err == nil {
			t.Fatal("Apply with a port that cannot be bound succeeded")
		}
		resp, err := plain.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("attempt %d: the port no longer serves HTTP after the failed switch: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || s.Table().Revision != 1 {
			t.Fatalf("attempt %d: %d, table revision %d; want 200 from revision 1", i, resp.StatusCode, s.Table().Revision)
		}
		if _, err := handshakeCN(addr, "a.example.com", ca.pool); err == nil {
			t.Fatalf("attempt %d: the port serves TLS after the failed switch", i)
		}
	}
}

// A session ticket must not reopen a listener the current table no longer serves: resumption skips the certificate,
// so the listener is checked for every ClientHello.
func TestHTTPSResumptionChecksTheCurrentListener(t *testing.T) {
	ca := newGatewayCA(t)
	be := tlsBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	cfg := func(rev int64, listeners ...spokeconfig.TLSListener) *spokeconfig.SpokeConfig {
		return tlsConfigFor(rev, httpsPort(p, map[string]string{"*": "b"}, listeners...), map[string]string{"b": addrOf(be)})
	}
	a := listener("a.example.com", ca.inline(t, "exact-a", "a.example.com"))
	if err := s.Apply(cfg(1, a, listener("b.example.com", ca.inline(t, "exact-b", "b.example.com")))); err != nil {
		t.Fatal(err)
	}
	cache := tls.NewLRUClientSessionCache(4)
	dial := func() (*tls.Conn, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "a.example.com",
			NextProtos: []string{"http/1.1"}, ClientSessionCache: cache})
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// A request and its answer: the client reads the ticket sent after the handshake.
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			c.Close()
			return nil, fmt.Errorf("request: %v %v", resp, err)
		}
		return c, nil
	}
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = dial()
	if err != nil {
		t.Fatal(err)
	}
	if !c.ConnectionState().DidResume {
		t.Fatal("second connection did not resume: the test proves nothing")
	}
	c.Close()
	// a.example.com's listener goes; b's stays.
	if err := s.Apply(cfg(2, listener("b.example.com", ca.inline(t, "exact-b", "b.example.com")))); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatalf("a resumed session reopened a removed listener (resumed %v)", c.ConnectionState().DidResume)
	}
}

package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// lockedBuffer is a log sink safe for the proxy's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// backendCA is a CA for backend certificates, with its PEM.
type backendCA struct {
	*testPKI
	pem []byte
}

func newBackendCA(t *testing.T) *backendCA {
	p := newTestPKI(t)
	return &backendCA{testPKI: p, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw})}
}

func (c *backendCA) leaf(t *testing.T, dns []string, uris ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: "backend"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: dns,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// originBackend is an HTTPS backend presenting cert; it answers with the SNI it saw and counts its connections.
type originBackend struct {
	srv   *httptest.Server
	conns atomic.Int64
}

func newOriginBackend(t *testing.T, cert tls.Certificate) *originBackend {
	t.Helper()
	tb := &originBackend{}
	tb.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-SNI", r.TLS.ServerName)
		w.Header().Set("X-Seen-Fedgate", r.Header.Get(HeaderBackend)+r.Header.Get(HeaderEndpoint))
		w.Header().Set("X-Seen-ALPN", r.TLS.NegotiatedProtocol)
		fmt.Fprint(w, "tls-ok")
	}))
	tb.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	tb.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			tb.conns.Add(1)
		}
	}
	tb.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tb.srv.StartTLS()
	t.Cleanup(tb.srv.Close)
	return tb
}

func tlsBackendConfig(id, addr, cluster string, bt *spokeconfig.BackendTLS) spokeconfig.Backend {
	b := ewBackend(id, addr, cluster)
	b.TLS = bt
	return b
}

func TestBackendTLSOrigination(t *testing.T) {
	ca, otherCA := newBackendCA(t), newBackendCA(t)
	const uri = "spiffe://cluster.local/ns/ns/sa/svc"
	// Each failing backend has an endpoint of its own: outlier detection keeps one state per address, which the
	// failures eject.
	leaf := ca.leaf(t, []string{"a.example.com"}, uri)
	addr := newOriginBackend(t, leaf).srv.Listener.Addr().String()
	addrs := map[string]string{}
	for _, n := range []string{"wronghost", "otherca", "sanmiss", "sanotherca"} {
		addrs[n] = newOriginBackend(t, leaf).srv.Listener.Addr().String()
	}
	logs := &lockedBuffer{}
	s := New(Options{Cluster: "c1", DrainTimeout: 5 * time.Second, DisableHealthChecks: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	t.Cleanup(func() { s.Close() })

	backends := []spokeconfig.Backend{
		tlsBackendConfig("ns/ok:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: ca.pem}),
		tlsBackendConfig("ns/wronghost:443", addrs["wronghost"], "c1", &spokeconfig.BackendTLS{Hostname: "b.example.com", CACertificatesPEM: ca.pem}),
		tlsBackendConfig("ns/otherca:443", addrs["otherca"], "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: otherCA.pem}),
		tlsBackendConfig("ns/uri:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "sni.example.com", CACertificatesPEM: ca.pem,
			SubjectAltNames: []spokeconfig.SubjectAltName{{Type: "URI", Value: "spiffe://other/x"}, {Type: "URI", Value: uri}}}),
		tlsBackendConfig("ns/dns:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "sni.example.com", CACertificatesPEM: ca.pem,
			SubjectAltNames: []spokeconfig.SubjectAltName{{Type: "Hostname", Value: "a.example.com"}}}),
		tlsBackendConfig("ns/sanmiss:443", addrs["sanmiss"], "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: ca.pem,
			SubjectAltNames: []spokeconfig.SubjectAltName{{Type: "Hostname", Value: "b.example.com"}, {Type: "URI", Value: "spiffe://other/x"}}}),
		tlsBackendConfig("ns/sanotherca:443", addrs["sanotherca"], "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: otherCA.pem,
			SubjectAltNames: []spokeconfig.SubjectAltName{{Type: "URI", Value: uri}}}),
		tlsBackendConfig("ns/h2c:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: ca.pem}),
		ewBackend("ns/clear:80", addr, "c1"),
	}
	backends[7].AppProtocol = "kubernetes.io/h2c"
	var routes []spokeconfig.Route
	for _, b := range backends {
		name := strings.TrimPrefix(strings.Split(b.ID, ":")[0], "ns/")
		routes = append(routes, forwardRoute(name, "/"+name+"/", spokeconfig.WeightedBackend{BackendID: b.ID, Weight: 1}))
	}
	pa := freePort(t)
	if err := s.Apply(&spokeconfig.SpokeConfig{Cluster: "c1", Ports: []spokeconfig.Port{port(pa, routes...)}, Backends: backends}); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d/", pa)
	c := &http.Client{}

	for _, tc := range []struct{ path, sni string }{{"ok", "a.example.com"}, {"uri", "sni.example.com"}, {"dns", "sni.example.com"}, {"h2c", "a.example.com"}} {
		resp, body := get(t, c, base+tc.path+"/", nil)
		if resp.StatusCode != 200 || body != "tls-ok" {
			t.Errorf("%s: status %d %q, want 200", tc.path, resp.StatusCode, body)
			continue
		}
		if got := resp.Header.Get("X-Seen-SNI"); got != tc.sni {
			t.Errorf("%s: backend saw SNI %q, want %q", tc.path, got, tc.sni)
		}
		if got := resp.Header.Get("X-Seen-ALPN"); got != "http/1.1" {
			t.Errorf("%s: ALPN %q, want http/1.1", tc.path, got)
		}
	}

	for _, tc := range []struct{ path, id, reason string }{
		{"wronghost", "ns/wronghost:443", "x509: certificate is valid for a.example.com, not b.example.com"},
		{"otherca", "ns/otherca:443", "x509: certificate signed by unknown authority"},
		{"sanmiss", "ns/sanmiss:443", "carries none of the subject alt names"},
		{"sanotherca", "ns/sanotherca:443", "x509: certificate signed by unknown authority"},
	} {
		before := s.Stats().UpstreamErrors.Load()
		resp, body := get(t, c, base+tc.path+"/", nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d %q, want 502", tc.path, resp.StatusCode, body)
		}
		if s.Stats().UpstreamErrors.Load() == before {
			t.Errorf("%s: not counted as an upstream error", tc.path)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "backend="+tc.id) {
				line = l
			}
		}
		t.Log(line)
		if line == "" || !strings.Contains(line, "endpoint="+addrs[tc.path]) || !strings.Contains(line, tc.reason) {
			t.Errorf("%s: log line %q, want backend %s, endpoint %s and %q", tc.path, line, tc.id, addrs[tc.path], tc.reason)
		}
		// A certificate failure is the endpoint's fault: outlier detection hears of it.
		ep := s.Table().backends[tc.id].ready[0]
		if ep.state.Failures.Load() == 0 {
			t.Errorf("%s: no failure counted against the endpoint", tc.path)
		}
	}
}

// TestBackendTLSPoolsNotMixed: connections to one address are pooled apart by TLS identity, cleartext included.
func TestBackendTLSPoolsNotMixed(t *testing.T) {
	ca := newBackendCA(t)
	be := newOriginBackend(t, ca.leaf(t, []string{"a.example.com", "b.example.com"}))
	addr := be.srv.Listener.Addr().String()
	s := New(Options{Cluster: "c1", DrainTimeout: 5 * time.Second, DisableHealthChecks: true, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { s.Close() })
	backends := []spokeconfig.Backend{
		tlsBackendConfig("ns/a:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: ca.pem}),
		tlsBackendConfig("ns/a2:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "a.example.com", CACertificatesPEM: ca.pem}),
		tlsBackendConfig("ns/b:443", addr, "c1", &spokeconfig.BackendTLS{Hostname: "b.example.com", CACertificatesPEM: ca.pem}),
		ewBackend("ns/clear:80", addr, "c1"),
	}
	var routes []spokeconfig.Route
	for _, b := range backends {
		name := strings.TrimPrefix(strings.Split(b.ID, ":")[0], "ns/")
		routes = append(routes, forwardRoute(name, "/"+name+"/", spokeconfig.WeightedBackend{BackendID: b.ID, Weight: 1}))
	}
	pa := freePort(t)
	if err := s.Apply(&spokeconfig.SpokeConfig{Cluster: "c1", Ports: []spokeconfig.Port{port(pa, routes...)}, Backends: backends}); err != nil {
		t.Fatal(err)
	}
	tab := s.Table()
	if tab.backends["ns/a:443"].tls != tab.backends["ns/a2:443"].tls {
		t.Error("backends with the same TLS settings do not share them")
	}
	base := fmt.Sprintf("http://127.0.0.1:%d/", pa)
	c := &http.Client{}
	expect := func(path, sni string, conns int64) {
		t.Helper()
		resp, body := get(t, c, base+path+"/", nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Seen-SNI") != sni {
			t.Errorf("%s: status %d %q SNI %q, want 200 with SNI %q", path, resp.StatusCode, body, resp.Header.Get("X-Seen-SNI"), sni)
		}
		if n := be.conns.Load(); n != conns {
			t.Errorf("after %s: backend has seen %d connections, want %d", path, n, conns)
		}
	}
	expect("a", "a.example.com", 1)
	expect("a", "a.example.com", 1)  // reused
	expect("a2", "a.example.com", 1) // same settings: same pool
	expect("b", "b.example.com", 2)  // another SNI: never a connection made for a.example.com
	expect("a", "a.example.com", 2)

	// Cleartext to the same address: a fresh connection, not one of the TLS ones (the TLS server refuses plain HTTP).
	resp, body := get(t, c, base+"clear/", nil)
	if resp.StatusCode == 200 {
		t.Errorf("cleartext backend on a TLS port answered 200 %q: it rode a pooled TLS connection", body)
	}
	if n := be.conns.Load(); n != 3 {
		t.Errorf("after cleartext: backend has seen %d connections, want 3", n)
	}
	s.localH1.mu.Lock()
	var keys []string
	for k, l := range s.localH1.idle {
		if len(l) > 0 {
			keys = append(keys, fmt.Sprintf("%q", k))
		}
	}
	s.localH1.mu.Unlock()
	if _, ok := s.localH1.idle[addr]; ok && len(s.localH1.idle[addr]) > 0 {
		t.Errorf("a connection sits in the cleartext pool of %s: %v", addr, keys)
	}
	if len(keys) != 2 {
		t.Errorf("idle pools %v, want the two TLS identities", keys)
	}
	// The sweep keeps the TLS pools of endpoints still in the table.
	s.localH1.sweep(time.Now(), s.tableHasEndpoint)
	s.localH1.mu.Lock()
	n := len(s.localH1.idle)
	s.localH1.mu.Unlock()
	if n != 2 {
		t.Errorf("sweep left %d pools, want 2", n)
	}
}

// TestBackendTLSOverEastWest: a request entering cluster a for a TLS backend of cluster b rides the east-west hop
// as before, and b, which owns the endpoint, originates TLS to it.
func TestBackendTLSOverEastWest(t *testing.T) {
	ca := newBackendCA(t)
	be := newOriginBackend(t, ca.leaf(t, []string{"svc.example.com"}))
	addr := be.srv.Listener.Addr().String()
	ewA, _ := net.Listen("tcp", "127.0.0.1:0")
	ewB, _ := net.Listen("tcp", "127.0.0.1:0")
	pa := freePort(t)
	mk := func(cluster string) *Server {
		s := New(Options{Cluster: cluster, DrainTimeout: 5 * time.Second, DisableHealthChecks: true, Logger: slog.New(slog.DiscardHandler)})
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := mk("a"), mk("b")
	go a.ServeEastWest(ewA)
	go b.ServeEastWest(ewB)
	svc := tlsBackendConfig("ns/svc:443", addr, "b", &spokeconfig.BackendTLS{Hostname: "svc.example.com", CACertificatesPEM: ca.pem})
	if err := a.Apply(&spokeconfig.SpokeConfig{
		Cluster:  "a",
		Ports:    []spokeconfig.Port{port(pa, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:443", Weight: 1}))},
		Backends: []spokeconfig.Backend{svc},
		Clusters: []spokeconfig.Cluster{{Name: "b", EastWestAddress: ewB.Addr().String()}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(&spokeconfig.SpokeConfig{
		Cluster:  "b",
		Backends: []spokeconfig.Backend{svc},
		Clusters: []spokeconfig.Cluster{{Name: "a", EastWestAddress: ewA.Addr().String()}},
	}); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", pa), nil)
	if resp.StatusCode != 200 || body != "tls-ok" {
		t.Fatalf("status %d %q, want 200 from the TLS backend", resp.StatusCode, body)
	}
	if sni := resp.Header.Get("X-Seen-SNI"); sni != "svc.example.com" {
		t.Errorf("backend saw SNI %q", sni)
	}
	if h := resp.Header.Get("X-Seen-Fedgate"); h != "" {
		t.Errorf("X-Fedgate headers reached the backend: %q", h)
	}
	if n := b.Stats().UpstreamErrors.Load() + a.Stats().UpstreamErrors.Load(); n != 0 {
		t.Errorf("%d upstream errors", n)
	}
}

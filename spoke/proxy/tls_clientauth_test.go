package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// pemCA is the CA's certificate as a ClientValidation bundle.
func (ca *gatewayCA) pemCA() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// clientCert issues a client certificate named cn; edit adjusts the template (client-auth EKU, valid for an hour,
// by default).
func (ca *gatewayCA) clientCert(t *testing.T, cn string, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func validating(l spokeconfig.TLSListener, mode spokeconfig.ClientValidationMode, bundle []byte) spokeconfig.TLSListener {
	l.ClientValidation = &spokeconfig.ClientValidation{CACertificatesPEM: bundle, Mode: mode}
	return l
}

// identityBackend answers with its name and lists any request header that could carry a client's identity.
func identityBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ident []string
		for k, v := range r.Header {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "client") || strings.Contains(lk, "cert") || strings.Contains(lk, "ssl") ||
				strings.Contains(lk, "subject") {
				ident = append(ident, k+"="+strings.Join(v, ","))
			}
		}
		w.Header().Set("X-Identity-Headers", strings.Join(ident, ";"))
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// mtlsClient is httpsClient presenting cert (none when nil); maxVersion 0 leaves crypto/tls's default.
func mtlsClient(addr, sni string, roots *x509.CertPool, h2 bool, cert *tls.Certificate, maxVersion uint16) *http.Client {
	c := httpsClient(addr, sni, roots, h2)
	conf := c.Transport.(*http.Transport).TLSClientConfig
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	conf.MaxVersion = maxVersion
	return c
}

func tryHost(c *http.Client, host, path string) (int, string, http.Header, error) {
	req, _ := http.NewRequest("GET", "https://"+host+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

func TestHTTPSClientValidation(t *testing.T) {
	gw, ca1, ca2 := newGatewayCA(t), newGatewayCA(t), newGatewayCA(t)
	be := identityBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	cert := gw.inline(t, "wild", "*.example.com")
	port := httpsPort(p, map[string]string{"*": "b"},
		validating(listener("valid.example.com", cert), spokeconfig.AllowValidOnly, ca1.pemCA()),
		validating(listener("fallback.example.com", cert), spokeconfig.AllowInsecureFallback, ca1.pemCA()),
		listener("open.example.com", cert))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	good := ca1.clientCert(t, "good", nil)
	noEKU := ca1.clientCert(t, "no-eku", func(c *x509.Certificate) { c.ExtKeyUsage = nil })
	other := ca2.clientCert(t, "other-ca", nil)
	expired := ca1.clientCert(t, "expired", func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })
	serverOnly := ca1.clientCert(t, "server-eku", func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	clients := []struct {
		name string
		cert *tls.Certificate
		ok   bool // admitted on an AllowValidOnly listener
	}{
		{"none", nil, false},
		{"good", &good, true},
		{"no EKU", &noEKU, true},
		{"other CA", &other, false},
		{"expired", &expired, false},
		{"server-auth EKU only", &serverOnly, false},
	}
	var wantRefused, wantUnverified uint64
	for _, version := range []uint16{0, tls.VersionTLS12} {
		for _, h2 := range []bool{false, true} {
			for _, cl := range clients {
				for _, host := range []string{"valid.example.com", "fallback.example.com", "open.example.com"} {
					c := mtlsClient(addr, host, gw.pool, h2, cl.cert, version)
					status, body, hdr, err := tryHost(c, host, "/")
					c.CloseIdleConnections()
					admitted := cl.ok || host == "fallback.example.com" || host == "open.example.com"
					what := fmt.Sprintf("TLS max %#x h2=%v client %s on %s", version, h2, cl.name, host)
					if !admitted {
						wantRefused++
						if err == nil {
							t.Errorf("%s: %d %q, want the handshake refused", what, status, body)
						}
						continue
					}
					if host == "fallback.example.com" && !cl.ok {
						wantUnverified++
					}
					if err != nil || status != 200 || body != "b" {
						t.Errorf("%s: %d %q %v, want 200 from b", what, status, body, err)
						continue
					}
					// Nothing about the client is forwarded.
					if id := hdr.Get("X-Identity-Headers"); id != "" {
						t.Errorf("%s: the backend was sent %s", what, id)
					}
				}
			}
		}
	}
	if n := s.Stats().ClientCertRefused.Load(); n != wantRefused {
		t.Errorf("ClientCertRefused = %d, want %d", n, wantRefused)
	}
	if n := s.Stats().ClientCertUnverified.Load(); n != wantUnverified {
		t.Errorf("ClientCertUnverified = %d, want %d", n, wantUnverified)
	}
	if n := s.Stats().TLSHandshakeErrors.Load(); n < wantRefused {
		t.Errorf("TLSHandshakeErrors = %d, want at least %d", n, wantRefused)
	}

	// A client's own X-Forwarded-Client-Cert is the client's header like any other: not added to, not replaced.
	c := mtlsClient(addr, "valid.example.com", gw.pool, false, &good, 0)
	req, _ := http.NewRequest("GET", "https://valid.example.com/", nil)
	req.Header.Set("X-Forwarded-Client-Cert", "Subject=forged")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if id := resp.Header.Get("X-Identity-Headers"); id != "X-Forwarded-Client-Cert=Subject=forged" {
		t.Errorf("client-sent X-Forwarded-Client-Cert reached the backend as %q, want it unchanged", id)
	}
	c.CloseIdleConnections()
}

// A connection validated for one listener cannot be used for a Host of another one, whatever the other's
// validation; nor can a connection without validation reach a validating listener by Host.
func TestHTTPSClientValidationMisdirected(t *testing.T) {
	gw, ca1, ca2 := newGatewayCA(t), newGatewayCA(t), newGatewayCA(t)
	be := identityBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	cert := gw.inline(t, "wild", "*.example.com")
	port := httpsPort(p, map[string]string{"*": "b"},
		validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, ca1.pemCA()),
		validating(listener("a2.example.com", cert), spokeconfig.AllowValidOnly, ca1.pemCA()),
		validating(listener("c.example.com", cert), spokeconfig.AllowValidOnly, ca2.pemCA()),
		validating(listener("f.example.com", cert), spokeconfig.AllowInsecureFallback, ca1.pemCA()),
		listener("*", cert))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	good := ca1.clientCert(t, "good", nil)
	cases := []struct {
		sni, host string
		cert      *tls.Certificate
		status    int
	}{
		{"a.example.com", "a.example.com", &good, 200},
		{"a.example.com", "b.example.com", &good, 421},  // no validation
		{"a.example.com", "c.example.com", &good, 421},  // another CA
		{"a.example.com", "a2.example.com", &good, 421}, // the same CA, but another listener
		{"a.example.com", "f.example.com", &good, 421},
		{"b.example.com", "a.example.com", nil, 421},
		{"b.example.com", "a.example.com", &good, 421}, // (no certificate was requested)
		{"f.example.com", "a.example.com", nil, 421},
		{"f.example.com", "a.example.com", &good, 421},
	}
	for _, h2 := range []bool{false, true} {
		for _, tc := range cases {
			c := mtlsClient(addr, tc.sni, gw.pool, h2, tc.cert, 0)
			status, body, _, err := tryHost(c, tc.host, "/")
			if err != nil || status != tc.status {
				t.Errorf("h2=%v SNI %q Host %s: %d %q %v, want %d", h2, tc.sni, tc.host, status, body, err, tc.status)
			}
			c.CloseIdleConnections()
		}
	}
}

func TestHTTPSClientValidationUnusableBundle(t *testing.T) {
	gw, ca1 := newGatewayCA(t), newGatewayCA(t)
	be := identityBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	var logs logBuffer
	s := httpsServer(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	cert := gw.inline(t, "wild", "*.example.com")
	garbage := []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
	partly := append(ca1.pemCA(), garbage...)
	port := httpsPort(p, map[string]string{"*": "b"},
		validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, garbage),
		validating(listener("a2.example.com", cert), spokeconfig.AllowValidOnly, garbage),
		validating(listener("partly.example.com", cert), spokeconfig.AllowValidOnly, partly),
		validating(listener("key.example.com", cert), spokeconfig.AllowValidOnly,
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})),
		validating(listener("f.example.com", cert), spokeconfig.AllowInsecureFallback, garbage),
		listener("open.example.com", cert))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	good := ca1.clientCert(t, "good", nil)
	for _, host := range []string{"a.example.com", "a2.example.com", "partly.example.com", "key.example.com"} {
		for _, cert := range []*tls.Certificate{nil, &good} {
			c := mtlsClient(addr, host, gw.pool, false, cert, 0)
			if status, body, _, err := tryHost(c, host, "/"); err == nil {
				t.Errorf("%s, certificate %v: %d %q, want the handshake refused", host, cert != nil, status, body)
			}
			c.CloseIdleConnections()
		}
	}
	for _, host := range []string{"f.example.com", "open.example.com"} {
		c := mtlsClient(addr, host, gw.pool, true, &good, 0)
		if status, body, _, err := tryHost(c, host, "/"); err != nil || status != 200 {
			t.Errorf("%s: %d %q %v, want 200", host, status, body, err)
		}
		c.CloseIdleConnections()
	}
	if n := s.Stats().ClientCertRefused.Load(); n != 8 {
		t.Errorf("ClientCertRefused = %d, want 8", n)
	}
	out := logs.String()
	// Once per bundle and build: the garbage one is shared by three listeners.
	if n := strings.Count(out, "client CA bundle is unusable"); n != 3 {
		t.Errorf("unusable bundle logged %d times, want 3 (garbage, partly, key):\n%s", n, out)
	}
}

func TestHTTPSClientValidationRotation(t *testing.T) {
	gw, ca1, ca2 := newGatewayCA(t), newGatewayCA(t), newGatewayCA(t)
	be := identityBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	cert := gw.inline(t, "a", "a.example.com")
	apply := func(rev int64, l spokeconfig.TLSListener) {
		t.Helper()
		if err := s.Apply(tlsConfigFor(rev, httpsPort(p, map[string]string{"*": "b"}, l), map[string]string{"b": addrOf(be)})); err != nil {
			t.Fatal(err)
		}
	}
	cert1, cert2 := ca1.clientCert(t, "one", nil), ca2.clientCert(t, "two", nil)

	// No validation at first: a connection without a certificate, kept open.
	apply(1, listener("a.example.com", cert))
	open := map[bool]*http.Client{}
	for _, h2 := range []bool{false, true} {
		open[h2] = mtlsClient(addr, "a.example.com", gw.pool, h2, nil, 0)
		if status, _, _, err := tryHost(open[h2], "a.example.com", "/"); err != nil || status != 200 {
			t.Fatalf("h2=%v before validation: %d %v", h2, status, err)
		}
	}
	// Then AllowValidOnly with CA 1: the open connections, which presented no certificate, are misdirected; new
	// handshakes need a certificate of CA 1.
	apply(2, validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, ca1.pemCA()))
	for h2, c := range open {
		if status, _, _, err := tryHost(c, "a.example.com", "/"); err != nil || status != 421 {
			t.Errorf("h2=%v on a connection without certificate after validation began: %d %v, want 421", h2, status, err)
		}
		c.CloseIdleConnections()
		if status, _, _, err := tryHost(c, "a.example.com", "/"); err == nil {
			t.Errorf("h2=%v new connection without certificate: %d, want the handshake refused", h2, status)
		}
	}
	cache := tls.NewLRUClientSessionCache(4)
	dial := func(cert tls.Certificate) (*tls.Conn, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: gw.pool, ServerName: "a.example.com",
			NextProtos: []string{"http/1.1"}, ClientSessionCache: cache, Certificates: []tls.Certificate{cert}})
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			c.Close()
			return nil, fmt.Errorf("request: %v %v", resp, err)
		}
		return c, nil
	}
	for range 2 {
		c, err := dial(cert1)
		if err != nil {
			t.Fatalf("certificate of CA 1 under CA 1: %v", err)
		}
		c.Close()
	}
	if c, err := dial(cert1); err != nil || !c.ConnectionState().DidResume {
		t.Fatalf("third connection: %v (resumed: %v); the resumption check below would prove nothing", err, err == nil && c.ConnectionState().DidResume)
	} else {
		c.Close()
	}
	saved := cache
	cache = tls.NewLRUClientSessionCache(4) // (with the old one, the client would resume as cert1)
	if _, err := dial(cert2); err == nil {
		t.Error("certificate of CA 2 admitted under CA 1")
	}
	cache = saved

	// CA 2 replaces CA 1: new handshakes, resumed ones included, verify against CA 2.
	apply(3, validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, ca2.pemCA()))
	if c, err := dial(cert1); err == nil {
		t.Errorf("certificate of CA 1 admitted after CA 2 replaced it (resumed: %v)", c.ConnectionState().DidResume)
		c.Close()
	}
	cache = tls.NewLRUClientSessionCache(4)
	if c, err := dial(cert1); err == nil {
		t.Error("certificate of CA 1 admitted after CA 2 replaced it (full handshake)")
		c.Close()
	}
	if c, err := dial(cert2); err != nil {
		t.Errorf("certificate of CA 2 under CA 2: %v", err)
	} else {
		c.Close()
	}
	// Open connections: one with a certificate of CA 2 goes on across an Apply that keeps CA 2; one with a
	// certificate of CA 1, opened while CA 1 and CA 2 were both trusted, is misdirected once CA 1 goes.
	apply(4, validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, append(ca1.pemCA(), ca2.pemCA()...)))
	conns := map[string]*http.Client{}
	for _, h2 := range []bool{false, true} {
		for name, cc := range map[string]*tls.Certificate{"one": &cert1, "two": &cert2} {
			c := mtlsClient(addr, "a.example.com", gw.pool, h2, cc, 0)
			if status, body, _, err := tryHost(c, "a.example.com", "/"); err != nil || status != 200 || body != "b" {
				t.Fatalf("h2=%v certificate %s under CA 1 and CA 2: %d %q %v", h2, name, status, body, err)
			}
			conns[fmt.Sprint(h2, name)] = c
		}
	}
	apply(5, validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, ca2.pemCA()))
	apply(6, validating(listener("a.example.com", cert), spokeconfig.AllowValidOnly, ca2.pemCA()))
	for k, c := range conns {
		want := 200
		if strings.HasSuffix(k, "one") {
			want = 421
		}
		var reused bool
		req, _ := http.NewRequest("GET", "https://a.example.com/", nil)
		req = req.WithContext(httptraceGotConn(req.Context(), &reused))
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("%s on its open connection after CA 1 went: %v", k, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != want || !reused {
			t.Errorf("%s on its open connection after CA 1 went: %d (connection reused: %v), want %d on the open connection", k, resp.StatusCode, reused, want)
		}
		c.CloseIdleConnections()
	}
}

// A client certificate that expires while its connection stays open stops being admitted on an AllowValidOnly
// listener: the connection's next request is misdirected (421), so the client must handshake again (and is refused).
func TestHTTPSClientCertificateExpiresOnOpenConnection(t *testing.T) {
	gw, ca := newGatewayCA(t), newGatewayCA(t)
	be := identityBackend(t, "b")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	port := httpsPort(p, map[string]string{"*": "b"},
		validating(listener("valid.example.com", gw.inline(t, "valid", "valid.example.com")), spokeconfig.AllowValidOnly, ca.pemCA()))
	if err := s.Apply(tlsConfigFor(1, port, map[string]string{"b": addrOf(be)})); err != nil {
		t.Fatal(err)
	}
	expiresAt := time.Now().Add(1500 * time.Millisecond)
	short := ca.clientCert(t, "short-lived", func(c *x509.Certificate) { c.NotAfter = expiresAt })
	c := mtlsClient(addr, "valid.example.com", gw.pool, false, &short, 0)
	defer c.CloseIdleConnections()
	if status, body, _, err := tryHost(c, "valid.example.com", "/"); err != nil || status != 200 || body != "b" {
		t.Fatalf("before expiry: %d %q %v", status, body, err)
	}
	time.Sleep(time.Until(expiresAt) + 200*time.Millisecond)
	if status, _, _, err := tryHost(c, "valid.example.com", "/"); err != nil || status != http.StatusMisdirectedRequest {
		t.Fatalf("after expiry, on the open connection: %d %v, want 421", status, err)
	}
}

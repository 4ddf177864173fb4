package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testPKI is a CA and the certificates it signs, made for one test.
type testPKI struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, caKey: key, pool: pool}
}

// leaf issues a certificate for hosts and returns its PEM certificate and key.
func (p *testPKI) leaf(t testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// tlsSecretYAML is a kubernetes.io/tls Secret.
func tlsSecretYAML(namespace, name string, certPEM, keyPEM []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: %s}
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
`, name, namespace, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))
}

// keyFingerprints are substrings by which a private key would be recognised anywhere: its PEM body's first line,
// and that of its base64 (how a Secret's data and JSON []byte fields carry it).
func keyFingerprints(keyPEM []byte) [][]byte {
	blk, _ := pem.Decode(keyPEM)
	body := base64.StdEncoding.EncodeToString(blk.Bytes)
	b64 := base64.StdEncoding.EncodeToString(keyPEM)
	return [][]byte{[]byte(body[16:56]), []byte(b64[40:80]), blk.Bytes[8:40]}
}

// filesHolding lists the files under dir whose bytes hold any fingerprint.
func filesHolding(t testing.TB, dir string, fps [][]byte) []string {
	t.Helper()
	var hits []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, fp := range fps {
			if bytes.Contains(b, fp) {
				hits = append(hits, path)
				break
			}
		}
		return nil
	})
	return hits
}

// httpsClient trusts pool and dials only the given loopback address, whatever the URL says.
func httpsClient(pool *x509.CertPool, addr string, h2 bool, certs ...tls.Certificate) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, Certificates: certs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// tlsWorld: a hub, west running the backend app, and east whose Gateway gw-tls has an HTTPS listener for
// secure.example.com with a certificate (Secret secure-cert) that only east holds; the route secure sends it to app.
type tlsWorld struct {
	hub        *hub
	east, west *spoke
	pki        *testPKI
	keyPEM     []byte
	addr       string // east's HTTPS listener
	tlsPort    int
}

// gatewayTLSYAML is east's gw-tls Gateway; frontend is spliced into spec.tls (empty: no client validation).
func gatewayTLSYAML(port int, frontend string) string {
	y := fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw-tls, namespace: default}
spec:
  gatewayClassName: fedgate
  listeners:
  - name: https
    protocol: HTTPS
    port: %d
    hostname: secure.example.com
    tls:
      certificateRefs: [{name: secure-cert}]
    allowedRoutes: {namespaces: {from: All}}
`, port)
	if frontend != "" {
		y += "  tls:\n    frontend:\n" + frontend
	}
	return y
}

func startTLSWorld(t *testing.T, frontend string, extra string) *tlsWorld {
	t.Helper()
	w := &tlsWorld{pki: newTestPKI(t, "e2e-listener-ca")}
	var certPEM []byte
	certPEM, w.keyPEM = w.pki.leaf(t, "secure.example.com")
	app := startEcho(t, "west", "app")
	w.hub = startHub(t, filepath.Join(t.TempDir(), "hub-data"), "")
	mk := func(cluster, host string, b ...*echoBackend) *spoke {
		s := &spoke{
			cluster: cluster, host: host, gwPort: freePort(t, host),
			eastWest:  net.JoinHostPort(host, strconv.Itoa(freePort(t, host))),
			sourceDir: filepath.Join(t.TempDir(), cluster+"-source"),
			cacheDir:  filepath.Join(t.TempDir(), cluster+"-cache"),
			hubAddr:   w.hub.addr,
		}
		writeFile(t, filepath.Join(s.sourceDir, "cluster.yaml"), clusterYAML(s.gwPort, b...))
		return s
	}
	w.west = mk("west", "127.0.0.3", app)
	w.east = mk("east", "127.0.0.2")
	w.tlsPort = freePort(t, w.east.host)
	w.addr = net.JoinHostPort(w.east.host, strconv.Itoa(w.tlsPort))
	writeFile(t, filepath.Join(w.east.sourceDir, "tls.yaml"), gatewayTLSYAML(w.tlsPort, frontend)+"---\n"+
		tlsSecretYAML("default", "secure-cert", certPEM, w.keyPEM)+extra)
	w.west.start(t)
	w.east.start(t)
	mustHubctl(t, w.hub.addr, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: gw-tls}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: app, port: 80}]}]
`, "apply", "-f", "-")
	return w
}

// fetch GETs https://secure.example.com/hello through east and describes the outcome.
func (w *tlsWorld) fetch(h2 bool, certs ...tls.Certificate) (ok bool, what string) {
	c := httpsClient(w.pki.pool, w.addr, h2, certs...)
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://secure.example.com/hello")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	what = fmt.Sprintf("%s %d %s", resp.Proto, resp.StatusCode, strings.TrimSpace(body.String()))
	return resp.StatusCode == 200 && strings.Contains(body.String(), "cluster=west") && (resp.ProtoMajor == 2) == h2, what
}

// waitServed waits until fetch succeeds.
func (w *tlsWorld) waitServed(t *testing.T, h2 bool, certs ...tls.Certificate) {
	t.Helper()
	var last string
	if _, ok := eventually(30*time.Second, func() bool {
		var ok bool
		ok, last = w.fetch(h2, certs...)
		return ok
	}); !ok {
		t.Fatalf("https via east (h2=%v) never reached west's backend; last: %s", h2, last)
	}
}

// TestHTTPSGatewayWithLocalCertificate: east's Gateway has an HTTPS listener whose certificate is a Secret in east
// only; the route's backend runs in west. Clients reach west's backend through east over TLS (HTTP/1.1 and h2), with
// the certificate east holds. The key never leaves east: not in the hub's etcd files or logs, not in either spoke's
// projection cache, not in west's log.
func TestHTTPSGatewayWithLocalCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startTLSWorld(t, "", "")
	w.waitServed(t, false)
	w.waitServed(t, true)
	// A name the listener does not serve: the handshake fails (no certificate for it), nothing is routed.
	bad := &tls.Dialer{Config: &tls.Config{RootCAs: w.pki.pool, ServerName: "other.example.com"}}
	if conn, err := bad.DialContext(context.Background(), "tcp", w.addr); err == nil {
		conn.Close()
		t.Error("a handshake for other.example.com succeeded on a listener for secure.example.com")
	}

	fps := keyFingerprints(w.keyPEM)
	for _, where := range []struct{ what, dir string }{
		{"the hub's data directory (etcd)", w.hub.dataDir}, {"east's projection cache", w.east.cacheDir}, {"west's projection cache", w.west.cacheDir},
	} {
		if hits := filesHolding(t, where.dir, fps); len(hits) > 0 {
			t.Errorf("the private key of east's local Secret is in %s: %v", where.what, hits)
		}
	}
	for _, p := range []*proc{w.hub.p, w.west.p, w.east.p} {
		if log, _ := os.ReadFile(p.log); containsAny(log, fps) {
			t.Errorf("the private key appears in the log of %s", p.name)
		}
	}
}

// TestHTTPSClientCertificateValidation: east's Gateway validates client certificates against a CA bundle in a
// ConfigMap of east (spec.tls.frontend.default). Under AllowValidOnly a client without a certificate, and one with a
// certificate from another CA, fail the handshake; one with a certificate of the bundle's CA reaches west's backend.
// Switched to AllowInsecureFallback, the client without a certificate is admitted too.
func TestHTTPSClientCertificateValidation(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	clients, others := newTestPKI(t, "e2e-client-ca"), newTestPKI(t, "e2e-other-ca")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clients.ca.Raw})
	caConfigMap := func() string {
		var b strings.Builder
		b.WriteString("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: client-ca, namespace: default}\ndata:\n  ca.crt: |\n")
		for _, line := range strings.Split(strings.TrimSpace(string(caPEM)), "\n") {
			b.WriteString("    " + line + "\n")
		}
		return b.String()
	}()
	frontend := func(mode string) string {
		return "      default:\n        validation:\n          mode: " + mode + "\n          caCertificateRefs: [{kind: ConfigMap, group: \"\", name: client-ca}]\n"
	}
	w := startTLSWorld(t, frontend("AllowValidOnly"), caConfigMap)
	pair := func(p *testPKI) tls.Certificate {
		c, k := p.leaf(t, "client.example.com")
		kp, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	good, foreign := pair(clients), pair(others)
	for _, h2 := range []bool{false, true} {
		w.waitServed(t, h2, good)
		if ok, what := w.fetch(h2); ok {
			t.Errorf("AllowValidOnly (h2=%v): a client without a certificate was served: %s", h2, what)
		}
		if ok, what := w.fetch(h2, foreign); ok {
			t.Errorf("AllowValidOnly (h2=%v): a client with another CA's certificate was served: %s", h2, what)
		}
	}

	// The same Gateway in AllowInsecureFallback: every client is admitted.
	writeFile(t, filepath.Join(w.east.sourceDir, "tls.yaml"), strings.Replace(
		string(mustRead(t, filepath.Join(w.east.sourceDir, "tls.yaml"))), "mode: AllowValidOnly", "mode: AllowInsecureFallback", 1))
	w.waitServed(t, false)
	w.waitServed(t, true, foreign)
	w.waitServed(t, true, good)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func containsAny(b []byte, fps [][]byte) bool {
	for _, fp := range fps {
		if bytes.Contains(b, fp) {
			return true
		}
	}
	return false
}

// TestBackendTLSPolicyAcrossClusters: the backend app-tls runs in west and serves TLS only, with a certificate for
// app.west.internal from a CA of its own. A BackendTLSPolicy applied at the hub (v1alpha3, as Gateway API v1.1's
// release notes write it) names that CA (a ConfigMap applied at the hub) and the hostname: a request entering east
// over HTTPS rides the east-west hop and west originates TLS to the backend with that SNI. With a hostname the
// backend's certificate does not carry, the request gets a 5xx and west's log says why.
func TestBackendTLSPolicyAcrossClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startTLSWorld(t, "", "")
	w.waitServed(t, false)

	backendCA := newTestPKI(t, "e2e-backend-ca")
	certPEM, keyPEM := backendCA.leaf(t, "app.west.internal")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "cluster=west name=app-tls sni=%s\n", r.TLS.ServerName)
	}))
	be.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	be.StartTLS()
	t.Cleanup(be.Close)
	bePort := be.Listener.Addr().(*net.TCPAddr).Port
	writeFile(t, filepath.Join(w.west.sourceDir, "app-tls.yaml"), serviceYAML("app-tls", bePort))

	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: backendCA.ca.Raw})
	policy := func(hostname string) string {
		var b strings.Builder
		b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: backend-ca, namespace: default}\ndata:\n  ca.crt: |\n")
		for _, line := range strings.Split(strings.TrimSpace(string(caPEM)), "\n") {
			b.WriteString("    " + line + "\n")
		}
		fmt.Fprintf(&b, `---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: app-tls, namespace: default}
spec:
  targetRefs:
  - kind: Service
    name: app-tls
    group: ""
  validation:
    caCertificateRefs:
    - kind: ConfigMap
      name: backend-ca
      group: ""
    hostname: %s
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: gw-tls}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: app-tls, port: 80}]}]
`, hostname)
		return b.String()
	}
	out := mustHubctl(t, w.hub.addr, policy("app.west.internal"), "apply", "-f", "-")
	if !strings.Contains(out, "backendtlspolicy") {
		t.Errorf("hubctl apply printed %q", out)
	}
	c := httpsClient(w.pki.pool, w.addr, false)
	var last string
	if _, ok := eventually(30*time.Second, func() bool {
		resp, err := c.Get("https://secure.example.com/x")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		last = fmt.Sprintf("%d %s", resp.StatusCode, body.String())
		return resp.StatusCode == 200 && strings.Contains(body.String(), "name=app-tls sni=app.west.internal")
	}); !ok {
		t.Fatalf("east never reached west's TLS backend with SNI app.west.internal; last: %s", last)
	}

	mustHubctl(t, w.hub.addr, policy("wrong.west.internal"), "apply", "-f", "-")
	if _, ok := eventually(30*time.Second, func() bool {
		resp, err := c.Get("https://secure.example.com/x")
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = fmt.Sprint(resp.StatusCode)
		return resp.StatusCode >= 500
	}); !ok {
		t.Fatalf("a backend whose certificate does not carry the policy's hostname was not refused; last: %s", last)
	}
	if log, _ := os.ReadFile(w.west.p.log); !bytes.Contains(log, []byte("wrong.west.internal")) {
		t.Errorf("west's log does not say the backend's certificate is not valid for wrong.west.internal")
	}
}

package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// testPKI issues certificates whose CommonName is the cluster name, from one CA.
type testPKI struct {
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	roots *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &testPKI{ca: ca, key: key, roots: roots}
}

func (p *testPKI) issue(t *testing.T, cluster string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: cluster}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, URIs: []*url.URL{identity.ClusterURI(cluster)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// clientFor dials cluster and insists the server's certificate names it.
func (p *testPKI) clientFor(self tls.Certificate, cluster string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{self}, RootCAs: p.roots, MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1",
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn != cluster {
				return fmt.Errorf("peer is %q, dialled %q", cn, cluster)
			}
			return nil
		},
	}
}

// TestEastWestTLSAcrossApplies: the east-west hop stays mTLS for every table, not only the first (a cached transport
// once lost its TLS wrapper and sent cleartext to the TLS listener from the second Apply on), and the client checks
// that the peer is the cluster it dialled.
func TestEastWestTLSAcrossApplies(t *testing.T) {
	pki := newTestPKI(t)
	certA, certB := pki.issue(t, "a"), pki.issue(t, "b")
	be := echoBackend(t, "in-b")
	ewB, _ := net.Listen("tcp", "127.0.0.1:0")
	b := New(Options{Cluster: "b", Logger: slog.New(slog.DiscardHandler), EastWestServerTLS: &tls.Config{
		Certificates: []tls.Certificate{certB}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.roots, MinVersion: tls.VersionTLS13}})
	t.Cleanup(func() { b.Close() })
	go b.ServeEastWest(ewB)
	svc := spokeconfig.Backend{ID: "ns/svc:80", Endpoints: []spokeconfig.Endpoint{{Cluster: "b", Address: addrOf(be), Ready: true}}}
	if err := b.Apply(&spokeconfig.SpokeConfig{Cluster: "b", Backends: []spokeconfig.Backend{svc}}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		dialAs   string // the identity the client demands of cluster b's listener
		wantCode int
	}{
		{"right peer", "b", 200},
		{"listener presents another cluster's identity", "c", http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pa := freePort(t)
			a := New(Options{Cluster: "a", Logger: slog.New(slog.DiscardHandler), DisableHealthChecks: true,
				EastWestClientTLSFor: func(cluster string) *tls.Config { return pki.clientFor(certA, tc.dialAs) }})
			t.Cleanup(func() { a.Close() })
			for rev := int64(1); rev <= 3; rev++ {
				cfg := &spokeconfig.SpokeConfig{
					Cluster: "a", Revision: rev,
					Ports:    []spokeconfig.Port{port(pa, forwardRoute(fmt.Sprintf("r%d", rev), "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:80", Weight: 1}))},
					Backends: []spokeconfig.Backend{svc},
					Clusters: []spokeconfig.Cluster{{Name: "b", EastWestAddress: ewB.Addr().String()}},
				}
				if err := a.Apply(cfg); err != nil {
					t.Fatal(err)
				}
				resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", pa), nil)
				if resp.StatusCode != tc.wantCode {
					t.Fatalf("table %d: status %d %q, want %d", rev, resp.StatusCode, body, tc.wantCode)
				}
				if tc.wantCode != 200 {
					return
				}
			}
		})
	}

	// Membership: once b's config no longer lists a (a was removed at the hub), b refuses a's requests although a's
	// certificate is still valid; listed again, a is served again.
	pa := freePort(t)
	a := New(Options{Cluster: "a", Logger: slog.New(slog.DiscardHandler), DisableHealthChecks: true,
		EastWestClientTLSFor: func(cluster string) *tls.Config { return pki.clientFor(certA, cluster) }})
	t.Cleanup(func() { a.Close() })
	if err := a.Apply(&spokeconfig.SpokeConfig{
		Cluster: "a", Ports: []spokeconfig.Port{port(pa, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:80", Weight: 1}))},
		Backends: []spokeconfig.Backend{svc}, Clusters: []spokeconfig.Cluster{{Name: "b", EastWestAddress: ewB.Addr().String()}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		members []string
		want    int
	}{{[]string{"b"}, http.StatusForbidden}, {[]string{"a", "b"}, 200}} {
		if err := b.Apply(&spokeconfig.SpokeConfig{Cluster: "b", Backends: []spokeconfig.Backend{svc}, Members: tc.members}); err != nil {
			t.Fatal(err)
		}
		if resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", pa), nil); resp.StatusCode != tc.want {
			t.Errorf("members %v: status %d %q, want %d", tc.members, resp.StatusCode, body, tc.want)
		}
	}

	// A client without a certificate is refused by the TLS listener itself.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS13}}}
	if resp, err := c.Get("https://" + ewB.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("east-west accepted a client without a certificate")
	}
}

// TestEastWestRefusesRevokedCertificates: a member cluster re-joined at the hub gets a new certificate; its old one
// still chains to the CA and names a member, but once b's config lists its serial as revoked b refuses it — on the
// connection a opened before the revocation too — while the re-joined cluster's new certificate is served (issue 9).
func TestEastWestRefusesRevokedCertificates(t *testing.T) {
	pki := newTestPKI(t)
	oldA, newA, certB := pki.issue(t, "a"), pki.issue(t, "a"), pki.issue(t, "b")
	be := echoBackend(t, "in-b")
	ewB, _ := net.Listen("tcp", "127.0.0.1:0")
	b := New(Options{Cluster: "b", Logger: slog.New(slog.DiscardHandler), EastWestServerTLS: &tls.Config{
		Certificates: []tls.Certificate{certB}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.roots, MinVersion: tls.VersionTLS13}})
	t.Cleanup(func() { b.Close() })
	go b.ServeEastWest(ewB)
	svc := spokeconfig.Backend{ID: "ns/svc:80", Endpoints: []spokeconfig.Endpoint{{Cluster: "b", Address: addrOf(be), Ready: true}}}
	bConfig := func(revoked ...string) {
		t.Helper()
		if err := b.Apply(&spokeconfig.SpokeConfig{Cluster: "b", Backends: []spokeconfig.Backend{svc}, Members: []string{"a", "b"}, RevokedSerials: revoked}); err != nil {
			t.Fatal(err)
		}
	}
	spokeA := func(cert tls.Certificate) int32 {
		pa := freePort(t)
		a := New(Options{Cluster: "a", Logger: slog.New(slog.DiscardHandler), DisableHealthChecks: true,
			EastWestClientTLSFor: func(cluster string) *tls.Config { return pki.clientFor(cert, cluster) }})
		t.Cleanup(func() { a.Close() })
		if err := a.Apply(&spokeconfig.SpokeConfig{
			Cluster: "a", Ports: []spokeconfig.Port{port(pa, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:80", Weight: 1}))},
			Backends: []spokeconfig.Backend{svc}, Clusters: []spokeconfig.Cluster{{Name: "b", EastWestAddress: ewB.Addr().String()}},
		}); err != nil {
			t.Fatal(err)
		}
		return pa
	}
	serial := func(c tls.Certificate) string {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return identity.SerialHex(leaf.SerialNumber)
	}
	status := func(pa int32) (int, string) {
		resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", pa), nil)
		return resp.StatusCode, body
	}

	bConfig()
	viaOld := spokeA(oldA)
	if code, body := status(viaOld); code != 200 {
		t.Fatalf("before the revocation: status %d %q, want 200", code, body)
	}
	bConfig("00", serial(oldA))
	if code, body := status(viaOld); code != http.StatusForbidden {
		t.Errorf("old certificate after its revocation (connection opened before): status %d %q, want 403", code, body)
	}
	if code, body := status(spokeA(oldA)); code != http.StatusForbidden {
		t.Errorf("old certificate after its revocation (new connection): status %d %q, want 403", code, body)
	}
	if code, body := status(spokeA(newA)); code != 200 {
		t.Errorf("the re-joined cluster's new certificate: status %d %q, want 200", code, body)
	}

	// The other way: a spoke does not send to a listener presenting a certificate its own config lists as revoked.
	bConfig()
	pa := freePort(t)
	a := New(Options{Cluster: "a", Logger: slog.New(slog.DiscardHandler), DisableHealthChecks: true,
		EastWestClientTLSFor: func(cluster string) *tls.Config { return pki.clientFor(newA, cluster) }})
	t.Cleanup(func() { a.Close() })
	aConfig := func(rev int64, revoked ...string) {
		t.Helper()
		if err := a.Apply(&spokeconfig.SpokeConfig{Cluster: "a", Revision: rev, RevokedSerials: revoked,
			Ports:    []spokeconfig.Port{port(pa, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:80", Weight: 1}))},
			Backends: []spokeconfig.Backend{svc}, Clusters: []spokeconfig.Cluster{{Name: "b", EastWestAddress: ewB.Addr().String()}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	aConfig(1)
	if code, body := status(pa); code != 200 {
		t.Fatalf("before revoking b's certificate: status %d %q", code, body)
	}
	aConfig(2, serial(certB))
	if code, _ := status(pa); code == 200 {
		t.Error("a still sends to b's listener after b's certificate was revoked in a's config")
	}
}

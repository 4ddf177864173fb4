package credentials

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
)

// testCA is a minimal hub CA made here: spoke/ must not import hub/, and these tests need only what the hub's PKI
// puts into a certificate (URI SAN identity, EKUs, a CA that signs).
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    []byte
	serial atomic.Int64
}

func newCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.serial.Store(100)
	return ca
}

// issue signs pub for uri, valid from notBefore for life, with both EKUs as the hub gives clusters.
func (ca *testCA) issue(t *testing.T, pub any, uri *url.URL, notBefore time.Time, life time.Duration) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)), Subject: pkix.Name{CommonName: uri.Path},
		NotBefore: notBefore, NotAfter: notBefore.Add(life),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// credentialsFor writes a fresh identity for uri signed by ca into a new directory and returns the directory.
func (ca *testCA) credentialsFor(t *testing.T, uri *url.URL, notBefore time.Time, life time.Duration) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "creds")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	if err := Write(dir, keyPEM, ca.issue(t, key.Public(), uri, notBefore, life), ca.pem); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (ca *testCA) store(t *testing.T, cluster string) *Store {
	t.Helper()
	s, err := Load(ca.credentialsFor(t, identity.ClusterURI(cluster), time.Now().Add(-time.Minute), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWriteLoadRoundTrip(t *testing.T) {
	ca := newCA(t, "hub-ca")
	notBefore := time.Now().Add(-time.Minute).Truncate(time.Second)
	dir := ca.credentialsFor(t, identity.ClusterURI("east"), notBefore, time.Hour)

	info, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", KeyFile, info.Mode().Perm())
	}

	s, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if s.Cluster() != "east" {
		t.Errorf("Cluster = %q", s.Cluster())
	}
	if !s.Leaf().NotBefore.Equal(notBefore) {
		t.Errorf("leaf NotBefore = %v, want %v", s.Leaf().NotBefore, notBefore)
	}
	if _, err := s.Leaf().Verify(x509.VerifyOptions{Roots: s.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify against the loaded CA pool: %v", err)
	}
}

func TestLoadRejects(t *testing.T) {
	ca := newCA(t, "hub-ca")
	t.Run("missing directory", func(t *testing.T) {
		if _, err := Load(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load = %v, want a not-exist error", err)
		}
	})
	t.Run("admin certificate", func(t *testing.T) {
		dir := ca.credentialsFor(t, identity.AdminURI(), time.Now(), time.Hour)
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), "not a cluster") || !strings.Contains(err.Error(), dir) {
			t.Errorf("Load = %v, want a not-a-cluster error naming the directory", err)
		}
	})
	t.Run("CA file without a certificate", func(t *testing.T) {
		dir := ca.credentialsFor(t, identity.ClusterURI("east"), time.Now(), time.Hour)
		if err := os.WriteFile(filepath.Join(dir, CAFile), []byte("not pem"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), CAFile) {
			t.Errorf("Load = %v, want an error naming %s", err, CAFile)
		}
	})
	t.Run("certificate of another CA than the bundle", func(t *testing.T) {
		dir := ca.credentialsFor(t, identity.ClusterURI("east"), time.Now().Add(-time.Minute), time.Hour)
		if err := os.WriteFile(filepath.Join(dir, CAFile), newCA(t, "other-ca").pem, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "does not chain") {
			t.Errorf("Load = %v, want a does-not-chain error", err)
		}
	})
	t.Run("key of another certificate", func(t *testing.T) {
		dir := ca.credentialsFor(t, identity.ClusterURI("east"), time.Now(), time.Hour)
		other := ca.credentialsFor(t, identity.ClusterURI("east"), time.Now(), time.Hour)
		key, err := os.ReadFile(filepath.Join(other, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, KeyFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil {
			t.Error("Load accepted a key that does not match the certificate")
		}
	})
}

func TestRenewDueAtTwoThirds(t *testing.T) {
	ca := newCA(t, "hub-ca")
	notBefore := time.Now().Add(-time.Hour).Truncate(time.Second)
	s, err := Load(ca.credentialsFor(t, identity.ClusterURI("east"), notBefore, 90*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.RenewDue(), notBefore.Add(60*time.Minute); !got.Equal(want) {
		t.Errorf("RenewDue = %v, want %v (2/3 of 90m after NotBefore)", got, want)
	}
}

// handshake runs one TLS handshake between server and client configs over a real loopback listener and returns
// both sides' errors and the server's view of the connection.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error, serverState tls.ConnectionState) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		err error
		cs  tls.ConnectionState
	}
	done := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- res{err: err}
			return
		}
		// Echo one byte so the client's read proves the server accepted it (TLS 1.3 lets a client finish its
		// handshake before the server has checked the client certificate).
		b := make([]byte, 1)
		if _, err := io.ReadFull(tc, b); err != nil {
			done <- res{err: err, cs: tc.ConnectionState()}
			return
		}
		_, err = tc.Write(b)
		done <- res{err: err, cs: tc.ConnectionState()}
	}()
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), client)
	if err == nil {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err = conn.Write([]byte{'x'}); err == nil {
			_, err = io.ReadFull(conn, make([]byte, 1))
		}
	}
	// A client that gave up closed its connection, so the server's handshake or read ends too.
	r := <-done
	return r.err, err, r.cs
}

func TestEastWestClientChecksServerIdentity(t *testing.T) {
	ca := newCA(t, "hub-ca")
	east, west := ca.store(t, "east"), ca.store(t, "west")

	sErr, cErr, cs := handshake(t, west.EastWestServerTLS(), east.EastWestClientTLS("west"))
	if sErr != nil || cErr != nil {
		t.Fatalf("east → west: server %v, client %v", sErr, cErr)
	}
	if got, ok := PeerCluster(&cs); !ok || got != "east" {
		t.Errorf("PeerCluster on west's side = %q, %v; want east", got, ok)
	}

	// west answers where east expects north: a misrouted or impersonating listener is refused by the client.
	_, cErr, _ = handshake(t, west.EastWestServerTLS(), east.EastWestClientTLS("north"))
	if cErr == nil || !strings.Contains(cErr.Error(), "cluster west") {
		t.Errorf("east dialing north reached west: client err = %v", cErr)
	}
}

func TestEastWestClientRefusesForeignCA(t *testing.T) {
	ours, theirs := newCA(t, "hub-ca"), newCA(t, "other-hub-ca")
	east, impostor := ours.store(t, "east"), theirs.store(t, "west")
	_, cErr, _ := handshake(t, impostor.EastWestServerTLS(), east.EastWestClientTLS("west"))
	if cErr == nil || !strings.Contains(cErr.Error(), "peer certificate") {
		t.Errorf("client accepted a west certificate from another CA: %v", cErr)
	}
}

func TestEastWestServerRefusesClients(t *testing.T) {
	ca := newCA(t, "hub-ca")
	west := ca.store(t, "west")
	t.Run("no certificate", func(t *testing.T) {
		client := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // the server is under test
		sErr, cErr, _ := handshake(t, west.EastWestServerTLS(), client)
		if sErr == nil || cErr == nil {
			t.Fatalf("a client without a certificate got through: server %v, client %v", sErr, cErr)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		stranger := newCA(t, "other-hub-ca").store(t, "east")
		sErr, cErr, _ := handshake(t, west.EastWestServerTLS(), stranger.EastWestClientTLS("west"))
		// The stranger's client also refuses west (it trusts another CA); what matters is that west refused it.
		if sErr == nil || cErr == nil {
			t.Fatalf("a client of another CA got through: server %v, client %v", sErr, cErr)
		}
	})
	t.Run("admin certificate", func(t *testing.T) {
		east := ca.store(t, "east")
		// An admin credential cannot be loaded into a Store, so east's client presents it by hand.
		dir := ca.credentialsFor(t, identity.AdminURI(), time.Now().Add(-time.Minute), time.Hour)
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		client := east.EastWestClientTLS("west")
		client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		sErr, cErr, _ := handshake(t, west.EastWestServerTLS(), client)
		if sErr == nil || !strings.Contains(sErr.Error(), "not allowed") || cErr == nil {
			t.Fatalf("an admin certificate got through east-west: server %v, client %v", sErr, cErr)
		}
	})
}

func TestPeerCluster(t *testing.T) {
	if _, ok := PeerCluster(nil); ok {
		t.Error("PeerCluster(nil) reported a cluster")
	}
	if _, ok := PeerCluster(&tls.ConnectionState{}); ok {
		t.Error("PeerCluster without certificates reported a cluster")
	}
	admin := &x509.Certificate{URIs: []*url.URL{identity.AdminURI()}}
	if _, ok := PeerCluster(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{admin}}); ok {
		t.Error("PeerCluster reported a cluster for an admin certificate")
	}
}

// fakeRegistration signs renewal CSRs with ca for the URI returned by uri (so a test can make the hub misbehave).
type fakeRegistration struct {
	fedgatepb.RegistrationClient
	t   *testing.T
	ca  *testCA
	uri *url.URL
}

func (f *fakeRegistration) Renew(_ context.Context, in *fedgatepb.RenewRequest, _ ...grpc.CallOption) (*fedgatepb.RenewResponse, error) {
	blk, _ := pem.Decode(in.CsrPem)
	if blk == nil {
		return nil, errors.New("no CSR")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	return &fedgatepb.RenewResponse{
		CertificatePem: f.ca.issue(f.t, csr.PublicKey, f.uri, time.Now().Add(-time.Minute), 2*time.Hour),
		CaBundlePem:    f.ca.pem,
	}, nil
}

func TestRenewSwapsAndStores(t *testing.T) {
	ca := newCA(t, "hub-ca")
	dir := ca.credentialsFor(t, identity.ClusterURI("east"), time.Now().Add(-time.Minute), time.Hour)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := s.Leaf()
	if err := s.Renew(context.Background(), &fakeRegistration{t: t, ca: ca, uri: identity.ClusterURI("east")}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if s.Leaf().SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatal("Renew did not swap the certificate")
	}
	reloaded, err := Load(dir)
	if err != nil {
		t.Fatalf("Load after Renew: %v", err)
	}
	if reloaded.Leaf().SerialNumber.Cmp(s.Leaf().SerialNumber) != 0 {
		t.Error("the renewed certificate was not written to the credentials directory")
	}

	// A hub that answers with another cluster's certificate must not change our identity.
	current := s.Leaf()
	err = s.Renew(context.Background(), &fakeRegistration{t: t, ca: ca, uri: identity.ClusterURI("west")})
	if err == nil || !strings.Contains(err.Error(), `"west"`) {
		t.Fatalf("Renew with a certificate for west = %v", err)
	}
	if s.Cluster() != "east" || s.Leaf() != current {
		t.Errorf("failed renewal changed the store: cluster %q", s.Cluster())
	}
}

func TestNewKeyAndCSR(t *testing.T) {
	keyPEM, csrPEM, err := NewKeyAndCSR("east")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("CSR PEM block = %v", blk)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil || csr.Subject.CommonName != "east" {
		t.Errorf("CSR signature %v, CN %q", err, csr.Subject.CommonName)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		t.Fatalf("key PEM block = %v", kb)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(*ecdsa.PrivateKey).PublicKey.Equal(csr.PublicKey) {
		t.Error("the CSR is not for the returned key")
	}
}

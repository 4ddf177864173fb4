package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/identity"
)

// testCert is a certificate with its key, as DER, made here: spoke/ must not import the hub's PKI.
type testCert struct {
	der  []byte
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *testCert) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{der: der, cert: c, key: key}
}

func newCA(t *testing.T) *testCert {
	return newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "fedgate-ca"}, BasicConstraintsValid: true, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

func newLeaf(t *testing.T, ca *testCert, uri *url.URL) *testCert {
	return newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "fedgate-hub"}, URIs: []*url.URL{uri},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca)
}

// serverResult is what a test hub saw on its one connection.
type serverResult struct {
	handshakeErr error
	received     []byte // application data read after the handshake, until the client closed
}

// serve runs a TLS server on 127.0.0.1 presenting chain (leaf first) with key, accepting one connection, and returns
// its address and a channel with what it saw. After a handshake it echoes "ok" to the first bytes it reads.
func serve(t *testing.T, key *ecdsa.PrivateKey, chain ...*testCert) (string, <-chan serverResult) {
	t.Helper()
	var cert tls.Certificate
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.der)
	}
	cert.PrivateKey = key
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan serverResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			out <- serverResult{handshakeErr: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		var r serverResult
		r.handshakeErr = tc.Handshake()
		// Read whatever the client sends, even after a failed handshake, to prove nothing arrived.
		buf := make([]byte, 4096)
		for {
			n, err := tc.Read(buf)
			r.received = append(r.received, buf[:n]...)
			if n > 0 && r.handshakeErr == nil {
				_, _ = tc.Write([]byte("ok"))
			}
			if err != nil {
				break
			}
		}
		out <- r
	}()
	return ln.Addr().String(), out
}

// dial connects with PinnedTLS(pin) and, if the handshake succeeds, sends a token and waits for the answer.
func dial(addr, pin string) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, PinnedTLS(pin))
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("token")); err != nil {
		return err
	}
	_, err = io.ReadFull(conn, make([]byte, 2))
	return err
}

func TestPinnedTLSMatchingPin(t *testing.T) {
	ca := newCA(t)
	hub := newLeaf(t, ca, identity.HubURI())
	addr, seen := serve(t, hub.key, hub, ca)
	if err := dial(addr, identity.CAHash(ca.cert)); err != nil {
		t.Fatalf("dial with the right pin: %v", err)
	}
	r := <-seen
	if r.handshakeErr != nil || string(r.received) != "token" {
		t.Fatalf("server: handshake %v, received %q", r.handshakeErr, r.received)
	}
}

// The pin is also accepted in upper case with surrounding space, as an operator may paste it.
func TestPinnedTLSPinNormalised(t *testing.T) {
	ca := newCA(t)
	hub := newLeaf(t, ca, identity.HubURI())
	addr, seen := serve(t, hub.key, hub, ca)
	if err := dial(addr, " "+strings.ToUpper(identity.CAHash(ca.cert))+"\n"); err != nil {
		t.Fatalf("dial: %v", err)
	}
	if r := <-seen; r.handshakeErr != nil {
		t.Fatalf("server handshake: %v", r.handshakeErr)
	}
}

func TestPinnedTLSRefuses(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	hub := newLeaf(t, ca, identity.HubURI())
	foreign := newLeaf(t, otherCA, identity.HubURI())
	cluster := newLeaf(t, ca, identity.ClusterURI("east"))
	for _, tc := range []struct {
		name  string
		key   *ecdsa.PrivateKey
		chain []*testCert
		pin   string
		is    error  // wanted sentinel, if any
		want  string // wanted text in the error
	}{
		{"wrong pin", hub.key, []*testCert{hub, ca}, identity.CAHash(otherCA.cert), ErrCAMismatch, "does not match"},
		{"chain without a CA", hub.key, []*testCert{hub}, identity.CAHash(ca.cert), ErrCAMismatch, "sent no CA"},
		{"pinned certificate is not a CA", hub.key, []*testCert{hub, hub}, identity.CAHash(hub.cert), ErrCAMismatch, ""},
		// The hub presents the pinned CA, but its leaf was issued by another one.
		{"leaf not signed by the pinned CA", foreign.key, []*testCert{foreign, ca}, identity.CAHash(ca.cert), nil, "hub certificate"},
		// A cluster's certificate from the same CA must not pass for the hub.
		{"leaf without the hub identity", cluster.key, []*testCert{cluster, ca}, identity.CAHash(ca.cert), nil, "hub identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, seen := serve(t, tc.key, tc.chain...)
			err := dial(addr, tc.pin)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
			r := <-seen
			if r.handshakeErr == nil {
				t.Error("the server completed a handshake the client refused")
			}
			if len(r.received) != 0 {
				t.Errorf("the server read %q after a refused handshake", r.received)
			}
		})
	}
}

// Run with a wrong pin must fail before the token leaves the machine and must write no credentials.
func TestRunWrongPinSendsNoToken(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	hub := newLeaf(t, ca, identity.HubURI())
	addr, seen := serve(t, hub.key, hub, ca)
	out := filepath.Join(t.TempDir(), "creds")
	token, err := identity.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), Options{
		Hub: addr, Token: token.String(), CAHash: identity.CAHash(otherCA.cert), ClusterName: "east",
		EastWestAddress: "127.0.0.1:15443", OutDir: out, Timeout: 10 * time.Second,
	})
	if !errors.Is(err, ErrCAMismatch) {
		t.Fatalf("Run = %v, want the CA mismatch (errors.Is ErrCAMismatch, not a gRPC Unavailable quoting it)", err)
	}
	r := <-seen
	if len(r.received) != 0 {
		t.Errorf("the hub read %d bytes of application data", len(r.received))
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("credentials directory written after a failed join: %v", err)
	}
}

func TestRunValidatesOptions(t *testing.T) {
	good := Options{Hub: "127.0.0.1:1", Token: "abcdef.0123456789abcdef", CAHash: "sha256:" + strings.Repeat("ab", 32), ClusterName: "east"}
	for _, tc := range []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"bad pin", func(o *Options) { o.CAHash = "md5:abc" }, "ca hash"},
		{"bad token", func(o *Options) { o.Token = "nope" }, "token"},
		{"bad cluster name", func(o *Options) { o.ClusterName = "East_1" }, "East_1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mutate(&o)
			if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

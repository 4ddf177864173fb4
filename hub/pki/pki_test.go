package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/identity"
)

func csrFor(t *testing.T, cn string, mutate func(*x509.CertificateRequest)) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	if mutate != nil {
		mutate(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestLoadOrCreatePersistsCAWithPrivateKeyMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, caKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v, want 0600", st.Mode().Perm())
	}
	b, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.ActiveHash() != b.ActiveHash() {
		t.Fatal("reloading the CA changed its hash")
	}
}

func TestSignClusterCSR(t *testing.T) {
	a, err := New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, cert, err := a.SignClusterCSR(csrFor(t, "east", nil), "east", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(certPEM) == 0 {
		t.Fatal("empty certificate PEM")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("signed certificate does not verify: %v", err)
	}
	p, err := identity.FromCertificate(cert)
	if err != nil || p != (identity.Principal{Kind: identity.KindCluster, Name: "east"}) {
		t.Fatalf("identity = %v, %v", p, err)
	}
	if d := cert.NotAfter.Sub(time.Now()); d > time.Hour || d < 59*time.Minute {
		t.Fatalf("lifetime %v, want about 1h", d)
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "east"}}, rsaKey)
	for name, tc := range map[string]struct {
		csr  []byte
		want error
	}{
		"name differs":   {csrFor(t, "west", nil), ErrCSRName},
		"asks for a SAN": {csrFor(t, "east", func(r *x509.CertificateRequest) { r.URIs = []*url.URL{identity.AdminURI()} }), ErrCSRExtraSANs},
		"garbage":        {[]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), ErrBadCSR},
		"not a CSR":      {[]byte("hello"), ErrBadCSR},
		"weak RSA key":   {weakDER, ErrCSRWeakKey},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := a.SignClusterCSR(tc.csr, "east", time.Hour)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRotationKeepsOldCertificatesValid(t *testing.T) {
	a, err := New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, old, err := a.SignClusterCSR(csrFor(t, "east", nil), "east", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	oldHash := a.ActiveHash()
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	if a.ActiveHash() == oldHash {
		t.Fatal("rotation kept the same CA")
	}
	_, fresh, err := a.SignClusterCSR(csrFor(t, "east", nil), "east", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*x509.Certificate{"old": old, "new": fresh} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s certificate does not verify against the rotated bundle: %v", name, err)
		}
	}
	if n := len(a.Certificates()); n != 2 {
		t.Fatalf("bundle has %d CAs during rotation, want 2", n)
	}
	a.Retire()
	if _, err := old.Verify(x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("old certificate still verifies after the old CA was retired")
	}
}

// TestShortLivedCertificatesAreBarelyBackdated: renewal is due at two thirds of NotAfter-NotBefore, so the clock-skew
// backdating must stay a small part of a short lifetime or a renewal would be due before issue.
func TestShortLivedCertificatesAreBarelyBackdated(t *testing.T) {
	a, err := New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, cert, err := a.SignClusterCSR(csrFor(t, "east", nil), "east", 9*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	due := cert.NotBefore.Add(life * 2 / 3)
	if until := time.Until(due); until < 4*time.Second {
		t.Fatalf("a 9s certificate (NotBefore %v, NotAfter %v) is due for renewal in %v, want about 6s", cert.NotBefore, cert.NotAfter, until)
	}
}

// Save writes what LoadFiles reads back: the same active CA and the whole bundle of a rotation, the key private.
func TestSaveRoundTrip(t *testing.T) {
	a, err := New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "nested", "pki")
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := a.Save(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	b, err := LoadFiles(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if b.ActiveHash() != a.ActiveHash() || !bytes.Equal(b.BundlePEM(), a.BundlePEM()) {
		t.Fatal("loaded CA differs from the saved one")
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
}

// Package credentials holds a spoke's hub-issued identity: its private key (created in the cluster, never sent
// anywhere), its certificate and the hub's CA bundle. It builds the TLS settings for dialing the hub and for the
// east-west listener and client, and renews the certificate at two thirds of its lifetime over the existing mTLS
// connection — new handshakes pick the new certificate up; established connections and their streams are untouched.
package credentials

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/internal/atomicfile"
)

// File names inside a credentials directory.
const (
	KeyFile  = "tls.key"
	CertFile = "tls.crt"
	CAFile   = "ca.crt"
)

// Store is a spoke's current identity. Safe for concurrent use; Renew swaps the certificate in place.
type Store struct {
	// save keeps a renewed identity where the next start loads it from (the directory, or the Secret); nil keeps
	// nothing.
	save func(ctx context.Context, keyPEM, certPEM, caPEM []byte) error
	// discard deletes where the identity is kept (Discard); nil keeps it.
	discard func(ctx context.Context) error
	held    func(ctx context.Context) (bool, error)
	cluster string

	mu      sync.RWMutex
	certPEM []byte // as loaded or renewed: Discard deletes only a Secret that still holds it
	cert    *tls.Certificate
	leaf    *x509.Certificate
	pool    *x509.CertPool
	cas     []*x509.Certificate
}

// Load reads a credentials directory written by `hubctl join`.
func Load(dir string) (*Store, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	s := &Store{save: func(_ context.Context, keyPEM, certPEM, caPEM []byte) error {
		return Write(dir, keyPEM, certPEM, caPEM)
	}}
	if err := s.set(certPEM, keyPEM, caPEM); err != nil {
		return nil, fmt.Errorf("credentials in %s: %w", dir, err)
	}
	return s, nil
}

func (s *Store) set(certPEM, keyPEM, caPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	p, err := identity.FromCertificate(leaf)
	if err != nil {
		return err
	}
	if p.Kind != identity.KindCluster {
		return fmt.Errorf("certificate identity is %s, not a cluster", p)
	}
	cas, err := identity.ParseCertificates(caPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", CAFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	// A certificate that does not chain to the bundle stored beside it would be kept now and fail every handshake
	// later; refuse it here, where the caller still holds the previous identity.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("certificate does not chain to the CA bundle: %w", err)
	}
	cert.Leaf = leaf
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster != "" && s.cluster != p.Name {
		return fmt.Errorf("renewed certificate is for cluster %q, not %q", p.Name, s.cluster)
	}
	s.cluster, s.cert, s.leaf, s.pool, s.cas, s.certPEM = p.Name, &cert, leaf, pool, cas, certPEM
	return nil
}

// Cluster is the cluster name in the certificate.
func (s *Store) Cluster() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cluster
}

// Leaf returns the current certificate.
func (s *Store) Leaf() *x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leaf
}

// Pool returns the CAs trusted for the hub and other clusters.
func (s *Store) Pool() *x509.CertPool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pool
}

func (s *Store) current() *tls.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cert
}

// HubClientTLS is the TLS config for dialing the hub: present the current certificate, verify the hub against the
// CA bundle and its hub identity.
func (s *Store) HubClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.current(), nil },
		// Verification is done in VerifyConnection so that a CA rotation (a new bundle) applies to new handshakes.
		InsecureSkipVerify: true, //nolint:gosec // verified below against the current bundle
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs, s.Pool(), x509.ExtKeyUsageServerAuth, func(p identity.Principal) bool { return p.Kind == identity.KindHub })
		},
		NextProtos: []string{"h2"},
	}
}

// EastWestServerTLS accepts only clients with a certificate of another cluster joined to the same hub.
func (s *Store) EastWestServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.current(), nil },
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs, s.Pool(), x509.ExtKeyUsageClientAuth, func(p identity.Principal) bool { return p.Kind == identity.KindCluster })
		},
		NextProtos: []string{"h2"},
	}
}

// EastWestClientTLS dials cluster's east-west listener: the server must present that cluster's identity.
func (s *Store) EastWestClientTLS(cluster string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.current(), nil },
		InsecureSkipVerify:   true, //nolint:gosec // verified below: chain to our CAs and the expected cluster identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs, s.Pool(), x509.ExtKeyUsageServerAuth, func(p identity.Principal) bool {
				return p.Kind == identity.KindCluster && p.Name == cluster
			})
		},
		NextProtos: []string{"h2"},
	}
}

// PeerCluster returns the cluster identity of a verified east-west peer.
func PeerCluster(cs *tls.ConnectionState) (string, bool) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", false
	}
	p, err := identity.FromCertificate(cs.PeerCertificates[0])
	if err != nil || p.Kind != identity.KindCluster {
		return "", false
	}
	return p.Name, true
}

func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool, usage x509.ExtKeyUsage, allowed func(identity.Principal) bool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	p, err := identity.FromCertificate(leaf)
	if err != nil {
		return err
	}
	if !allowed(p) {
		return fmt.Errorf("peer identity %s is not allowed here", p)
	}
	return nil
}

// NewKeyAndCSR creates a P-256 key and a CSR for cluster. The key never leaves the caller.
func NewKeyAndCSR(cluster string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	return encodeKeyAndCSR(key, cluster)
}

func encodeKeyAndCSR(key crypto.Signer, cluster string) ([]byte, []byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cluster}}, key)
	if err != nil {
		return nil, nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// Write stores credentials in dir atomically (key 0600).
func Write(dir string, keyPEM, certPEM, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KeyFile, keyPEM, 0o600}, {CertFile, certPEM, 0o644}, {CAFile, caPEM, 0o644}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// RenewDue returns when the current certificate should be renewed: at two thirds of its lifetime.
func (s *Store) RenewDue() time.Time {
	leaf := s.Leaf()
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// Discard deletes the kept identity (the Secret of LoadSecret, and only while it still holds this store's
// certificate; a credentials directory is left to its owner), once the cluster was removed at the hub and its
// certificates are revoked.
func (s *Store) Discard(ctx context.Context) error {
	if s == nil || s.discard == nil {
		return nil
	}
	return s.discard(ctx)
}

// Held reports whether the kept identity is still this store's: the Secret of LoadSecret holds this store's
// certificate (a later join rewrites it for the cluster's new agent). A credentials directory is always held.
func (s *Store) Held(ctx context.Context) (bool, error) {
	if s == nil || s.held == nil {
		return true, nil
	}
	return s.held(ctx)
}

// SaveError is a renewal whose new identity is in use but could not be kept for the next start: retry the saving
// (Save), not the renewal, which would spend another of the cluster's certificates.
type SaveError struct {
	Err                    error
	keyPEM, certPEM, caPEM []byte
}

func (e *SaveError) Error() string { return "store renewed certificate: " + e.Err.Error() }
func (e *SaveError) Unwrap() error { return e.Err }

// Save tries again to keep the identity of a renewal that failed with e.
func (s *Store) Save(ctx context.Context, e *SaveError) error {
	if err := s.save(ctx, e.keyPEM, e.certPEM, e.caPEM); err != nil {
		return &SaveError{Err: err, keyPEM: e.keyPEM, certPEM: e.certPEM, caPEM: e.caPEM}
	}
	return nil
}

// Renew asks the hub for a fresh certificate over client (an existing mTLS connection), with a new key, then swaps it
// in and saves it. Open connections keep working; the next handshake uses the new certificate. A failure to save
// is a *SaveError.
func (s *Store) Renew(ctx context.Context, client fedgatepb.RegistrationClient) error {
	cluster := s.Cluster()
	keyPEM, csrPEM, err := NewKeyAndCSR(cluster)
	if err != nil {
		return err
	}
	resp, err := client.Renew(ctx, &fedgatepb.RenewRequest{CsrPem: csrPEM})
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := s.set(resp.CertificatePem, keyPEM, resp.CaBundlePem); err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if s.save != nil {
		if err := s.save(ctx, keyPEM, resp.CertificatePem, resp.CaBundlePem); err != nil {
			return &SaveError{Err: err, keyPEM: keyPEM, certPEM: resp.CertificatePem, caPEM: resp.CaBundlePem}
		}
	}
	return nil
}

// RunRenewal renews at two thirds of each certificate's lifetime until ctx ends, retrying failures with backoff.
func (s *Store) RunRenewal(ctx context.Context, client fedgatepb.RegistrationClient, log *slog.Logger) {
	backoff := time.Second
	for {
		wait := time.Until(s.RenewDue())
		if wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := s.Renew(ctx, client)
		// The new certificate is in use but not kept: keep trying to save it (a restart would otherwise start from
		// the previous one), without asking the hub for yet another — until it is due for renewal itself, when a
		// fresh one is asked for (a save that never succeeds must not let the certificate in use expire).
		var se *SaveError
		saveBackoff := time.Second
		for errors.As(err, &se) {
			due := time.Until(s.RenewDue())
			if due <= 0 {
				break
			}
			log.Error("renewed certificate in use, but not saved for the next start; retrying", "err", err, "in", min(saveBackoff, due))
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(saveBackoff, due)):
			}
			saveBackoff = min(saveBackoff*2, time.Minute)
			err = s.Save(ctx, se)
		}
		if errors.As(err, &se) {
			continue // due again: renew now
		}
		if err != nil {
			log.Warn("certificate renewal failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		log.Info("certificate renewed", "notAfter", s.Leaf().NotAfter)
	}
}

// Package pki is the hub's certificate authority: it creates or loads the CA, signs the client certificates clusters
// obtain at join (and renew), issues the hub's serving certificate and the admin credential. The CA key never leaves
// the hub's data directory (mode 0600); nothing here logs key material.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/internal/atomicfile"
)

// Authority signs certificates with its active CA and publishes a bundle that may also hold older CAs during a
// rotation.
type Authority struct {
	mu     sync.RWMutex
	active *x509.Certificate
	key    crypto.Signer
	bundle []*x509.Certificate // active first
	now    func() time.Time
}

const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
	caLifetime = 10 * 365 * 24 * time.Hour
)

// LoadOrCreate loads the CA from dir (ca.crt may hold several certificates: the first is active and matches ca.key)
// or creates one there on first start.
func LoadOrCreate(dir string) (*Authority, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	if _, err := os.Stat(certPath); err == nil {
		return LoadFiles(certPath, keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a, err := New(time.Now)
	if err != nil {
		return nil, err
	}
	if err := a.Save(certPath, keyPath); err != nil {
		return nil, err
	}
	return a, nil
}

// Save writes the active CA's key (mode 0600) and the bundle, in the files LoadFiles reads: how one replica's CA is
// handed to the others (--ca-cert/--ca-key), or a rotated bundle written for every replica.
func (a *Authority) Save(certPath, keyPath string) error {
	a.mu.RLock()
	key := a.key
	var bundlePEM []byte
	for _, c := range a.bundle { // read with the key, so a concurrent Rotate cannot pair one with the other's
		bundlePEM = append(bundlePEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	a.mu.RUnlock()
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	for _, dir := range []string{filepath.Dir(keyPath), filepath.Dir(certPath)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, bundlePEM, 0o644)
}

// LoadFiles loads a CA given by files (flags --ca-cert/--ca-key).
func LoadFiles(certPath, keyPath string) (*Authority, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	certs, err := identity.ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s: the first certificate does not match the key in %s", certPath, keyPath)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("%s: the first certificate is not a CA", certPath)
	}
	return &Authority{active: certs[0], key: key, bundle: certs, now: time.Now}, nil
}

// New creates a fresh in-memory CA (tests, and LoadOrCreate).
func New(now func() time.Time) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := selfSign(key, now())
	if err != nil {
		return nil, err
	}
	return &Authority{active: cert, key: key, bundle: []*x509.Certificate{cert}, now: now}, nil
}

func selfSign(key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "fedgate hub CA " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Rotate makes a new CA active and keeps the previous ones in the bundle, so certificates they signed stay valid until
// they expire or are renewed. Retire drops CAs other than the active one.
func (a *Authority) Rotate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert, err := selfSign(key, a.now())
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active, a.key = cert, key
	a.bundle = append([]*x509.Certificate{cert}, a.bundle...)
	return nil
}

// Retire drops every CA but the active one from the bundle.
func (a *Authority) Retire() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bundle = []*x509.Certificate{a.active}
}

// Certificates returns the bundle, active CA first.
func (a *Authority) Certificates() []*x509.Certificate {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return append([]*x509.Certificate(nil), a.bundle...)
}

// BundlePEM is the CA bundle in PEM, active first.
func (a *Authority) BundlePEM() []byte {
	var out []byte
	for _, c := range a.Certificates() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Pool is the bundle as a CertPool for verifying peers.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range a.Certificates() {
		p.AddCert(c)
	}
	return p
}

// ActiveHash is the pin (identity.CAHash) of the active CA, printed in join commands.
func (a *Authority) ActiveHash() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return identity.CAHash(a.active)
}

// Errors returned by SignCSR; the registration service maps them to InvalidArgument.
var (
	ErrBadCSR       = errors.New("malformed certificate signing request")
	ErrCSRName      = errors.New("certificate signing request subject does not match the cluster name")
	ErrCSRWeakKey   = errors.New("certificate signing request key is too weak")
	ErrCSRExtraSANs = errors.New("certificate signing request must not ask for SANs")
)

// SignClusterCSR checks a PEM or DER CSR from a joining or renewing cluster and signs a client+server certificate
// (server: the spoke's east-west listener) carrying the cluster's URI SAN, valid for ttl. The CSR's CommonName must
// equal the cluster name; any SAN it asks for is refused (the hub decides the identity, not the requester).
func (a *Authority) SignClusterCSR(csrBytes []byte, cluster string, ttl time.Duration) ([]byte, *x509.Certificate, error) {
	if err := identity.ValidateClusterName(cluster); err != nil {
		return nil, nil, err
	}
	if b, _ := pem.Decode(csrBytes); b != nil {
		if b.Type != "CERTIFICATE REQUEST" {
			return nil, nil, fmt.Errorf("%w: PEM block %q", ErrBadCSR, b.Type)
		}
		csrBytes = b.Bytes
	}
	csr, err := x509.ParseCertificateRequest(csrBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	if csr.Subject.CommonName != cluster {
		return nil, nil, fmt.Errorf("%w: CN %q, cluster %q", ErrCSRName, csr.Subject.CommonName, cluster)
	}
	if len(csr.URIs)+len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, nil, ErrCSRExtraSANs
	}
	if err := checkKeyStrength(csr.PublicKey); err != nil {
		return nil, nil, err
	}
	return a.sign(csr.PublicKey, cluster, []*url.URL{identity.ClusterURI(cluster)}, nil, nil, ttl,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth})
}

// IssueServing issues the hub's own serving certificate for hosts (DNS names or IPs), with the hub URI SAN.
func (a *Authority) IssueServing(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	certPEM, _, err := a.sign(key.Public(), "fedgate-hub", []*url.URL{identity.HubURI()}, dns, ips, ttl,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// IssueAdmin issues an admin client credential (certificate and key PEM) for hubctl.
func (a *Authority) IssueAdmin(ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	certPEM, _, err = a.sign(key.Public(), "fedgate-admin", []*url.URL{identity.AdminURI()}, nil, nil, ttl,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	return certPEM, keyPEM, err
}

func (a *Authority) sign(pub crypto.PublicKey, cn string, uris []*url.URL, dns []string, ips []net.IP, ttl time.Duration, eku []x509.ExtKeyUsage) ([]byte, *x509.Certificate, error) {
	a.mu.RLock()
	parent, key := a.active, a.key
	a.mu.RUnlock()
	now := a.now()
	// Backdating tolerates clock skew between hub and spokes, but only by a fraction of the lifetime: renewal is due
	// at two thirds of NotAfter-NotBefore, and a minute of backdating on a seconds-long certificate would make it due
	// before it was issued.
	skew := min(time.Minute, ttl/10)
	notAfter := now.Add(ttl)
	if notAfter.After(parent.NotAfter) {
		notAfter = parent.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-skew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		URIs:         uris,
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

func checkKeyStrength(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return ErrCSRWeakKey
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return ErrCSRWeakKey
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, pub)
	}
	return nil
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key found")
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

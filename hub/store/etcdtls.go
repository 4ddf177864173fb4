package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/fedgate/fedgate/internal/atomicfile"
)

// TLSFiles name a client's TLS credentials for etcd: the CA that verifies the server, and the client's certificate
// and key (both or neither; without them the client presents no certificate).
type TLSFiles struct {
	CA, Cert, Key string
}

// ClientTLS loads files into a client TLS configuration. Its errors name the hub flag that gives each file
// (--etcd-ca, --etcd-cert, --etcd-key) and the file.
func ClientTLS(files TLSFiles) (*tls.Config, error) {
	if (files.Cert == "") != (files.Key == "") {
		return nil, errors.New("etcd-cert and etcd-key: give both or neither")
	}
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, fmt.Errorf("etcd-ca %s: %w", files.CA, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("etcd-ca %s: no PEM certificate in it", files.CA)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if files.Cert != "" {
		for _, f := range []struct{ flag, path string }{{"etcd-cert", files.Cert}, {"etcd-key", files.Key}} {
			if _, err := os.Stat(f.path); err != nil {
				return nil, fmt.Errorf("%s %s: %w", f.flag, f.path, err)
			}
		}
		pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd-cert %s and etcd-key %s: %w", files.Cert, files.Key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// The embedded etcd's certificates live in <data dir>/etcd-tls (mode 0700, every file 0600): a CA made for this
// etcd alone, the member's certificate (it serves clients and the peer URL) and the hub's client certificate. The
// CA's key is never written: the two certificates it signs when the set is made are all it ever signs, so reading
// the data dir later gives no way to mint another client. The hub CA (hub/pki) is not used: the certificates it
// issues to every cluster would then open etcd too.
const (
	EmbeddedTLSDir = "etcd-tls"

	embeddedCAFile     = "ca.crt"
	embeddedServerCert = "server.crt"
	embeddedServerKey  = "server.key"
	embeddedClientCert = "client.crt"
	embeddedClientKey  = "client.key"

	// embeddedCertLifetime of the whole set; a start that finds less than a third of it left makes a new set.
	embeddedCertLifetime = 10 * 365 * 24 * time.Hour
)

// embeddedTLS is the set in one directory.
type embeddedTLS struct{ dir string }

func (t embeddedTLS) path(name string) string { return filepath.Join(t.dir, name) }

// client names the hub's client credentials.
func (t embeddedTLS) client() TLSFiles {
	return TLSFiles{CA: t.path(embeddedCAFile), Cert: t.path(embeddedClientCert), Key: t.path(embeddedClientKey)}
}

// ensure makes the directory private and keeps the set found there if it is whole, chains to its CA and is valid
// for at least a third of its lifetime more at now; otherwise (first start, a file lost, a crash half-way through
// writing a set) it makes a new set. Either way the server and the client load the same files afterwards.
func (t embeddedTLS) ensure(now time.Time) error {
	if err := os.MkdirAll(t.dir, 0o700); err != nil {
		return fmt.Errorf("embedded etcd certificates: %w", err)
	}
	// MkdirAll keeps the mode of a directory that already exists.
	if err := os.Chmod(t.dir, 0o700); err != nil {
		return fmt.Errorf("embedded etcd certificates: %w", err)
	}
	if t.usable(now) {
		return nil
	}
	if err := t.create(now); err != nil {
		return fmt.Errorf("embedded etcd certificates in %s: %w", t.dir, err)
	}
	return nil
}

// usable reports whether the set in the directory can be kept.
func (t embeddedTLS) usable(now time.Time) bool {
	caPEM, err := os.ReadFile(t.path(embeddedCAFile))
	if err != nil {
		return false
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return false
	}
	until := now.Add(embeddedCertLifetime / 3)
	for _, leaf := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
	}{
		{embeddedServerCert, embeddedServerKey, x509.ExtKeyUsageServerAuth},
		{embeddedServerCert, embeddedServerKey, x509.ExtKeyUsageClientAuth},
		{embeddedClientCert, embeddedClientKey, x509.ExtKeyUsageClientAuth},
	} {
		pair, err := tls.LoadX509KeyPair(t.path(leaf.cert), t.path(leaf.key))
		if err != nil {
			return false
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: until, KeyUsages: []x509.ExtKeyUsage{leaf.usage}}); err != nil {
			return false
		}
	}
	return true
}

// create makes a new CA, signs the member's and the client's certificates with it and writes them; the CA's key is
// dropped when it returns.
func (t embeddedTLS) create(now time.Time) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "fedgate embedded etcd CA " + now.UTC().Format(time.RFC3339)},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(embeddedCertLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	files := map[string][]byte{embeddedCAFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	for _, leaf := range []struct {
		cert, key string
		tmpl      x509.Certificate
	}{
		// The member serves clients and the peer URL and, with client-certificate auth on, etcd's own gateway dials
		// the client URL with it: it is a client as well as a server.
		{embeddedServerCert, embeddedServerKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "fedgate embedded etcd"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:    []string{"localhost"},
		}},
		{embeddedClientCert, embeddedClientKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "fedgate-hub"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := leaf.tmpl
		tmpl.SerialNumber = randomSerial()
		tmpl.NotBefore, tmpl.NotAfter = ca.NotBefore, ca.NotAfter
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, key.Public(), caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		files[leaf.cert] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		files[leaf.key] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	for name, data := range files {
		if err := atomicfile.Write(t.path(name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

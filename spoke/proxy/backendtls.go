package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// backendTLS is how this spoke originates TLS to a backend's local endpoints (BackendTLSPolicy). It is built once per
// table build; backends with the same settings share it, and backends with the same CA bundle share its pool.
type backendTLS struct {
	// key identifies the settings (hostname, trust anchors, subject alt names): pooled connections are keyed by it,
	// so a cleartext connection and TLS connections of different settings to one address never mix.
	key string
	cfg *tls.Config
	// err: the settings are unusable (no certificate in the CA bundle, no system roots); every dial fails with it.
	err error
}

// backendTLSHandshakeTimeout bounds a TLS handshake with a backend when the request's context ends later (the same
// bound as the TCP connect of the default dialer).
const backendTLSHandshakeTimeout = 5 * time.Second

// backendTLSError is a failed TLS connection to a backend's endpoint: the backend's fault (a certificate that does not
// verify, a handshake it botched), counted against the endpoint like a refused connection.
type backendTLSError struct {
	backend, addr string
	err           error
}

func (e *backendTLSError) Error() string {
	return fmt.Sprintf("TLS to backend %s at %s: %v", e.backend, e.addr, e.err)
}
func (e *backendTLSError) Unwrap() error { return e.err }

// backendTLSBuilder builds the backendTLS values of one table, sharing them by identity and CA pools by bundle.
type backendTLSBuilder struct {
	byKey  map[string]*backendTLS
	pools  map[string]*x509.CertPool
	errs   map[string]error
	system func() (*x509.CertPool, error)
}

func newBackendTLSBuilder() *backendTLSBuilder {
	return &backendTLSBuilder{byKey: map[string]*backendTLS{}, pools: map[string]*x509.CertPool{}, errs: map[string]error{},
		system: x509.SystemCertPool}
}

func tlsIdentity(bt *spokeconfig.BackendTLS) (key, caKey string) {
	h := sha256.New()
	ca := sha256.Sum256(bt.CACertificatesPEM)
	caKey = hex.EncodeToString(ca[:])
	if bt.WellKnownSystem {
		caKey = "system"
	}
	fmt.Fprintf(h, "%d:%s|%s|", len(bt.Hostname), bt.Hostname, caKey)
	for _, s := range bt.SubjectAltNames {
		fmt.Fprintf(h, "%d:%s=%d:%s|", len(s.Type), s.Type, len(s.Value), s.Value)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), caKey
}

func (tb *backendTLSBuilder) get(in *spokeconfig.BackendTLS) *backendTLS {
	if in == nil {
		return nil
	}
	key, caKey := tlsIdentity(in)
	if bt := tb.byKey[key]; bt != nil {
		return bt
	}
	bt := &backendTLS{key: key}
	tb.byKey[key] = bt
	pool, err := tb.pool(in, caKey)
	if err != nil {
		bt.err = err
		return bt
	}
	if in.Hostname == "" {
		bt.err = errors.New("no hostname (SNI) set")
		return bt
	}
	cfg := &tls.Config{
		ServerName: in.Hostname,
		RootCAs:    pool,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	if len(in.SubjectAltNames) > 0 {
		sans := append([]spokeconfig.SubjectAltName(nil), in.SubjectAltNames...)
		// The certificate must carry one of the SANs instead of Hostname: Go's verification checks the chain and the
		// hostname together, so it is skipped here and VerifyConnection does the whole of it (chain, usage, SANs).
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifySANs(cs, pool, sans) }
	}
	bt.cfg = cfg
	return bt
}

func (tb *backendTLSBuilder) pool(in *spokeconfig.BackendTLS, caKey string) (*x509.CertPool, error) {
	if p := tb.pools[caKey]; p != nil {
		return p, nil
	}
	if err := tb.errs[caKey]; err != nil {
		return nil, err
	}
	var p *x509.CertPool
	var err error
	if in.WellKnownSystem {
		p, err = tb.system()
		if err != nil {
			err = fmt.Errorf("system roots: %w", err)
		}
	} else {
		p = x509.NewCertPool()
		if !p.AppendCertsFromPEM(in.CACertificatesPEM) {
			err = errors.New("no CA certificate in the policy's bundle")
		}
	}
	if err != nil {
		tb.errs[caKey] = err
		return nil, err
	}
	tb.pools[caKey] = p
	return p, nil
}

// verifySANs verifies the peer's chain against roots (for server authentication) and requires that the leaf carry one
// of sans: a DNS name for type Hostname, a URI for type URI.
func verifySANs(cs tls.ConnectionState, roots *x509.CertPool, sans []spokeconfig.SubjectAltName) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("x509: backend sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return err
	}
	for _, s := range sans {
		switch s.Type {
		case "URI":
			for _, u := range leaf.URIs {
				if u.String() == s.Value {
					return nil
				}
			}
		default: // "Hostname"
			if len(leaf.DNSNames) > 0 && leaf.VerifyHostname(s.Value) == nil {
				return nil
			}
		}
	}
	want := make([]string, len(sans))
	for i, s := range sans {
		want[i] = s.Type + " " + s.Value
	}
	var have []string
	have = append(have, leaf.DNSNames...)
	for _, u := range leaf.URIs {
		have = append(have, u.String())
	}
	return fmt.Errorf("x509: certificate carries none of the subject alt names [%s] (it has [%s])",
		strings.Join(want, ", "), strings.Join(have, ", "))
}

// dialTLS opens a TLS connection to addr over a connection from dial, the handshake bounded by ctx and
// backendTLSHandshakeTimeout. Failures are *backendTLSError naming the backend, the address and the reason.
func (bt *backendTLS) dial(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), backendID, addr string) (net.Conn, error) {
	if bt.err != nil {
		return nil, &backendTLSError{backend: backendID, addr: addr, err: bt.err}
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, backendTLSHandshakeTimeout)
	defer cancel()
	tc := tls.Client(nc, bt.cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &backendTLSError{backend: backendID, addr: addr, err: err}
	}
	return tc, nil
}

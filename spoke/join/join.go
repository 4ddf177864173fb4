// Package join is the joining side of cluster registration (`hubctl join`): it pins the hub's CA by hash during the
// TLS handshake — before the token is sent — creates the cluster's key locally, sends a CSR with the token, and writes
// the returned certificate and CA bundle beside the key.
package join

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/spoke/credentials"
)

// Options of a join.
type Options struct {
	Hub             string // host:port
	Token           string // id.secret
	CAHash          string // sha256:<hex>
	ClusterName     string
	Labels          map[string]string
	EastWestAddress string
	OutDir          string
	Timeout         time.Duration
}

// ErrCAMismatch means the hub presented a CA whose hash differs from --ca-hash; the token was not sent.
var ErrCAMismatch = errors.New("the hub's CA does not match --ca-hash; refusing to send the token")

// PinnedTLS verifies the hub's chain against a CA that the hub presents and that matches pin. The hub sends its
// serving certificate followed by its CA.
func PinnedTLS(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // verified below against the pinned CA
		NextProtos:         []string{"h2"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) < 2 {
				return fmt.Errorf("%w (the hub sent no CA certificate)", ErrCAMismatch)
			}
			roots := x509.NewCertPool()
			pinned := false
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && identity.MatchCAHash(pin, c) {
					roots.AddCert(c)
					pinned = true
				}
			}
			if !pinned {
				return ErrCAMismatch
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("hub certificate: %w", err)
			}
			p, err := identity.FromCertificate(leaf)
			if err != nil || p.Kind != identity.KindHub {
				return fmt.Errorf("hub certificate does not carry the hub identity")
			}
			return nil
		},
	}
}

// Run performs the join and writes tls.key, tls.crt and ca.crt into o.OutDir.
func Run(ctx context.Context, o Options) (*fedgatepb.JoinResponse, error) {
	if err := identity.ValidateCAHash(o.CAHash); err != nil {
		return nil, err
	}
	if _, err := identity.ParseToken(o.Token); err != nil {
		return nil, err
	}
	if err := identity.ValidateClusterName(o.ClusterName); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	keyPEM, csrPEM, err := credentials.NewKeyAndCSR(o.ClusterName)
	if err != nil {
		return nil, err
	}
	resp, err := Register(ctx, o, csrPEM)
	if err != nil {
		return nil, err
	}
	if err := credentials.Write(o.OutDir, keyPEM, resp.CertificatePem, resp.CaBundlePem); err != nil {
		return nil, err
	}
	return resp, nil
}

// Register sends the join request — token, CSR, labels, east-west address — to o.Hub over a connection pinned to
// o.CAHash, once. A hub the pin refuses is reported as that refusal (errors.Is ErrCAMismatch when its CA differs):
// gRPC turns a refused handshake into Unavailable, which reads like a hub that cannot be reached, and keeps only the
// error's text.
func Register(ctx context.Context, o Options, csrPEM []byte) (*fedgatepb.JoinResponse, error) {
	tc := PinnedTLS(o.CAHash)
	var mu sync.Mutex
	var refused error
	verify := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			mu.Lock()
			refused = err
			mu.Unlock()
		}
		return err
	}
	conn, err := grpc.NewClient(o.Hub, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := fedgatepb.NewRegistrationClient(conn).Join(ctx, &fedgatepb.JoinRequest{
		Token: o.Token, ClusterName: o.ClusterName, CsrPem: csrPEM, Labels: o.Labels, EastWestAddress: o.EastWestAddress,
	}, grpc.WaitForReady(false))
	if err != nil {
		mu.Lock()
		defer mu.Unlock()
		if refused != nil {
			return nil, refused
		}
		return nil, err
	}
	return resp, nil
}

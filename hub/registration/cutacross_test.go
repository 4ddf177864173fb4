package registration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/pki"
)

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// A certificate revoked by another hub replica (its revocation record appears in etcd) ends this replica's open
// streams on it: every replica's revocation watch cuts them, not only the replica that revoked.
func TestRevocationCutsStreamsOnEveryReplica(t *testing.T) {
	ctx := context.Background()
	cli := startEtcd(t)
	ca, err := pki.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	sessions := auth.NewSessions()
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	replica, err := New(sctx, cli, ca, Options{Sessions: sessions})
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0xc3), URIs: []*url.URL{identity.ClusterURI("west")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	pctx := peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}})
	a := &auth.Authenticator{Policy: auth.DefaultPolicy(), Revoker: replica, Sessions: sessions}
	ended := make(chan error, 1)
	go func() {
		ended <- a.Stream()(nil, ctxStream{ctx: pctx}, &grpc.StreamServerInfo{FullMethod: "/fedgate.v1.Sync/Report"},
			func(_ any, ss grpc.ServerStream) error {
				select {
				case <-ss.Context().Done():
					return context.Cause(ss.Context())
				case <-time.After(10 * time.Second):
					return nil
				}
			})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for sessions.Count("west") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Another replica revokes the certificate: only its record in etcd reaches this one.
	if _, err := cli.Put(ctx, RevokedPrefix+identity.SerialHex(leaf.SerialNumber), `{"cluster":"west"}`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the stream ended without a cause")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream on the revoked certificate still runs 5 s after the revocation reached etcd")
	}
}

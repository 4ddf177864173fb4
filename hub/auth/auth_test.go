package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
)

const (
	methodReport = "/fedgate.v1.Sync/Report"
	methodJoin   = "/fedgate.v1.Registration/Join"
	methodApply  = "/fedgate.v1.Admin/Apply"
)

// cert is a stand-in for a certificate that TLS has already verified: the interceptors read only its URI SANs and
// serial.
func cert(serial int64, uris ...*url.URL) *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(serial), URIs: uris}
}

// peerCtx is the context gRPC hands a handler for a TLS connection whose verified chain starts with leaf (nil: the
// client presented no certificate).
func peerCtx(leaf *x509.Certificate) context.Context {
	var st tls.ConnectionState
	if leaf != nil {
		st.PeerCertificates = []*x509.Certificate{leaf}
		st.VerifiedChains = [][]*x509.Certificate{{leaf}}
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: st}})
}

type revoked map[string]Revocation

func (r revoked) Revoked(serial *big.Int) (Revocation, bool) {
	why, ok := r[serial.String()]
	return why, ok
}

// callUnary runs the unary interceptor for method and reports the handler's context, or nil if it did not run.
func callUnary(t *testing.T, a *Authenticator, ctx context.Context, method string) (context.Context, error) {
	t.Helper()
	var seen context.Context
	_, err := a.Unary()(ctx, struct{}{}, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, _ any) (any, error) {
		seen = ctx
		return "ok", nil
	})
	if err != nil && seen != nil {
		t.Errorf("%s: handler ran although the call was refused (%v)", method, err)
	}
	return seen, err
}

func TestAuthenticate(t *testing.T) {
	east := cert(10, identity.ClusterURI("east"))
	admin := cert(11, identity.AdminURI())
	a := &Authenticator{Policy: DefaultPolicy(), Revoker: revoked{"12": {Cluster: "east", Reason: identity.ReasonClusterRemoved}}}
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		method string
		code   codes.Code
		want   *identity.Principal
	}{
		{"method not in policy", peerCtx(east), "/fedgate.v1.Sync/Backdoor", codes.PermissionDenied, nil},
		{"method not in policy without cert", peerCtx(nil), "/fedgate.v1.Sync/Backdoor", codes.PermissionDenied, nil},
		{"open method without cert", peerCtx(nil), methodJoin, codes.OK, nil},
		{"open method without any peer", context.Background(), methodJoin, codes.OK, nil},
		{"open method with a cert records the principal", peerCtx(east), methodJoin, codes.OK,
			&identity.Principal{Kind: identity.KindCluster, Name: "east"}},
		{"cluster method without cert", peerCtx(nil), methodReport, codes.Unauthenticated, nil},
		{"cluster method with cluster cert", peerCtx(east), methodReport, codes.OK,
			&identity.Principal{Kind: identity.KindCluster, Name: "east"}},
		{"revoked serial", peerCtx(cert(12, identity.ClusterURI("east"))), methodReport, codes.Unauthenticated, nil},
		{"revoked serial on an open method", peerCtx(cert(12, identity.ClusterURI("east"))), methodJoin, codes.Unauthenticated, nil},
		{"admin cert on a cluster method", peerCtx(admin), methodReport, codes.PermissionDenied, nil},
		{"cluster cert on an admin method", peerCtx(east), methodApply, codes.PermissionDenied, nil},
		{"admin cert on an admin method", peerCtx(admin), methodApply, codes.OK, &identity.Principal{Kind: identity.KindAdmin}},
		{"cert without a fedgate identity", peerCtx(cert(13)), methodReport, codes.Unauthenticated, nil},
		{"cert with two identities", peerCtx(cert(14, identity.AdminURI(), identity.ClusterURI("east"))), methodApply,
			codes.Unauthenticated, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, err := callUnary(t, a, tc.ctx, tc.method)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.code)
			}
			if tc.code != codes.OK {
				return
			}
			p, ok := PrincipalFrom(ctx)
			if tc.want == nil {
				if ok {
					t.Errorf("principal %v stored for an anonymous caller", p)
				}
				return
			}
			if !ok || p != *tc.want {
				t.Errorf("principal = %v, %v; want %v", p, ok, *tc.want)
			}
		})
	}
}

func TestWithPrincipalRoundTrip(t *testing.T) {
	if _, ok := PrincipalFrom(context.Background()); ok {
		t.Fatal("principal found in an empty context")
	}
	want := identity.Principal{Kind: identity.KindCluster, Name: "west"}
	if got, ok := PrincipalFrom(WithPrincipal(context.Background(), want)); !ok || got != want {
		t.Fatalf("PrincipalFrom = %v, %v", got, ok)
	}
}

// DefaultPolicy must name every RPC the hub serves: a method missing from it is refused to everyone, so a new RPC
// without a policy entry would be silently unusable (and a stale entry names a method that no longer exists).
func TestDefaultPolicyCoversEveryMethod(t *testing.T) {
	p := DefaultPolicy()
	served := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{fedgatepb.Admin_ServiceDesc, fedgatepb.Sync_ServiceDesc, fedgatepb.Registration_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			served[full] = true
			if _, ok := p[full]; !ok {
				t.Errorf("DefaultPolicy has no entry for %s", full)
			}
		}
	}
	for m := range p {
		if !served[m] {
			t.Errorf("DefaultPolicy names %s, which no service serves", m)
		}
	}
	for m, kind := range map[string]identity.Kind{
		fedgatepb.Registration_Join_FullMethodName:  "",
		fedgatepb.Registration_Renew_FullMethodName: identity.KindCluster,
		methodReport: identity.KindCluster,
		fedgatepb.Admin_RemoveCluster_FullMethodName: identity.KindAdmin,
	} {
		if p[m] != kind {
			t.Errorf("DefaultPolicy[%s] = %q, want %q", m, p[m], kind)
		}
	}
	for m, kind := range p {
		if kind == "" && m != fedgatepb.Registration_Join_FullMethodName {
			t.Errorf("%s is open to callers without a certificate; only Join may be", m)
		}
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func TestStreamRefusedBeforeHandler(t *testing.T) {
	a := &Authenticator{Policy: DefaultPolicy(), Sessions: NewSessions()}
	ran := false
	err := a.Stream()(nil, &fakeStream{ctx: peerCtx(nil)}, &grpc.StreamServerInfo{FullMethod: "/fedgate.v1.Sync/Subscribe"},
		func(any, grpc.ServerStream) error { ran = true; return nil })
	if status.Code(err) != codes.Unauthenticated || ran {
		t.Fatalf("err = %v, handler ran = %v; want Unauthenticated before the handler", err, ran)
	}
}

func TestSessionsCutCancelsClusterStreams(t *testing.T) {
	sessions := NewSessions()
	a := &Authenticator{Policy: DefaultPolicy(), Sessions: sessions}
	errCut := errors.New("cluster removed")

	type result struct {
		cluster string
		cause   error
		p       identity.Principal
	}
	started := make(chan struct{})
	results := make(chan result, 3)
	release := make(chan struct{}) // lets the untouched stream end at the close of the test
	open := func(cluster string) {
		stream := &fakeStream{ctx: peerCtx(cert(20, identity.ClusterURI(cluster)))}
		err := a.Stream()(nil, stream, &grpc.StreamServerInfo{FullMethod: "/fedgate.v1.Sync/Subscribe"},
			func(_ any, ss grpc.ServerStream) error {
				p, _ := PrincipalFrom(ss.Context())
				started <- struct{}{}
				select {
				case <-ss.Context().Done():
				case <-release:
				}
				results <- result{cluster, context.Cause(ss.Context()), p}
				return nil
			})
		if err != nil {
			t.Errorf("stream of %s: %v", cluster, err)
		}
	}
	go open("east")
	go open("east")
	go open("west")
	for range 3 {
		<-started
	}
	if n := sessions.Count("east"); n != 2 {
		t.Fatalf("Count(east) = %d, want 2", n)
	}
	if n := sessions.Count("west"); n != 1 {
		t.Fatalf("Count(west) = %d, want 1", n)
	}

	if n := sessions.Cut("east", errCut); n != 2 {
		t.Fatalf("Cut(east) = %d, want 2", n)
	}
	for range 2 {
		r := <-results
		if r.cluster != "east" {
			t.Fatalf("stream of %s ended on Cut(east)", r.cluster)
		}
		if !errors.Is(r.cause, errCut) {
			t.Errorf("cause = %v, want %v", r.cause, errCut)
		}
		if r.p != (identity.Principal{Kind: identity.KindCluster, Name: "east"}) {
			t.Errorf("handler saw principal %v", r.p)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sessions.Wait(ctx, "east"); err != nil {
		t.Fatalf("Wait(east): %v", err)
	}
	if n := sessions.Count("east"); n != 0 {
		t.Errorf("Count(east) after the streams ended = %d", n)
	}
	if n := sessions.Count("west"); n != 1 {
		t.Errorf("Count(west) = %d after cutting east, want 1", n)
	}
	if n := sessions.Cut("nobody", errCut); n != 0 {
		t.Errorf("Cut of a cluster without streams = %d", n)
	}

	close(release)
	if r := <-results; r.cluster != "west" || r.cause != nil {
		t.Errorf("west stream ended with %+v", r)
	}
	if err := sessions.Wait(ctx, "west"); err != nil {
		t.Fatalf("Wait(west): %v", err)
	}
}

// Wait gives up when its context ends while streams are still open.
func TestSessionsWaitHonoursContext(t *testing.T) {
	s := NewSessions()
	_, done := s.add(context.Background(), "east", "")
	defer done()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(ctx, "east"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
}

// Admin streams (none today, but the registry must not hold them) and anonymous callers are not registered.
func TestStreamsOfAdminsAreNotRegistered(t *testing.T) {
	s := NewSessions()
	a := &Authenticator{Policy: Policy{"/x/Watch": identity.KindAdmin}, Sessions: s}
	err := a.Stream()(nil, &fakeStream{ctx: peerCtx(cert(1, identity.AdminURI()))}, &grpc.StreamServerInfo{FullMethod: "/x/Watch"},
		func(_ any, ss grpc.ServerStream) error {
			if p, ok := PrincipalFrom(ss.Context()); !ok || p.Kind != identity.KindAdmin {
				t.Errorf("principal = %v, %v", p, ok)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.open) != 0 {
				t.Errorf("admin stream registered: %v", s.open)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
}

// flipRevoker answers "not revoked" to its first check and "revoked" after: a revocation that lands between
// authenticate's check and the stream's registration.
type flipRevoker struct{ calls int }

func (f *flipRevoker) Revoked(*big.Int) (Revocation, bool) {
	f.calls++
	return Revocation{Cluster: "east", Reason: identity.ReasonClusterRemoved}, f.calls > 1
}

// A stream whose certificate is revoked between the first check and its registration is refused, not left running.
func TestStreamRevokedWhileRegisteringIsRefused(t *testing.T) {
	a := &Authenticator{Policy: DefaultPolicy(), Revoker: &flipRevoker{}, Sessions: NewSessions()}
	ran := false
	err := a.Stream()(nil, &fakeStream{ctx: peerCtx(cert(7, identity.ClusterURI("east")))}, &grpc.StreamServerInfo{FullMethod: methodReport},
		func(any, grpc.ServerStream) error { ran = true; return nil })
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), `cluster "east" was removed`) || ran {
		t.Fatalf("err = %v, handler ran = %v; want Unauthenticated saying east was removed, and no handler", err, ran)
	}
	if n := a.Sessions.Count("east"); n != 0 {
		t.Fatalf("%d streams left registered", n)
	}
}

// CutSerial ends exactly the streams of one certificate, whatever their cluster.
func TestSessionsCutSerial(t *testing.T) {
	s := NewSessions()
	oldCtx, doneOld := s.add(context.Background(), "east", "0a")
	defer doneOld()
	newCtx, doneNew := s.add(context.Background(), "east", "0b")
	defer doneNew()
	if n := s.CutSerial("0a", errors.New("revoked")); n != 1 {
		t.Fatalf("CutSerial = %d, want 1", n)
	}
	if oldCtx.Err() == nil || newCtx.Err() != nil {
		t.Fatalf("old stream ended: %v, new stream ended: %v; want only the old", oldCtx.Err(), newCtx.Err())
	}
}

// Package auth authenticates and authorises every call to the hub from the caller's verified client certificate,
// never from a request field: TLS settings for the hub's server, gRPC interceptors that enforce a per-method policy,
// and the registry of open sessions so a removed cluster's streams can be cut at once.
//
// An unauthenticated caller is refused in the interceptor, before any handler runs or any request message is read.
package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/identity"
)

// Trust supplies the CAs the hub trusts for client certificates (they change during a CA rotation) and the serving
// certificate.
type Trust interface {
	Pool() *x509.CertPool
}

// ServerTLS returns the hub's TLS settings: TLS 1.3, h2 only, and client certificates verified against trust when
// given. A client without a certificate completes the handshake (it may call Registration.Join only); a certificate
// from another CA fails the handshake itself.
func ServerTLS(trust Trust, serving func() *tls.Certificate) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = trust.Pool()
		cert := serving()
		c.Certificates = []tls.Certificate{*cert}
		return c, nil
	}
	return base
}

// Policy maps a full gRPC method name ("/fedgate.v1.Sync/Report") to the principal kind allowed to call it. A method
// mapped to "" is open to callers without a certificate. Methods missing from the policy are refused.
type Policy map[string]identity.Kind

// Revoker tells whether a certificate serial has been revoked, and why (said to the refused caller).
type Revoker interface {
	Revoked(serial *big.Int) (Revocation, bool)
}

// Revocation is why a certificate was revoked.
type Revocation struct {
	Cluster string
	// Reason: identity.ReasonClusterRemoved, identity.ReasonClusterRejoined or identity.ReasonCertificateRevoked.
	Reason string
}

// String is what a refused caller reads.
func (r Revocation) String() string {
	switch r.Reason {
	case identity.ReasonClusterRemoved:
		return fmt.Sprintf("cluster %q was removed", r.Cluster)
	case identity.ReasonClusterRejoined:
		return fmt.Sprintf("cluster %q was re-joined", r.Cluster)
	}
	return "its cluster was removed or re-joined"
}

// RemovedError is the status the streams of a cluster removed at the hub end with.
func RemovedError(cluster string) error {
	r := Revocation{Cluster: cluster, Reason: identity.ReasonClusterRemoved}
	st := status.New(codes.Unauthenticated, r.String())
	if d, err := st.WithDetails(r.errorInfo()); err == nil {
		st = d
	}
	return st.Err()
}

func (r Revocation) errorInfo() *errdetails.ErrorInfo {
	reason := r.Reason
	if reason == "" {
		reason = identity.ReasonCertificateRevoked
	}
	return &errdetails.ErrorInfo{Reason: reason, Domain: identity.ErrorDomain, Metadata: map[string]string{"cluster": r.Cluster}}
}

// RevokedError is the status a caller or stream on a revoked certificate (serial in lowercase hex) gets: Unauthenticated,
// with the reason as a google.rpc.ErrorInfo a spoke can act on.
func RevokedError(serial string, r Revocation) error {
	st := status.New(codes.Unauthenticated, fmt.Sprintf("certificate %s has been revoked: %s", serial, r))
	if d, err := st.WithDetails(r.errorInfo()); err == nil {
		st = d
	}
	return st.Err()
}

type ctxKey struct{}

// PrincipalFrom returns the authenticated caller stored by the interceptors.
func PrincipalFrom(ctx context.Context) (identity.Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(identity.Principal)
	return p, ok
}

// WithPrincipal stores p in ctx (the interceptors do this; tests of handlers may too).
func WithPrincipal(ctx context.Context, p identity.Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

type serialKey struct{}

// SerialFrom returns the serial (SerialHex) of the caller's verified certificate, stored by the interceptors.
func SerialFrom(ctx context.Context) (string, bool) {
	s, ok := ctx.Value(serialKey{}).(string)
	return s, ok
}

// WithSerial stores the caller's certificate serial (SerialHex) in ctx (the interceptors do this; tests of handlers
// may too).
func WithSerial(ctx context.Context, serial string) context.Context {
	return context.WithValue(ctx, serialKey{}, serial)
}

// Authenticator holds the policy, the revocation list and the open sessions.
type Authenticator struct {
	Policy   Policy
	Revoker  Revoker
	Sessions *Sessions
}

// authenticate resolves the caller of method from the connection's verified certificate chain.
func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	want, known := a.Policy[method]
	if !known {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not allowed", method)
	}
	cert := verifiedLeaf(ctx)
	if cert == nil {
		if want == "" {
			return ctx, nil
		}
		return nil, status.Error(codes.Unauthenticated, "a client certificate issued by the hub is required")
	}
	if a.Revoker != nil {
		if r, revoked := a.Revoker.Revoked(cert.SerialNumber); revoked {
			return nil, RevokedError(identity.SerialHex(cert.SerialNumber), r)
		}
	}
	p, err := identity.FromCertificate(cert)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if want != "" && p.Kind != want {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", p, method)
	}
	return WithSerial(WithPrincipal(ctx, p), identity.SerialHex(cert.SerialNumber)), nil
}

func verifiedLeaf(ctx context.Context) *x509.Certificate {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// Unary is the unary server interceptor.
func (a *Authenticator) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream is the stream server interceptor. Streams of clusters are registered in Sessions so RemoveCluster can cut
// them.
func (a *Authenticator) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		if p, ok := PrincipalFrom(ctx); ok && p.Kind == identity.KindCluster && a.Sessions != nil {
			serial, _ := SerialFrom(ctx)
			var done func()
			ctx, done = a.Sessions.add(ctx, p.Name, serial)
			defer done()
			// A revocation between the check in authenticate and the registration above found no stream to cut:
			// check again now that the stream can be cut.
			if cert := verifiedLeaf(ctx); a.Revoker != nil && cert != nil {
				if r, revoked := a.Revoker.Revoked(cert.SerialNumber); revoked {
					return RevokedError(serial, r)
				}
			}
		}
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// Sessions tracks open streams per cluster.
type Sessions struct {
	mu   sync.Mutex
	next int
	open map[string]map[int]session
	// ended is closed (and replaced) whenever a stream ends, so Wait needs no polling.
	ended chan struct{}
}

// NewSessions returns an empty registry.
func NewSessions() *Sessions {
	return &Sessions{open: map[string]map[int]session{}, ended: make(chan struct{})}
}

// Wait blocks until cluster has no open stream (its handlers have returned) or ctx ends.
func (s *Sessions) Wait(ctx context.Context, cluster string) error {
	for {
		s.mu.Lock()
		n, ended := len(s.open[cluster]), s.ended
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ended:
		}
	}
}

// session is one open stream: its certificate's serial and how to end it.
type session struct {
	serial string
	cancel context.CancelCauseFunc
}

func (s *Sessions) add(ctx context.Context, cluster, serial string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	s.mu.Lock()
	s.next++
	id := s.next
	if s.open[cluster] == nil {
		s.open[cluster] = map[int]session{}
	}
	s.open[cluster][id] = session{serial: serial, cancel: cancel}
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		delete(s.open[cluster], id)
		if len(s.open[cluster]) == 0 {
			delete(s.open, cluster)
		}
		close(s.ended)
		s.ended = make(chan struct{})
		s.mu.Unlock()
		cancel(nil)
	}
}

// Cut cancels every open stream of cluster and returns how many there were.
func (s *Sessions) Cut(cluster string, cause error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.open[cluster] {
		ss.cancel(cause)
		n++
	}
	return n
}

// CutSerial ends the open streams authenticated with the certificate of serial (lowercase hex), whichever hub
// replica revoked it, and returns how many there were.
func (s *Sessions) CutSerial(serial string, cause error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, byID := range s.open {
		for _, ss := range byID {
			if ss.serial == serial {
				ss.cancel(cause)
				n++
			}
		}
	}
	return n
}

// Count returns the number of open streams of cluster.
func (s *Sessions) Count(cluster string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open[cluster])
}

// DefaultPolicy is the hub's method policy: spokes call Sync and Renew, admins call Admin, anyone may try Join.
func DefaultPolicy() Policy {
	p := Policy{
		"/fedgate.v1.Registration/Join":  "",
		"/fedgate.v1.Registration/Renew": identity.KindCluster,
		"/fedgate.v1.Sync/Report":        identity.KindCluster,
		"/fedgate.v1.Sync/Subscribe":     identity.KindCluster,
	}
	for _, m := range []string{"Apply", "Delete", "List", "ListClusters", "CreateToken", "ListTokens", "DeleteToken", "RemoveCluster"} {
		p["/fedgate.v1.Admin/"+m] = identity.KindAdmin
	}
	return p
}

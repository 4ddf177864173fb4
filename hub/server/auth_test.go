package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/clientconfig"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/store"
)

// adminConn dials the hub with the admin credential the bootstrap wrote.
func adminConn(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	cc, err := clientconfig.Load(path)
	if err != nil {
		t.Fatalf("bootstrap admin config: %v", err)
	}
	tc, err := cc.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return dial(t, cc.Hub, tc)
}

func dial(t *testing.T, addr string, tc *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// hubRoots is the CA bundle a client verifies the hub against (from the admin config, as hubctl would).
func (h *testHub) hubRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA().BundlePEM())
	return pool
}

// anonymous dials the hub with TLS but no client certificate (how a joining cluster calls Join).
func (h *testHub) anonymous(t *testing.T) *grpc.ClientConn {
	return dial(t, h.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.hubRoots(t)})
}

type clusterCred struct {
	cert tls.Certificate
	conn *grpc.ClientConn
}

// keyAndCSR makes a P-256 key and a CSR with common name cn, as spoke/credentials does.
func keyAndCSR(t *testing.T, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func keyPair(t *testing.T, key *ecdsa.PrivateKey, certPEM []byte) tls.Certificate {
	t.Helper()
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// join runs the whole registration over the wire: an admin creates a token bound to cluster, the cluster joins with
// a CSR and dials back with its certificate.
func (h *testHub) join(t *testing.T, cluster string) *clusterCred {
	t.Helper()
	ctx := testCtx(t)
	tok, err := h.admin.CreateToken(ctx, &fedgatepb.CreateTokenRequest{ClusterName: cluster})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := keyAndCSR(t, cluster)
	resp, err := fedgatepb.NewRegistrationClient(h.anonymous(t)).Join(ctx, &fedgatepb.JoinRequest{Token: tok.Token, ClusterName: cluster, CsrPem: csr})
	if err != nil {
		t.Fatalf("join %s: %v", cluster, err)
	}
	c := &clusterCred{cert: keyPair(t, key, resp.CertificatePem)}
	c.conn = dial(t, h.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.hubRoots(t), Certificates: []tls.Certificate{c.cert}})
	return c
}

// joinedSync is a Sync client speaking as cluster, joining it on first use.
func (h *testHub) joinedSync(t *testing.T, cluster string) fedgatepb.SyncClient {
	t.Helper()
	c := h.clusters[cluster]
	if c == nil {
		c = h.join(t, cluster)
		h.clusters[cluster] = c
	}
	return fedgatepb.NewSyncClient(c.conn)
}

// putToken stores a token record directly, for states an admin cannot create through the API (already expired).
func putToken(t *testing.T, h *testHub, tok identity.Token, expires time.Time, usages int32, cluster string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"secretHash": identity.HashSecret(tok), "expires": expires, "usagesLeft": usages, "clusterName": cluster, "created": time.Now(),
	})
	if _, err := h.Store().Client().Put(testCtx(t), registration.TokenPrefix+tok.ID, string(b)); err != nil {
		t.Fatal(err)
	}
}

func tokenUsages(t *testing.T, h *testHub, id string) int32 {
	t.Helper()
	l, err := h.admin.ListTokens(testCtx(t), &fedgatepb.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range l.Tokens {
		if ti.Id == id {
			return ti.UsagesLeft
		}
	}
	return -1
}

// TestJoinRefusals: every bad join is refused with an error naming the reason, and leaves no join record, no
// certificate and no spent usage behind.
func TestJoinRefusals(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	reg := fedgatepb.NewRegistrationClient(h.anonymous(t))

	good, err := h.admin.CreateToken(ctx, &fedgatepb.CreateTokenRequest{Usages: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(good.JoinCommand, "--token "+good.Token) || !strings.Contains(good.JoinCommand, "--ca-hash "+h.CA().ActiveHash()) {
		t.Fatalf("join command %q lacks the token or the CA hash", good.JoinCommand)
	}
	goodTok, _ := identity.ParseToken(good.Token)
	expired, _ := identity.NewToken()
	putToken(t, h, expired, time.Now().Add(-time.Minute), 5, "")
	bound, _ := identity.NewToken()
	putToken(t, h, bound, time.Now().Add(time.Hour), 5, "east")
	used, _ := identity.NewToken()
	putToken(t, h, used, time.Now().Add(time.Hour), 0, "")
	wrong := identity.Token{ID: goodTok.ID, Secret: strings.Repeat("x", 16)}

	_, csrOK := keyAndCSR(t, "newcomer")
	_, csrOther := keyAndCSR(t, "someone-else")
	for _, tc := range []struct {
		name, token, cluster string
		csr                  []byte
		code                 codes.Code
		want                 string
		tokenID              string
		usagesBefore         int32
	}{
		{"expired token", expired.String(), "newcomer", csrOK, codes.Unauthenticated, "expired", expired.ID, 5},
		{"wrong secret", wrong.String(), "newcomer", csrOK, codes.Unauthenticated, "is not valid", goodTok.ID, 1},
		{"unknown token", "abcdef.0123456789abcdef", "newcomer", csrOK, codes.Unauthenticated, "is not valid", "", 0},
		{"token used up", used.String(), "newcomer", csrOK, codes.Unauthenticated, "no usages left", used.ID, 0},
		{"token bound to another cluster", bound.String(), "newcomer", csrOK, codes.PermissionDenied, `bound to cluster "east"`, bound.ID, 5},
		{"malformed CSR", good.Token, "newcomer", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), codes.InvalidArgument, "malformed certificate signing request", goodTok.ID, 1},
		{"CSR name differs", good.Token, "newcomer", csrOther, codes.InvalidArgument, "does not match the cluster name", goodTok.ID, 1},
		{"token not in kubeadm form", "short.secret", "newcomer", csrOK, codes.InvalidArgument, "[a-z0-9]{6}", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reg.Join(ctx, &fedgatepb.JoinRequest{Token: tc.token, ClusterName: tc.cluster, CsrPem: tc.csr})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("got %v, want %v naming %q", err, tc.code, tc.want)
			}
			if _, secret, ok := strings.Cut(tc.token, "."); ok && strings.Contains(err.Error(), secret) {
				t.Fatalf("the refusal echoes the token secret: %v", err)
			}
			if j, err := h.Registration().Joined(ctx, tc.cluster); err != nil || j != nil {
				t.Fatalf("refused join left a join record: %v %v", j, err)
			}
			if tc.tokenID != "" {
				if got := tokenUsages(t, h, tc.tokenID); got != tc.usagesBefore {
					t.Fatalf("token %s has %d usages left, want %d (unchanged)", tc.tokenID, got, tc.usagesBefore)
				}
			}
			resp, err := h.Store().Client().Get(ctx, registration.CertPrefix, clientv3WithPrefix()...)
			if err != nil || resp.Count != 0 {
				t.Fatalf("refused join stored a certificate record: %d %v", resp.Count, err)
			}
		})
	}

	// The good token joins once; the single-use token is then spent and a second join is refused.
	key, csr := keyAndCSR(t, "newcomer")
	resp, err := reg.Join(ctx, &fedgatepb.JoinRequest{Token: good.Token, ClusterName: "newcomer", CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	if c := keyPair(t, key, resp.CertificatePem); c.Leaf == nil || c.Leaf.URIs[0].String() != "spiffe://fedgate/cluster/newcomer" {
		t.Fatalf("issued certificate identity: %v", c.Leaf.URIs)
	}
	_, csr2 := keyAndCSR(t, "second")
	if _, err := reg.Join(ctx, &fedgatepb.JoinRequest{Token: good.Token, ClusterName: "second", CsrPem: csr2}); status.Code(err) != codes.Unauthenticated ||
		!strings.Contains(err.Error(), "no usages left") {
		t.Fatalf("reused single-use token: %v", err)
	}
	if j, _ := h.Registration().Joined(ctx, "second"); j != nil {
		t.Fatal("reused token stored a join record")
	}
}

// TestCallersWithoutAValidCertificate: no certificate → Sync and Admin are Unauthenticated; a certificate from
// another CA fails the handshake; a cluster certificate may not call Admin.
func TestCallersWithoutAValidCertificate(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	anon := h.anonymous(t)
	if _, err := fedgatepb.NewAdminClient(anon).ListClusters(ctx, &fedgatepb.ListClustersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("admin call without a certificate: %v", err)
	}
	if _, err := fedgatepb.NewAdminClient(anon).CreateToken(ctx, &fedgatepb.CreateTokenRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token creation without a certificate: %v", err)
	}
	st, err := fedgatepb.NewSyncClient(anon).Report(ctx)
	if err == nil {
		_ = st.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{Cluster: "east"}}})
		_, err = st.CloseAndRecv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("report without a certificate: %v", err)
	}
	if _, err := h.Store().Report(ctx, "east"); err != nil {
		t.Fatal(err)
	}

	// A cluster certificate signed by a CA the hub does not trust: the TLS handshake itself fails.
	other, err := pki.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	key, csr := keyAndCSR(t, "east")
	certPEM, _, err := other.SignClusterCSR(csr, "east", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// GetClientCertificate sends the certificate whatever CAs the hub names (as spoke/credentials does); with
	// Certificates, crypto/tls would silently send none, and this would test the no-certificate case again.
	foreignCert := keyPair(t, key, certPEM)
	foreign := dial(t, h.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.hubRoots(t),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreignCert, nil }})
	_, err = fedgatepb.NewAdminClient(foreign).ListClusters(ctx, &fedgatepb.ListClustersRequest{})
	// TLS 1.3 clients finish their side before the hub checks the certificate, so the refusal reaches them as a bad
	// certificate alert or a connection the hub already closed: either way the transport fails, no RPC runs.
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("certificate from another CA: got %v, want a failed handshake (Unavailable)", err)
	}

	// A cluster's certificate is not an admin's.
	east := h.join(t, "east")
	if _, err := fedgatepb.NewAdminClient(east.conn).ListClusters(ctx, &fedgatepb.ListClustersRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin call with a cluster certificate: %v", err)
	}
}

// TestSubscribeToAnotherClusterIsDenied: a spoke's certificate decides its projection.
func TestSubscribeToAnotherClusterIsDenied(t *testing.T) {
	h := startHub(t)
	s := subscribeAs(t, h, "east", "west", "")
	select {
	case err := <-s.done:
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `certificate is for cluster "east"`) {
			t.Fatalf("subscribe to west with east's certificate: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the hub did not end a cross-cluster subscription")
	}
	if len(s.updates) != 0 {
		t.Fatal("a cross-cluster subscriber received a config")
	}
}

// TestRemoveCluster: removal cuts the cluster's streams, refuses its certificate from then on, and deletes its
// reports (so the compile drops its objects) and records.
func TestRemoveCluster(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	if _, err := report(t, h, "east", snapshot(1, service("web"))); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, h, "east", "")
	sub.next(t) // east's graph exists and streams
	resp, err := h.admin.RemoveCluster(ctx, &fedgatepb.RemoveClusterRequest{Name: "east"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.RevokedSerials) != 1 || resp.RemovedObjects != 1 {
		t.Fatalf("remove response: %v", resp)
	}
	select {
	case err := <-sub.done:
		// Whichever cut lands first (the removal's own, or the revocation watch's by serial), the spoke is told why.
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), `cluster "east" was removed`) || refusal(err) != identity.ReasonClusterRemoved+"/east" {
			t.Fatalf("removed cluster's stream ended with %v (%s), want Unauthenticated saying east was removed", err, refusal(err))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the removed cluster's stream was not cut")
	}
	for _, key := range []string{store.ClusterKey("east"), store.GraphKey("east"), store.SyncStateKey("east")} {
		waitKey(t, h.Store().Client(), key, func(v []byte) bool { return v == nil })
	}
	waitPresence(t, h, "east", 0)
	if objs, err := h.Store().Report(ctx, "east"); err != nil || len(objs) != 0 {
		t.Fatalf("removed cluster's report: %v %v", objs, err)
	}
	// Reconnecting with the revoked certificate (a fresh connection, a fresh handshake) is refused.
	east := h.clusters["east"]
	conn := dial(t, h.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.hubRoots(t), Certificates: []tls.Certificate{east.cert}})
	_, err = reportVia(ctx, fedgatepb.NewSyncClient(conn), snapshot(2, service("back")))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), `revoked: cluster "east" was removed`) || refusal(err) != identity.ReasonClusterRemoved+"/east" {
		t.Fatalf("reconnect of a removed cluster: %v, want Unauthenticated saying the certificate was revoked because east was removed", err)
	}
	if _, err := fedgatepb.NewRegistrationClient(conn).Renew(ctx, &fedgatepb.RenewRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renewal by a removed cluster: %v", err)
	}
	if objs, _ := h.Store().Report(ctx, "east"); len(objs) != 0 {
		t.Fatal("a removed cluster stored a report")
	}
	cl, err := h.admin.ListClusters(ctx, &fedgatepb.ListClustersRequest{})
	if err != nil || len(cl.Clusters) != 0 {
		t.Fatalf("clusters after removal: %v %v", cl, err)
	}
}

// gateway is what a cluster reports to be served on port: our GatewayClass and a Gateway with one HTTP listener.
func gateway(t *testing.T, port int) []*fedgatepb.Object {
	return []*fedgatepb.Object{
		yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: fedgate}, spec: {controllerName: fedgate.io/gateway-controller}}`),
		yamlObject(t, fmt.Sprintf(`{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: gw}, spec: {gatewayClassName: fedgate, listeners: [{name: http, protocol: HTTP, port: %d}]}}`, port)),
	}
}

func reportVia(ctx context.Context, c fedgatepb.SyncClient, msgs ...*fedgatepb.ReportMessage) (*fedgatepb.ReportAck, error) {
	st, err := c.Report(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range append([]*fedgatepb.ReportMessage{{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{}}}}, msgs...) {
		if err := st.Send(m); err != nil {
			break
		}
	}
	return st.CloseAndRecv()
}

// TestFloodsAreLimited: a joined client opening thousands of streams gets at most MaxConcurrentStreams of them at
// once, an oversized message is refused with ResourceExhausted, and meanwhile another cluster keeps getting updates.
func TestFloodsAreLimited(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	victim := subscribe(t, h, "east", "")
	// waitPort reads the victim's updates until one serves port (a Gateway listener east reported).
	waitPort := func(port int32) {
		t.Helper()
		for {
			u := victim.next(t)
			cfg, err := spokeconfig.Decode(u.ConfigJson)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Ports) == 1 && cfg.Ports[0].Port == port {
				return
			}
		}
	}
	if _, err := report(t, h, "east", snapshot(1, gateway(t, 8080)...)); err != nil {
		t.Fatal(err)
	}
	waitPort(8080)

	// 2000 Subscribe streams from one connection of a joined cluster. The hub advertises MaxConcurrentStreams; the
	// excess waits for a slot instead of holding hub goroutines.
	mallory := h.joinedSync(t, "mallory")
	fctx, cancelFlood := context.WithCancel(ctx)
	var opened, peak atomic.Int64
	var wg sync.WaitGroup
	for range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := mallory.Subscribe(fctx)
			if err != nil {
				return
			}
			if st.Send(&fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Hello{Hello: &fedgatepb.Hello{}}}) != nil {
				return
			}
			opened.Add(1)
			_, _ = st.Recv() // held open until the flood is cancelled
		}()
	}
	// While the flood holds its streams, east still gets a new config.
	if _, err := report(t, h, "east", snapshot(2, gateway(t, 8081)...)); err != nil {
		t.Fatal(err)
	}
	waitPort(8081)
	if n := int64(h.Sessions().Count("mallory")); n > MaxConcurrentStreams {
		t.Fatalf("the hub holds %d streams of one connection, limit %d", n, MaxConcurrentStreams)
	} else {
		peak.Store(n)
	}
	cancelFlood()
	wg.Wait()
	t.Logf("flood: %d stream sends succeeded, %d streams held by the hub at once", opened.Load(), peak.Load())

	// One report larger than MaxRecvMsgSize.
	big := service("big")
	big.Json = []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"big","namespace":"apps","annotations":{"x":"` +
		strings.Repeat("a", MaxRecvMsgSize) + `"}}}`)
	_, err := report(t, h, "mallory", snapshot(1, big))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized report: %v", err)
	}
	if _, err := report(t, h, "east", snapshot(3, gateway(t, 8082)...)); err != nil {
		t.Fatalf("east after the floods: %v", err)
	}
	waitPort(8082)
}

func clientv3WithPrefix() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}

// refusal is the ErrorInfo a refused spoke acts on, as "<reason>/<cluster>", or "" without one.
func refusal(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == identity.ErrorDomain {
			return ei.GetReason() + "/" + ei.GetMetadata()["cluster"]
		}
	}
	return ""
}

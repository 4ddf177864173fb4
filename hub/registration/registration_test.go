package registration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/hub/store"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func csr(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// joinWithToken joins cluster name with a fresh unbound token and returns its certificate and a context carrying the
// cluster's identity and serial, as the interceptors would set them for a call made with that certificate.
func joinWithToken(t *testing.T, s *Service, name string) (*x509.Certificate, context.Context) {
	t.Helper()
	ctx := context.Background()
	tok, _, err := s.CreateToken(ctx, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Join(ctx, &fedgatepb.JoinRequest{Token: tok.String(), ClusterName: name, CsrPem: csr(t, name)})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCertificates(resp.CertificatePem)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0], clusterCtx(name, identity.SerialHex(certs[0].SerialNumber))
}

// clusterCtx is the context of a call by cluster name with the certificate of serial.
func clusterCtx(name, serial string) context.Context {
	return auth.WithSerial(auth.WithPrincipal(context.Background(), identity.Principal{Kind: identity.KindCluster, Name: name}), serial)
}

func newService(t *testing.T) (*Service, *clientv3.Client, *clock) {
	t.Helper()
	cli := startEtcd(t)
	ca, err := pki.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	s, err := New(context.Background(), cli, ca, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s, cli, c
}

// snapshot returns every key/value under /fedgate/ so a test can assert a refusal changed nothing.
func snapshot(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/fedgate/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestJoinRefusalsStoreNothing(t *testing.T) {
	ctx := context.Background()
	s, cli, clk := newService(t)
	single, _, err := s.CreateToken(ctx, TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	bound, _, err := s.CreateToken(ctx, TokenOptions{TTL: time.Hour, Usages: 5, ClusterName: "east"})
	if err != nil {
		t.Fatal(err)
	}
	shortLived, _, err := s.CreateToken(ctx, TokenOptions{TTL: time.Minute, Usages: 5})
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := identity.Token{ID: single.ID, Secret: "0000000000000000"}

	cases := []struct {
		name     string
		req      *fedgatepb.JoinRequest
		advance  time.Duration
		wantCode codes.Code
	}{
		{"wrong secret", &fedgatepb.JoinRequest{Token: wrongSecret.String(), ClusterName: "east", CsrPem: csr(t, "east")}, 0, codes.Unauthenticated},
		{"unknown token", &fedgatepb.JoinRequest{Token: "zzzzzz.0000000000000000", ClusterName: "east", CsrPem: csr(t, "east")}, 0, codes.Unauthenticated},
		{"malformed token", &fedgatepb.JoinRequest{Token: "nope", ClusterName: "east", CsrPem: csr(t, "east")}, 0, codes.InvalidArgument},
		{"bound to another cluster", &fedgatepb.JoinRequest{Token: bound.String(), ClusterName: "west", CsrPem: csr(t, "west")}, 0, codes.PermissionDenied},
		{"malformed CSR", &fedgatepb.JoinRequest{Token: single.String(), ClusterName: "east", CsrPem: []byte("not a csr")}, 0, codes.InvalidArgument},
		{"CSR name differs", &fedgatepb.JoinRequest{Token: single.String(), ClusterName: "east", CsrPem: csr(t, "west")}, 0, codes.InvalidArgument},
		{"bad cluster name", &fedgatepb.JoinRequest{Token: single.String(), ClusterName: "East_1", CsrPem: csr(t, "East_1")}, 0, codes.InvalidArgument},
		{"expired", &fedgatepb.JoinRequest{Token: shortLived.String(), ClusterName: "east", CsrPem: csr(t, "east")}, 2 * time.Minute, codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, cli)
			clk.t = clk.t.Add(tc.advance)
			_, err := s.Join(ctx, tc.req)
			if status.Code(err) != tc.wantCode {
				t.Fatalf("Join: %v, want code %v", err, tc.wantCode)
			}
			if !equalMaps(before, snapshot(t, cli)) {
				t.Fatal("a refused join changed the store")
			}
		})
	}

	// The single-use token still works after all those refusals, once.
	resp, err := s.Join(ctx, &fedgatepb.JoinRequest{Token: single.String(), ClusterName: "east", CsrPem: csr(t, "east"), Labels: map[string]string{"region": "eu"}})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCertificates(resp.CertificatePem)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := identity.FromCertificate(certs[0]); err != nil || p.Name != "east" {
		t.Fatalf("joined certificate identity %v, %v", p, err)
	}
	rec, err := s.Joined(ctx, "east")
	if err != nil || rec == nil || rec.Labels["region"] != "eu" {
		t.Fatalf("join record %+v, %v", rec, err)
	}
	before := snapshot(t, cli)
	_, err = s.Join(ctx, &fedgatepb.JoinRequest{Token: single.String(), ClusterName: "west", CsrPem: csr(t, "west")})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reusing a single-use token: %v", err)
	}
	if !equalMaps(before, snapshot(t, cli)) {
		t.Fatal("reusing a spent token changed the store")
	}
}

func TestRenewAndRemove(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t)
	first, eastCtx := joinWithToken(t, s, "east")
	if _, err := s.Renew(eastCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "west")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("renewing with another cluster's name: %v", err)
	}
	rn, err := s.Renew(eastCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "east")})
	if err != nil {
		t.Fatal(err)
	}
	second, _ := identity.ParseCertificates(rn.CertificatePem)
	serials, err := s.RemoveCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if len(serials) != 2 {
		t.Fatalf("revoked %d serials, want 2", len(serials))
	}
	for _, c := range []*x509.Certificate{first, second[0]} {
		if why, ok := s.Revoked(c.SerialNumber); !ok || why.String() != `cluster "east" was removed` {
			t.Errorf("certificate %s: revoked %v (%q), want revoked because east was removed", identity.SerialHex(c.SerialNumber), ok, why)
		}
	}
	if _, err := s.Renew(eastCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "east")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a removed cluster renewed: %v", err)
	}
	// A second hub replica loading the list sees the revocations too.
	s2, err := New(ctx, s.etcd, s.ca, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if why, ok := s2.Revoked(first.SerialNumber); !ok || why.String() != `cluster "east" was removed` {
		t.Fatalf("revocation not visible to a fresh service with its reason: %v %q", ok, why)
	}
}

// A token that was not created to re-join a cluster never takes a joined cluster's name (issue 9, cluster takeover);
// a re-join token does, and the same transaction revokes every certificate the cluster held.
func TestJoinedNameNeedsARejoinToken(t *testing.T) {
	ctx := context.Background()
	s, cli, _ := newService(t)
	if _, _, err := s.CreateToken(ctx, TokenOptions{Rejoin: true}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "clusterName") {
		t.Fatalf("a re-join token without a cluster name: %v, want InvalidArgument naming clusterName", err)
	}
	unbound, _, err := s.CreateToken(ctx, TokenOptions{Usages: 5})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Join(ctx, &fedgatepb.JoinRequest{Token: unbound.String(), ClusterName: "west", CsrPem: csr(t, "west")})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := identity.ParseCertificates(resp.CertificatePem)
	westCtx := auth.WithSerial(auth.WithPrincipal(ctx, identity.Principal{Kind: identity.KindCluster, Name: "west"}), identity.SerialHex(first[0].SerialNumber))
	rn, err := s.Renew(westCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "west")})
	if err != nil {
		t.Fatal(err)
	}
	renewed, _ := identity.ParseCertificates(rn.CertificatePem)

	bound, _, err := s.CreateToken(ctx, TokenOptions{ClusterName: "west"})
	if err != nil {
		t.Fatal(err)
	}
	otherRejoin, _, err := s.CreateToken(ctx, TokenOptions{ClusterName: "east", Rejoin: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		token identity.Token
	}{{"unbound token, usages left", unbound}, {"token bound to the name, not for re-join", bound}} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, cli)
			_, err := s.Join(ctx, &fedgatepb.JoinRequest{Token: tc.token.String(), ClusterName: "west", CsrPem: csr(t, "west")})
			if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), `cluster "west" is already joined`) ||
				!strings.Contains(err.Error(), "--cluster-name west --rejoin") {
				t.Fatalf("Join: %v; want AlreadyExists naming the cluster and how to re-join it", err)
			}
			if !equalMaps(before, snapshot(t, cli)) {
				t.Fatal("a refused takeover changed the store")
			}
		})
	}
	if _, err := s.Join(ctx, &fedgatepb.JoinRequest{Token: otherRejoin.String(), ClusterName: "west", CsrPem: csr(t, "west")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a re-join token of east used for west: %v, want PermissionDenied", err)
	}
	// A re-join token admits a cluster that is not joined yet too.
	if _, err := s.Join(ctx, &fedgatepb.JoinRequest{Token: otherRejoin.String(), ClusterName: "east", CsrPem: csr(t, "east")}); err != nil {
		t.Fatalf("first join with a re-join token: %v", err)
	}

	rejoin, _, err := s.CreateToken(ctx, TokenOptions{ClusterName: "west", Rejoin: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = s.Join(ctx, &fedgatepb.JoinRequest{Token: rejoin.String(), ClusterName: "west", CsrPem: csr(t, "west"), EastWestAddress: "10.0.0.9:15443"})
	if err != nil {
		t.Fatalf("re-join: %v", err)
	}
	fresh, _ := identity.ParseCertificates(resp.CertificatePem)
	for _, c := range []*x509.Certificate{first[0], renewed[0]} {
		if why, ok := s.Revoked(c.SerialNumber); !ok || why.String() != `cluster "west" was re-joined` {
			t.Errorf("certificate %s held before the re-join: revoked %v (%q), want revoked because west was re-joined", identity.SerialHex(c.SerialNumber), ok, why)
		}
	}
	if _, ok := s.Revoked(fresh[0].SerialNumber); ok {
		t.Fatal("the re-joined certificate is revoked")
	}
	// One transaction: the new certificate's record and every revocation carry the same revision.
	certs, err := cli.Get(ctx, CertPrefix+"west/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(certs.Kvs) != 1 || string(certs.Kvs[0].Key) != CertPrefix+"west/"+identity.SerialHex(fresh[0].SerialNumber) {
		t.Fatalf("west's certificates after the re-join: %v, want only the new one", certs.Kvs)
	}
	joinRev := certs.Kvs[0].ModRevision
	for _, c := range []*x509.Certificate{first[0], renewed[0]} {
		r, err := cli.Get(ctx, RevokedPrefix+identity.SerialHex(c.SerialNumber))
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("revocation of %s: %v %v", identity.SerialHex(c.SerialNumber), r, err)
		}
		if r.Kvs[0].ModRevision != joinRev {
			t.Errorf("revocation of %s at revision %d, the re-join at %d: not one transaction", identity.SerialHex(c.SerialNumber), r.Kvs[0].ModRevision, joinRev)
		}
	}
	if rec, err := s.Joined(ctx, "west"); err != nil || rec.EastWestAddress != "10.0.0.9:15443" || rec.TokenID != rejoin.ID {
		t.Fatalf("join record after the re-join: %+v, %v", rec, err)
	}
	// A renewal authenticated on a revoked certificate before the re-join cannot mint a fresh one after it.
	if _, err := s.Renew(westCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "west")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("renewing a revoked certificate: %v, want PermissionDenied", err)
	}
	// Another hub replica sees the revocations.
	s2, err := New(ctx, cli, s.ca, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*x509.Certificate{first[0], renewed[0]} {
		if why, ok := s2.Revoked(c.SerialNumber); !ok || why.String() != `cluster "west" was re-joined` {
			t.Fatalf("re-join revocation of %s not visible to a fresh service with its reason: %v %q", identity.SerialHex(c.SerialNumber), ok, why)
		}
	}
}

// faultyWatcher passes watches through to a real etcd, except that the test can end the open ones as etcd ends a
// WithRequireLeader watch when its member loses the leader, and hold new ones back until it lets them through.
type faultyWatcher struct {
	clientv3.Watcher
	mu      sync.Mutex
	open    []chan struct{} // closing one ends that watch with a "no leader" cancellation
	release chan struct{}   // nil: watches start at once; otherwise they wait for it to close
	watches atomic.Int64
}

func (f *faultyWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	f.mu.Lock()
	release := f.release
	f.mu.Unlock()
	if release != nil {
		<-release
	}
	f.watches.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	in := f.Watcher.Watch(ctx, key, opts...)
	fail := make(chan struct{})
	f.mu.Lock()
	f.open = append(f.open, fail)
	f.mu.Unlock()
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		defer cancel()
		for {
			select {
			case wr, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- wr:
				case <-ctx.Done():
					return
				}
			case <-fail:
				select {
				case out <- clientv3.WatchResponse{Canceled: true, CancelReason: "etcdserver: no leader"}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	return out
}

// loseLeader ends every open watch with a "no leader" cancellation and holds new watches back until the returned
// function is called.
func (f *faultyWatcher) loseLeader() (resume func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	release := make(chan struct{})
	f.release = release
	for _, c := range f.open {
		close(c)
	}
	f.open = nil
	return func() {
		f.mu.Lock()
		f.release = nil
		f.mu.Unlock()
		close(release)
	}
}

// TestRevocationWatchResumes: the revocation watch other hub replicas rely on never ends silently. Ended by an etcd
// leader loss, it resumes from its last revision, so a revocation written while it was down is seen; when etcd
// compacted that revision away meanwhile, the whole list is reloaded (issue 9).
func TestRevocationWatchResumes(t *testing.T) {
	ctx := context.Background()
	cli := startEtcd(t)
	fw := &faultyWatcher{Watcher: cli.Watcher}
	cli.Watcher = fw
	ca, err := pki.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	s, err := New(sctx, cli, ca, Options{})
	if err != nil {
		t.Fatal(err)
	}
	revoke := func(serial int64) {
		t.Helper()
		if _, err := cli.Put(ctx, RevokedPrefix+identity.SerialHex(big.NewInt(serial)), `{"cluster":"west"}`); err != nil {
			t.Fatal(err)
		}
	}
	waitRevoked := func(what string, serial int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, ok := s.Revoked(big.NewInt(serial)); !ok; _, ok = s.Revoked(big.NewInt(serial)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: serial %x never seen revoked (%d watches opened)", what, serial, fw.watches.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	revoke(0xa1)
	waitRevoked("live watch", 0xa1)

	resume := fw.loseLeader()
	revoke(0xb2) // while no watch is open
	resume()
	waitRevoked("after a leader loss", 0xb2)

	resume = fw.loseLeader()
	revoke(0xc3)
	// Compact past the revocation: the revision the watch resumes from is gone.
	later, err := cli.Put(ctx, "/fedgate/v1/test/later", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, later.Header.Revision); err != nil {
		t.Fatal(err)
	}
	resume()
	waitRevoked("after a leader loss and a compaction", 0xc3)

	// And the watch is live again after all that.
	revoke(0xd4)
	waitRevoked("after recovering", 0xd4)
	if n := fw.watches.Load(); n < 4 {
		t.Fatalf("%d watches opened, want at least 4 (the first, two resumptions, one after the reload)", n)
	}
}

// TestRenewalPrunesExpiredCertificateRecords: a renewal deletes the records of the cluster's expired certificates,
// so a long-lived cluster's removal or re-join stays a transaction of a few operations (etcd allows 128 by default)
// and revokes only certificates that could still be presented.
func TestRenewalPrunesExpiredCertificateRecords(t *testing.T) {
	ctx := context.Background()
	s, cli, _ := newService(t)
	joined, eastCtx := joinWithToken(t, s, "east")
	for i := range 3 { // certificates of earlier renewals, expired since
		rec := fmt.Sprintf(`{"serial":"dead0%d","notAfter":%q,"issued":%q}`, i, time.Now().Add(-time.Hour).Format(time.RFC3339), time.Now().Add(-25*time.Hour).Format(time.RFC3339))
		if _, err := cli.Put(ctx, fmt.Sprintf("%seast/dead0%d", CertPrefix, i), rec); err != nil {
			t.Fatal(err)
		}
	}
	rn, err := s.Renew(eastCtx, &fedgatepb.RenewRequest{CsrPem: csr(t, "east")})
	if err != nil {
		t.Fatal(err)
	}
	renewed, _ := identity.ParseCertificates(rn.CertificatePem)
	serials, err := s.RemoveCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{identity.SerialHex(joined.SerialNumber), identity.SerialHex(renewed[0].SerialNumber)}
	sort.Strings(want)
	if !slices.Equal(serials, want) {
		t.Fatalf("removal revoked %v, want the two unexpired certificates %v", serials, want)
	}
}

// A cluster removed and then joined again: the certificates the removal revoked now say "re-joined", so an agent on
// one of them is not told its cluster was removed (on which it would clean up after the new agent).
func TestJoinAfterRemovalRevokesAsRejoined(t *testing.T) {
	ctx := context.Background()
	s, cli, _ := newService(t)
	old, _ := joinWithToken(t, s, "east")
	if _, err := s.RemoveCluster(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	if r, ok := s.Revoked(old.SerialNumber); !ok || r.Reason != identity.ReasonClusterRemoved {
		t.Fatalf("after the removal: %+v %v, want removed", r, ok)
	}
	joinWithToken(t, s, "east")
	if r, ok := s.Revoked(old.SerialNumber); !ok || r.Reason != identity.ReasonClusterRejoined || r.Cluster != "east" {
		t.Fatalf("after joining again: %+v %v, want revoked as re-joined", r, ok)
	}
	other, err := New(ctx, cli, s.ca, Options{}) // another replica reads the same
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := other.Revoked(old.SerialNumber); !ok || r.Reason != identity.ReasonClusterRejoined {
		t.Fatalf("another replica: %+v %v, want revoked as re-joined", r, ok)
	}
}

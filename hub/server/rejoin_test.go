package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/store"
)

// A re-join (token created with rejoin for the cluster's name) cuts the streams open on the old certificate at once
// and refuses that certificate from then on; an ordinary token cannot take the joined name at all (issue 9).
func TestRejoinCutsStreamsOfTheOldCertificate(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	old := h.joinedSync(t, "west")
	stream, err := old.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{EastWestAddress: "127.0.0.1:15443"}}}); err != nil {
		t.Fatal(err)
	}
	waitSessions(t, h, "west", 1)

	reg := fedgatepb.NewRegistrationClient(h.anonymous(t))
	unbound, err := h.admin.CreateToken(ctx, &fedgatepb.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, csr := keyAndCSR(t, "west")
	if _, err := reg.Join(ctx, &fedgatepb.JoinRequest{Token: unbound.Token, ClusterName: "west", CsrPem: csr}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("an unbound token took west's name: %v", err)
	}
	if h.Sessions().Count("west") != 1 {
		t.Fatal("a refused takeover cut west's streams")
	}
	if _, err := h.admin.CreateToken(ctx, &fedgatepb.CreateTokenRequest{Rejoin: true}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a re-join token without a cluster name: %v", err)
	}
	rejoin, err := h.admin.CreateToken(ctx, &fedgatepb.CreateTokenRequest{ClusterName: "west", Rejoin: true})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := keyAndCSR(t, "west")
	resp, err := reg.Join(ctx, &fedgatepb.JoinRequest{Token: rejoin.Token, ClusterName: "west", CsrPem: csr})
	if err != nil {
		t.Fatalf("re-join: %v", err)
	}
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "re-joined") || refusal(err) != identity.ReasonClusterRejoined+"/west" {
		t.Fatalf("the old certificate's stream after the re-join: %v, want Unauthenticated saying the cluster was re-joined", err)
	}
	if _, err := reportVia(ctx, old); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the old certificate after the re-join: %v, want Unauthenticated (revoked)", err)
	}
	conn := dial(t, h.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.hubRoots(t), Certificates: []tls.Certificate{keyPair(t, key, resp.CertificatePem)}})
	if _, err := reportVia(ctx, fedgatepb.NewSyncClient(conn)); err != nil {
		t.Fatalf("the re-joined certificate: %v", err)
	}
}

// waitSessions waits until cluster has n open streams at the hub.
func waitSessions(t *testing.T, h *testHub, cluster string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.Sessions().Count(cluster) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d open streams, want %d", cluster, h.Sessions().Count(cluster), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRevokedSerialsReachEveryProjection: west is removed and joins again; east's projection lists west as a member
// again, with the serial of the certificate west held before its removal (and not its new one), so east's east-west
// listener refuses the old certificate although it names a member (issue 9).
func TestRevokedSerialsReachEveryProjection(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	for _, c := range []string{"east", "west"} {
		if _, err := report(t, h, c, snapshot(1, service("web"))); err != nil {
			t.Fatal(err)
		}
	}
	serialOf := func(c *clusterCred) string {
		leaf, err := x509.ParseCertificate(c.cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return identity.SerialHex(leaf.SerialNumber)
	}
	oldSerial := serialOf(h.clusters["west"])
	if _, err := h.admin.RemoveCluster(ctx, &fedgatepb.RemoveClusterRequest{Name: "west"}); err != nil {
		t.Fatal(err)
	}
	delete(h.clusters, "west")
	if _, err := report(t, h, "west", snapshot(1, service("web"))); err != nil { // joins again, with a new certificate
		t.Fatal(err)
	}
	newSerial := serialOf(h.clusters["west"])
	var last spokeconfig.SpokeConfig
	waitKey(t, h.Store().Client(), store.GraphKey("east"), func(v []byte) bool {
		if v == nil {
			return false
		}
		rec, err := h.Store().DecodeGraph(store.GraphKey("east"), v)
		if err != nil || json.Unmarshal(rec.Config, &last) != nil {
			return false
		}
		return slices.Contains(last.Members, "west") && slices.Contains(last.RevokedSerials, oldSerial)
	})
	if slices.Contains(last.RevokedSerials, newSerial) {
		t.Fatalf("east's projection revokes west's current certificate %s: %v", newSerial, last.RevokedSerials)
	}
}

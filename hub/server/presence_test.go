package server

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/store"
)

// waitPresence waits until cluster has n presence keys (open Report streams) in etcd.
func waitPresence(t *testing.T, h *testHub, cluster string, n int64) {
	t.Helper()
	ctx := testCtx(t)
	for {
		resp, err := h.Store().Client().Get(ctx, store.PresenceClusterPrefix(cluster), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s has %d presence keys, want %d", cluster, resp.Count, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Presence is per stream (issue 9): a second Report stream of a cluster — one whose hello names no east-west
// address — neither blanks the cluster's address nor, when it closes, marks the cluster disconnected while the first
// stream is still open.
func TestSecondReportStreamCannotMarkALiveClusterDown(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	sync := h.joinedSync(t, "west")
	hello := func(ew string) fedgatepb.Sync_ReportClient {
		t.Helper()
		st, err := sync.Report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{EastWestAddress: ew}}}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	first := hello("127.0.0.1:15443")
	waitPresence(t, h, "west", 1)
	second := hello("")
	waitPresence(t, h, "west", 2)
	if _, err := second.CloseAndRecv(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	waitPresence(t, h, "west", 1)

	cl, err := h.Store().Clusters(ctx)
	if err != nil || len(cl) != 1 {
		t.Fatalf("clusters: %+v %v", cl, err)
	}
	if !cl[0].Connected {
		t.Fatal("closing the second stream marked west disconnected while its first stream is open")
	}
	if cl[0].Record.EastWestAddress != "127.0.0.1:15443" {
		t.Fatalf("west's east-west address after a hello without one: %q", cl[0].Record.EastWestAddress)
	}
	// What the compiler reads, and so what other spokes are sent, keeps the address too.
	in, err := h.Store().ReadInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := in.Clusters["west"].EastWestAddress; got != "127.0.0.1:15443" {
		b, _ := json.Marshal(in.Clusters["west"])
		t.Fatalf("compile input of west: %s", b)
	}

	if _, err := first.CloseAndRecv(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	waitPresence(t, h, "west", 0)
	if cl, _ := h.Store().Clusters(ctx); cl[0].Connected {
		t.Fatal("west still connected after its last stream closed")
	}
}

// A hub that died with a cluster connected must not list it as connected once restarted (issue 10): the dead
// process's presence keys outlive it on their leases — and the embedded etcd, restarting with the hub, renews every
// lease's TTL — although the restarted hub holds no stream of the cluster. hubctl get clusters said CONNECTED true.
func TestRestartedHubListsNoStalePresence(t *testing.T) {
	var cfg Config
	h := startHub(t, func(c *Config) { cfg = *c })
	ctx := testCtx(t)
	east := h.joinedSync(t, "east")
	rep, err := east.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{EastWestAddress: "127.0.0.1:15443"}}}); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, h, "east", 1)
	connected := func(admin fedgatepb.AdminClient) bool {
		t.Helper()
		resp, err := admin.ListClusters(ctx, &fedgatepb.ListClustersRequest{})
		if err != nil || len(resp.GetClusters()) != 1 {
			t.Fatalf("ListClusters: %v %v", resp, err)
		}
		return resp.GetClusters()[0].GetConnected()
	}
	if !connected(h.admin) {
		t.Fatal("east not connected while its Report stream is open")
	}
	// A killed hub revokes nothing: what its stream's presence would have left, written the way the hub writes it
	// (its replica's name, a lease no one keeps alive). A clean stop, next, revokes the stream's own.
	replica, err := os.ReadFile(filepath.Join(cfg.DataDir, replicaFile))
	if err != nil {
		t.Fatal(err)
	}
	cli := h.Store().Client()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := json.Marshal(map[string]string{"since": time.Now().UTC().Format(time.RFC3339), "hub": strings.TrimSpace(string(replica))})
	if _, err := cli.Put(ctx, store.PresenceKey("east", "killed"), string(v), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	h.Close()

	cfg.Listen = h.Addr().String() // where hubctl's config says the hub is
	second, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if connected(fedgatepb.NewAdminClient(adminConn(t, cfg.AdminConfig))) {
		t.Fatal("the restarted hub lists east as connected: it holds no stream of east, only its previous process's presence key")
	}
}

// A spoke's hello carries where its gateway is reachable (--gateway-address): the cluster record keeps it for the
// hub cluster's Gateway status; an address a Gateway's status.addresses would refuse refuses the stream.
func TestHelloGatewayAddresses(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	sync := h.joinedSync(t, "west")
	hello := func(addrs ...string) fedgatepb.Sync_ReportClient {
		t.Helper()
		st, err := sync.Report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{GatewayAddresses: addrs}}}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	ok := hello("192.0.2.7", "gw.west.example.com")
	waitPresence(t, h, "west", 1)
	cl, err := h.Store().Clusters(ctx)
	if err != nil || len(cl) != 1 {
		t.Fatalf("clusters: %+v %v", cl, err)
	}
	if got := strings.Join(cl[0].Record.GatewayAddresses, ","); got != "192.0.2.7,gw.west.example.com" {
		t.Errorf("gateway addresses %q", got)
	}
	bad := hello("Not_A.Host")
	if _, err := bad.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "gatewayAddresses[0]") {
		t.Errorf("a hello with an invalid gateway address: %v, want InvalidArgument naming hello.gatewayAddresses[0]", err)
	}
	_ = ok.CloseSend()
}

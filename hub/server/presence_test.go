package server

import (
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

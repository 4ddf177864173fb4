package reporter

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/spoke/internal/fakehub"
	"github.com/fedgate/fedgate/spoke/source"
)

func obj(kind, name, content string) *fedgatepb.Object {
	api := "v1"
	if kind == "Gateway" {
		api = "gateway.networking.k8s.io/v1"
	}
	return &fedgatepb.Object{ApiVersion: api, Kind: kind, Namespace: "shop", Name: name, Json: []byte(content)}
}

func snap(objs ...*fedgatepb.Object) source.Snapshot { return source.NewSnapshot(objs) }

func recv(t *testing.T, h *fakehub.Hub) fakehub.Report {
	t.Helper()
	select {
	case r := <-h.Reports:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("hub received nothing within 10s")
		return fakehub.Report{}
	}
}

// describe renders a report message compactly: "hello a", "snapshot Service/shop/cart=1 ...", "delta +X=c -Y".
func describe(m *fedgatepb.ReportMessage) string {
	var parts []string
	switch {
	case m.GetHello() != nil:
		parts = append(parts, "hello", m.GetHello().Cluster)
	case m.GetSnapshot() != nil:
		parts = append(parts, "snapshot")
		for _, o := range m.GetSnapshot().Objects {
			parts = append(parts, source.ObjectID(o)+"="+string(o.Json))
		}
	case m.GetDelta() != nil:
		parts = append(parts, "delta")
		for _, o := range m.GetDelta().Upserts {
			parts = append(parts, "+"+source.ObjectID(o)+"="+string(o.Json))
		}
		for _, r := range m.GetDelta().Deletes {
			parts = append(parts, "-"+r.Kind+"/"+r.Namespace+"/"+r.Name)
		}
	}
	return strings.Join(parts, " ")
}

func expect(t *testing.T, h *fakehub.Hub, stream int, want string, lastSeq *int64) {
	t.Helper()
	r := recv(t, h)
	if got := describe(r.Msg); got != want || r.Stream != stream {
		t.Fatalf("stream %d got %q\nwant stream %d %q", r.Stream, got, stream, want)
	}
	if r.Msg.Seq <= *lastSeq {
		t.Fatalf("seq %d after %d: want increasing", r.Msg.Seq, *lastSeq)
	}
	*lastSeq = r.Msg.Seq
}

func TestReporterHelloSnapshotDeltasAndResyncAfterReconnect(t *testing.T) {
	h := fakehub.Start(t, "")
	r, err := New(Options{
		Client:     fedgatepb.NewSyncClient(h.Dial(t)),
		Hello:      &fedgatepb.Hello{Cluster: "east", AgentVersion: "test", EastWestAddress: "127.0.0.1:15443"},
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	var seq int64
	r.Update(snap(obj("Service", "web", "1"), obj("Service", "cart", "1")))
	expect(t, h, 1, "hello east", &seq)
	expect(t, h, 1, "snapshot Service/shop/cart=1 Service/shop/web=1", &seq)

	// Added, changed and removed objects in one delta; the unchanged one is not resent.
	r.Update(snap(obj("Service", "cart", "2"), obj("Gateway", "edge", "1"), obj("Service", "pay", "1")))
	expect(t, h, 1, "delta +Gateway/shop/edge=1 +Service/shop/cart=2 +Service/shop/pay=1 -Service/shop/web", &seq)

	// An equal snapshot sends nothing, so the next message is the following real change.
	r.Update(snap(obj("Service", "cart", "2"), obj("Gateway", "edge", "1"), obj("Service", "pay", "1")))
	r.Update(snap(obj("Service", "cart", "2"), obj("Gateway", "edge", "1")))
	expect(t, h, 1, "delta -Service/shop/pay", &seq)

	// After the stream breaks, the reporter reconnects and sends a full snapshot of the current state.
	h.DropStreams()
	expect(t, h, 2, "hello east", &seq)
	expect(t, h, 2, "snapshot Gateway/shop/edge=1 Service/shop/cart=2", &seq)
	r.Update(snap(obj("Gateway", "edge", "1")))
	expect(t, h, 2, "delta -Service/shop/cart", &seq)
}

func TestReporterReconnectsToRestartedHub(t *testing.T) {
	h := fakehub.Start(t, "")
	addr := h.Addr
	r, err := New(Options{
		Client:     fedgatepb.NewSyncClient(h.Dial(t)),
		Hello:      &fedgatepb.Hello{Cluster: "west"},
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()

	var seq int64
	r.Update(snap(obj("Service", "a", "1")))
	expect(t, h, 1, "hello west", &seq)
	expect(t, h, 1, "snapshot Service/shop/a=1", &seq)

	// The hub goes away entirely; changes made meanwhile reach the new hub in its first snapshot.
	h.Stop()
	r.Update(snap(obj("Service", "a", "1"), obj("Service", "b", "1")))
	h2 := fakehub.Start(t, addr)
	expect(t, h2, 1, "hello west", &seq)
	expect(t, h2, 1, "snapshot Service/shop/a=1 Service/shop/b=1", &seq)
}

func TestDiffOrdersUpsertsAndDeletes(t *testing.T) {
	from := snap(obj("Service", "a", "1"), obj("Service", "b", "1"), obj("Service", "c", "1")).Objects
	to := snap(obj("Service", "b", "2"), obj("Service", "c", "1"), obj("Service", "d", "1")).Objects
	d := Diff(from, to)
	if got, want := describe(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Delta{Delta: d}}),
		"delta +Service/shop/b=2 +Service/shop/d=1 -Service/shop/a"; got != want {
		t.Fatalf("Diff = %q, want %q", got, want)
	}
	if d := Diff(to, to); len(d.Upserts)+len(d.Deletes) != 0 {
		t.Fatalf("Diff of equal sets = %v, want empty", d)
	}
}

// refusingSync answers every stream opening with err, counting the attempts.
type refusingSync struct {
	fedgatepb.SyncClient
	err   error
	opens atomic.Int64
}

func (c *refusingSync) Report(context.Context, ...grpc.CallOption) (fedgatepb.Sync_ReportClient, error) {
	c.opens.Add(1)
	return nil, c.err
}

// TestReporterStopsWhenTheHubRefusesItsCertificate: a removed or re-joined cluster's certificate is revoked, so the
// hub answers Unauthenticated; the reporter stops at the first such answer instead of reconnecting forever, while an
// unavailable hub is retried (issue 9).
func TestReporterStopsWhenTheHubRefusesItsCertificate(t *testing.T) {
	for _, tc := range []struct {
		err       error
		wantStops bool
	}{
		{status.Error(codes.Unauthenticated, "certificate 1a has been revoked"), true},
		{status.Error(codes.Unavailable, "connection refused"), false},
	} {
		c := &refusingSync{err: tc.err}
		r, err := New(Options{Client: c, Hello: &fedgatepb.Hello{Cluster: "east"}, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		r.Update(snap(obj("Service", "web", "1")))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = r.Run(ctx)
		stoppedEarly := ctx.Err() == nil
		cancel()
		if err != nil || stoppedEarly != tc.wantStops {
			t.Errorf("%v: Run returned %v after %d attempts, stopped before its context ended: %v, want %v", tc.err, err, c.opens.Load(), stoppedEarly, tc.wantStops)
		}
		if tc.wantStops && c.opens.Load() != 1 {
			t.Errorf("%v: %d attempts, want 1", tc.err, c.opens.Load())
		}
	}
}

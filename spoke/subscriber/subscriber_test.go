package subscriber

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/internal/fakehub"
)

// recorder stands in for the proxy: it records applied revisions and refuses any config with port 666.
type recorder struct {
	mu      sync.Mutex
	applied []int64
}

func (r *recorder) Apply(c *spokeconfig.SpokeConfig) error {
	for _, p := range c.Ports {
		if p.Port == 666 {
			return errors.New("port 666: address already in use")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, c.Revision)
	return nil
}

func (r *recorder) revisions() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.applied...)
}

func update(t *testing.T, cluster string, rev int64, ports ...int32) *fedgatepb.SpokeConfigUpdate {
	t.Helper()
	c := &spokeconfig.SpokeConfig{Cluster: cluster, Revision: rev}
	for _, p := range ports {
		c.Ports = append(c.Ports, spokeconfig.Port{Port: p, Protocol: spokeconfig.ProtocolHTTP})
	}
	b, h, err := spokeconfig.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return &fedgatepb.SpokeConfigUpdate{Revision: rev, Hash: h, ConfigJson: b}
}

func recvSub(t *testing.T, h *fakehub.Hub) fakehub.Subscribed {
	t.Helper()
	select {
	case m := <-h.Subscribes:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("hub received nothing within 10s")
		return fakehub.Subscribed{}
	}
}

// expectReply checks the next message is an ACK (wantErr == "") or a NACK whose error contains wantErr.
func expectReply(t *testing.T, h *fakehub.Hub, rev int64, wantErr string) {
	t.Helper()
	m := recvSub(t, h).Msg
	switch {
	case wantErr == "" && m.GetAck() != nil && m.GetAck().Revision == rev:
	case wantErr != "" && m.GetNack() != nil && m.GetNack().Revision == rev && strings.Contains(m.GetNack().Error, wantErr):
	default:
		t.Fatalf("got %v, want for revision %d: ack=%v nack containing %q", m, rev, wantErr == "", wantErr)
	}
}

func expectHello(t *testing.T, h *fakehub.Hub, rev int64, hash string) {
	t.Helper()
	m := recvSub(t, h).Msg
	if m.GetHello() == nil || m.GetHello().AppliedRevision != rev || m.GetHello().AppliedHash != hash || m.GetHello().Cluster != "east" {
		t.Fatalf("got %v, want hello for east with applied revision %d hash %q", m, rev, hash)
	}
}

func start(t *testing.T, h *fakehub.Hub, a Applier, cacheDir string) *Subscriber {
	t.Helper()
	s, err := New(Options{
		Client: fedgatepb.NewSyncClient(h.Dial(t)), Hello: &fedgatepb.Hello{Cluster: "east"}, Applier: a,
		CacheDir: cacheDir, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func TestSubscriberAppliesAcksNacksAndCaches(t *testing.T) {
	h := fakehub.Start(t, "")
	rec := &recorder{}
	dir := t.TempDir()
	s := start(t, h, rec, dir)
	expectHello(t, h, 0, "")

	good := update(t, "east", 5, 8080)
	h.Push(t, good)
	expectReply(t, h, 5, "")
	if rev, hash := s.Applied(); rev != 5 || hash != good.Hash {
		t.Fatalf("Applied = %d %s, want 5 %s", rev, hash, good.Hash)
	}

	// Refused by the proxy: NACK, the proxy and the cache keep revision 5.
	h.Push(t, update(t, "east", 6, 666))
	expectReply(t, h, 6, "address already in use")
	// Corrupted in transit: NACK before decoding.
	bad := update(t, "east", 7, 8080)
	bad.ConfigJson = append(bad.ConfigJson, ' ')
	h.Push(t, bad)
	expectReply(t, h, 7, "hash mismatch")
	// Invalid (duplicate port) and for another cluster: NACK naming the problem.
	h.Push(t, update(t, "east", 8, 80, 80))
	expectReply(t, h, 8, "duplicate port 80")
	h.Push(t, update(t, "west", 9, 80))
	expectReply(t, h, 9, `for cluster "west"`)

	if got := rec.revisions(); len(got) != 1 || got[0] != 5 {
		t.Fatalf("applied revisions = %v, want [5]", got)
	}
	e, err := ReadCache(dir)
	if err != nil || e == nil || e.Revision != 5 || e.Hash != good.Hash || string(e.Config) != string(good.ConfigJson) {
		t.Fatalf("cache = %+v, %v; want revision 5 with the config bytes as sent", e, err)
	}

	// On reconnect the Hello names the config serving now; an identical resend is ACKed without re-applying.
	h.DropStreams()
	expectHello(t, h, 5, good.Hash)
	h.Push(t, good)
	expectReply(t, h, 5, "")
	if got := rec.revisions(); len(got) != 1 {
		t.Fatalf("applied revisions = %v, want the resend not re-applied", got)
	}
}

func TestSubscriberIgnoresStaleRevisions(t *testing.T) {
	h := fakehub.Start(t, "")
	rec := &recorder{}
	start(t, h, rec, "")
	expectHello(t, h, 0, "")

	h.Push(t, update(t, "east", 10, 80))
	expectReply(t, h, 10, "")
	h.Push(t, update(t, "east", 3, 81)) // older: no reply, not applied
	h.Push(t, update(t, "east", 11, 82))
	expectReply(t, h, 11, "")
	if got := rec.revisions(); len(got) != 2 || got[0] != 10 || got[1] != 11 {
		t.Fatalf("applied revisions = %v, want [10 11]", got)
	}
}

func TestLoadCacheAppliesBeforeConnecting(t *testing.T) {
	dir := t.TempDir()
	u := update(t, "east", 42, 8080)
	if err := WriteCache(dir, CacheEntry{Cluster: "east", Revision: 42, Hash: u.Hash, Config: u.ConfigJson}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s, err := New(Options{Hello: &fedgatepb.Hello{Cluster: "east"}, Applier: rec, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.LoadCache(); !ok || err != nil {
		t.Fatalf("LoadCache = %v, %v", ok, err)
	}
	if got := rec.revisions(); len(got) != 1 || got[0] != 42 {
		t.Fatalf("applied = %v, want [42]", got)
	}
	// The hub then hears which config is serving.
	h := fakehub.Start(t, "")
	s.opts.Client = fedgatepb.NewSyncClient(h.Dial(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	expectHello(t, h, 42, u.Hash)

	// A cache for another cluster is refused.
	other, err := New(Options{Hello: &fedgatepb.Hello{Cluster: "west"}, Applier: rec, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := other.LoadCache(); ok || err == nil || !strings.Contains(err.Error(), `"east"`) {
		t.Fatalf("LoadCache for west = %v, %v; want an error naming east", ok, err)
	}
}

func TestCacheWriteIsAtomicAndVerified(t *testing.T) {
	dir := t.TempDir()
	if e, err := ReadCache(dir); e != nil || err != nil {
		t.Fatalf("empty dir: ReadCache = %v, %v; want nil, nil", e, err)
	}
	for rev := int64(1); rev <= 3; rev++ {
		u := update(t, "east", rev, 8080)
		if err := WriteCache(dir, CacheEntry{Cluster: "east", Revision: rev, Hash: u.Hash, Config: u.ConfigJson}); err != nil {
			t.Fatal(err)
		}
	}
	// Only the cache file remains: every temporary file was renamed into place.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != CacheFile {
		t.Fatalf("cache dir holds %v, want only %s", ents, CacheFile)
	}
	e, err := ReadCache(dir)
	if err != nil || e.Revision != 3 {
		t.Fatalf("ReadCache = %+v, %v; want revision 3", e, err)
	}

	// A damaged file is refused, not served.
	path := filepath.Join(dir, CacheFile)
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, b[:len(b)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCache(dir); err == nil || !strings.Contains(err.Error(), "hash") {
		t.Fatalf("truncated cache: ReadCache err = %v, want a hash mismatch", err)
	}
}

// refusingSync answers every stream opening with err, counting the attempts.
type refusingSync struct {
	fedgatepb.SyncClient
	err   error
	opens atomic.Int64
}

func (c *refusingSync) Subscribe(context.Context, ...grpc.CallOption) (fedgatepb.Sync_SubscribeClient, error) {
	c.opens.Add(1)
	return nil, c.err
}

// TestSubscriberStopsWhenTheHubRefusesItsCertificate: a removed or re-joined cluster's certificate is revoked, so the
// hub answers Unauthenticated; the subscriber stops at the first such answer instead of reconnecting forever, while
// an unavailable hub is retried (issue 9).
func TestSubscriberStopsWhenTheHubRefusesItsCertificate(t *testing.T) {
	for _, tc := range []struct {
		err       error
		wantStops bool
	}{
		{status.Error(codes.Unauthenticated, `cluster "east" was re-joined; this certificate is revoked`), true},
		{status.Error(codes.Unavailable, "connection refused"), false},
	} {
		c := &refusingSync{err: tc.err}
		s, err := New(Options{Client: c, Hello: &fedgatepb.Hello{Cluster: "east"}, Applier: &recorder{}, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = s.Run(ctx)
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

package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return store.New(cli, store.Options{MaxTxnOps: store.EmbeddedMaxTxnOps, MaxRequestBytes: store.EmbeddedMaxRequestBytes, KeyEncryptionKeys: testKEK(t), Logger: quiet()})
}

// testKEK seals the test store's key rings (a fixed key of 32 zero bytes).
func testKEK(t *testing.T) *store.KeyEncryptionKeys {
	t.Helper()
	k, err := store.ParseKeyEncryptionKeys([]byte(strings.Repeat("A", 43) + "="))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// run starts c and stops it when the test ends (or when the returned cancel is called).
func run(t *testing.T, c *Controller) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func wait(t *testing.T, c *Controller, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitCompiled(ctx, rev); err != nil {
		t.Fatal(err)
	}
}

func route(name string) *fedgatepb.Object {
	js := fmt.Sprintf(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":%q,"namespace":"default"},"spec":{}}`, name)
	return &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: "default", Name: name, Json: []byte(js)}
}

func service(name string) *fedgatepb.Object {
	js := fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"default"},"spec":{"ports":[{"port":80}]}}`, name)
	return &fedgatepb.Object{ApiVersion: "v1", Kind: "Service", Namespace: "default", Name: name, Json: []byte(js)}
}

func TestCompileWritesGraphForEveryCluster(t *testing.T) {
	st := startStore(t)
	ctx := context.Background()
	c := New(st, Config{Logger: quiet()})
	run(t, c)

	for _, name := range []string{"east", "west"} {
		if _, err := st.UpsertCluster(ctx, store.ClusterRecord{Name: name, EastWestAddress: "127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
	}
	_, rev, err := st.ApplyHub(ctx, []*fedgatepb.Object{route("a")})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c, rev)
	for _, name := range []string{"east", "west"} {
		g, _, err := st.ReadGraph(ctx, name)
		if err != nil || g == nil {
			t.Fatalf("graph of %s after apply: %v %v", name, g, err)
		}
		// The graph revision is the etcd revision the inputs were read at: at least that of the first write that
		// made the cluster known, at most what has been compiled.
		if g.Revision <= 0 || g.Revision > c.Compiled() {
			t.Fatalf("graph of %s has revision %d, want in (0, %d]", name, g.Revision, c.Compiled())
		}
	}

	// A report from a cluster the hub has not compiled for yet gets that cluster a graph.
	if _, err := st.UpsertCluster(ctx, store.ClusterRecord{Name: "south", EastWestAddress: "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	rev, err = st.ReplaceReport(ctx, "south", []*fedgatepb.Object{service("web")})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c, rev)
	g, _, err := st.ReadGraph(ctx, "south")
	if err != nil || g == nil {
		t.Fatalf("graph of south after report: %v %v", g, err)
	}
	if c.Compiled() < rev {
		t.Fatalf("compiled revision %d < report revision %d", c.Compiled(), rev)
	}
}

func TestDebounceCoalescesBursts(t *testing.T) {
	st := startStore(t)
	ctx := context.Background()
	// A hold-off far longer than one etcd write, so the whole burst lands inside it; the max delay is longer still.
	c := New(st, Config{HoldOff: 500 * time.Millisecond, MaxDelay: 30 * time.Second, Logger: quiet()})
	run(t, c)
	wait(t, c, 1) // the initial compile
	if n := c.Compiles(); n != 1 {
		t.Fatalf("compiles after start: %d, want 1", n)
	}
	var rev int64
	for i := range 10 {
		_, r, err := st.ApplyHub(ctx, []*fedgatepb.Object{route(fmt.Sprintf("r%d", i))})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	wait(t, c, rev)
	if n := c.Compiles(); n != 2 {
		t.Fatalf("a burst of 10 applies caused %d compiles, want 1", n-1)
	}
}

func TestDebouncerTiming(t *testing.T) {
	var d debouncer
	t0 := time.Unix(1000, 0)
	hold, maxDelay := 20*time.Millisecond, 200*time.Millisecond
	if got := d.event(t0, hold, maxDelay); got != hold {
		t.Fatalf("first event waits %v, want %v", got, hold)
	}
	// Changes every 10ms keep pushing the compile out, but never past first+maxDelay.
	if got := d.event(t0.Add(10*time.Millisecond), hold, maxDelay); got != hold {
		t.Fatalf("second event waits %v, want %v", got, hold)
	}
	if got := d.event(t0.Add(190*time.Millisecond), hold, maxDelay); got != 10*time.Millisecond {
		t.Fatalf("event near the deadline waits %v, want 10ms", got)
	}
	if got := d.event(t0.Add(250*time.Millisecond), hold, maxDelay); got != 0 {
		t.Fatalf("event past the deadline waits %v, want 0", got)
	}
	d.reset()
	if got := d.event(t0.Add(300*time.Millisecond), hold, maxDelay); got != hold {
		t.Fatalf("first event of a new burst waits %v, want %v", got, hold)
	}
}

func TestStandbyTakesOverWhenLeaderStops(t *testing.T) {
	st := startStore(t)
	ctx := context.Background()
	a := New(st, Config{Identity: "a", Logger: quiet()})
	b := New(st, Config{Identity: "b", Logger: quiet()})
	stopA := run(t, a)
	wait(t, a, 1) // a is leader: b is started only now
	stopB := run(t, b)

	_, rev, err := st.ApplyHub(ctx, []*fedgatepb.Object{route("x")})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, a, rev)
	if b.Compiles() != 0 {
		t.Fatalf("standby compiled %d times while a leader was active", b.Compiles())
	}
	stopA() // resigns by revoking its session
	_, rev, err = st.ApplyHub(ctx, []*fedgatepb.Object{route("y")})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, b, rev)
	stopB()
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if err := (Config{HoldOff: time.Second, MaxDelay: time.Millisecond}).Validate(); err == nil {
		t.Fatal("max delay below hold-off accepted")
	}
	if err := (Config{HoldOff: -1}).Validate(); err == nil {
		t.Fatal("negative hold-off accepted")
	}
}

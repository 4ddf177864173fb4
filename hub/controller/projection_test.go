package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/store"
)

// A cluster whose projection is too large to store gets no new config, its sync state says why, and every other
// cluster — sorted before or after it — still gets each change; the loop does not retry the refusal on its own
// (issue 9: it retried every 200 ms forever and a failed chunk held up every cluster after it).
func TestOversizedProjectionIsThatClustersAlone(t *testing.T) {
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
	// The store believes etcd takes 256 KiB per request, so a projection of a few hundred KiB is too large.
	st := store.New(cli, store.Options{MaxTxnOps: store.EmbeddedMaxTxnOps, MaxRequestBytes: 256 << 10, KeyEncryptionKeys: testKEK(t), Logger: quiet()})
	c := New(st, Config{Logger: quiet()})
	run(t, c)

	for _, name := range []string{"aaa", "mmm", "zzz"} {
		if _, err := st.UpsertCluster(ctx, store.ClusterRecord{Name: name, EastWestAddress: "127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
	}
	// aaa reports many routes: their statuses travel in aaa's projection only.
	var objs []*fedgatepb.Object
	for i := range 1500 {
		name := fmt.Sprintf("route-%04d-%s", i, strings.Repeat("r", 40))
		js := fmt.Sprintf(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":%q,"namespace":"default"},"spec":{"parentRefs":[{"name":"gw"}]}}`, name)
		objs = append(objs, &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: "default", Name: name, Json: []byte(js)})
	}
	if _, err := st.ReplaceReport(ctx, "aaa", objs); err != nil {
		t.Fatal(err)
	}
	_, rev, err := st.ApplyHub(ctx, []*fedgatepb.Object{route("a")})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c, rev)
	syncState := func(name string) store.SyncState {
		cl, err := st.Clusters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range cl {
			if s.Record.Name == name {
				return s.Sync
			}
		}
		t.Fatalf("no cluster %s", name)
		return store.SyncState{}
	}
	if s := syncState("aaa"); !strings.Contains(s.ProjectionError, "projection too large") || s.ProjectionRevision < rev {
		t.Fatalf("aaa's sync state: %+v, want its projection reported too large at revision %d or later", s, rev)
	}
	members := func(name string) []string {
		g, _, err := st.ReadGraph(ctx, name)
		if err != nil || g == nil {
			t.Fatalf("graph of %s: %+v %v", name, g, err)
		}
		cfg, err := spokeconfig.Decode(g.Config)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Members
	}
	for _, name := range []string{"mmm", "zzz"} {
		if got := members(name); strings.Join(got, ",") != "aaa,mmm,zzz" {
			t.Fatalf("members in %s's graph: %v", name, got)
		}
		if s := syncState(name); s.ProjectionError != "" {
			t.Fatalf("%s has a projection error: %q", name, s.ProjectionError)
		}
	}
	if g, _, _ := st.ReadGraph(ctx, "aaa"); g != nil && len(g.Config) > 64<<10 {
		t.Fatalf("aaa got a graph of %d bytes past the limit", len(g.Config))
	}

	// The refusal is not an input change: nothing compiles again until one comes.
	compiles := c.Compiles()
	time.Sleep(time.Second)
	if n := c.Compiles() - compiles; n != 0 {
		t.Fatalf("%d compiles in a second without a change", n)
	}
	// A change still reaches the others while aaa's projection stays too large.
	if _, err := st.UpsertCluster(ctx, store.ClusterRecord{Name: "nnn", EastWestAddress: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	wait(t, c, lastInputRevision(t, cli, store.ClustersPrefix))
	for _, name := range []string{"mmm", "nnn", "zzz"} {
		if got := members(name); strings.Join(got, ",") != "aaa,mmm,nnn,zzz" {
			t.Fatalf("members in %s's graph after nnn joined: %v", name, got)
		}
	}
	if g, _, _ := st.ReadGraph(ctx, "aaa"); g != nil && strings.Contains(string(g.Config), "nnn") {
		t.Fatal("aaa got a new config while its projection is too large")
	}
	// Once aaa's projection fits again it gets its graph and the error clears.
	rev, err = st.ReplaceReport(ctx, "aaa", objs[:10])
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c, rev)
	if got := members("aaa"); len(got) != 4 {
		t.Fatalf("members in aaa's graph once it fits: %v", got)
	}
	if s := syncState("aaa"); s.ProjectionError != "" || s.ProjectionRevision != 0 {
		t.Fatalf("aaa's sync state once it fits: %+v", s)
	}
}

// lastInputRevision is the revision of the last write under prefix: what a compile must have seen. (etcd's current
// revision may already be the controller's own write of its outputs, which no compile ever reaches.)
func lastInputRevision(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var rev int64
	for _, kv := range resp.Kvs {
		rev = max(rev, kv.ModRevision)
	}
	return rev
}

// A failing compile is retried after MaxDelay, then ever less often, never more than maxRetryDelay apart.
func TestRetryDelayBacksOff(t *testing.T) {
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}
	for i, w := range want {
		if got := retryDelay(i+1, DefaultMaxDelay); got != w {
			t.Errorf("retryDelay(%d) = %v, want %v", i+1, got, w)
		}
	}
	for _, n := range []int{9, 10, 100, 1 << 20} {
		if got := retryDelay(n, DefaultMaxDelay); got != maxRetryDelay {
			t.Errorf("retryDelay(%d) = %v, want the cap %v", n, got, maxRetryDelay)
		}
	}
}

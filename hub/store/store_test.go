package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startStore runs an embedded etcd in dir and returns a Store on it; both are closed when the test ends unless the
// returned stop is called first. The server enforces opts.MaxTxnOps (when set) itself, as an external etcd would.
func startStore(t *testing.T, dir string, opts Options) (*Store, func()) {
	t.Helper()
	ctx := context.Background()
	e, err := StartEmbedded(ctx, EmbeddedConfig{DataDir: dir, MaxTxnOps: opts.MaxTxnOps})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := e.Connect(ctx)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	if opts.KeyEncryptionKeys == nil {
		opts.KeyEncryptionKeys = testKEK(t, 1)
	}
	if opts.MaxTxnOps == 0 {
		opts.MaxTxnOps = EmbeddedMaxTxnOps
		opts.MaxRequestBytes = EmbeddedMaxRequestBytes
	}
	opts.Logger = quietLogger()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cli.Close()
			e.Close()
		}
	}
	t.Cleanup(stop)
	return New(cli, opts), stop
}

func route(ns, name, host string) *fedgatepb.Object {
	js := fmt.Sprintf(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":%q,"namespace":%q},"spec":{"hostnames":[%q]}}`, name, ns, host)
	return &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: ns, Name: name, Json: []byte(js)}
}

func service(ns, name string) *fedgatepb.Object {
	js := fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":%q},"spec":{"ports":[{"port":80}]}}`, name, ns)
	return &fedgatepb.Object{ApiVersion: "v1", Kind: "Service", Namespace: ns, Name: name, Json: []byte(js)}
}

func actions(rs []ApplyResult) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Ref.Name+"="+r.Action)
	}
	return out
}

func listNames(t *testing.T, s *Store, includeReports bool) []string {
	t.Helper()
	objs, _, err := s.ListObjects(context.Background(), nil, "", includeReports)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Cluster+":"+o.Object.Kind+"/"+o.Object.Namespace+"/"+o.Object.Name)
	}
	return out
}

func TestApplyListDeleteRoundTrip(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()

	res, rev1, err := s.ApplyHub(ctx, []*fedgatepb.Object{route("default", "a", "a.example"), route("default", "b", "b.example")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a=created", "b=created"}, actions(res)); diff != "" {
		t.Fatalf("first apply (-want +got):\n%s", diff)
	}
	res, rev2, err := s.ApplyHub(ctx, []*fedgatepb.Object{route("default", "a", "a.example"), route("default", "b", "b2.example")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a=unchanged", "b=configured"}, actions(res)); diff != "" {
		t.Fatalf("second apply (-want +got):\n%s", diff)
	}
	if rev2 <= rev1 {
		t.Fatalf("revision did not advance: %d then %d", rev1, rev2)
	}
	res, rev3, err := s.ApplyHub(ctx, []*fedgatepb.Object{route("default", "a", "a.example")})
	if err != nil || res[0].Action != ActionUnchanged || rev3 != rev2 {
		t.Fatalf("no-op apply: res=%v rev=%d (want %d) err=%v", actions(res), rev3, rev2, err)
	}

	objs, _, err := s.ListObjects(ctx, []string{"HTTPRoute"}, "default", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[1].Object.ApiVersion != "gateway.networking.k8s.io/v1" {
		t.Fatalf("listed objects: %v", objs)
	}
	// The hub keeps the API server's bookkeeping: a changed spec bumps the generation, an unchanged one does not.
	for i, want := range []struct {
		host string
		gen  int64
	}{{"a.example", 1}, {"b2.example", 2}} {
		var o struct {
			Metadata struct {
				Generation        int64  `json:"generation"`
				UID               string `json:"uid"`
				CreationTimestamp string `json:"creationTimestamp"`
			} `json:"metadata"`
			Spec struct {
				Hostnames []string `json:"hostnames"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(objs[i].Object.Json, &o); err != nil {
			t.Fatal(err)
		}
		if o.Metadata.Generation != want.gen || o.Metadata.UID == "" || o.Metadata.CreationTimestamp == "" || o.Spec.Hostnames[0] != want.host {
			t.Errorf("object %d: %s", i, objs[i].Object.Json)
		}
	}

	deleted, notFound, _, err := s.DeleteHub(ctx, []*fedgatepb.ObjectRef{
		{Kind: "HTTPRoute", Namespace: "default", Name: "a"}, {Kind: "HTTPRoute", Namespace: "default", Name: "zzz"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0].Name != "a" || len(notFound) != 1 || notFound[0].Name != "zzz" {
		t.Fatalf("delete: deleted=%v notFound=%v", deleted, notFound)
	}
	if diff := cmp.Diff([]string{":HTTPRoute/default/b"}, listNames(t, s, false)); diff != "" {
		t.Fatalf("after delete (-want +got):\n%s", diff)
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	bad := route("default", "x/../y", "x.example")
	bad.Name = "x/../y"
	_, _, err := s.ApplyHub(ctx, []*fedgatepb.Object{route("default", "good", "g.example"), bad})
	if err == nil {
		t.Fatal("apply with a malformed name succeeded")
	}
	if want := `objects[1]: HTTPRoute "default/x/../y": metadata.name`; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the object and field (%q)", err, want)
	}
	if got := listNames(t, s, false); len(got) != 0 {
		t.Fatalf("a failed apply stored %v", got)
	}
	// Too many objects for one transaction: refused whole, not chunked.
	small, _ := startStore(t, t.TempDir(), Options{MaxTxnOps: 3, MaxRequestBytes: DefaultMaxRequestBytes})
	var many []*fedgatepb.Object
	for i := range 4 {
		many = append(many, route("default", fmt.Sprintf("r%d", i), "h.example"))
	}
	if _, _, err := small.ApplyHub(ctx, many); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("oversized apply: err=%v", err)
	}
	if got := listNames(t, small, false); len(got) != 0 {
		t.Fatalf("an oversized apply stored %v", got)
	}
}

func TestReplaceReportRemovesMissingObjects(t *testing.T) {
	// MaxTxnOps 4 also exercises the chunked path used against an external etcd with default limits.
	for _, maxOps := range []int{EmbeddedMaxTxnOps, 4} {
		t.Run(fmt.Sprint("maxTxnOps=", maxOps), func(t *testing.T) {
			s, _ := startStore(t, t.TempDir(), Options{MaxTxnOps: maxOps, MaxRequestBytes: DefaultMaxRequestBytes})
			ctx := context.Background()
			var first []*fedgatepb.Object
			for i := range 10 {
				first = append(first, service("apps", fmt.Sprintf("svc%02d", i)))
			}
			if _, err := s.ReplaceReport(ctx, "east", first); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReplaceReport(ctx, "west", first[:1]); err != nil {
				t.Fatal(err)
			}
			rev, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{first[3], service("apps", "new")})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Report(ctx, "east")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, o := range got {
				names = append(names, o.Name)
			}
			if diff := cmp.Diff([]string{"new", "svc03"}, names); diff != "" {
				t.Fatalf("east report (-want +got):\n%s", diff)
			}
			// Identical snapshot: nothing written, so no new revision and no recompile.
			rev2, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{service("apps", "new"), first[3]})
			if err != nil || rev2 != rev {
				t.Fatalf("identical snapshot: rev %d -> %d, err %v", rev, rev2, err)
			}
			// Another cluster's report is untouched.
			if w, _ := s.Report(ctx, "west"); len(w) != 1 {
				t.Fatalf("west report changed: %v", w)
			}
			if _, err := s.ApplyReportDelta(ctx, "east", []*fedgatepb.Object{service("apps", "d")},
				[]*fedgatepb.ObjectRef{{Kind: "Service", Namespace: "apps", Name: "new"}}); err != nil {
				t.Fatal(err)
			}
			if n, _ := s.ReportCount(ctx, "east", 0); n != 2 {
				t.Fatalf("after delta east has %d objects, want 2", n)
			}
		})
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, stop := startStore(t, dir, Options{})
	if _, _, err := s.ApplyHub(ctx, []*fedgatepb.Object{route("default", "a", "a.example")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:15443", Labels: map[string]string{"region": "eu"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{service("apps", "web")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteGraphs(ctx, nil, 7, map[string]Projection{"east": {Config: &spokeconfig.SpokeConfig{Cluster: "east"}}}); err != nil {
		t.Fatal(err)
	}
	before := listNames(t, s, true)
	stop()

	s2, _ := startStore(t, dir, Options{})
	if diff := cmp.Diff(before, listNames(t, s2, true)); diff != "" {
		t.Fatalf("objects after restart (-before +after):\n%s", diff)
	}
	cl, err := s2.Clusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cl) != 1 || cl[0].Record.EastWestAddress != "127.0.0.1:15443" || cl[0].Record.Labels["region"] != "eu" || cl[0].ReportedObjects != 1 {
		t.Fatalf("clusters after restart: %+v", cl)
	}
	g, _, err := s2.ReadGraph(ctx, "east")
	if err != nil || g == nil || g.Revision != 7 {
		t.Fatalf("graph after restart: %+v, %v", g, err)
	}
}

func TestWriteGraphsOnlyWritesChanges(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	cfg := func(name, ew string) Projection {
		return Projection{Config: &spokeconfig.SpokeConfig{Cluster: name, Revision: 99, Clusters: []spokeconfig.Cluster{{Name: "x", EastWestAddress: ew}}}}
	}
	gw, err := s.WriteGraphs(ctx, nil, 10, map[string]Projection{"east": cfg("east", "a:1"), "west": cfg("west", "a:1")})
	if err != nil || !cmp.Equal(gw.Changed, []string{"east", "west"}) {
		t.Fatalf("first write: %v %v", gw.Changed, err)
	}
	// Same content at a later revision: nothing written, the stored revision stays 10 (and is what it returns).
	gw, err = s.WriteGraphs(ctx, nil, 20, map[string]Projection{"east": cfg("east", "a:1"), "west": cfg("west", "b:2")})
	if err != nil || !cmp.Equal(gw.Changed, []string{"west"}) || !cmp.Equal(gw.Revisions, map[string]int64{"east": 10, "west": 20}) {
		t.Fatalf("second write: changed %v, revisions %v, %v", gw.Changed, gw.Revisions, err)
	}
	east, _, _ := s.ReadGraph(ctx, "east")
	west, _, _ := s.ReadGraph(ctx, "west")
	if east.Revision != 10 || west.Revision != 20 {
		t.Fatalf("revisions: east %d west %d", east.Revision, west.Revision)
	}
	// The stored bytes are what the hash covers, and they decode to the stamped revision.
	if spokeconfig.Hash(west.Config) != west.Hash {
		t.Fatal("stored config does not match its hash")
	}
	if c, err := spokeconfig.Decode(west.Config); err != nil || c.Revision != 20 {
		t.Fatalf("decoded config: %+v %v", c, err)
	}
	// A vanished cluster loses its graph.
	if _, err := s.WriteGraphs(ctx, nil, 30, map[string]Projection{"west": cfg("west", "b:2")}); err != nil {
		t.Fatal(err)
	}
	if g, _, _ := s.ReadGraph(ctx, "east"); g != nil {
		t.Fatalf("graph of vanished cluster kept: %+v", g)
	}
}

func TestReadInputsAtOneRevision(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.ApplyHub(ctx, []*fedgatepb.Object{route("default", "a", "a.example")})
	if err != nil {
		t.Fatal(err)
	}
	in, err := s.ReadInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.Revision != rev || in.Clusters["east"] == nil || in.Clusters["east"].EastWestAddress != "127.0.0.1:1" {
		t.Fatalf("inputs: rev %d (want %d), clusters %+v", in.Revision, rev, in.Clusters)
	}
}

func TestPresenceAndSyncState(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	connected := func() bool {
		cl, err := s.Clusters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cl[0].Connected
	}
	// Three streams of one cluster (a reconnect before the old stream noticed it was dead, a second reporter). Closing
	// any of them while another is open leaves the cluster connected, whichever order they close in (issue 9).
	var held []*Presence
	for range 3 {
		p, err := s.HoldPresence(ctx, "east")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}
	for i, p := range []*Presence{held[2], held[0]} {
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if !connected() {
			t.Fatalf("closing stream %d of 3 marked the cluster disconnected while another stream is open", i+1)
		}
	}
	p2 := held[1]
	if _, err := s.UpdateSyncState(ctx, "east", func(st *SyncState) { st.NackedRevision, st.LastNackError = 5, "boom" }); err != nil {
		t.Fatal(err)
	}
	if err := p2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if connected() {
		t.Fatal("still connected after the last connection closed")
	}
	cl, _ := s.Clusters(ctx)
	if cl[0].Sync.NackedRevision != 5 || cl[0].Sync.LastNackError != "boom" {
		t.Fatalf("sync state: %+v", cl[0].Sync)
	}
}

// A hello without addresses (a second reporter, a tool) keeps the cluster's stored east-west and gossip addresses; a
// hello naming new ones replaces them (issue 9).
func TestUpsertClusterNeverBlanksAddresses(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:15443", GossipAddress: "127.0.0.1:7946"}); err != nil {
		t.Fatal(err)
	}
	address := func() (string, string) {
		cl, err := s.Clusters(ctx)
		if err != nil || len(cl) != 1 {
			t.Fatalf("clusters: %+v %v", cl, err)
		}
		return cl[0].Record.EastWestAddress, cl[0].Record.GossipAddress
	}
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", AgentVersion: "other"}); err != nil {
		t.Fatal(err)
	}
	if ew, g := address(); ew != "127.0.0.1:15443" || g != "127.0.0.1:7946" {
		t.Fatalf("after a hello without addresses: east-west %q, gossip %q", ew, g)
	}
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", EastWestAddress: "127.0.0.2:15443"}); err != nil {
		t.Fatal(err)
	}
	if ew, g := address(); ew != "127.0.0.2:15443" || g != "127.0.0.1:7946" {
		t.Fatalf("after a hello with a new east-west address: east-west %q, gossip %q", ew, g)
	}
}

// One cluster's projection that cannot be sent or stored, or that failed, is that cluster's alone (issue 9): the
// others are written whatever their order, the failed one keeps its stored graph and is reported with the reason.
func TestWriteGraphsFailsPerCluster(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{MaxTxnOps: EmbeddedMaxTxnOps, MaxRequestBytes: 256 << 10})
	ctx := context.Background()
	small := func(name, ew string) Projection {
		return Projection{Config: &spokeconfig.SpokeConfig{Cluster: name, Clusters: []spokeconfig.Cluster{{Name: "x", EastWestAddress: ew}}}}
	}
	// Larger than etcd's request limit (as the store knows it), well below a config update's.
	big := &spokeconfig.SpokeConfig{Cluster: "aaa"}
	for i := range 3000 {
		big.Members = append(big.Members, fmt.Sprintf("member-%04d-%s", i, strings.Repeat("x", 100)))
	}
	if _, err := s.WriteGraphs(ctx, nil, 10, map[string]Projection{"aaa": small("aaa", "a:1"), "mmm": small("mmm", "a:1"), "zzz": small("zzz", "a:1")}); err != nil {
		t.Fatal(err)
	}
	gw, err := s.WriteGraphs(ctx, nil, 20, map[string]Projection{
		"aaa": {Config: big},
		"mmm": {Err: errors.New("projection panic")},
		"zzz": small("zzz", "b:2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	failed := gw.Failed
	if !cmp.Equal(gw.Changed, []string{"zzz"}) {
		t.Fatalf("changed %v, want [zzz]: a failed cluster sorted first must not hold up the others", gw.Changed)
	}
	if !cmp.Equal(gw.Revisions, map[string]int64{"zzz": 20}) {
		t.Fatalf("revisions %v, want only zzz's: failed clusters have no graph of this compile", gw.Revisions)
	}
	if !errors.Is(failed["aaa"], ErrProjectionTooLarge) || !strings.Contains(failed["aaa"].Error(), "etcd's request limit") {
		t.Fatalf("aaa: %v, want too large for etcd", failed["aaa"])
	}
	if failed["mmm"] == nil || failed["zzz"] != nil || len(failed) != 2 {
		t.Fatalf("failed: %v", failed)
	}
	for name, rev := range map[string]int64{"aaa": 10, "mmm": 10, "zzz": 20} {
		if g, _, err := s.ReadGraph(ctx, name); err != nil || g == nil || g.Revision != rev {
			t.Fatalf("graph of %s: %+v %v, want revision %d", name, g, err, rev)
		}
	}

	// Larger than a config update may be: refused before etcd is asked.
	s2, _ := startStore(t, t.TempDir(), Options{MaxTxnOps: EmbeddedMaxTxnOps, MaxRequestBytes: 64 << 20})
	huge := &spokeconfig.SpokeConfig{Cluster: "huge"}
	for i := range 17 {
		huge.Members = append(huge.Members, fmt.Sprintf("%02d%s", i, strings.Repeat("y", 1<<20)))
	}
	gw, err = s2.WriteGraphs(ctx, nil, 30, map[string]Projection{"huge": {Config: huge}})
	failed = gw.Failed
	if err != nil || !errors.Is(failed["huge"], ErrProjectionTooLarge) || !strings.Contains(failed["huge"].Error(), "limit of a config update") {
		t.Fatalf("huge: %v %v, want too large for a config update", failed["huge"], err)
	}

	// The reasons land in the clusters' sync states, and clear once they are projected again.
	if err := s.RecordProjectionErrors(ctx, 20, []string{"aaa", "mmm", "zzz"}, failed); err != nil {
		t.Fatal(err)
	}
	gw, _ = s.WriteGraphs(ctx, nil, 20, map[string]Projection{"aaa": {Config: big}, "mmm": {Err: errors.New("projection panic")}, "zzz": small("zzz", "b:2")})
	failed = gw.Failed
	if err := s.RecordProjectionErrors(ctx, 20, []string{"aaa", "mmm", "zzz"}, failed); err != nil {
		t.Fatal(err)
	}
	states := func() map[string]SyncState {
		cl, err := s.Clusters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]SyncState{}
		for _, c := range cl {
			out[c.Record.Name] = c.Sync
		}
		return out
	}
	for _, name := range []string{"aaa", "mmm", "zzz"} {
		if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	st := states()
	if !strings.Contains(st["aaa"].ProjectionError, "projection too large") || st["aaa"].ProjectionRevision != 20 ||
		st["mmm"].ProjectionError != "projection panic" || st["zzz"].ProjectionError != "" {
		t.Fatalf("sync states: %+v", st)
	}
	if err := s.RecordProjectionErrors(ctx, 40, []string{"aaa", "mmm", "zzz"}, nil); err != nil {
		t.Fatal(err)
	}
	if st := states(); st["aaa"].ProjectionError != "" || st["aaa"].ProjectionRevision != 0 || st["mmm"].ProjectionError != "" {
		t.Fatalf("sync states after a clean compile: %+v", st)
	}
}

// mirrored is an HTTPRoute as the hub-cluster mirror stores it (with the origin annotation).
func mirrored(name, host string) *fedgatepb.Object {
	js := fmt.Sprintf(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":%q,"namespace":"default",`+
		`"annotations":{%q:"hub"}},"spec":{"hostnames":[%q]}}`, name, OriginAnnotation, host)
	return &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: "default", Name: name, Json: []byte(js)}
}

// TestMirrorWritesAreChunked: against an etcd that allows 8 operations per transaction (an external etcd's
// --max-txn-ops, the hub's --etcd-max-txn-ops), the hub-cluster mirror stores and deletes 30 objects in chunks, while
// hubctl's apply of as many stays atomic and is refused whole (issue 9).
func TestMirrorWritesAreChunked(t *testing.T) {
	const maxOps, n = 8, 30
	ctx := context.Background()
	s, _ := startStore(t, t.TempDir(), Options{MaxTxnOps: maxOps, MaxRequestBytes: DefaultMaxRequestBytes})
	// The server itself enforces the limit: a transaction of more operations fails.
	ops := make([]clientv3.Op, maxOps+1)
	for i := range ops {
		ops[i] = clientv3.OpGet(fmt.Sprintf("/probe/%d", i))
	}
	if _, err := s.Client().Txn(ctx).Then(ops...).Commit(); err == nil {
		t.Fatalf("etcd accepted a transaction of %d operations; the test's limit is not in force", len(ops))
	}

	var objs []*fedgatepb.Object
	var refs []*fedgatepb.ObjectRef
	for i := range n {
		o := mirrored(fmt.Sprintf("r%02d", i), "h.example")
		objs = append(objs, o)
		refs = append(refs, &fedgatepb.ObjectRef{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
	}
	actions := func(res []ApplyResult) map[string]int {
		m := map[string]int{}
		for _, r := range res {
			m[r.Action]++
		}
		return m
	}
	res, _, err := s.ApplyMirrored(ctx, objs)
	if err != nil {
		t.Fatalf("mirror of %d objects: %v", n, err)
	}
	if got := actions(res); got[ActionCreated] != n || len(res) != n {
		t.Fatalf("mirror of %d objects: %v", n, got)
	}
	if got := listNames(t, s, false); len(got) != n {
		t.Fatalf("stored %d objects, want %d", len(got), n)
	}
	objs[17] = mirrored("r17", "changed.example")
	res, _, err = s.ApplyMirrored(ctx, objs)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(res); got[ActionUnchanged] != n-1 || got[ActionConfigured] != 1 || res[17].Action != ActionConfigured {
		t.Fatalf("second pass: %v (r17: %s)", got, res[17].Action)
	}

	// A bad object in a later chunk is named by its index in the whole request, and nothing is written.
	bad := append([]*fedgatepb.Object(nil), objs...)
	bad = append(bad, mirrored("new", "h.example"))
	bad[25] = mirrored("x/y", "h.example")
	if _, _, err := s.ApplyMirrored(ctx, bad); err == nil || !strings.Contains(err.Error(), "objects[25]") {
		t.Fatalf("mirror with a malformed name in a later chunk: %v", err)
	}
	if got := listNames(t, s, false); len(got) != n {
		t.Fatalf("a refused mirror write stored something: %d objects", len(got))
	}

	// hubctl's apply must stay one transaction: too many objects are refused whole.
	var many []*fedgatepb.Object
	for i := range maxOps + 1 {
		many = append(many, route("other", fmt.Sprintf("r%d", i), "h.example"))
	}
	if _, _, err := s.ApplyHub(ctx, many); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "--etcd-max-txn-ops") {
		t.Fatalf("hubctl apply of %d objects: %v, want ErrTooLarge naming --etcd-max-txn-ops", len(many), err)
	}

	deleted, notFound, _, err := s.DeleteMirrored(ctx, refs)
	if err != nil || len(deleted) != n || len(notFound) != 0 {
		t.Fatalf("mirror delete of %d objects: deleted %d, not found %d, %v", n, len(deleted), len(notFound), err)
	}
	if got := listNames(t, s, false); len(got) != 0 {
		t.Fatalf("left after the mirror's delete: %v", got)
	}
}

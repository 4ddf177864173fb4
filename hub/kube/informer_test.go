package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/controller"
	"github.com/fedgate/fedgate/hub/store"
	fgenvtest "github.com/fedgate/fedgate/test/envtest"
)

// requestCounter counts the hub cluster requests a rest.Config's transport sends: LISTs (a GET of a collection that
// is not a watch) per resource, and watches.
type requestCounter struct {
	mu      sync.Mutex
	lists   map[string]int
	watches int
}

// watchedResources are the collections of the six kinds the mirror reads.
var watchedResources = map[string]bool{
	"gatewayclasses": true, "gateways": true, "httproutes": true, "grpcroutes": true, "referencegrants": true, "managedclusters": true,
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodGet && watchedResources[path.Base(r.URL.Path)] {
			c.mu.Lock()
			if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
				c.watches++
			} else {
				c.lists[path.Base(r.URL.Path)]++
			}
			c.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lists, c.watches = map[string]int{}, 0
}

func (c *requestCounter) listCount() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	out := map[string]int{}
	for k, v := range c.lists {
		n += v
		out[k] = v
	}
	return n, out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// hubEnv is a hub cluster (envtest, with fedgate's and Gateway API's CRDs) and a hub store on an embedded etcd with
// its compile loop running.
type hubEnv struct {
	cluster *fgenvtest.Cluster
	st      *store.Store
}

func startHubEnv(t *testing.T, ctx context.Context) *hubEnv {
	t.Helper()
	hubCluster := fgenvtest.Start(t, "hub")[0]
	if _, err := crenvtest.InstallCRDs(hubCluster.Config, crenvtest.CRDInstallOptions{
		Paths: []string{filepath.Join(fgenvtest.RepoRoot(), "deploy", "hub-crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
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
	st := store.New(cli, store.Options{MaxTxnOps: store.EmbeddedMaxTxnOps, MaxRequestBytes: store.EmbeddedMaxRequestBytes, KeyEncryptionKeys: testKEK(t)})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = controller.New(st, controller.Config{}).Run(cctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &hubEnv{cluster: hubCluster, st: st}
}

// run starts a Syncer with o (Config and Store filled in) until the test ends.
func (h *hubEnv) run(t *testing.T, ctx context.Context, o Options) *Syncer {
	t.Helper()
	if o.Config == nil {
		o.Config = h.cluster.Config
	}
	o.Store = h.st
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(rctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

func (h *hubEnv) inStore(ctx context.Context, kind, name string) func() (bool, error) {
	return func() (bool, error) {
		objs, _, err := h.st.ListObjects(ctx, []string{kind}, "default", false)
		for _, o := range objs {
			if o.Object.Name == name {
				return true, nil
			}
		}
		return false, err
	}
}

// The mirror runs on watches (issue 10): a change in the hub cluster reaches the store promptly although the resync
// is an hour away, a route gets its status from the compile that follows without a resync, and an idle hub sends the
// hub cluster no LIST at all (it listed all six kinds every second).
func TestMirrorWatchesTheHubCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := startHubEnv(t, ctx)
	for _, c := range []string{"east", "west"} {
		if _, err := h.st.UpsertCluster(ctx, store.ClusterRecord{Name: c, EastWestAddress: "127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.st.ReplaceReport(ctx, c, clusterReport(t, c, "color")); err != nil {
			t.Fatal(err)
		}
	}
	counter := &requestCounter{}
	counter.reset()
	cfg := rest.CopyConfig(h.cluster.Config)
	cfg.Wrap(counter.wrap)
	h.run(t, ctx, Options{Config: cfg, Resync: time.Hour})

	mk := func(name string) *gatewayv1.HTTPRoute {
		port := gatewayv1.PortNumber(80)
		r := &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color", Port: &port}}},
				}}},
			},
		}
		if err := h.cluster.Client.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	mk("first")
	eventually(t, ctx, "the first route mirrored", h.inStore(ctx, resources.KindHTTPRoute, "first"))

	// Prompt: the resync is an hour away, so only the watch can bring it.
	start := time.Now()
	mk("second")
	eventually(t, ctx, "the second route mirrored", h.inStore(ctx, resources.KindHTTPRoute, "second"))
	took := time.Since(start)
	t.Logf("a route created in the hub cluster was in the store %v later", took.Round(time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("a hub-cluster change took %v to reach the store: not the watch, which brings it at once (the resync is an hour away)", took)
	}
	// Its status follows the compile (an etcd watch), still without a resync.
	eventually(t, ctx, "the second route's status written", func() (bool, error) {
		var r gatewayv1.HTTPRoute
		if err := h.cluster.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "second"}, &r); err != nil {
			return false, err
		}
		return len(r.Status.Parents) == 1 && meta.IsStatusConditionTrue(r.Status.Parents[0].Conditions, ClusterConditionType("east", "Accepted")), nil
	})
	// Deletion is an event too.
	if err := h.cluster.Client.Delete(ctx, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the first route's deletion mirrored", func() (bool, error) {
		ok, err := h.inStore(ctx, resources.KindHTTPRoute, "first")()
		return !ok && err == nil, err
	})

	// Idle: no LIST of any watched kind (watches may be renewed, which is not a LIST).
	time.Sleep(500 * time.Millisecond) // let the status writes' echoes settle
	counter.reset()
	const idle = 3 * time.Second
	time.Sleep(idle)
	if n, per := counter.listCount(); n > 0 {
		t.Errorf("an idle hub sent %d LISTs to the hub cluster in %v: %v", n, idle, per)
	}
}

// A hub-cluster Gateway gets its status written back whole (issue 10): conditions, one listener entry per listener
// summed up over the clusters (attachedRoutes, each condition naming the clusters), and the gateway addresses the
// clusters' spokes report.
func TestHubClusterGatewayStatus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := startHubEnv(t, ctx)
	addrs := map[string][]string{"east": {"192.0.2.10"}, "west": {"gw.west.example.com", "192.0.2.20"}}
	for _, c := range []string{"east", "west"} {
		if _, err := h.st.UpsertCluster(ctx, store.ClusterRecord{Name: c, EastWestAddress: "127.0.0.1:1", GatewayAddresses: addrs[c]}); err != nil {
			t.Fatal(err)
		}
		// Each cluster reports a Service and the fedgate class; the Gateway is the hub cluster's.
		var report []*fedgatepb.Object
		for _, o := range clusterReport(t, c, "color") {
			if o.Kind != resources.KindGateway {
				report = append(report, o)
			}
		}
		if _, err := h.st.ReplaceReport(ctx, c, report); err != nil {
			t.Fatal(err)
		}
	}
	port := gatewayv1.PortNumber(80)
	if err := h.cluster.Client.Create(ctx, &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: "fedgate"},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: "fedgate.io/gateway-controller"},
	}); err != nil {
		t.Fatal(err)
	}
	all := gatewayv1.NamespacesFromAll
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "default"},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "fedgate",
			Listeners: []gatewayv1.Listener{
				{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 8080, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
				{Name: "other", Protocol: gatewayv1.HTTPProtocolType, Port: 8081, Hostname: ptr.To(gatewayv1.Hostname("other.example.com"))},
			},
		},
	}
	if err := h.cluster.Client.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	section := gatewayv1.SectionName("http")
	if err := h.cluster.Client.Create(ctx, &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", SectionName: &section}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color", Port: &port}}},
			}}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	h.run(t, ctx, Options{Resync: time.Hour})

	var got gatewayv1.Gateway
	eventually(t, ctx, "the Gateway's listeners and addresses", func() (bool, error) {
		if err := h.cluster.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "gw"}, &got); err != nil {
			return false, err
		}
		return len(got.Status.Listeners) == 2 && got.Status.Listeners[0].AttachedRoutes == 1 && len(got.Status.Addresses) == 3, nil
	})
	if !meta.IsStatusConditionTrue(got.Status.Conditions, "Programmed") {
		t.Errorf("Gateway conditions %+v", got.Status.Conditions)
	}
	for _, l := range got.Status.Listeners {
		for _, typ := range []string{"Accepted", "Programmed", "ResolvedRefs"} {
			c := meta.FindStatusCondition(l.Conditions, typ)
			if c == nil || c.Status != metav1.ConditionTrue || !strings.HasSuffix(c.Message, " in east, west") || c.ObservedGeneration != got.Generation {
				t.Errorf("listener %s: %s = %+v, want True in east, west", l.Name, typ, c)
			}
		}
		if c := meta.FindStatusCondition(l.Conditions, "Conflicted"); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("listener %s: Conflicted = %+v", l.Name, c)
		}
		if len(l.SupportedKinds) == 0 {
			t.Errorf("listener %s has no supportedKinds", l.Name)
		}
	}
	if l := got.Status.Listeners[1]; l.Name != "other" || l.AttachedRoutes != 0 {
		t.Errorf("listener other: %+v", l)
	}
	var values []string
	for _, a := range got.Status.Addresses {
		values = append(values, string(*a.Type)+"="+a.Value)
	}
	if want := "IPAddress=192.0.2.10,Hostname=gw.west.example.com,IPAddress=192.0.2.20"; strings.Join(values, ",") != want {
		t.Errorf("addresses %s, want %s", strings.Join(values, ","), want)
	}
	// Nothing changed: nothing rewritten.
	rv := got.ResourceVersion
	time.Sleep(time.Second)
	if err := h.cluster.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "gw"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != rv {
		t.Errorf("the Gateway's status was rewritten with nothing changed (resourceVersion %s → %s)", rv, got.ResourceVersion)
	}
}

// A ManagedCluster per joined cluster appears at join, before the spoke first connects, with the join's labels; the
// spoke connecting makes it Connected with a lastSeen, and its going away takes Connected back (issue 10).
func TestManagedClusterFromJoinToDisconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := startHubEnv(t, ctx)
	cli := h.st.Client()
	// Join records as hub/registration writes them; Members reads them as the hub does.
	members := func(ctx context.Context) (map[string]Member, error) {
		resp, err := cli.Get(ctx, store.JoinedPrefix, clientv3.WithPrefix())
		if err != nil {
			return nil, err
		}
		out := map[string]Member{}
		for _, kv := range resp.Kvs {
			var r struct {
				Name     string            `json:"name"`
				Labels   map[string]string `json:"labels"`
				JoinedAt time.Time         `json:"joinedAt"`
			}
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return nil, err
			}
			out[r.Name] = Member{Labels: r.Labels, JoinedAt: r.JoinedAt}
		}
		return out, nil
	}
	var now atomic.Pointer[time.Time]
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	now.Store(&t0)
	s := h.run(t, ctx, Options{Resync: time.Hour, Members: members, Now: func() time.Time { return *now.Load() }})

	var mc hubv1alpha1.ManagedCluster
	get := func() error { return s.c.Get(ctx, types.NamespacedName{Name: "east"}, &mc) }
	// A first join, to know the mirror runs before the one that is timed.
	if _, err := cli.Put(ctx, store.JoinedPrefix+"warm-up", `{"name": "warm-up"}`); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the mirror running", func() (bool, error) {
		return s.c.Get(ctx, types.NamespacedName{Name: "warm-up"}, &hubv1alpha1.ManagedCluster{}) == nil, nil
	})

	joinedAt := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rec, _ := json.Marshal(map[string]any{"name": "east", "labels": map[string]string{"region": "eu", "bad label": "x"}, "joinedAt": joinedAt})
	start := time.Now()
	if _, err := cli.Put(ctx, store.JoinedPrefix+"east", string(rec)); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "a ManagedCluster at join", func() (bool, error) {
		if err := get(); err != nil {
			return false, err
		}
		return meta.FindStatusCondition(mc.Status.Conditions, "Available") != nil, fmt.Errorf("status %+v", mc.Status)
	})
	t.Logf("ManagedCluster east with status %v after its join record", time.Since(start).Round(time.Millisecond))
	if mc.Spec.Labels["region"] != "eu" || mc.Labels["region"] != "eu" || mc.Labels["bad label"] != "" {
		t.Errorf("labels: spec %v, metadata %v", mc.Spec.Labels, mc.Labels)
	}
	if mc.Status.Connected || mc.Status.LastSeen != nil || mc.Status.JoinedAt == nil || !mc.Status.JoinedAt.Time.Equal(joinedAt) {
		t.Errorf("never-connected status: %+v", mc.Status)
	}
	if c := meta.FindStatusCondition(mc.Status.Conditions, "Available"); c.Status != metav1.ConditionFalse || c.Reason != "NeverConnected" {
		t.Errorf("Available before the spoke connected: %+v", c)
	}

	// The spoke connects (its Report stream: a cluster record and a presence key).
	if _, err := h.st.UpsertCluster(ctx, store.ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:15443", GatewayAddresses: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	p, err := h.st.HoldPresence(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "east connected", func() (bool, error) {
		return get() == nil && mc.Status.Connected && mc.Status.LastSeen != nil, nil
	})
	if !mc.Status.LastSeen.Time.Equal(t0) || mc.Spec.EastWestAddress != "127.0.0.1:15443" || len(mc.Status.GatewayAddresses) != 1 || mc.Spec.Labels["region"] != "eu" {
		t.Errorf("connected: spec %+v status %+v", mc.Spec, mc.Status)
	}
	// lastSeen is refreshed while connected, at the first pass a minute on.
	t1 := t0.Add(LastSeenRefresh)
	now.Store(&t1)
	if _, err := h.st.UpdateSyncState(ctx, "east", func(s *store.SyncState) { s.SentRevision = 1 }); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "lastSeen refreshed", func() (bool, error) {
		return get() == nil && mc.Status.LastSeen.Time.Equal(t1), nil
	})

	// The stream ends: disconnected, lastSeen kept.
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "east disconnected", func() (bool, error) {
		return get() == nil && !mc.Status.Connected, nil
	})
	if mc.Status.LastSeen == nil || mc.Status.LastSeen.Time.Before(t1) {
		t.Errorf("lastSeen after disconnect: %v", mc.Status.LastSeen)
	}

	// Removal (the join record and cluster record deleted) deletes it.
	if _, err := cli.Delete(ctx, store.JoinedPrefix+"east"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, store.ClusterKey("east")); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "ManagedCluster east deleted", func() (bool, error) {
		err := get()
		return err != nil && strings.Contains(err.Error(), "not found"), nil
	})
}

package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/controller"
	"github.com/fedgate/fedgate/hub/store"
	fgenvtest "github.com/fedgate/fedgate/test/envtest"
)

// clusterReport is what a spoke of cluster name reports: our class, Gateway default/gw on 8080, and Service svc.
func clusterReport(t *testing.T, name, svc string) []*fedgatepb.Object {
	t.Helper()
	objs, err := resources.DecodeYAML(strings.NewReader(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: fedgate}
spec: {controllerName: fedgate.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: fedgate
  listeners: [{name: http, protocol: HTTP, port: 8080, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: v1
kind: Service
metadata: {name: `+svc+`, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: `+svc+`-1, namespace: default, labels: {kubernetes.io/service-name: `+svc+`}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}}]
`), name, "default")
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestHubClusterMirrorAndStatus: a route applied with kubectl to the hub cluster reaches the store, its status shows
// per cluster whether it is accepted and programmed, and deleting it there deletes it at the hub; clusters appear as
// ManagedClusters.
func TestHubClusterMirrorAndStatus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
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
	defer e.Close()
	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st := store.New(cli, store.Options{MaxTxnOps: store.EmbeddedMaxTxnOps, MaxRequestBytes: store.EmbeddedMaxRequestBytes, KeyEncryptionKeys: testKEK(t)})
	ctl := controller.New(st, controller.Config{})
	go func() { _ = ctl.Run(ctx) }()

	for _, c := range []struct{ name, svc string }{{"east", "color"}, {"west", "color2"}} {
		if _, err := st.UpsertCluster(ctx, store.ClusterRecord{Name: c.name, EastWestAddress: "127.0.0.1:1", Labels: map[string]string{"region": c.name}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ReplaceReport(ctx, c.name, clusterReport(t, c.name, c.svc)); err != nil {
			t.Fatal(err)
		}
	}
	// A route applied with hubctl (no origin annotation) must survive the mirror's deletions.
	hubctlRoute, err := resources.DecodeYAML(strings.NewReader(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: from-hubctl, namespace: default}
spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: color, port: 80}]}]}
`), "test", "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ApplyHub(ctx, hubctlRoute); err != nil {
		t.Fatal(err)
	}

	w, ten := int32(90), int32(10)
	port := gatewayv1.PortNumber(80)
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "canary", Namespace: "default"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color", Port: &port}, Weight: &w}},
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color2", Port: &port}, Weight: &ten}},
			}}},
		},
	}
	if err := hubCluster.Client.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Config: hubCluster.Config, Store: st})
	if err != nil {
		t.Fatal(err)
	}

	var got gatewayv1.HTTPRoute
	// routeStatus passes and returns the route's conditions once it has its one parent entry.
	routeStatus := func() ([]metav1.Condition, error) {
		if err := s.Pass(ctx); err != nil {
			return nil, err
		}
		if err := hubCluster.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "canary"}, &got); err != nil {
			return nil, err
		}
		if len(got.Status.Parents) != 1 {
			return nil, nil
		}
		return got.Status.Parents[0].Conditions, nil
	}
	// No spoke has acknowledged anything: accepted everywhere, programmed nowhere.
	eventually(t, ctx, "route accepted in both clusters, programmed in neither", func() (bool, error) {
		conds, err := routeStatus()
		if err != nil || conds == nil {
			return false, err
		}
		for _, typ := range []string{"Accepted", ClusterConditionType("east", "Accepted"), ClusterConditionType("west", "Accepted")} {
			if !meta.IsStatusConditionTrue(conds, typ) {
				return false, nil
			}
		}
		for _, c := range []string{"east", "west"} {
			if p := meta.FindStatusCondition(conds, ClusterConditionType(c, "Programmed")); p == nil || p.Status != metav1.ConditionFalse || p.Reason != "Pending" {
				return false, nil
			}
		}
		return true, nil
	})
	// The graph revision each cluster has the route from, as the compile loop stamped it: the cluster's graph of that
	// revision (or a newer one) carries the route.
	routeRevision := map[string]int64{}
	statuses, err := st.Statuses(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var compiled compiler.ObjectStatus
	if err := json.Unmarshal(statuses[store.StatusKey("", "HTTPRoute", "default", "canary")], &compiled); err != nil {
		t.Fatal(err)
	}
	for _, ps := range compiled.Parents {
		routeRevision[ps.Cluster] = ps.GraphRevision
	}
	for _, c := range []string{"east", "west"} {
		g, _, err := st.ReadGraph(ctx, c)
		if err != nil || g == nil {
			t.Fatalf("graph of %s: %v", c, err)
		}
		if routeRevision[c] == 0 || g.Revision < routeRevision[c] || !strings.Contains(string(g.Config), "canary") {
			t.Fatalf("%s: the route is stamped with graph revision %d; its graph is at %d and carries the route: %v",
				c, routeRevision[c], g.Revision, strings.Contains(string(g.Config), "canary"))
		}
	}
	// An acknowledgement of an older graph does not make the route programmed; one of its graph does.
	ack := func(cluster string, rev int64) {
		t.Helper()
		if _, err := st.UpdateSyncState(ctx, cluster, func(s *store.SyncState) { s.SentRevision, s.AckedRevision = rev, rev }); err != nil {
			t.Fatal(err)
		}
	}
	ack("east", routeRevision["east"]-1)
	ack("west", routeRevision["west"])
	eventually(t, ctx, "route programmed in west only", func() (bool, error) {
		conds, err := routeStatus()
		if err != nil || conds == nil {
			return false, err
		}
		east := meta.FindStatusCondition(conds, ClusterConditionType("east", "Programmed"))
		return meta.IsStatusConditionTrue(conds, ClusterConditionType("west", "Programmed")) &&
			east != nil && east.Status == metav1.ConditionFalse && east.Reason == "Pending", nil
	})
	ack("east", routeRevision["east"])
	eventually(t, ctx, "route status with per-cluster conditions", func() (bool, error) {
		conds, err := routeStatus()
		if err != nil || conds == nil {
			return false, err
		}
		for _, typ := range []string{"Accepted", ClusterConditionType("east", "Accepted"), ClusterConditionType("west", "Accepted"),
			ClusterConditionType("east", "Programmed"), ClusterConditionType("west", "Programmed")} {
			if !meta.IsStatusConditionTrue(conds, typ) {
				return false, nil
			}
		}
		return true, nil
	})
	p := got.Status.Parents[0]
	if p.ControllerName != "fedgate.io/gateway-controller" {
		t.Fatalf("controllerName %q", p.ControllerName)
	}
	for _, c := range p.Conditions {
		if c.ObservedGeneration != got.Generation {
			t.Errorf("condition %s observedGeneration %d, object generation %d", c.Type, c.ObservedGeneration, got.Generation)
		}
	}
	if c := meta.FindStatusCondition(p.Conditions, ClusterConditionType("east", "Programmed")); !strings.Contains(c.Message, "graph revision") {
		t.Errorf("Programmed message does not name the graph revision: %q", c.Message)
	}
	// A pass with nothing changed writes nothing (the resourceVersion stays).
	rv := got.ResourceVersion
	if err := s.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hubCluster.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "canary"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != rv {
		t.Errorf("an idle pass rewrote the route's status (resourceVersion %s → %s)", rv, got.ResourceVersion)
	}

	var mcs hubv1alpha1.ManagedClusterList
	eventually(t, ctx, "ManagedClusters", func() (bool, error) {
		if err := s.c.List(ctx, &mcs); err != nil {
			return false, err
		}
		return len(mcs.Items) == 2, nil
	})
	for _, mc := range mcs.Items {
		if mc.Spec.Labels["region"] != mc.Name || mc.Spec.EastWestAddress == "" || meta.FindStatusCondition(mc.Status.Conditions, "Joined") == nil {
			t.Errorf("ManagedCluster %s: %+v", mc.Name, mc)
		}
	}

	// Deleting the route in the hub cluster deletes it at the hub; the hubctl route stays.
	if err := hubCluster.Client.Delete(ctx, route); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "mirrored route deleted at the hub", func() (bool, error) {
		if err := s.Pass(ctx); err != nil {
			return false, err
		}
		objs, _, err := st.ListObjects(ctx, []string{resources.KindHTTPRoute}, "", false)
		if err != nil {
			return false, err
		}
		names := map[string]bool{}
		for _, o := range objs {
			names[o.Object.Name] = true
		}
		if !names["from-hubctl"] {
			t.Fatal("the mirror deleted a route applied with hubctl")
		}
		return !names["canary"], nil
	})

	// Two hub replicas run the mirror: one leads at a time, and when it stops the other takes over.
	ctx1, stop1 := context.WithCancel(ctx)
	replica := func(c context.Context) {
		r, err := New(Options{Config: hubCluster.Config, Store: st, Resync: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = r.Run(c) }()
	}
	inStore := func(name string) func() (bool, error) {
		return func() (bool, error) {
			objs, _, err := st.ListObjects(ctx, []string{resources.KindHTTPRoute}, "default", false)
			for _, o := range objs {
				if o.Object.Name == name {
					return true, nil
				}
			}
			return false, err
		}
	}
	mk := func(name string) {
		r := route.DeepCopy()
		r.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: "default"}
		if err := hubCluster.Client.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	replica(ctx1) // alone, so it leads
	mk("replicated-1")
	eventually(t, ctx, "the first replica mirrors replicated-1", inStore("replicated-1"))
	replica(ctx) // campaigns and waits
	stop1()
	mk("replicated-2")
	eventually(t, ctx, "the remaining replica mirrors replicated-2", inStore("replicated-2"))
}

func eventually(t *testing.T, ctx context.Context, what string, f func() (bool, error)) {
	t.Helper()
	var lastErr error
	for ctx.Err() == nil {
		ok, err := f()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: never happened (last error %v)", what, lastErr)
}

// TestHubClusterMirrorAboveTheTransactionLimit: an etcd that allows 128 operations per transaction (etcd's default,
// --etcd-max-txn-ops) and 130 routes in the hub cluster: the mirror stores every one of them, and deletes them all
// once they are gone from the hub cluster (issue 9: the mirror failed above 128 objects).
func TestHubClusterMirrorAboveTheTransactionLimit(t *testing.T) {
	const n = store.DefaultMaxTxnOps + 2
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hubCluster := fgenvtest.Start(t, "hub")[0]
	if _, err := crenvtest.InstallCRDs(hubCluster.Config, crenvtest.CRDInstallOptions{
		Paths: []string{filepath.Join(fgenvtest.RepoRoot(), "deploy", "hub-crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd"), MaxTxnOps: store.DefaultMaxTxnOps})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st := store.New(cli, store.Options{MaxTxnOps: store.DefaultMaxTxnOps, MaxRequestBytes: store.DefaultMaxRequestBytes, KeyEncryptionKeys: testKEK(t)})
	routes := make([]*gatewayv1.HTTPRoute, n)
	for i := range routes {
		routes[i] = &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("r%03d", i), Namespace: "default"},
			Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}}},
		}
		if err := hubCluster.Client.Create(ctx, routes[i]); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Options{Config: hubCluster.Config, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	stored := func() int {
		t.Helper()
		objs, _, err := st.ListObjects(ctx, nil, "", false)
		if err != nil {
			t.Fatal(err)
		}
		return len(objs)
	}
	// The client's cache may not hold every route at the first pass; a pass never fails for their number.
	eventually(t, ctx, fmt.Sprintf("%d routes mirrored", n), func() (bool, error) {
		if err := s.Pass(ctx); err != nil {
			t.Fatalf("mirror pass with %d routes: %v", n, err)
		}
		return stored() == n, nil
	})
	for _, r := range routes {
		if err := hubCluster.Client.Delete(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, ctx, "every route's deletion mirrored", func() (bool, error) {
		if err := s.Pass(ctx); err != nil {
			t.Fatalf("mirror pass deleting %d routes: %v", n, err)
		}
		return stored() == 0, nil
	})
}

// testKEK is a key-encryption key for the test's store (the compile loop seals the key rings with it).
func testKEK(t *testing.T) *store.KeyEncryptionKeys {
	t.Helper()
	k, err := store.LoadOrCreateKeyEncryptionKeys(filepath.Join(t.TempDir(), "kek"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

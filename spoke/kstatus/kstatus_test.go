package kstatus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/test/envtest"
)

var (
	cluster *envtest.Cluster
	// writerConfig authenticates as a user granted RBACRules and nothing else: every test's writes prove the rules
	// suffice.
	writerConfig *rest.Config
)

func TestMain(m *testing.M) {
	cs, stop, err := envtest.Launch(envtest.Options{}, "spoke")
	if err == nil {
		cluster = cs[0]
		writerConfig, err = leastPrivilege(cluster)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		if stop != nil {
			_ = stop()
		}
		os.Exit(1)
	}
	code := m.Run()
	_ = stop()
	os.Exit(code)
}

func leastPrivilege(c *envtest.Cluster) (*rest.Config, error) {
	ctx := context.Background()
	const user = "fedgate-spoke"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: RBACRules()}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Client.Create(ctx, o); err != nil {
			return nil, err
		}
	}
	return c.AddUser(user)
}

func newWriter(t *testing.T) *Writer {
	t.Helper()
	w, err := New(Config{REST: writerConfig, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func apply(t *testing.T, w *Writer, sc *spokeconfig.SpokeConfig) {
	t.Helper()
	if err := w.Apply(context.Background(), sc); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func get(t *testing.T, obj client.Object) {
	t.Helper()
	if err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
}

func cond(typ string, status bool, reason, msg string) metav1.Condition {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg}
}

var long = metav1.NewTime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))

func TestRouteParentsKeepOtherControllersAndTransitionTimes(t *testing.T) {
	ctx := context.Background()
	c := cluster.Client
	ns := cluster.Namespace(t)
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{
			{Name: "gw"}, {Name: "other-gw"},
		}}},
	}
	if err := c.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	theirs := gatewayv1.RouteParentStatus{
		ParentRef: gatewayv1.ParentReference{Name: "other-gw"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "NotYours", Message: "theirs", LastTransitionTime: long}},
	}
	// Our entry from an earlier revision, with an old transition time and a condition the hub no longer sets.
	stale := gatewayv1.RouteParentStatus{
		ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: DefaultControllerName,
		Conditions: []metav1.Condition{
			{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "old", LastTransitionTime: long},
			{Type: "PartiallyInvalid", Status: metav1.ConditionTrue, Reason: "UnsupportedValue", Message: "old", LastTransitionTime: long},
		},
	}
	route.Status.Parents = []gatewayv1.RouteParentStatus{theirs, stale}
	if err := c.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}

	w := newWriter(t)
	status := func(accepted bool, msg string) *spokeconfig.SpokeConfig {
		return &spokeconfig.SpokeConfig{Cluster: "east", Revision: 5, Statuses: []spokeconfig.ObjectStatus{{
			Kind: "HTTPRoute", Namespace: ns, Name: "color", Generation: route.Generation,
			Parents: []spokeconfig.ParentStatus{{
				ParentRef:      gatewayv1.ParentReference{Group: ptr.To[gatewayv1.Group](gatewayv1.GroupName), Kind: ptr.To[gatewayv1.Kind]("Gateway"), Name: "gw"},
				ControllerName: string(DefaultControllerName),
				Conditions: []metav1.Condition{
					cond("Accepted", accepted, "Accepted", msg),
					cond("ResolvedRefs", true, "ResolvedRefs", "resolved"),
				},
			}},
		}}}
	}

	apply(t, w, status(true, "new message"))
	get(t, route)
	if len(route.Status.Parents) != 2 {
		t.Fatalf("parents = %+v, want theirs and ours", route.Status.Parents)
	}
	if got := route.Status.Parents[0]; got.ControllerName != theirs.ControllerName || got.Conditions[0].Message != "theirs" || !got.Conditions[0].LastTransitionTime.Equal(&long) {
		t.Errorf("other controller's entry changed: %+v", got)
	}
	ours := route.Status.Parents[1]
	if ours.ControllerName != DefaultControllerName {
		t.Fatalf("second entry is %s's", ours.ControllerName)
	}
	acc := meta.FindStatusCondition(ours.Conditions, "Accepted")
	if acc == nil || acc.Message != "new message" || acc.ObservedGeneration != route.Generation || !acc.LastTransitionTime.Equal(&long) {
		t.Errorf("Accepted = %+v: want the new message, observedGeneration %d and the old transition time (status unchanged)", acc, route.Generation)
	}
	rr := meta.FindStatusCondition(ours.Conditions, "ResolvedRefs")
	if rr == nil || rr.LastTransitionTime.IsZero() || rr.LastTransitionTime.Equal(&long) {
		t.Errorf("ResolvedRefs = %+v: want a fresh transition time", rr)
	}
	if meta.FindStatusCondition(ours.Conditions, "PartiallyInvalid") != nil {
		t.Error("PartiallyInvalid kept after the hub dropped it")
	}

	// The same status again: nothing is written.
	rv := route.ResourceVersion
	apply(t, w, status(true, "new message"))
	get(t, route)
	if route.ResourceVersion != rv {
		t.Errorf("unchanged status was written (resourceVersion %s → %s)", rv, route.ResourceVersion)
	}

	// A status flip moves the transition time.
	apply(t, w, status(false, "rejected"))
	get(t, route)
	acc = meta.FindStatusCondition(route.Status.Parents[1].Conditions, "Accepted")
	if acc == nil || acc.Status != metav1.ConditionFalse || acc.LastTransitionTime.Equal(&long) {
		t.Errorf("Accepted after a flip = %+v: want False with a new transition time", acc)
	}
	if got := route.Status.Parents[0]; got.Conditions[0].Message != "theirs" {
		t.Errorf("other controller's entry changed: %+v", got)
	}

	// The hub drops the parent: our entry goes, theirs stays.
	sc := status(true, "")
	sc.Statuses[0].Parents = nil
	apply(t, w, sc)
	get(t, route)
	if len(route.Status.Parents) != 1 || route.Status.Parents[0].ControllerName != theirs.ControllerName {
		t.Errorf("parents = %+v, want only theirs", route.Status.Parents)
	}
}

func TestGatewayClassGatewayAndServiceExport(t *testing.T) {
	ctx := context.Background()
	c := cluster.Client
	ns := cluster.Namespace(t)
	ours := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: ns + "-ours"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultControllerName}}
	theirs := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: ns + "-theirs"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}}
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: gatewayv1.ObjectName(ours.Name),
		Listeners:        []gatewayv1.Listener{{Name: "http", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}},
	}}
	se := &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}}
	for _, o := range []client.Object{ours, theirs, gw, se} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	sc := &spokeconfig.SpokeConfig{Cluster: "east", Statuses: []spokeconfig.ObjectStatus{
		{Kind: "GatewayClass", Name: ours.Name, Generation: ours.Generation, Conditions: []metav1.Condition{
			cond("Accepted", true, "Accepted", "served by fedgate"), cond("SupportedVersion", true, "SupportedVersion", "v1.6.3"),
		}},
		{Kind: "GatewayClass", Name: theirs.Name, Generation: 1, Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", "")}},
		{Kind: "Gateway", Namespace: ns, Name: "gw", Generation: gw.Generation,
			Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", ""), cond("Programmed", true, "Programmed", "")},
			Listeners: []spokeconfig.ListenerStatus{{Name: "http", AttachedRoutes: 2,
				SupportedKinds: []gatewayv1.RouteGroupKind{{Group: ptr.To[gatewayv1.Group](gatewayv1.GroupName), Kind: "HTTPRoute"}},
				Conditions:     []metav1.Condition{cond("Accepted", true, "Accepted", ""), cond("Programmed", true, "Programmed", "")}}},
			Addresses: []string{"10.0.0.7", "gw.example.com"}},
		{Kind: "ServiceExport", Namespace: ns, Name: "color", Generation: se.Generation, Conditions: []metav1.Condition{
			cond("Valid", true, "Valid", ""), cond("Conflict", true, "PortConflict", "west exports port 81"),
		}},
		{Kind: "Service", Namespace: ns, Name: "color"},         // no status of ours: ignored
		{Kind: "Gateway", Namespace: ns, Name: "deleted-since"}, // gone: skipped, not an error
	}}
	w := newWriter(t)
	apply(t, w, sc)

	get(t, ours)
	if !meta.IsStatusConditionTrue(ours.Status.Conditions, "Accepted") || !meta.IsStatusConditionTrue(ours.Status.Conditions, "SupportedVersion") {
		t.Errorf("GatewayClass conditions = %+v", ours.Status.Conditions)
	}
	if n := len(ours.Status.SupportedFeatures); n != len(DefaultSupportedFeatures) {
		t.Errorf("%d supported features, want %d", n, len(DefaultSupportedFeatures))
	}
	for i := 1; i < len(ours.Status.SupportedFeatures); i++ {
		if ours.Status.SupportedFeatures[i-1].Name >= ours.Status.SupportedFeatures[i].Name {
			t.Errorf("supported features not sorted: %v", ours.Status.SupportedFeatures)
		}
	}
	get(t, theirs)
	if a := meta.FindStatusCondition(theirs.Status.Conditions, "Accepted"); a != nil && a.Status == metav1.ConditionTrue {
		t.Errorf("another controller's GatewayClass was accepted by us: %+v", a)
	}

	get(t, gw)
	for _, typ := range []string{"Accepted", "Programmed"} {
		c := meta.FindStatusCondition(gw.Status.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != gw.Generation {
			t.Errorf("Gateway %s = %+v", typ, c)
		}
	}
	if len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != 2 || len(gw.Status.Listeners[0].SupportedKinds) != 1 ||
		!meta.IsStatusConditionTrue(gw.Status.Listeners[0].Conditions, "Programmed") {
		t.Errorf("listeners = %+v", gw.Status.Listeners)
	}
	if len(gw.Status.Addresses) != 2 || *gw.Status.Addresses[0].Type != gatewayv1.IPAddressType || *gw.Status.Addresses[1].Type != gatewayv1.HostnameAddressType {
		t.Errorf("addresses = %+v", gw.Status.Addresses)
	}

	get(t, se)
	if c := meta.FindStatusCondition(se.Status.Conditions, "Conflict"); c == nil || c.Reason != "PortConflict" || c.Message != "west exports port 81" {
		t.Errorf("ServiceExport Conflict = %+v", c)
	}

	// Again: nothing changes, nothing is written.
	rvs := map[string]string{"class": ours.ResourceVersion, "gateway": gw.ResourceVersion, "export": se.ResourceVersion}
	apply(t, w, sc)
	get(t, ours)
	get(t, gw)
	get(t, se)
	for name, now := range map[string]string{"class": ours.ResourceVersion, "gateway": gw.ResourceVersion, "export": se.ResourceVersion} {
		if now != rvs[name] {
			t.Errorf("%s rewritten with an unchanged status", name)
		}
	}
}

func TestServiceImports(t *testing.T) {
	ctx := context.Background()
	c := cluster.Client
	ns := cluster.Namespace(t)
	// Someone else's ServiceImport of the same name space: never touched, never deleted.
	foreign := &mcsv1a1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "foreign"},
		Spec: mcsv1a1.ServiceImportSpec{Type: mcsv1a1.ClusterSetIP, Ports: []mcsv1a1.ServicePort{{Port: 1, Protocol: corev1.ProtocolTCP}}}}
	if err := c.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	w := newWriter(t)
	color := spokeconfig.ServiceImport{Namespace: ns, Name: "color", Type: "ClusterSetIP",
		Ports: []spokeconfig.ServiceImportPort{{Name: "http", Protocol: "TCP", AppProtocol: "http", Port: 80}}, Clusters: []string{"east", "west"}}
	apply(t, w, &spokeconfig.SpokeConfig{ServiceImports: []spokeconfig.ServiceImport{color}})

	si := &mcsv1a1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}}
	get(t, si)
	if si.Labels[ManagedByLabel] != ManagedByValue || si.Spec.Type != mcsv1a1.ClusterSetIP || len(si.Spec.Ports) != 1 ||
		si.Spec.Ports[0].Port != 80 || ptr.Deref(si.Spec.Ports[0].AppProtocol, "") != "http" {
		t.Errorf("created %+v", si)
	}
	if len(si.Status.Clusters) != 2 || si.Status.Clusters[1].Cluster != "west" || !meta.IsStatusConditionTrue(si.Status.Conditions, "Ready") {
		t.Errorf("status %+v", si.Status)
	}

	rv := si.ResourceVersion
	apply(t, w, &spokeconfig.SpokeConfig{ServiceImports: []spokeconfig.ServiceImport{color}})
	get(t, si)
	if si.ResourceVersion != rv {
		t.Error("unchanged ServiceImport rewritten")
	}

	// West stops exporting and a port is added.
	color.Clusters = []string{"east"}
	color.Ports = append(color.Ports, spokeconfig.ServiceImportPort{Name: "grpc", Protocol: "TCP", Port: 9090})
	apply(t, w, &spokeconfig.SpokeConfig{ServiceImports: []spokeconfig.ServiceImport{color}})
	get(t, si)
	if len(si.Spec.Ports) != 2 || len(si.Status.Clusters) != 1 || si.Status.Clusters[0].Cluster != "east" {
		t.Errorf("after update: spec %+v status %+v", si.Spec, si.Status)
	}

	// The hub wants one named like the foreign import: refused, with an error naming it.
	err := w.Apply(ctx, &spokeconfig.SpokeConfig{ServiceImports: []spokeconfig.ServiceImport{color, {Namespace: ns, Name: "foreign", Clusters: []string{"west"}}}})
	if err == nil || !strings.Contains(err.Error(), "foreign") || !strings.Contains(err.Error(), "not managed by fedgate") {
		t.Errorf("Apply over a foreign ServiceImport: %v", err)
	}

	// Nothing exported any more: ours is deleted, the foreign one stays.
	apply(t, w, &spokeconfig.SpokeConfig{})
	if err := c.Get(ctx, client.ObjectKeyFromObject(si), si); !apierrors.IsNotFound(err) {
		t.Errorf("managed ServiceImport not deleted: %v", err)
	}
	get(t, foreign)
	if foreign.Spec.Ports[0].Port != 1 {
		t.Errorf("foreign ServiceImport changed: %+v", foreign.Spec)
	}
}

type applied struct {
	revision int64
	err      error
}

// Run applies only the latest offered config, retries a failing one, and picks up new offers.
func TestRunAppliesLatestOfferAndRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ns := cluster.Namespace(t)
	events := make(chan applied, 100)
	w, err := New(Config{REST: writerConfig, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnApplied: func(rev int64, err error) { events <- applied{rev, err} }})
	if err != nil {
		t.Fatal(err)
	}
	imp := func(rev int64, namespace string) *spokeconfig.SpokeConfig {
		return &spokeconfig.SpokeConfig{Revision: rev, ServiceImports: []spokeconfig.ServiceImport{{Namespace: namespace, Name: "svc", Clusters: []string{"west"}}}}
	}
	w.Offer(imp(1, ns))
	w.Offer(imp(2, ns))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	next := func() applied {
		t.Helper()
		select {
		case a := <-events:
			return a
		case <-time.After(30 * time.Second):
			t.Fatal("Run applied nothing")
			return applied{}
		}
	}
	if a := next(); a.revision != 2 || a.err != nil {
		t.Fatalf("first apply = %+v, want revision 2 without error (revision 1 superseded)", a)
	}

	// A namespace that does not exist yet: the ServiceImport cannot be created, and Run keeps trying.
	missing := "later-" + ns
	w.Offer(imp(3, missing))
	for i := 0; i < 2; i++ {
		if a := next(); a.revision != 3 || a.err == nil || !strings.Contains(a.err.Error(), missing) {
			t.Fatalf("apply %d of revision 3 = %+v, want an error naming %s", i, a, missing)
		}
	}
	if err := cluster.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: missing}}); err != nil {
		t.Fatal(err)
	}
	for {
		a := next()
		if a.revision != 3 {
			t.Fatalf("applied revision %d, want 3", a.revision)
		}
		if a.err == nil {
			break
		}
	}
	get(t, &mcsv1a1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: missing, Name: "svc"}})
}

// A Run that follows another (a replica leading again) starts by writing the latest config offered, even though the
// earlier Run already wrote it and nothing was offered since: what happened to the cluster between the two terms is
// undone. Offers made while no Run goes are kept.
func TestRunAgainWritesTheLatestOffer(t *testing.T) {
	ns := cluster.Namespace(t)
	events := make(chan applied, 100)
	w, err := New(Config{REST: writerConfig, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnApplied: func(rev int64, err error) { events <- applied{rev, err} }})
	if err != nil {
		t.Fatal(err)
	}
	imp := &mcsv1a1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc"}}
	term := func(want int64) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		select {
		case a := <-events:
			if a.revision != want || a.err != nil {
				t.Errorf("first apply of the term = %+v, want revision %d without error", a, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run applied nothing")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	w.Offer(&spokeconfig.SpokeConfig{Revision: 1, ServiceImports: []spokeconfig.ServiceImport{{Namespace: ns, Name: "svc", Clusters: []string{"west"}}}})
	term(1)
	get(t, imp)
	if err := cluster.Client.Delete(context.Background(), imp); err != nil {
		t.Fatal(err)
	}
	term(1)
	get(t, imp)

	// Offered between terms: the next term writes it.
	w.Offer(&spokeconfig.SpokeConfig{Revision: 2})
	term(2)
	if err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(imp), imp); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceImport after revision 2 dropped it: err = %v, want NotFound", err)
	}
}

// A Gateway whose hub status names no address gets the spoke's own (--gateway-address); one that does keeps the hub's.
func TestGatewayAddressesFromSpoke(t *testing.T) {
	ctx := context.Background()
	ns := cluster.Namespace(t)
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "fedgate",
		Listeners:        []gatewayv1.Listener{{Name: "http", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}},
	}}
	if err := cluster.Client.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{REST: writerConfig, GatewayAddresses: []string{"192.0.2.10", "gw.east.example"}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	st := spokeconfig.ObjectStatus{Kind: "Gateway", Namespace: ns, Name: "gw", Generation: gw.Generation,
		Conditions: []metav1.Condition{cond("Programmed", true, "Programmed", "")}}
	apply(t, w, &spokeconfig.SpokeConfig{Cluster: "east", Statuses: []spokeconfig.ObjectStatus{st}})
	get(t, gw)
	if len(gw.Status.Addresses) != 2 || gw.Status.Addresses[0].Value != "192.0.2.10" || *gw.Status.Addresses[0].Type != gatewayv1.IPAddressType ||
		gw.Status.Addresses[1].Value != "gw.east.example" {
		t.Fatalf("addresses from the spoke = %+v", gw.Status.Addresses)
	}
	st.Addresses = []string{"198.51.100.1"}
	apply(t, w, &spokeconfig.SpokeConfig{Cluster: "east", Statuses: []spokeconfig.ObjectStatus{st}})
	get(t, gw)
	if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != "198.51.100.1" {
		t.Fatalf("the hub's addresses should win: %+v", gw.Status.Addresses)
	}
}

package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/source"
	"github.com/fedgate/fedgate/test/envtest"
)

// full has every CRD of deploy/crds; bare has none (a cluster without Gateway API or MCS).
var full, bare *envtest.Cluster

func TestMain(m *testing.M) {
	full0, stop, err := envtest.Launch(envtest.Options{}, "full")
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	bare0, stopBare, err := envtest.Launch(envtest.Options{NoCRDs: true}, "bare")
	if err != nil {
		_ = stop()
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	full, bare = full0[0], bare0[0]
	code := m.Run()
	_ = stop()
	_ = stopBare()
	os.Exit(code)
}

// run starts a Source on c and returns its snapshots. The source stops when the test ends.
func run(t *testing.T, c *envtest.Cluster) <-chan source.Snapshot {
	t.Helper()
	src, err := New(Config{REST: c.Config, Debounce: 20 * time.Millisecond, SyncTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	snaps := make(chan source.Snapshot, 100)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(s source.Snapshot) { snaps <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return snaps
}

// inScope keeps the objects of namespace ns and the cluster-scoped ones named with prefix.
func inScope(s source.Snapshot, ns, prefix string) map[string]*fedgatepb.Object {
	out := map[string]*fedgatepb.Object{}
	for _, o := range s.Objects {
		if o.Namespace == ns || (o.Namespace == "" && strings.HasPrefix(o.Name, prefix)) {
			out[source.ObjectID(o)] = o
		}
	}
	return out
}

// waitFor returns the first snapshot for which ok holds, failing the test after a generous deadline.
func waitFor(t *testing.T, snaps <-chan source.Snapshot, what string, ok func(source.Snapshot) bool) source.Snapshot {
	t.Helper()
	deadline := time.After(30 * time.Second)
	var last source.Snapshot
	for {
		select {
		case s := <-snaps:
			last = s
			if ok(s) {
				return s
			}
		case <-deadline:
			var ids []string
			for _, o := range last.Objects {
				ids = append(ids, source.ObjectID(o))
			}
			t.Fatalf("no snapshot with %s; last had %v", what, ids)
		}
	}
}

func mustCreate(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func TestSourceReportsEveryKindButSecrets(t *testing.T) {
	ctx := context.Background()
	c := full.Client
	ns := full.Namespace(t)
	prefix := ns + "-"
	snaps := run(t, full)
	waitFor(t, snaps, "the first snapshot", func(source.Snapshot) bool { return true })

	port := ptr.To[gatewayv1.PortNumber](80)
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color", Port: port}}}}}},
		},
	}
	mustCreate(t, c,
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: prefix + "ours"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultControllerName}},
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: prefix + "theirs"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}},
		&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: gatewayv1.ObjectName(prefix + "ours"),
			Listeners:        []gatewayv1.Listener{{Name: "http", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}},
		}},
		route,
		&gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "grpc"}, Spec: gatewayv1.GRPCRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
		}},
		&gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "grant"}, Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "other"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Service"}},
		}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Port: 80}},
		}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "color-1", Labels: map[string]string{discoveryv1.LabelServiceName: "color"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}}},
			Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}},
		},
		&discoveryv1.EndpointSlice{ // not a Service's: not reported
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "loose"},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.6"}}},
		},
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tls"}, Data: map[string][]byte{"tls.key": []byte("private")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"}, Data: map[string]string{"ca.crt": "x"}},
	)

	want := []string{
		"GatewayClass/" + prefix + "ours",
		"Gateway/" + ns + "/gw",
		"HTTPRoute/" + ns + "/color",
		"GRPCRoute/" + ns + "/grpc",
		"ReferenceGrant/" + ns + "/grant",
		"Service/" + ns + "/color",
		"EndpointSlice/" + ns + "/color-1",
		"ServiceExport/" + ns + "/color",
	}
	s := waitFor(t, snaps, "every created object", func(s source.Snapshot) bool { return len(inScope(s, ns, prefix)) >= len(want) })
	got := inScope(s, ns, prefix)
	for _, id := range want {
		if got[id] == nil {
			t.Errorf("snapshot lacks %s", id)
		}
	}
	if len(got) != len(want) {
		t.Errorf("snapshot has %d objects in scope, want %d: %v", len(got), len(want), keys(got))
	}
	for _, o := range s.Objects {
		if o.Kind == "Secret" || o.Kind == "ConfigMap" || strings.Contains(string(o.Json), "private") {
			t.Errorf("snapshot carries %s", source.ObjectID(o))
		}
	}
	// Namespaces are reported for their labels only (allowedRoutes selectors): no spec (finalizers), no status.
	var nsObj *fedgatepb.Object
	for _, o := range s.Objects {
		if o.Kind == resources.KindNamespace && o.Name == ns {
			nsObj = o
		}
	}
	if nsObj == nil || !strings.Contains(string(nsObj.Json), `"kubernetes.io/metadata.name":"`+ns+`"`) ||
		strings.Contains(string(nsObj.Json), "finalizers") || strings.Contains(string(nsObj.Json), `"status"`) {
		t.Errorf("reported Namespace %s: %+v, want its labels and no spec or status", ns, nsObj)
	}
	// The hub decodes every reported object with resources.Typed.
	for id, o := range got {
		if _, err := resources.Typed(o); err != nil {
			t.Errorf("%s: the hub could not decode it: %v", id, err)
		}
	}
	// Snapshots are sorted as the reporter expects.
	sorted := source.NewSnapshot(append([]*fedgatepb.Object(nil), s.Objects...))
	if !sorted.Equal(s) {
		t.Error("snapshot is not sorted")
	}

	// The wire form keeps what the hub uses and drops what changes without the spec changing.
	var meta struct {
		Metadata map[string]any `json:"metadata"`
		Status   any            `json:"status"`
	}
	if err := json.Unmarshal(got["HTTPRoute/"+ns+"/color"].Json, &meta); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"generation", "creationTimestamp", "uid"} {
		if meta.Metadata[k] == nil {
			t.Errorf("metadata.%s dropped", k)
		}
	}
	for _, k := range []string{"resourceVersion", "managedFields"} {
		if meta.Metadata[k] != nil {
			t.Errorf("metadata.%s kept", k)
		}
	}
	if meta.Status != nil {
		t.Error("status kept")
	}

	// Update: a spec change is reported.
	if err := c.Get(ctx, client.ObjectKeyFromObject(route), route); err != nil {
		t.Fatal(err)
	}
	route.Spec.Hostnames = []gatewayv1.Hostname{"color.example.com"}
	if err := c.Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "the route's hostname", func(s source.Snapshot) bool {
		o := inScope(s, ns, prefix)["HTTPRoute/"+ns+"/color"]
		return o != nil && strings.Contains(string(o.Json), "color.example.com")
	})

	// Delete, one kind after another: each disappears.
	for _, o := range []client.Object{
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color-1"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}},
		&gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "grant"}},
		&gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "grpc"}},
		&gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}},
		&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}},
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: prefix + "ours"}},
	} {
		if err := c.Delete(ctx, o); err != nil {
			t.Fatalf("deleting %T: %v", o, err)
		}
		gone := want[len(want)-1] // deleted in reverse order of the want list
		want = want[:len(want)-1]
		waitFor(t, snaps, gone+" deleted", func(s source.Snapshot) bool {
			in := inScope(s, ns, prefix)
			return in[gone] == nil && len(in) == len(want)
		})
	}
}

// A status-only update changes resourceVersion, managedFields and status, none of which is reported: the object
// encodes to the same bytes and no snapshot is emitted for it.
func TestStatusOnlyUpdateEmitsNothing(t *testing.T) {
	ctx := context.Background()
	c := full.Client
	ns := full.Namespace(t)
	snaps := run(t, full)
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"},
		Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}}},
	}
	mustCreate(t, c, route)
	before := waitFor(t, snaps, "the route", func(s source.Snapshot) bool { return inScope(s, ns, "-")["HTTPRoute/"+ns+"/r"] != nil })

	route.Status.Parents = []gatewayv1.RouteParentStatus{{
		ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}},
	}}
	if err := c.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	// The sentinel is the same kind, so the source's informer sees it after the status update (one watch, events in
	// resourceVersion order): once a snapshot holds the sentinel, the status update has been processed.
	mustCreate(t, c, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sentinel"}})
	var after source.Snapshot
	for n := 1; ; n++ {
		after = <-snaps
		if inScope(after, ns, "-")["HTTPRoute/"+ns+"/sentinel"] != nil {
			if n != 1 {
				t.Errorf("%d snapshots before the sentinel's, want 1 (the status update produced some)", n)
			}
			break
		}
		if n > 5 {
			t.Fatal("no snapshot with the sentinel")
		}
	}
	a, b := inScope(before, ns, "-")["HTTPRoute/"+ns+"/r"], inScope(after, ns, "-")["HTTPRoute/"+ns+"/r"]
	if !source.SameObject(a, b) {
		t.Errorf("status-only update changed the encoding:\n%s\n%s", a.Json, b.Json)
	}
}

// A cluster without the Gateway API and MCS CRDs still reports its Services (and Namespaces).
func TestClusterWithoutCRDs(t *testing.T) {
	ns := bare.Namespace(t)
	snaps := run(t, bare)
	mustCreate(t, bare.Client, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
	s := waitFor(t, snaps, "the Service", func(s source.Snapshot) bool { return inScope(s, ns, "-")["Service/"+ns+"/svc"] != nil })
	for _, o := range s.Objects {
		if o.Kind != "Service" && o.Kind != "EndpointSlice" && o.Kind != resources.KindNamespace {
			t.Errorf("unexpected %s", source.ObjectID(o))
		}
	}
}

func TestEncodeDoesNotModifyItsInput(t *testing.T) {
	u := newObject(gatewayv1.SchemeGroupVersion.WithKind("HTTPRoute"))
	u.SetNamespace("ns")
	u.SetName("r")
	u.SetResourceVersion("7")
	u.SetAnnotations(map[string]string{lastAppliedAnnotation: "{}", "keep": "me"})
	u.Object["status"] = map[string]any{"parents": []any{}}
	o, err := Encode(u)
	if err != nil {
		t.Fatal(err)
	}
	if u.GetResourceVersion() != "7" || u.Object["status"] == nil || len(u.GetAnnotations()) != 2 {
		t.Errorf("input modified: %v", u.Object)
	}
	js := string(o.Json)
	if strings.Contains(js, "resourceVersion") || strings.Contains(js, "status") || strings.Contains(js, lastAppliedAnnotation) || !strings.Contains(js, `"keep":"me"`) {
		t.Errorf("encoded %s", js)
	}
}

func keys(m map[string]*fedgatepb.Object) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// RESTConfig reads a kubeconfig file like kubectl; the source runs with what it returns.
func TestRESTConfigFromKubeconfig(t *testing.T) {
	cfg := full.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["ctx"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "ctx"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	got, err := RESTConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	snaps := run(t, &envtest.Cluster{Name: "via-kubeconfig", Config: got})
	s := waitFor(t, snaps, "the default Service", func(s source.Snapshot) bool { return len(s.Objects) > 0 })
	if s.Objects[0].Kind == "" {
		t.Errorf("first object %+v", s.Objects[0])
	}
	if _, err := RESTConfig(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing kubeconfig: err = %v", err)
	}
}

// grant binds a new ClusterRole with rules to a new user of c and returns that user's config.
func grant(t *testing.T, c *envtest.Cluster, user string, rules []rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	mustCreate(t, c.Client, role, binding)
	cfg, err := c.AddUser(user)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// RBACRules are enough to run the source, and each of them is needed: without one kind's rule the source fails,
// naming the kind, instead of reporting a partial cluster forever.
func TestRBACRules(t *testing.T) {
	ns := full.Namespace(t)
	mustCreate(t, full.Client, &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc"}})

	cfg := grant(t, full, "spoke-"+ns, RBACRules())
	snaps := run(t, &envtest.Cluster{Name: "least-privilege", Config: cfg})
	waitFor(t, snaps, "the ServiceExport", func(s source.Snapshot) bool { return inScope(s, ns, "-")["ServiceExport/"+ns+"/svc"] != nil })

	var short []rbacv1.PolicyRule
	for _, r := range RBACRules() {
		r = *r.DeepCopy()
		r.Resources = slices.DeleteFunc(r.Resources, func(res string) bool { return res == "serviceexports" })
		if len(r.Resources) > 0 {
			short = append(short, r)
		}
	}
	src, err := New(Config{REST: grant(t, full, "short-"+ns, short), SyncTimeout: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Run(context.Background(), func(source.Snapshot) { t.Error("snapshot emitted without every kind synced") })
	if err == nil || !strings.Contains(err.Error(), "ServiceExport") || !strings.Contains(err.Error(), "RBAC") {
		t.Errorf("Run without the ServiceExport rule: %v", err)
	}
}

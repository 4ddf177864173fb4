package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/clientconfig"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/pki"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// fakeAdmin is an in-memory Admin server: enough of the hub's contract (all-or-none apply with created / configured /
// unchanged, delete reporting unknown objects, list with status) to drive hubctl end to end over real gRPC.
type fakeAdmin struct {
	fedgatepb.UnimplementedAdminServer

	mu         sync.Mutex
	objects    map[string]*fedgatepb.Object
	statuses   map[string][]byte
	reported   []*fedgatepb.ListedObject // listed only with include_reports
	clusters   []*fedgatepb.ClusterInfo
	applyCalls int
	applyErr   error // returned by Apply when set
}

func key(kind, ns, name string) string { return resources.ID(kind, ns, name) }

func (f *fakeAdmin) Apply(_ context.Context, req *fedgatepb.ApplyRequest) (*fedgatepb.ApplyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applyCalls++
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	resp := &fedgatepb.ApplyResponse{Revision: int64(f.applyCalls)}
	for _, o := range req.GetObjects() {
		k := key(o.Kind, o.Namespace, o.Name)
		action := "created"
		if old, ok := f.objects[k]; ok {
			action = "configured"
			if bytes.Equal(old.Json, o.Json) {
				action = "unchanged"
			}
		}
		f.objects[k] = o
		resp.Results = append(resp.Results, &fedgatepb.ApplyResult{
			Ref:    &fedgatepb.ObjectRef{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name},
			Action: action,
		})
	}
	return resp, nil
}

func (f *fakeAdmin) Delete(_ context.Context, req *fedgatepb.DeleteRequest) (*fedgatepb.DeleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &fedgatepb.DeleteResponse{}
	for _, r := range req.GetRefs() {
		k := key(r.Kind, r.Namespace, r.Name)
		if _, ok := f.objects[k]; ok {
			delete(f.objects, k)
			resp.Deleted = append(resp.Deleted, r)
		} else {
			resp.NotFound = append(resp.NotFound, r)
		}
	}
	return resp, nil
}

func (f *fakeAdmin) List(_ context.Context, req *fedgatepb.ListRequest) (*fedgatepb.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &fedgatepb.ListResponse{}
	// Map order on purpose: hubctl must sort.
	for k, o := range f.objects {
		if req.Kind != "" && o.Kind != req.Kind || req.Namespace != "" && o.Namespace != req.Namespace {
			continue
		}
		resp.Objects = append(resp.Objects, &fedgatepb.ListedObject{Object: o, StatusJson: f.statuses[k]})
	}
	if req.IncludeReports {
		for _, l := range f.reported {
			if (req.Kind == "" || l.Object.Kind == req.Kind) && (req.Namespace == "" || l.Object.Namespace == req.Namespace) {
				resp.Objects = append(resp.Objects, l)
			}
		}
	}
	return resp, nil
}

func (f *fakeAdmin) ListClusters(context.Context, *fedgatepb.ListClustersRequest) (*fedgatepb.ListClustersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fedgatepb.ListClustersResponse{Clusters: f.clusters}, nil
}

func (f *fakeAdmin) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyCalls
}

// startHub serves a fakeAdmin on a free loopback port, with the hub's TLS and authentication, and returns it with its
// address. The admin credential hubctl needs is written to a temporary file named by FEDGATE_CONFIG.
func startHub(t *testing.T) (*fakeAdmin, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.IssueServing([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueAdmin(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "config")
	if err := clientconfig.Write(cfgPath, &clientconfig.Config{Hub: lis.Addr().String(), CABundle: string(ca.BundlePEM()),
		Certificate: string(certPEM), Key: string(keyPEM)}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConfig, cfgPath)
	f := &fakeAdmin{objects: map[string]*fedgatepb.Object{}, statuses: map[string][]byte{}}
	authn := &auth.Authenticator{Policy: auth.DefaultPolicy()}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(auth.ServerTLS(ca, func() *tls.Certificate { return &serving }))),
		grpc.UnaryInterceptor(authn.Unary()))
	fedgatepb.RegisterAdminServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String()
}

// hubctl runs the command line with stdin and returns stdout, stderr and the exit code.
func hubctl(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const gatewayYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: fedgate
  listeners:
  - name: http
    port: 80
    protocol: HTTP
`

const canaryYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: color
  namespace: default
spec:
  parentRefs:
  - name: gw
  rules:
  - backendRefs:
    - name: color
      port: 80
      weight: 90
    - name: color2
      port: 80
      weight: 10
`

const grantJSON = `{"apiVersion":"gateway.networking.k8s.io/v1beta1","kind":"ReferenceGrant",
 "metadata":{"name":"from-default","namespace":"backends"},
 "spec":{"from":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","namespace":"default"}],"to":[{"group":"","kind":"Service"}]}}`

func TestApplyDirectoryThenStdin(t *testing.T) {
	f, addr := startHub(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-gateway.yaml"), gatewayYAML)
	writeFile(t, filepath.Join(dir, "routes", "color.yml"), canaryYAML)
	writeFile(t, filepath.Join(dir, "routes", "grant.json"), grantJSON)
	writeFile(t, filepath.Join(dir, "README.md"), "not a manifest")

	stdout, stderr, code := hubctl(t, "", "--hub", addr, "apply", "-f", dir)
	if code != 0 {
		t.Fatalf("apply exited %d: %s", code, stderr)
	}
	want := `gateway.gateway.networking.k8s.io/gw created
httproute.gateway.networking.k8s.io/color created
referencegrant.gateway.networking.k8s.io/from-default created
`
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}

	// The same route again, from stdin, once unchanged and once edited.
	if stdout, stderr, code = hubctl(t, canaryYAML, "--hub", addr, "apply", "-f", "-"); code != 0 || stdout != "httproute.gateway.networking.k8s.io/color unchanged\n" {
		t.Errorf("re-apply: code %d stdout %q stderr %q", code, stdout, stderr)
	}
	edited := strings.Replace(strings.Replace(canaryYAML, "weight: 90", "weight: 50", 1), "weight: 10", "weight: 50", 1)
	if stdout, stderr, code = hubctl(t, edited, "--hub", addr, "apply", "-f", "-"); code != 0 || stdout != "httproute.gateway.networking.k8s.io/color configured\n" {
		t.Errorf("edited apply: code %d stdout %q stderr %q", code, stdout, stderr)
	}
	if got := f.calls(); got != 3 {
		t.Errorf("Apply called %d times, want 3", got)
	}
	// Objects without a namespace get -n's, or "default".
	f.mu.Lock()
	_, ok := f.objects[key("Gateway", "default", "gw")]
	f.mu.Unlock()
	if !ok {
		t.Error(`Gateway without a namespace was not stored in "default"`)
	}
}

func TestApplyInvalidRefusedLocally(t *testing.T) {
	f, addr := startHub(t)
	dir := t.TempDir()
	bad := strings.Replace(canaryYAML, "  - backendRefs:", "  - matches:\n    - path:\n        value: blue\n    backendRefs:", 1)
	bad = strings.Replace(bad, "weight: 10", "weight: -1", 1)
	writeFile(t, filepath.Join(dir, "a-gateway.yaml"), gatewayYAML)
	writeFile(t, filepath.Join(dir, "b-route.yaml"), bad)

	stdout, stderr, code := hubctl(t, "", "--hub", addr, "apply", "-f", dir)
	if code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	want := "error: " + filepath.Join(dir, "b-route.yaml") + `: The HTTPRoute "default/color" is invalid:
* spec.rules[0].backendRefs[1].weight: Invalid value: -1: spec.rules[0].backendRefs[1].weight in body should be greater than or equal to 0
* spec.rules[0].matches[0].path: Invalid value: value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']
`
	if diff := cmp.Diff(want, stderr); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	if n := f.calls(); n != 0 {
		t.Errorf("Apply reached the hub %d times; an invalid object must stop the whole apply locally", n)
	}

	// Unknown fields and unknown kinds are refused locally too, naming the field or kind.
	_, stderr, code = hubctl(t, strings.Replace(canaryYAML, "  parentRefs:", "  parentRef:", 1), "--hub", addr, "apply", "-f", "-")
	if code != 1 || !strings.Contains(stderr, `unknown field "spec.parentRef"`) {
		t.Errorf("unknown field: code %d stderr %q", code, stderr)
	}
	_, stderr, code = hubctl(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "--hub", addr, "apply", "-f", "-")
	if code != 1 || !strings.Contains(stderr, "kind Pod is not supported by fedgate") {
		t.Errorf("unknown kind: code %d stderr %q", code, stderr)
	}
	if n := f.calls(); n != 0 {
		t.Errorf("Apply reached the hub %d times", n)
	}
}

func TestHubErrorsShownPlainly(t *testing.T) {
	f, addr := startHub(t)
	f.applyErr = status.Error(codes.InvalidArgument, `HTTPRoute "default/color": parentRefs[0]: Gateway "default/gw" is in use by another team`)
	_, stderr, code := hubctl(t, canaryYAML, "--hub", addr, "apply", "-f", "-")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "error: HTTPRoute \"default/color\": parentRefs[0]: Gateway \"default/gw\" is in use by another team\n"; stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}

	// A hub that is not there: the address is named, no Go struct is dumped.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := lis.Addr().String()
	lis.Close()
	_, stderr, code = hubctl(t, "", "--hub", deadAddr, "get", "clusters")
	if code != 1 || !strings.HasPrefix(stderr, "error: cannot reach the hub at "+deadAddr+": ") || strings.Contains(stderr, "rpc error") {
		t.Errorf("unreachable hub: code %d stderr %q", code, stderr)
	}
}

func TestHubAddressFromEnvironment(t *testing.T) {
	_, addr := startHub(t)
	t.Setenv(EnvHub, addr)
	stdout, stderr, code := hubctl(t, canaryYAML, "apply", "-f", "-")
	if code != 0 || stdout != "httproute.gateway.networking.k8s.io/color created\n" {
		t.Errorf("code %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestDelete(t *testing.T) {
	_, addr := startHub(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "all.yaml"), gatewayYAML+"---\n"+canaryYAML)
	if _, stderr, code := hubctl(t, "", "--hub", addr, "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	stdout, stderr, code := hubctl(t, "", "--hub", addr, "delete", "-f", filepath.Join(dir, "all.yaml"))
	want := "gateway.gateway.networking.k8s.io \"gw\" deleted\nhttproute.gateway.networking.k8s.io \"color\" deleted\n"
	if code != 0 || stdout != want {
		t.Errorf("delete -f: code %d stdout %q stderr %q", code, stdout, stderr)
	}
	stdout, stderr, code = hubctl(t, "", "--hub", addr, "delete", "httproute", "color", "-n", "default")
	if code != 0 || stdout != "httproute.gateway.networking.k8s.io \"color\" not found\n" {
		t.Errorf("delete TYPE NAME: code %d stdout %q stderr %q", code, stdout, stderr)
	}
	if _, stderr, code = hubctl(t, "", "--hub", addr, "delete"); code != 1 || !strings.Contains(stderr, "give -f FILENAME or TYPE NAME") {
		t.Errorf("bare delete: code %d stderr %q", code, stderr)
	}
}

// seedStatusHub fills the fake hub with objects and compiled statuses like the real hub returns for a two-cluster
// federation where the west Gateway does not allow the route.
func seedStatusHub(t *testing.T) string {
	t.Helper()
	f, addr := startHub(t)
	objs, err := resources.DecodeYAML(strings.NewReader(gatewayYAML+"---\n"+canaryYAML+"---\n"+grantJSON+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  hostnames: [api.example.com, "*.api.example.com"]
  parentRefs: [{name: gw, namespace: default, sectionName: http}]
  rules: [{backendRefs: [{name: api, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: pending, namespace: default}
spec:
  parentRefs: [{name: gw2}]
  rules: [{backendRefs: [{name: color, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: fedgate}
spec: {controllerName: fedgate.io/gateway-controller}
`), "seed", "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		f.objects[key(o.Kind, o.Namespace, o.Name)] = o
	}
	accepted := []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}
	refused := []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "NotAllowedByListeners"}}
	programmed := []metav1.Condition{accepted[0], {Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed"}}
	setStatus := func(kind, ns, name string, st compiler.ObjectStatus) {
		st.Ref = compiler.ObjectRef{Kind: kind, Namespace: ns, Name: name}
		js, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		f.statuses[key(kind, ns, name)] = js
	}
	gw := gatewayv1.ParentReference{Name: "gw"}
	resolved := metav1.Condition{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs"}
	notFound := metav1.Condition{Type: "ResolvedRefs", Status: metav1.ConditionFalse, Reason: "BackendNotFound"}
	setStatus("HTTPRoute", "default", "color", compiler.ObjectStatus{Parents: []compiler.ParentStatus{
		{Cluster: "west", ParentRef: gw, Conditions: append(slices.Clone(refused), resolved)},
		{Cluster: "east", ParentRef: gw, Conditions: append(slices.Clone(accepted), resolved)},
	}})
	// Accepted everywhere, but its backend Service exists only in east.
	setStatus("HTTPRoute", "shop", "api", compiler.ObjectStatus{Parents: []compiler.ParentStatus{
		{Cluster: "east", ParentRef: gw, Conditions: append(slices.Clone(accepted), resolved)},
		{Cluster: "west", ParentRef: gw, Conditions: append(slices.Clone(accepted), notFound)},
	}})
	// A parent not instantiated in any cluster yet is reported under cluster "".
	setStatus("HTTPRoute", "default", "pending", compiler.ObjectStatus{Parents: []compiler.ParentStatus{
		{Cluster: "", ParentRef: gatewayv1.ParentReference{Name: "gw2"}, Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "Pending"}}},
	}})
	setStatus("Gateway", "default", "gw", compiler.ObjectStatus{
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}, {Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Pending"}},
		Clusters: []compiler.ClusterConditions{
			{Cluster: "west", Conditions: []metav1.Condition{accepted[0], {Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Pending"}}},
			{Cluster: "east", Conditions: programmed},
		},
	})
	setStatus("GatewayClass", "", "fedgate", compiler.ObjectStatus{Conditions: accepted})
	reported, err := resources.DecodeYAML(strings.NewReader(`
apiVersion: v1
kind: Service
metadata: {name: color, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: local, namespace: infra}
spec: {gatewayClassName: fedgate, listeners: [{name: http, port: 8080, protocol: HTTP}]}
`), "reports", "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []string{"west", "east"} {
		for _, o := range reported {
			f.reported = append(f.reported, &fedgatepb.ListedObject{Object: o, Cluster: cl})
		}
	}
	f.clusters = []*fedgatepb.ClusterInfo{
		{Name: "west", Connected: false, EastWestAddress: "127.0.0.1:15443", AgentVersion: "v0.1.0", SentRevision: 42, AckedRevision: 40, NackedRevision: 42, LastNackError: "listener http:\n port 80 in use",
			ProjectionError: "projection too large: the config of 16777300 bytes exceeds the 16777216-byte limit of a config update", ProjectionErrorRevision: 45},
		{Name: "east", Labels: map[string]string{"region": "eu", "tier": "a"}, JoinedAtUnix: 1767225600, Connected: true, EastWestAddress: "127.0.0.1:15442", AgentVersion: "v0.1.0", SentRevision: 42, AckedRevision: 42},
	}
	return addr
}

func TestGetTables(t *testing.T) {
	addr := seedStatusHub(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"get-routes", []string{"get", "routes"}},
		{"get-httproutes-shop", []string{"get", "httproutes", "-n", "shop"}},
		{"get-gateways", []string{"get", "gateways"}},
		{"get-referencegrants", []string{"get", "referencegrants"}},
		{"get-clusters", []string{"get", "clusters"}},
		{"get-all", []string{"get", "all"}},
		{"get-services-reports", []string{"get", "services", "--include-reports"}},
		{"get-gateways-reports", []string{"get", "gw", "--include-reports"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			stdout, stderr, code := hubctl(t, "", append([]string{"--hub", addr}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			compareGolden(t, filepath.Join("testdata", tc.golden+".golden"), stdout)
		})
	}
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/hubctl/app -run %s -update)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func TestGetOutputFormats(t *testing.T) {
	addr := seedStatusHub(t)

	// One object by name: the object itself, with the compiled status as its status section.
	stdout, stderr, code := hubctl(t, "", "--hub", addr, "get", "httproute", "color", "-n", "default", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var route struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Status   compiler.ObjectStatus
	}
	if err := json.Unmarshal([]byte(stdout), &route); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if route.Kind != "HTTPRoute" || route.Metadata.Name != "color" || len(route.Status.Parents) != 2 || route.Status.Parents[0].Cluster != "west" {
		t.Errorf("unexpected object: %+v", route)
	}

	// Several: a v1 List, in YAML too.
	stdout, _, code = hubctl(t, "", "--hub", addr, "get", "routes", "-o", "yaml")
	if code != 0 || !strings.HasPrefix(stdout, "apiVersion: v1\nitems:\n") || !strings.Contains(stdout, "kind: List\n") ||
		strings.Count(stdout, "\n  kind: HTTPRoute\n") != 3 || strings.Count(stdout, "\n  kind: GRPCRoute\n") != 1 {
		t.Errorf("routes -o yaml: code %d\n%s", code, stdout)
	}

	// Clusters in their wire form.
	stdout, _, code = hubctl(t, "", "--hub", addr, "get", "clusters", "-o", "json")
	var clusters struct {
		Clusters []struct {
			Name          string
			LastNackError string
		}
	}
	if err := json.Unmarshal([]byte(stdout), &clusters); code != 0 || err != nil || len(clusters.Clusters) != 2 || clusters.Clusters[0].Name != "east" {
		t.Errorf("clusters -o json: code %d err %v\n%s", code, err, stdout)
	}

	// A name that is not there is an error naming it, like kubectl.
	_, stderr, code = hubctl(t, "", "--hub", addr, "get", "httproute", "nope")
	if code != 1 || stderr != "error: httproute.gateway.networking.k8s.io \"nope\" not found\n" {
		t.Errorf("missing name: code %d stderr %q", code, stderr)
	}
	_, stderr, code = hubctl(t, "", "--hub", addr, "get", "routes", "-n", "empty")
	if code != 0 || stderr != "No resources found in empty namespace.\n" {
		t.Errorf("empty namespace: code %d stderr %q", code, stderr)
	}
	_, stderr, code = hubctl(t, "", "--hub", addr, "get", "widgets")
	if code != 1 || !strings.Contains(stderr, `doesn't have a resource type "widgets"`) {
		t.Errorf("unknown type: code %d stderr %q", code, stderr)
	}
	_, _, code = hubctl(t, "", "--hub", addr, "get", "routes", "-o", "xml")
	if code != 1 {
		t.Errorf("bad -o: code %d", code)
	}
}

// TestAdminCallsNeedTheCredential: without the admin config nothing is sent and the error says where the credential
// comes from; with a config whose certificate is not the admin's the hub's refusal is shown.
func TestAdminCallsNeedTheCredential(t *testing.T) {
	f, addr := startHub(t)
	missing := filepath.Join(t.TempDir(), "nope")
	_, stderr, code := hubctl(t, canaryYAML, "--hub", addr, "--config", missing, "apply", "-f", "-")
	if code != 1 || !strings.Contains(stderr, "no admin credential at "+missing) || !strings.Contains(stderr, "--admin-config") {
		t.Fatalf("without a config: code %d stderr %q", code, stderr)
	}
	if n := f.calls(); n != 0 {
		t.Fatalf("Apply reached the hub %d times without a credential", n)
	}
	// A config file others may read is refused: it holds the admin key.
	loose := filepath.Join(t.TempDir(), "config")
	b, err := os.ReadFile(os.Getenv(EnvConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loose, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code = hubctl(t, "", "--config", loose, "get", "clusters"); code != 1 || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("world-readable config: code %d stderr %q", code, stderr)
	}
	// The written config works without --hub: the address comes from it.
	if _, stderr, code = hubctl(t, "", "get", "clusters"); code != 0 {
		t.Fatalf("with the config: code %d stderr %q", code, stderr)
	}
}

// TestJoinRefusesWithoutCAHash: there is no way to skip the CA pin.
func TestJoinRefusesWithoutCAHash(t *testing.T) {
	_, stderr, code := hubctl(t, "", "join", "--hub", "127.0.0.1:1", "--token", "abcdef.0123456789abcdef", "--cluster-name", "east")
	if code != 1 || !strings.Contains(stderr, "--ca-hash is required") {
		t.Fatalf("join without --ca-hash: code %d stderr %q", code, stderr)
	}
}

// YAML written for GRPCRoute v1alpha2 (Gateway API v1.1's experimental channel served it beside v1, same schema) is
// applied as v1, with a warning naming both; a version fedgate does not serve is refused locally, naming the ones it
// does.
func TestApplyOlderVersions(t *testing.T) {
	f, addr := startHub(t)
	const route = `apiVersion: gateway.networking.k8s.io/v1alpha2
kind: GRPCRoute
metadata:
  name: echo
spec:
  parentRefs:
  - name: gw
  rules:
  - backendRefs:
    - name: echo
      port: 9000
`
	stdout, stderr, code := hubctl(t, route, "--hub", addr, "apply", "-f", "-")
	if code != 0 || stdout != "grpcroute.gateway.networking.k8s.io/echo created\n" {
		t.Fatalf("apply v1alpha2 GRPCRoute: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	want := `Warning: <stdin>: GRPCRoute "default/echo": gateway.networking.k8s.io/v1alpha2 is stored as gateway.networking.k8s.io/v1`
	if !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q, want one line starting %q", stderr, want)
	}
	f.mu.Lock()
	got := f.objects[key(resources.KindGRPCRoute, "default", "echo")]
	f.mu.Unlock()
	if got == nil || got.ApiVersion != "gateway.networking.k8s.io/v1" || !strings.Contains(string(got.Json), `"apiVersion":"gateway.networking.k8s.io/v1"`) {
		t.Errorf("the hub was sent %+v, want the route as gateway.networking.k8s.io/v1", got)
	}

	calls := f.calls()
	_, stderr, code = hubctl(t, strings.Replace(route, "v1alpha2", "v1alpha3", 1), "--hub", addr, "apply", "-f", "-")
	if code != 1 || !strings.Contains(stderr, `GRPCRoute "echo": apiVersion gateway.networking.k8s.io/v1alpha3 is not served by fedgate: GRPCRoute is served as gateway.networking.k8s.io/v1`) {
		t.Errorf("v1alpha3 GRPCRoute: exit %d stderr %q, want the versions fedgate serves named", code, stderr)
	}
	if f.calls() != calls {
		t.Error("a refused version reached the hub")
	}
}

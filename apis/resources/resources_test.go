package resources

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"sigs.k8s.io/yaml"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

func TestDecodeYAMLMultiDocument(t *testing.T) {
	in := `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: fedgate
  namespace: ignored
spec:
  controllerName: fedgate.io/hub
---
# an empty document between separators is skipped
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: color
spec:
  parentRefs: [{name: gw}]
status:
  parents: []
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: apps
spec:
  ports: [{port: 80}]
`
	objs, err := DecodeYAML(strings.NewReader(in), "in.yaml", "team")
	if err != nil {
		t.Fatalf("DecodeYAML: %v", err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, ID(o.Kind, o.Namespace, o.Name))
	}
	want := []string{"GatewayClass/fedgate", "HTTPRoute/team/color", "Service/apps/echo"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
	if objs[0].Namespace != "" || strings.Contains(string(objs[0].Json), "namespace") {
		t.Errorf("cluster-scoped GatewayClass kept a namespace: %q / %s", objs[0].Namespace, objs[0].Json)
	}
	if strings.Contains(string(objs[1].Json), `"status"`) {
		t.Errorf("status was not stripped: %s", objs[1].Json)
	}
	if !strings.Contains(string(objs[1].Json), `"namespace":"team"`) {
		t.Errorf("default namespace not written into the object JSON: %s", objs[1].Json)
	}
	if objs[1].ApiVersion != "gateway.networking.k8s.io/v1" {
		t.Errorf("apiVersion = %q", objs[1].ApiVersion)
	}
}

func TestDecodeYAMLDefaultNamespaceFallsBackToDefault(t *testing.T) {
	in := "apiVersion: v1\nkind: Service\nmetadata: {name: echo}\n"
	objs, err := DecodeYAML(strings.NewReader(in), "svc.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Namespace != "default" {
		t.Fatalf("got %+v, want one Service in namespace default", objs)
	}
}

func TestDecodeYAMLExpandsList(t *testing.T) {
	in := `
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: gateway.networking.k8s.io/v1
  kind: Gateway
  metadata: {name: gw, namespace: infra}
`
	objs, err := DecodeYAML(strings.NewReader(in), "list.yaml", "ns1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, ID(o.Kind, o.Namespace, o.Name))
	}
	want := []string{"Service/ns1/a", "Gateway/infra/gw"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
}

func TestDecodeYAMLJSONInput(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"j","namespace":"x"}}`
	objs, err := DecodeYAML(strings.NewReader(in), "in.json", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Name != "j" || objs[0].Namespace != "x" {
		t.Fatalf("got %+v", objs)
	}
}

func TestDecodeYAMLErrorsNameTheDocument(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{
			name: "unknown kind",
			in:   "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: cm}\n",
			want: []string{"bad.yaml: document 2", "Pod", `"cm"`, "not supported"},
		},
		{
			name: "known kind at an unserved version",
			in:   "apiVersion: gateway.networking.k8s.io/v9\nkind: HTTPRoute\nmetadata: {name: r}\n",
			want: []string{"bad.yaml: document 1", `HTTPRoute "r": apiVersion gateway.networking.k8s.io/v9 is not served by fedgate: HTTPRoute is served as gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1`},
		},
		{
			name: "missing name",
			in:   "apiVersion: v1\nkind: Service\nmetadata: {}\n",
			want: []string{"bad.yaml: document 1", "metadata.name"},
		},
		{
			name: "missing kind",
			in:   "apiVersion: v1\nmetadata: {name: x}\n",
			want: []string{"bad.yaml: document 1"},
		},
		{
			name: "unknown kind inside a list",
			in:   "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: s}\n",
			want: []string{"bad.yaml: document 1 item 1", "Pod"},
		},
		{
			name: "malformed YAML",
			in:   "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: [unclosed\n",
			want: []string{"bad.yaml: document 2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := DecodeYAML(strings.NewReader(tc.in), "bad.yaml", "default")
			if err == nil {
				t.Fatalf("no error; decoded %v", objs)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestKnown(t *testing.T) {
	for _, tc := range []struct {
		apiVersion, kind string
		want             bool
	}{
		{"gateway.networking.k8s.io/v1", "HTTPRoute", true},
		{"gateway.networking.k8s.io/v1beta1", "ReferenceGrant", true},
		{"gateway.networking.k8s.io/v1", "ReferenceGrant", true},
		{"gateway.networking.k8s.io/v1alpha2", "GRPCRoute", true}, // stored as v1 (Upgrade)
		{"gateway.networking.k8s.io/v1alpha3", "GRPCRoute", false},
		{"v1", "Service", true},
		{"discovery.k8s.io/v1", "EndpointSlice", true},
		{"v1", "Pod", false},
		{"v1", "ConfigMap", true},
		{"apps/v1", "Service", false},
		{"not/a/version", "Service", false},
	} {
		if got := Known(tc.apiVersion, tc.kind); got != tc.want {
			t.Errorf("Known(%q, %q) = %v, want %v", tc.apiVersion, tc.kind, got, tc.want)
		}
	}
}

func TestIDAndDescribe(t *testing.T) {
	if got := ID(KindGatewayClass, "ns", "gc"); got != "GatewayClass/gc" {
		t.Errorf("ID of a cluster-scoped kind = %q", got)
	}
	if got := ID(KindHTTPRoute, "ns", "r"); got != "HTTPRoute/ns/r" {
		t.Errorf("ID = %q", got)
	}
	if got := Describe(KindHTTPRoute, "default", "color"); got != `HTTPRoute "default/color"` {
		t.Errorf("Describe = %q", got)
	}
	if got := Describe(KindGatewayClass, "", "gc"); got != `GatewayClass "gc"` {
		t.Errorf("Describe = %q", got)
	}
}

func decodeOne(t *testing.T, in string) *fedgatepb.Object {
	t.Helper()
	objs, err := DecodeYAML(strings.NewReader(in), "test", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("decoded %d objects, want 1", len(objs))
	}
	return objs[0]
}

func TestTypedHTTPRoute(t *testing.T) {
	o := decodeOne(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: color}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: echo, port: 8080}]
`)
	obj, err := Typed(o)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := obj.(*gatewayv1.HTTPRoute)
	if !ok {
		t.Fatalf("Typed returned %T, want *gatewayv1.HTTPRoute", obj)
	}
	if r.Name != "color" || r.Namespace != "default" || len(r.Spec.Rules) != 1 || r.Spec.Rules[0].BackendRefs[0].Name != "echo" {
		t.Errorf("decoded route %+v", r)
	}
	if gvk := r.GetObjectKind().GroupVersionKind(); gvk != gatewayv1.SchemeGroupVersion.WithKind(KindHTTPRoute) {
		t.Errorf("GVK = %v", gvk)
	}
}

func TestTypedReferenceGrantEitherVersion(t *testing.T) {
	for _, v := range []string{"v1", "v1beta1"} {
		t.Run(v, func(t *testing.T) {
			o := decodeOne(t, `
apiVersion: gateway.networking.k8s.io/`+v+`
kind: ReferenceGrant
metadata: {name: allow, namespace: apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
  to: [{group: "", kind: Service}]
`)
			obj, err := Typed(o)
			if err != nil {
				t.Fatal(err)
			}
			rg, ok := obj.(*gatewayv1beta1.ReferenceGrant)
			if !ok {
				t.Fatalf("Typed returned %T, want *gatewayv1beta1.ReferenceGrant", obj)
			}
			if len(rg.Spec.From) != 1 || rg.Spec.From[0].Namespace != "web" || len(rg.Spec.To) != 1 {
				t.Errorf("decoded grant %+v", rg.Spec)
			}
			if gvk := rg.GetObjectKind().GroupVersionKind(); gvk != gatewayv1beta1.SchemeGroupVersion.WithKind(KindReferenceGrant) {
				t.Errorf("GVK = %v, want v1beta1", gvk)
			}
		})
	}
}

// Fields newer than our Go types must not make an object undecodable: strict decoding fails, lenient decoding keeps
// everything the types know.
func TestTypedLenientOnUnknownFields(t *testing.T) {
	js := []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"echo","namespace":"apps"},` +
		`"spec":{"ports":[{"port":80}],"fieldFromTheFuture":true}}`)
	o := &fedgatepb.Object{ApiVersion: "v1", Kind: KindService, Namespace: "apps", Name: "echo", Json: js}
	if err := yaml.UnmarshalStrict(js, &struct{}{}); err == nil {
		t.Fatal("precondition: strict decoding of an unknown field should fail")
	}
	obj, err := Typed(o)
	if err != nil {
		t.Fatalf("Typed with an unknown field: %v", err)
	}
	if got := reflect.ValueOf(obj).Elem().FieldByName("Spec").FieldByName("Ports").Len(); got != 1 {
		t.Errorf("known fields lost in lenient decoding: %d ports", got)
	}
}

func TestTypedErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    *fedgatepb.Object
		want []string
	}{
		{
			name: "wrong type for a field",
			o: &fedgatepb.Object{ApiVersion: "v1", Kind: KindService, Namespace: "apps", Name: "echo",
				Json: []byte(`{"spec":{"ports":"eighty"}}`)},
			want: []string{`Service "apps/echo"`},
		},
		{
			name: "bad apiVersion",
			o:    &fedgatepb.Object{ApiVersion: "a/b/c", Kind: KindService, Namespace: "apps", Name: "echo", Json: []byte(`{}`)},
			want: []string{`Service "apps/echo"`, "apiVersion"},
		},
		{
			name: "kind outside the scheme",
			o:    &fedgatepb.Object{ApiVersion: "apps/v1", Kind: "Deployment", Namespace: "apps", Name: "web", Json: []byte(`{}`)},
			want: []string{`Deployment "apps/web"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := Typed(tc.o)
			if err == nil {
				t.Fatalf("no error; got %#v", obj)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestKindFor(t *testing.T) {
	for word, want := range map[string][]string{
		"routes":             {KindHTTPRoute, KindGRPCRoute},
		"HTTPRoute":          {KindHTTPRoute},
		"gw":                 {KindGateway},
		"GC":                 {KindGatewayClass},
		"svc":                {KindService},
		"refgrant":           {KindReferenceGrant},
		"endpointslice":      {KindEndpointSlice},
		"serviceexports":     {KindServiceExport},
		"btp":                {KindXBackendTrafficPolicy},
		"blbpolicy":          {KindBackendLBPolicy},
		"policies":           {KindXBackendTrafficPolicy, KindBackendLBPolicy, KindBackendTLSPolicy},
		"backendtlspolicies": {KindBackendTLSPolicy},
	} {
		got, ok := KindFor(word)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("KindFor(%q) = %v, %v; want %v", word, got, ok, want)
		}
	}
	if got, ok := KindFor("pod"); ok || got != nil {
		t.Errorf("KindFor(pod) = %v, %v; want nothing", got, ok)
	}
	if got, ok := KindFor("cm"); !ok || !reflect.DeepEqual(got, []string{KindConfigMap}) {
		t.Errorf("KindFor(cm) = %v, %v; want [ConfigMap]", got, ok)
	}
	// Every kind fedgate carries has a word that resolves to it alone.
	for _, gk := range Kinds {
		got, ok := KindFor(strings.ToLower(gk.Kind))
		if !ok || len(got) != 1 || got[0] != gk.Kind {
			t.Errorf("KindFor(%q) = %v, %v", strings.ToLower(gk.Kind), got, ok)
		}
	}
}

func TestSortObjects(t *testing.T) {
	o := func(kind, ns, name string) *fedgatepb.Object {
		return &fedgatepb.Object{Kind: kind, Namespace: ns, Name: name}
	}
	objs := []*fedgatepb.Object{
		o(KindService, "b", "x"),
		o(KindHTTPRoute, "a", "z"),
		o(KindService, "a", "y"),
		o(KindGatewayClass, "", "gc"),
		o(KindHTTPRoute, "a", "b"),
		o(KindBackendLBPolicy, "a", "p"),
		o(KindGateway, "z", "gw"),
	}
	SortObjects(objs)
	var got []string
	for _, x := range objs {
		got = append(got, ID(x.Kind, x.Namespace, x.Name))
	}
	want := []string{
		"GatewayClass/gc", "Gateway/z/gw", "HTTPRoute/a/b", "HTTPRoute/a/z", "Service/a/y", "Service/b/x",
		"BackendLBPolicy/a/p",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sorted %v, want %v", got, want)
	}
}

// TestSecretIsCarried: a core/v1 Secret decodes like any carried kind and types as *corev1.Secret, so the hub can
// take a listener certificate from hubctl and a cluster's report.
func TestSecretIsCarried(t *testing.T) {
	objs, err := DecodeYAML(strings.NewReader(`apiVersion: v1
kind: Secret
metadata: {name: cert}
type: kubernetes.io/tls
data: {tls.crt: "", tls.key: ""}
`), "secret.yaml", "apps")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Kind != KindSecret || objs[0].Namespace != "apps" || !Namespaced(KindSecret) {
		t.Fatalf("decoded %+v", objs)
	}
	typed, err := Typed(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := typed.(*corev1.Secret); !ok || s.Type != corev1.SecretTypeTLS {
		t.Fatalf("typed %T %+v", typed, typed)
	}
	if !Known("v1", KindSecret) || !Known("v1", KindConfigMap) || !Namespaced(KindConfigMap) || Known("v1", "Pod") {
		t.Fatal("Known: want v1 Secret and ConfigMap (namespaced) carried, Pod not")
	}
}

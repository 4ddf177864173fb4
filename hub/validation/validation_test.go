package validation

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// toObject encodes a typed object onto the wire the way hubctl does (through resources.FromUnstructured).
func toObject(t testing.TB, obj runtime.Object) *fedgatepb.Object {
	t.Helper()
	js, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := resources.DecodeYAML(strings.NewReader(string(js)), "test", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("decoded %d objects, want 1", len(objs))
	}
	return objs[0]
}

// canaryRoute is the route the README walks through: 90/10 between two Services behind the shared Gateway.
func canaryRoute() *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "HTTPRoute"},
		ObjectMeta: metav1.ObjectMeta{Name: "color", Namespace: "default"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Rules: []gatewayv1.HTTPRouteRule{{
				BackendRefs: []gatewayv1.HTTPBackendRef{
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](90)}},
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color2", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](10)}},
				},
			}},
		},
	}
}

func invalidMessages(t *testing.T, err error) []string {
	t.Helper()
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *InvalidError", err, err)
	}
	return ie.Messages()
}

// The acceptance case: what `kubectl apply` of this route gets back from an API server with the v1.6.3 CRDs, message
// for message (OpenAPI minimum first, then the CEL rules in schema order).
func TestHTTPRouteRefusedWithAPIServerMessages(t *testing.T) {
	r := canaryRoute()
	r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("blue")}}}
	r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To[int32](-1)
	r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{
		Type:            gatewayv1.HTTPRouteFilterRequestRedirect,
		RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{Scheme: ptr.To("https")},
	}}

	err := Validate(toObject(t, r))
	want := []string{
		"spec.rules[0].backendRefs[0].weight: Invalid value: -1: spec.rules[0].backendRefs[0].weight in body should be greater than or equal to 0",
		"spec.rules[0]: Invalid value: RequestRedirect filter must not be used together with backendRefs",
		"spec.rules[0].matches[0].path: Invalid value: value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
	}
	if diff := cmp.Diff(want, invalidMessages(t, err)); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(err.Error(), `HTTPRoute.gateway.networking.k8s.io "default/color" is invalid: [`) {
		t.Errorf("error does not name the object as the API server does: %v", err)
	}
	if !apierrors.IsInvalid(err) {
		t.Errorf("apierrors.IsInvalid(%v) = false; hub/server relies on it to answer InvalidArgument", err)
	}
	st := err.(*InvalidError).Status()
	if len(st.Details.Causes) != 3 || st.Details.Causes[0].Field != "spec.rules[0].backendRefs[0].weight" {
		t.Errorf("status causes = %+v", st.Details.Causes)
	}
}

func TestHTTPRoute(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*gatewayv1.HTTPRoute)
		wantErrors []string // substrings, each must appear; none means valid
	}{
		{name: "valid canary", mutate: func(*gatewayv1.HTTPRoute) {}},
		{
			name: "valid exact path, header match and hostnames",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Hostnames = []gatewayv1.Hostname{"color.example.com", "*.example.org"}
				r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{{
					Path:    &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchExact), Value: ptr.To("/blue")},
					Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "1"}},
				}}
			},
		},
		{
			name: "relative path prefix",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To("blue")}}}
			},
			wantErrors: []string{"spec.rules[0].matches[0].path: Invalid value: value must be an absolute path and start with '/'"},
		},
		{
			name: "path with double slash",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To("/a//b")}}}
			},
			wantErrors: []string{"spec.rules[0].matches[0].path: Invalid value: must not contain '//'"},
		},
		{
			name:       "negative weight",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].BackendRefs[1].Weight = ptr.To[int32](-5) },
			wantErrors: []string{"spec.rules[0].backendRefs[1].weight: Invalid value: -5: spec.rules[0].backendRefs[1].weight in body should be greater than or equal to 0"},
		},
		{
			name:       "service backend without port",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].BackendRefs[0].Port = nil },
			wantErrors: []string{"spec.rules[0].backendRefs[0]: Invalid value: Must have port for Service reference"},
		},
		{
			name:       "invalid hostname",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Hostnames = []gatewayv1.Hostname{"Not_A_Host"} },
			wantErrors: []string{"spec.hostnames[0]: Invalid value: \"Not_A_Host\": spec.hostnames[0] in body should match"},
		},
		{
			name: "backendRequest timeout longer than request",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Timeouts = &gatewayv1.HTTPRouteTimeouts{Request: ptr.To[gatewayv1.Duration]("1s"), BackendRequest: ptr.To[gatewayv1.Duration]("2s")}
			},
			wantErrors: []string{"spec.rules[0].timeouts: Invalid value: backendRequest timeout cannot be longer than request timeout"},
		},
		{
			name: "duplicate rule names",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Name = ptr.To[gatewayv1.SectionName]("main")
				r.Spec.Rules = append(r.Spec.Rules, *r.Spec.Rules[0].DeepCopy())
			},
			wantErrors: []string{"spec.rules: Invalid value: Rule name must be unique within the route"},
		},
		{
			name: "unsupported filter type blocks the CEL rules, as on an API server",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{Type: "Teleport"}}
			},
			wantErrors: []string{
				`spec.rules[0].filters[0].type: Unsupported value: "Teleport"`,
				"some validation rules were not checked because the object was invalid",
			},
		},
		{
			name:       "too many parentRefs",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.ParentRefs = make([]gatewayv1.ParentReference, 33) },
			wantErrors: []string{"spec.parentRefs: Too many: 33: must have at most 32 items"},
		},
		{
			name:       "metadata name is not a DNS subdomain",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Name = "Color" },
			wantErrors: []string{`metadata.name: Invalid value: "Color": a lowercase RFC 1123 subdomain must consist of`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := canaryRoute()
			tc.mutate(r)
			wantValidation(t, Validate(toObject(t, r)), tc.wantErrors)
		})
	}
}

func baseGateway() *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "Gateway"},
		ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "default"},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "fedgate",
			Listeners:        []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
		},
	}
}

func TestGateway(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*gatewayv1.Gateway)
		wantErrors []string
	}{
		{name: "valid", mutate: func(*gatewayv1.Gateway) {}},
		{
			name: "valid second listener with hostname",
			mutate: func(g *gatewayv1.Gateway) {
				g.Spec.Listeners = append(g.Spec.Listeners, gatewayv1.Listener{Name: "shop", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr.To[gatewayv1.Hostname]("shop.example.com")})
			},
		},
		{
			name:   "bad listener protocol",
			mutate: func(g *gatewayv1.Gateway) { g.Spec.Listeners[0].Protocol = "HTTP 2" },
			wantErrors: []string{
				`spec.listeners[0].protocol: Invalid value: "HTTP 2": spec.listeners[0].protocol in body should match`,
			},
		},
		{
			name: "duplicate listener names",
			mutate: func(g *gatewayv1.Gateway) {
				g.Spec.Listeners = append(g.Spec.Listeners, gatewayv1.Listener{Name: "http", Port: 8080, Protocol: gatewayv1.HTTPProtocolType})
			},
			wantErrors: []string{
				`spec.listeners[1]: Duplicate value: {"name":"http"}`,
				"spec.listeners: Invalid value: Listener name must be unique within the Gateway",
			},
		},
		{
			name: "same port, protocol and hostname twice",
			mutate: func(g *gatewayv1.Gateway) {
				g.Spec.Listeners = append(g.Spec.Listeners, gatewayv1.Listener{Name: "http2", Port: 80, Protocol: gatewayv1.HTTPProtocolType})
			},
			wantErrors: []string{"spec.listeners: Invalid value: Combination of port, protocol and hostname must be unique for each listener"},
		},
		{
			name: "tls on a plain HTTP listener",
			mutate: func(g *gatewayv1.Gateway) {
				g.Spec.Listeners[0].TLS = &gatewayv1.ListenerTLSConfig{Mode: ptr.To(gatewayv1.TLSModeTerminate)}
			},
			wantErrors: []string{"tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"},
		},
		{
			name:       "port out of range",
			mutate:     func(g *gatewayv1.Gateway) { g.Spec.Listeners[0].Port = 70000 },
			wantErrors: []string{"spec.listeners[0].port: Invalid value: 70000: spec.listeners[0].port in body should be less than or equal to 65535"},
		},
		{
			name:       "no listeners",
			mutate:     func(g *gatewayv1.Gateway) { g.Spec.Listeners = nil },
			wantErrors: []string{"spec.listeners: Required value"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := baseGateway()
			tc.mutate(g)
			wantValidation(t, Validate(toObject(t, g)), tc.wantErrors)
		})
	}
}

func TestOtherKindsAccepted(t *testing.T) {
	for _, obj := range []runtime.Object{
		&gatewayv1.GatewayClass{
			TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "GatewayClass"},
			ObjectMeta: metav1.ObjectMeta{Name: "fedgate"},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: "fedgate.io/gateway-controller"},
		},
		&gatewayv1.GRPCRoute{
			TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "GRPCRoute"},
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
			Spec: gatewayv1.GRPCRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Rules: []gatewayv1.GRPCRouteRule{{
					Matches:     []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr.To("echo.Echo")}}},
					BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo", Port: ptr.To[gatewayv1.PortNumber](9000)}}}},
				}},
			},
		},
		&gatewayv1beta1.ReferenceGrant{
			TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1beta1.GroupVersion.String(), Kind: "ReferenceGrant"},
			ObjectMeta: metav1.ObjectMeta{Name: "from-default", Namespace: "backends"},
			Spec: gatewayv1beta1.ReferenceGrantSpec{
				From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "default"}},
				To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Service"}},
			},
		},
		&mcsv1a1.ServiceExport{
			TypeMeta:   metav1.TypeMeta{APIVersion: mcsv1a1.GroupVersion.String(), Kind: "ServiceExport"},
			ObjectMeta: metav1.ObjectMeta{Name: "color", Namespace: "default"},
		},
		&corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: "color", Namespace: "default"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP},
			}},
		},
		&discoveryv1.EndpointSlice{
			TypeMeta:    metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
			ObjectMeta:  metav1.ObjectMeta{Name: "color-abc12", Namespace: "default"},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.7"}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		},
	} {
		o := toObject(t, obj)
		if err := Validate(o); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", o.Kind, err)
		}
	}
}

// Every embedded CRD must build (a broken copy would otherwise surface only at the first Apply of its kind), and each
// kind fedgate carries must have a validator or a core check.
func TestPreloadBuildsEveryEmbeddedCRD(t *testing.T) {
	if err := Preload(); err != nil {
		t.Fatal(err)
	}
	for _, gk := range resources.Kinds {
		if gk == coreServiceGK || gk == coreEndpointSliceGK || gk == coreNamespaceGK || gk == coreSecretGK || gk == coreConfigMapGK {
			continue
		}
		idx, _ := loadIndex()
		e, ok := idx.kinds[gk]
		if !ok {
			t.Errorf("no embedded CRD for %s", gk)
			continue
		}
		if len(e.versions) == 0 {
			t.Errorf("%s: no served versions", gk)
		}
	}
}

func TestGRPCRouteRefused(t *testing.T) {
	r := &gatewayv1.GRPCRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "GRPCRoute"},
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec: gatewayv1.GRPCRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Rules: []gatewayv1.GRPCRouteRule{{
				Matches:     []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo"}}}},
			}},
		},
	}
	want := []string{
		"spec.rules[0].backendRefs[0]: Invalid value: Must have port for Service reference",
		"spec.rules[0].matches[0].method: Invalid value: One or both of 'service' or 'method' must be specified",
	}
	if diff := cmp.Diff(want, invalidMessages(t, Validate(toObject(t, r)))); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestCoreKindsLightChecks(t *testing.T) {
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: "9color", Namespace: "default"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 0},
			{Name: "http", Port: 80, Protocol: "HTTP"},
		}},
	}
	want := []string{
		`metadata.name: Invalid value: "9color": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')`,
		"spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
		`spec.ports[1].name: Duplicate value: "http"`,
		`spec.ports[1].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"`,
	}
	if diff := cmp.Diff(want, invalidMessages(t, Validate(toObject(t, svc)))); diff != "" {
		t.Errorf("Service messages (-want +got):\n%s", diff)
	}

	es := &discoveryv1.EndpointSlice{
		TypeMeta:    metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta:  metav1.ObjectMeta{Name: "color-abc12", Namespace: "default"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"fd00::1"}}, {}},
	}
	want = []string{
		`endpoints[0].addresses[0]: Invalid value: "fd00::1": must be an IPv4 address`,
		"endpoints[1].addresses: Required value: must contain at least 1 address",
	}
	if diff := cmp.Diff(want, invalidMessages(t, Validate(toObject(t, es)))); diff != "" {
		t.Errorf("EndpointSlice messages (-want +got):\n%s", diff)
	}
}

func TestRefusedBeforeSchema(t *testing.T) {
	route := toObject(t, canaryRoute())
	tests := []struct {
		name    string
		obj     *fedgatepb.Object
		wantErr string
	}{
		{
			name:    "unknown field is a strict decoding error",
			obj:     withJSON(route, strings.Replace(string(route.Json), `"parentRefs"`, `"weigth":1,"parentRefs"`, 1)),
			wantErr: `HTTPRoute "default/color": strict decoding error: unknown field "spec.weigth"`,
		},
		{
			name:    "unknown metadata field",
			obj:     withJSON(route, strings.Replace(string(route.Json), `"name":"color"`, `"name":"color","lables":{}`, 1)),
			wantErr: `unknown field "metadata.lables"`,
		},
		{
			name:    "version not served",
			obj:     &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1alpha1", Kind: "HTTPRoute", Namespace: "default", Name: "color", Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1alpha1","kind":"HTTPRoute","metadata":{"name":"color"}}`)},
			wantErr: `no matches for kind "HTTPRoute" in version "gateway.networking.k8s.io/v1alpha1"`,
		},
		{
			name:    "kind fedgate does not carry",
			obj:     &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "TCPRoute", Namespace: "default", Name: "db", Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"TCPRoute","metadata":{"name":"db"}}`)},
			wantErr: "kind TCPRoute.gateway.networking.k8s.io is not supported by fedgate",
		},
		{
			name:    "body names another object",
			obj:     &fedgatepb.Object{ApiVersion: route.ApiVersion, Kind: route.Kind, Namespace: "default", Name: "other", Json: route.Json},
			wantErr: "the name of the object (color) does not match the name on the URL (other)",
		},
		{
			name:    "not JSON",
			obj:     withJSON(route, "{"),
			wantErr: `HTTPRoute "default/color": body is not a JSON object`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.obj)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func withJSON(o *fedgatepb.Object, js string) *fedgatepb.Object {
	return &fedgatepb.Object{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, Json: []byte(js)}
}

// Defaults are applied as an API server applies them, before the CEL rules that depend on them, and are kept in the
// normalized object.
func TestNormalizeAppliesDefaults(t *testing.T) {
	r := canaryRoute()
	r.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To("/")}}}
	out, err := Normalize(toObject(t, r))
	if err != nil {
		t.Fatal(err)
	}
	var got gatewayv1.HTTPRoute
	if err := json.Unmarshal(out.Json, &got); err != nil {
		t.Fatal(err)
	}
	ref := got.Spec.Rules[0].BackendRefs[0]
	if ref.Group == nil || *ref.Group != "" || ref.Kind == nil || *ref.Kind != "Service" {
		t.Errorf("backendRef group/kind not defaulted: %+v", ref.BackendObjectReference)
	}
	if pt := got.Spec.Rules[0].Matches[0].Path.Type; pt == nil || *pt != gatewayv1.PathMatchPathPrefix {
		t.Errorf("path type not defaulted to PathPrefix: %v", pt)
	}
	if pr := got.Spec.ParentRefs[0]; pr.Kind == nil || *pr.Kind != "Gateway" {
		t.Errorf("parentRef kind not defaulted: %+v", pr)
	}
}

// Validators are built lazily under sync.Once; concurrent first use (several Applies at hub start) must be safe.
func TestConcurrentFirstUse(t *testing.T) {
	objs := []*fedgatepb.Object{toObject(t, canaryRoute()), toObject(t, baseGateway())}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(o *fedgatepb.Object) {
			defer wg.Done()
			errs <- Validate(o)
		}(objs[i%len(objs)])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkValidateHTTPRoute(b *testing.B) {
	o := toObject(b, canaryRoute())
	if err := Validate(o); err != nil { // builds the validators outside the timed loop
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(o); err != nil {
			b.Fatal(err)
		}
	}
}

// The wire namespace fills an empty body namespace, as the request URL does on an API server, and cluster-scoped
// kinds lose theirs.
func TestNamespaceFromEnvelope(t *testing.T) {
	route := &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: "shop", Name: "api",
		Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"api"},"spec":{}}`)}
	out, err := Normalize(route)
	if err != nil {
		t.Fatal(err)
	}
	var got metav1.PartialObjectMetadata
	if err := json.Unmarshal(out.Json, &got); err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "shop" {
		t.Errorf("namespace = %q, want shop", got.Namespace)
	}

	class := &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "GatewayClass", Name: "fedgate",
		Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GatewayClass","metadata":{"name":"fedgate","namespace":""},"spec":{"controllerName":"fedgate.io/gateway-controller"}}`)}
	if out, err = Normalize(class); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out.Json), `"namespace"`) {
		t.Errorf("cluster-scoped object kept a namespace: %s", out.Json)
	}
}

// wantValidation asserts err is nil when want is empty, else that it carries every wanted message.
func wantValidation(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Validate() = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Validate() = nil, want errors %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

// TestSecret: only kubernetes.io/tls Secrets are carried; another type is refused naming the object and field type,
// and a TLS Secret needs both keys (data or stringData), as the API server requires. No message quotes the data.
func TestSecret(t *testing.T) {
	secret := func(typ corev1.SecretType, data, stringData map[string]string) *fedgatepb.Object {
		s := &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: "cert", Namespace: "infra"},
			Type:       typ, StringData: stringData,
		}
		for k, v := range data {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[k] = []byte(v)
		}
		return toObject(t, s)
	}
	both := map[string]string{"tls.crt": "CERT", "tls.key": "SECRET-KEY-BYTES"}
	if err := Validate(secret(corev1.SecretTypeTLS, both, nil)); err != nil {
		t.Errorf("TLS Secret: %v", err)
	}
	if err := Validate(secret(corev1.SecretTypeTLS, map[string]string{"tls.crt": "CERT"}, map[string]string{"tls.key": "SECRET-KEY-BYTES"})); err != nil {
		t.Errorf("TLS Secret with stringData: %v", err)
	}
	err := Validate(secret(corev1.SecretTypeOpaque, both, nil))
	if err == nil || !strings.Contains(err.Error(), `Secret "infra/cert"`) || strings.Contains(err.Error(), "SECRET-KEY-BYTES") {
		t.Fatalf("Opaque Secret: %v", err)
	}
	if diff := cmp.Diff([]string{`type: Unsupported value: "Opaque": supported values: "kubernetes.io/tls"`}, invalidMessages(t, err)); diff != "" {
		t.Errorf("Opaque (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"data[tls.key]: Required value"}, invalidMessages(t, Validate(secret(corev1.SecretTypeTLS, map[string]string{"tls.crt": "CERT"}, nil)))); diff != "" {
		t.Errorf("missing tls.key (-want +got):\n%s", diff)
	}
}

// TestConfigMap: a ConfigMap (a CA bundle of spec.tls.frontend caCertificateRefs) is accepted with data[ca.crt]; one
// without it is refused naming the object and the field.
func TestConfigMap(t *testing.T) {
	cm := func(data map[string]string) *fedgatepb.Object {
		return toObject(t, &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: "client-ca", Namespace: "infra"},
			Data:       data,
		})
	}
	if err := Validate(cm(map[string]string{"ca.crt": "-----BEGIN CERTIFICATE-----\n"})); err != nil {
		t.Errorf("ConfigMap with ca.crt: %v", err)
	}
	err := Validate(cm(map[string]string{"other": "x"}))
	if err == nil || !strings.Contains(err.Error(), `ConfigMap "infra/client-ca"`) {
		t.Fatalf("ConfigMap without ca.crt: %v", err)
	}
	msgs := invalidMessages(t, err)
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0], "data[ca.crt]: Required value") {
		t.Errorf("messages %q, want data[ca.crt]: Required value", msgs)
	}
}

// A TLS Secret larger than MaxTLSSecretBytes is refused naming field data (its data would be copied into the
// projection of every cluster serving it), and the message quotes none of it.
func TestSecretTooLarge(t *testing.T) {
	big := strings.Repeat("K", MaxTLSSecretBytes)
	s := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "huge", Namespace: "infra"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": []byte("CERT"), "tls.key": []byte(big)},
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(&fedgatepb.Object{ApiVersion: "v1", Kind: "Secret", Namespace: "infra", Name: "huge", Json: js})
	if err == nil || !strings.Contains(err.Error(), `Secret "infra/huge"`) || !strings.Contains(err.Error(), "data: Too long") || strings.Contains(err.Error(), "KKKK") {
		t.Fatalf("oversized Secret: %v", err)
	}
}

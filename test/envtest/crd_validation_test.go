package envtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
)

// clusters are shared by every test of the package: starting an API server costs seconds.
var clusters []*Cluster

func TestMain(m *testing.M) {
	cs, stop, err := Launch(Options{}, "one", "two")
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	clusters = cs
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
	}
	os.Exit(code)
}

// Each API server is its own cluster: what is created in one is absent from the other, and both serve the CRDs.
func TestClustersAreIndependent(t *testing.T) {
	ctx := context.Background()
	one, two := clusters[0], clusters[1]
	if one.Config.Host == two.Config.Host {
		t.Fatalf("both clusters at %s", one.Config.Host)
	}
	ns := one.Namespace(t)
	if err := two.Client.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace %s of cluster one seen in cluster two: err=%v", ns, err)
	}
	for _, c := range clusters {
		for _, list := range []client.ObjectList{&gatewayv1.HTTPRouteList{}, &gatewayv1.GatewayList{}, &mcsv1a1.ServiceExportList{}} {
			if err := c.Client.List(ctx, list); err != nil {
				t.Errorf("cluster %s: listing %T: %v", c.Name, list, err)
			}
		}
	}
}

// The Gateway API bundle version is what conformance and the GatewayClass SupportedVersion condition rely on.
func TestCRDBundleVersion(t *testing.T) {
	u := &metav1.PartialObjectMetadata{}
	u.APIVersion, u.Kind = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
	if err := clusters[0].Client.Get(context.Background(), client.ObjectKey{Name: "httproutes.gateway.networking.k8s.io"}, u); err != nil {
		t.Fatal(err)
	}
	if got := u.Annotations["gateway.networking.k8s.io/bundle-version"]; got != "v1.6.3" {
		t.Errorf("bundle-version = %q, want v1.6.3", got)
	}
	if got := u.Annotations["gateway.networking.k8s.io/channel"]; got != "experimental" {
		t.Errorf("channel = %q, want experimental", got)
	}
}

func validRoute(ns string) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "route-"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"color.example.com"},
			Rules: []gatewayv1.HTTPRouteRule{{
				Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{
					Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/color"),
				}}},
				BackendRefs: []gatewayv1.HTTPBackendRef{
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](90)}},
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "color2", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](10)}},
				},
			}},
		},
	}
}

// The API server, not fedgate, rejects these HTTPRoutes: fedgate's compiler relies on the CRD's schema and CEL rules
// for them, so a CRD upgrade that dropped one would go unnoticed without this test.
func TestHTTPRouteValidation(t *testing.T) {
	c := clusters[0]
	ns := c.Namespace(t)
	redirect := gatewayv1.HTTPRouteFilter{
		Type:            gatewayv1.HTTPRouteFilterRequestRedirect,
		RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{Scheme: ptr.To("https")},
	}
	tests := []struct {
		name       string
		mutate     func(r *gatewayv1.HTTPRoute)
		wantErrors []string // substrings of the API server's message; none = must be accepted
	}{
		{name: "valid", mutate: func(*gatewayv1.HTTPRoute) {}},
		{
			name:       "relative path prefix",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].Matches[0].Path.Value = ptr.To("color") },
			wantErrors: []string{"value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"},
		},
		{
			name: "relative exact path",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Matches[0].Path = &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchExact), Value: ptr.To("color/x")}
			},
			wantErrors: []string{"must be an absolute path"},
		},
		{
			name:       "negative weight",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].BackendRefs[1].Weight = ptr.To[int32](-1) },
			wantErrors: []string{"spec.rules[0].backendRefs[1].weight", "should be greater than or equal to 0"},
		},
		{
			name:       "weight above the maximum",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To[int32](1000001) },
			wantErrors: []string{"spec.rules[0].backendRefs[0].weight", "should be less than or equal to 1000000"},
		},
		{
			name:       "redirect with backendRefs",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{redirect} },
			wantErrors: []string{"RequestRedirect filter must not be used together with backendRefs"},
		},
		{
			name: "redirect without backendRefs",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{redirect}
				r.Spec.Rules[0].BackendRefs = nil
			},
		},
		{
			name: "redirect and rewrite together",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].BackendRefs = nil
				r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{redirect, {
					Type:       gatewayv1.HTTPRouteFilterURLRewrite,
					URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Hostname: ptr.To[gatewayv1.PreciseHostname]("x.example.com")},
				}}
			},
			wantErrors: []string{"May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both"},
		},
		{
			name: "ReplacePrefixMatch without a PathPrefix match",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Matches[0].Path.Type = ptr.To(gatewayv1.PathMatchExact)
				r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{
					Type: gatewayv1.HTTPRouteFilterURLRewrite,
					URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Path: &gatewayv1.HTTPPathModifier{
						Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/"),
					}},
				}}
			},
			wantErrors: []string{"When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified"},
		},
		{
			name:       "wildcard in the middle of a hostname",
			mutate:     func(r *gatewayv1.HTTPRoute) { r.Spec.Hostnames = []gatewayv1.Hostname{"color.*.example.com"} },
			wantErrors: []string{"spec.hostnames[0]"},
		},
		{
			name: "retry code outside 400-599",
			mutate: func(r *gatewayv1.HTTPRoute) {
				r.Spec.Rules[0].Retry = &gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{302}}
			},
			wantErrors: []string{"spec.rules[0].retry.codes[0]", "should be greater than or equal to 400"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := validRoute(ns)
			tc.mutate(r)
			err := c.Client.Create(context.Background(), r)
			if len(tc.wantErrors) == 0 {
				if err != nil {
					t.Fatalf("valid route rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("route accepted, want an error containing %q", tc.wantErrors)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("error is not Invalid: %v", err)
			}
			for _, want := range tc.wantErrors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
		})
	}
}

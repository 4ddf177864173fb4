// Package resources knows the Kubernetes kinds fedgate carries between clusters and the hub: how to read them from
// YAML, how to name them, and how to turn them into their typed Go structs. Shared by hub and spoke; holds no state.
package resources

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/backendlb"
	"github.com/fedgate/fedgate/apis/fedgatepb"
)

// Kind names used across fedgate.
const (
	KindGatewayClass   = "GatewayClass"
	KindGateway        = "Gateway"
	KindHTTPRoute      = "HTTPRoute"
	KindGRPCRoute      = "GRPCRoute"
	KindReferenceGrant = "ReferenceGrant"
	KindService        = "Service"
	KindEndpointSlice  = "EndpointSlice"
	KindServiceExport  = "ServiceExport"
	// KindNamespace is reported by clusters (metadata only) for allowedRoutes.namespaces.from: Selector.
	KindNamespace = "Namespace"
	// KindXBackendTrafficPolicy is gateway.networking.x-k8s.io/v1alpha1 (session persistence, retry budgets).
	KindXBackendTrafficPolicy = "XBackendTrafficPolicy"
	// KindBackendLBPolicy is Gateway API v1.1's gateway.networking.k8s.io/v1alpha2 session persistence policy.
	KindBackendLBPolicy = backendlb.Kind
	// KindBackendTLSPolicy is gateway.networking.k8s.io/v1 (v1.1's v1alpha3 is stored as v1): TLS from the spoke that
	// owns an endpoint to the backend.
	KindBackendTLSPolicy = "BackendTLSPolicy"
)

// Kinds lists every kind fedgate accepts, with its group. The order is the order in which `hubctl get` lists them.
var Kinds = []schema.GroupKind{
	{Group: gatewayv1.GroupName, Kind: KindGatewayClass},
	{Group: gatewayv1.GroupName, Kind: KindGateway},
	{Group: gatewayv1.GroupName, Kind: KindHTTPRoute},
	{Group: gatewayv1.GroupName, Kind: KindGRPCRoute},
	{Group: gatewayv1.GroupName, Kind: KindReferenceGrant},
	{Group: "", Kind: KindService},
	{Group: discoveryv1.GroupName, Kind: KindEndpointSlice},
	{Group: mcsv1a1.GroupName, Kind: KindServiceExport},
	{Group: gatewayxv1a1.GroupName, Kind: KindXBackendTrafficPolicy},
	{Group: backendlb.GroupName, Kind: KindBackendLBPolicy},
	{Group: gatewayv1.GroupName, Kind: KindBackendTLSPolicy},
	{Group: "", Kind: KindNamespace},
	{Group: "", Kind: KindSecret},
	{Group: "", Kind: KindConfigMap},
}

// Namespaced reports whether a kind is namespaced (all but GatewayClass and Namespace).
func Namespaced(kind string) bool { return kind != KindGatewayClass && kind != KindNamespace }

// Scheme knows every Go type behind Kinds.
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, gatewayv1.Install, gatewayv1beta1.Install, mcsv1a1.AddToScheme,
		gatewayxv1a1.Install, backendlb.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// upgrades are older versions of a kind whose schema is that of a version fedgate serves: objects written for them
// (users copy YAML from older release notes) are accepted and stored as the newer version, with a warning (Upgrade).
var upgrades = map[schema.GroupVersionKind]struct {
	to  string // the version stored
	why string
}{
	{Group: gatewayv1.GroupName, Version: "v1alpha2", Kind: KindGRPCRoute}: {to: "v1",
		why: "GRPCRoute v1alpha2, served beside v1 by Gateway API v1.1's experimental channel, has v1's schema"},
	// v1.1's v1alpha3 had targetRefs (with sectionName), validation.caCertificateRefs, .wellKnownCACertificates and
	// .hostname, each with v1's JSON name and shape; v1 only added fields (subjectAltNames, options).
	{Group: gatewayv1.GroupName, Version: "v1alpha3", Kind: KindBackendTLSPolicy}: {to: "v1",
		why: "BackendTLSPolicy v1alpha3, Gateway API v1.1's version, has v1's schema for the fields it had"},
}

// Upgrade stores o, written for an older version of its kind whose schema is that of a version fedgate serves, as
// that version: it rewrites o's apiVersion (and the one in o.Json) and returns a warning saying so. A Gateway written
// in Gateway API v1.1's shape for client-certificate validation is rewritten to today's (upgradeGatewayV11). Other
// objects are left alone ("").
func Upgrade(o *fedgatepb.Object) (string, error) {
	gv, err := schema.ParseGroupVersion(o.ApiVersion)
	if err != nil {
		return "", nil // Validate reports it
	}
	if gv.Group == gatewayv1.GroupName && o.Kind == KindGateway {
		return upgradeGatewayV11(o)
	}
	up, ok := upgrades[gv.WithKind(o.Kind)]
	if !ok {
		return "", nil
	}
	to := schema.GroupVersion{Group: gv.Group, Version: up.to}.String()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(o.Json); err != nil {
		return "", fmt.Errorf("%s: %w", Describe(o.Kind, o.Namespace, o.Name), err)
	}
	u.SetAPIVersion(to)
	js, err := u.MarshalJSON()
	if err != nil {
		return "", err
	}
	from := o.ApiVersion
	o.ApiVersion, o.Json = to, js
	return fmt.Sprintf("%s: %s is stored as %s (%s)", Describe(o.Kind, o.Namespace, o.Name), from, to, up.why), nil
}

// servedVersions lists the apiVersions fedgate serves kind in (group/version), for errors about others; none for a
// kind fedgate does not carry.
func servedVersions(group, kind string) []string {
	if !slices.Contains(Kinds, schema.GroupKind{Group: group, Kind: kind}) {
		return nil
	}
	var out []string
	for gvk := range Scheme.AllKnownTypes() {
		if gvk.Group == group && gvk.Kind == kind {
			out = append(out, gvk.GroupVersion().String())
		}
	}
	sort.Strings(out)
	return out
}

// Known reports whether apiVersion/kind is carried by fedgate: a version it serves, or one Upgrade stores as such.
func Known(apiVersion, kind string) bool {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return false
	}
	for _, gk := range Kinds {
		if gk.Group == gv.Group && gk.Kind == kind {
			_, up := upgrades[gv.WithKind(kind)]
			return up || Scheme.Recognizes(gv.WithKind(kind))
		}
	}
	return false
}

// ID names an object: "Kind/namespace/name" ("Kind/name" for cluster-scoped kinds).
func ID(kind, namespace, name string) string {
	if !Namespaced(kind) {
		return kind + "/" + name
	}
	return kind + "/" + namespace + "/" + name
}

// Describe names an object for error messages: `HTTPRoute "default/color"`.
func Describe(kind, namespace, name string) string {
	if namespace == "" {
		return fmt.Sprintf("%s %q", kind, name)
	}
	return fmt.Sprintf("%s %q", kind, namespace+"/"+name)
}

// DecodeYAML reads a multi-document YAML (or JSON) stream into objects. Empty documents are skipped; a List kind is
// expanded. Namespaced objects without a namespace get defaultNamespace. Unknown kinds are an error naming the
// document.
func DecodeYAML(r io.Reader, source, defaultNamespace string) ([]*fedgatepb.Object, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []*fedgatepb.Object
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		if string(js) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
			}
			for i := range list.Items {
				o, err := FromUnstructured(&list.Items[i], defaultNamespace)
				if err != nil {
					return nil, fmt.Errorf("%s: document %d item %d: %w", source, doc, i, err)
				}
				out = append(out, o)
			}
			continue
		}
		o, err := FromUnstructured(u, defaultNamespace)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// FromUnstructured converts an unstructured object into a wire Object, checking kind and name.
func FromUnstructured(u *unstructured.Unstructured, defaultNamespace string) (*fedgatepb.Object, error) {
	kind, apiVersion := u.GetKind(), u.GetAPIVersion()
	if kind == "" || apiVersion == "" {
		return nil, errors.New("apiVersion and kind must be set")
	}
	if !Known(apiVersion, kind) {
		gv, _ := schema.ParseGroupVersion(apiVersion)
		if served := servedVersions(gv.Group, kind); len(served) > 0 {
			return nil, fmt.Errorf("%s %q: apiVersion %s is not served by fedgate: %s is served as %s", kind, u.GetName(), apiVersion, kind, strings.Join(served, ", "))
		}
		return nil, fmt.Errorf("%s %q: kind %s is not supported by fedgate", apiVersion, u.GetName(), kind)
	}
	if u.GetName() == "" {
		return nil, fmt.Errorf("%s: metadata.name: Required value", kind)
	}
	if Namespaced(kind) {
		if u.GetNamespace() == "" {
			ns := defaultNamespace
			if ns == "" {
				ns = "default"
			}
			u.SetNamespace(ns)
		}
	} else {
		u.SetNamespace("")
	}
	unstructured.RemoveNestedField(u.Object, "status")
	js, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return &fedgatepb.Object{ApiVersion: apiVersion, Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName(), Json: js}, nil
}

// Typed decodes a wire Object into its Go type (for example *gatewayv1.HTTPRoute). ReferenceGrants of either served
// version decode to *gatewayv1beta1.ReferenceGrant, and an older version Upgrade knows to the version it is stored as.
func Typed(o *fedgatepb.Object) (runtime.Object, error) {
	gv, err := schema.ParseGroupVersion(o.ApiVersion)
	if err != nil {
		return nil, fmt.Errorf("%s: apiVersion: %w", Describe(o.Kind, o.Namespace, o.Name), err)
	}
	gvk := gv.WithKind(o.Kind)
	if o.Kind == KindReferenceGrant {
		gvk = gatewayv1beta1.SchemeGroupVersion.WithKind(o.Kind)
	}
	if up, ok := upgrades[gvk]; ok {
		gvk.Version = up.to
	}
	obj, err := Scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Describe(o.Kind, o.Namespace, o.Name), err)
	}
	if err := yaml.UnmarshalStrict(o.Json, obj); err != nil {
		// Strict first, so typos in field names are reported; fall back to lenient for fields newer than our types.
		if err2 := yaml.Unmarshal(o.Json, obj); err2 != nil {
			return nil, fmt.Errorf("%s: %w", Describe(o.Kind, o.Namespace, o.Name), err2)
		}
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return obj, nil
}

// SortObjects orders objects by kind (in Kinds order), namespace and name.
func SortObjects(objs []*fedgatepb.Object) {
	rank := map[string]int{}
	for i, gk := range Kinds {
		rank[gk.Kind] = i
	}
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if rank[a.Kind] != rank[b.Kind] {
			return rank[a.Kind] < rank[b.Kind]
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

// KindFor resolves a user's word for a kind ("routes", "httproute", "gw") to kind names.
func KindFor(word string) ([]string, bool) {
	switch strings.ToLower(word) {
	case "gatewayclass", "gatewayclasses", "gc":
		return []string{KindGatewayClass}, true
	case "gateway", "gateways", "gw":
		return []string{KindGateway}, true
	case "httproute", "httproutes":
		return []string{KindHTTPRoute}, true
	case "grpcroute", "grpcroutes":
		return []string{KindGRPCRoute}, true
	case "route", "routes":
		return []string{KindHTTPRoute, KindGRPCRoute}, true
	case "referencegrant", "referencegrants", "refgrant":
		return []string{KindReferenceGrant}, true
	case "service", "services", "svc":
		return []string{KindService}, true
	case "endpointslice", "endpointslices":
		return []string{KindEndpointSlice}, true
	case "serviceexport", "serviceexports":
		return []string{KindServiceExport}, true
	case "xbackendtrafficpolicy", "xbackendtrafficpolicies", "backendtrafficpolicy", "backendtrafficpolicies", "xbtp", "btp":
		return []string{KindXBackendTrafficPolicy}, true
	case "backendlbpolicy", "backendlbpolicies", "blbpolicy":
		return []string{KindBackendLBPolicy}, true
	case "backendtlspolicy", "backendtlspolicies", "btlspolicy":
		return []string{KindBackendTLSPolicy}, true
	case "namespace", "namespaces", "ns":
		return []string{KindNamespace}, true
	case "secret", "secrets":
		return []string{KindSecret}, true
	case "configmap", "configmaps", "cm":
		return []string{KindConfigMap}, true
	case "policy", "policies":
		return []string{KindXBackendTrafficPolicy, KindBackendLBPolicy, KindBackendTLSPolicy}, true
	}
	return nil, false
}

package compiler

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/backendlb"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Output is what Compile produces.
type Output struct {
	Graph    *Graph         `json:"graph"`
	Statuses []ObjectStatus `json:"statuses,omitempty"`
}

// Compile builds the global routing graph and every object's status from one snapshot of inputs.
//
// The work is a fixed sequence of passes over one compiler value, each filling part of the graph and of the status
// cache (in the manner of Contour's DAG processors): classes → gateway instances and listeners → backend policies →
// ServiceExports (which clusters export what, merged into ServiceImports) → routes (attachment, rules, backends) → ports and virtual hosts sorted by precedence → backends. Compile never fails: whatever is wrong
// with an object becomes a condition on that object's status, and it never takes down an unrelated object.
func Compile(in *Inputs) *Output {
	if in == nil {
		in = &Inputs{}
	}
	c := newCompiler(in)
	c.processClasses()
	c.processGateways()
	c.processPolicies()
	c.processBackendTLSPolicies()
	c.processExports()
	c.processRoutes()
	g := c.buildGraph()
	c.backendTLSStatuses()
	out := &Output{Graph: g, Statuses: c.status.list()}
	g.Statuses = out.Statuses
	return out
}

// compiler holds the indexes and intermediate state of one Compile call. Nothing in it outlives the call.
type compiler struct {
	in *Inputs
	// clusters: sorted names of Inputs.Clusters.
	clusters []string
	// hub and reports hold de-duplicated, sorted views of the inputs (hub objects, then each cluster's).
	hub     *view
	reports map[string]*view

	// classes[cluster][name]: our GatewayClasses in scope in each cluster (cluster-reported shadow hub-applied).
	classes map[string]map[string]*gatewayv1.GatewayClass
	// gateways[cluster]: instances in the cluster; gatewayIndex[cluster]["ns/name"] looks them up for parentRefs.
	gateways     map[string][]*gatewayInstance
	gatewayIndex map[string]map[string]*gatewayInstance
	// attachments[cluster]: route matches attached to each cluster's listeners, before sorting.
	attachments map[string][]*attachment
	// backends referenced by attached routes, by ID.
	backends    map[string]*BackendNode
	backendKeys map[string]backendKey
	// exported["ns/name"][cluster]: the cluster has a valid ServiceExport of the Service (see processExports).
	exported map[string]map[string]bool
	// serviceImports: the merged exports, sorted by namespace/name.
	serviceImports []spokeconfig.ServiceImport
	// policies: the backend policies that won their Services, hub-wide and per cluster (see processPolicies).
	policies *policyResult
	// backendTLS: the BackendTLSPolicies and their winners per Service port (see backendtls.go).
	backendTLS *backendTLSResult
	// tlsChecks: resources.CheckTLSSecret of each hub Secret a listener names, judged once per compile.
	tlsChecks map[*corev1.Secret]error
	// caChecks: resources.CheckCABundle of each ConfigMap a Gateway's caCertificateRefs name, judged once per compile.
	caChecks map[*corev1.ConfigMap]error

	status *statusCache
}

// view is one source's objects (the hub's or a cluster's), with nil entries and duplicate names dropped and indexes for
// the lookups routes need.
type view struct {
	cluster string
	res     Resources
	// services["ns/name"], slices["ns/service-name"] (EndpointSlices by their kubernetes.io/service-name label).
	services map[string]*corev1.Service
	slices   map[string][]*discoveryv1.EndpointSlice
	// grants[namespace]: ReferenceGrants in that namespace.
	grants map[string][]*gatewayv1beta1.ReferenceGrant
	// secrets["ns/name"]: TLS Secrets (certificateRefs).
	secrets map[string]*corev1.Secret
	// configMaps["ns/name"]: CA bundles (caCertificateRefs).
	configMaps map[string]*corev1.ConfigMap
}

func newCompiler(in *Inputs) *compiler {
	c := &compiler{
		in:           in,
		reports:      map[string]*view{},
		classes:      map[string]map[string]*gatewayv1.GatewayClass{},
		gateways:     map[string][]*gatewayInstance{},
		gatewayIndex: map[string]map[string]*gatewayInstance{},
		attachments:  map[string][]*attachment{},
		backends:     map[string]*BackendNode{},
		backendKeys:  map[string]backendKey{},
		exported:     map[string]map[string]bool{},
		tlsChecks:    map[*corev1.Secret]error{},
		caChecks:     map[*corev1.ConfigMap]error{},
		status:       newStatusCache(),
	}
	c.hub = newView("", &in.Hub)
	for name, ci := range in.Clusters {
		if name == "" {
			continue // the empty name means "applied at the hub" everywhere in fedgate; no cluster can have it
		}
		if ci == nil {
			ci = &ClusterInputs{}
		}
		c.clusters = append(c.clusters, name)
		c.reports[name] = newView(name, &ci.Resources)
	}
	sort.Strings(c.clusters)
	return c
}

// newView copies the object lists (not the objects: the compiler never mutates its inputs), drops nil entries and
// keeps the first object of each namespace/name so that duplicated input cannot produce duplicated status.
func newView(cluster string, r *Resources) *view {
	v := &view{
		cluster:    cluster,
		services:   map[string]*corev1.Service{},
		slices:     map[string][]*discoveryv1.EndpointSlice{},
		grants:     map[string][]*gatewayv1beta1.ReferenceGrant{},
		secrets:    map[string]*corev1.Secret{},
		configMaps: map[string]*corev1.ConfigMap{},
	}
	v.res.GatewayClasses = dedupe(r.GatewayClasses, func(o *gatewayv1.GatewayClass) (string, string) { return "", o.Name })
	v.res.Gateways = dedupe(r.Gateways, func(o *gatewayv1.Gateway) (string, string) { return o.Namespace, o.Name })
	v.res.HTTPRoutes = dedupe(r.HTTPRoutes, func(o *gatewayv1.HTTPRoute) (string, string) { return o.Namespace, o.Name })
	v.res.GRPCRoutes = dedupe(r.GRPCRoutes, func(o *gatewayv1.GRPCRoute) (string, string) { return o.Namespace, o.Name })
	v.res.ReferenceGrants = dedupe(r.ReferenceGrants, func(o *gatewayv1beta1.ReferenceGrant) (string, string) { return o.Namespace, o.Name })
	v.res.Services = dedupe(r.Services, func(o *corev1.Service) (string, string) { return o.Namespace, o.Name })
	v.res.EndpointSlices = dedupe(r.EndpointSlices, func(o *discoveryv1.EndpointSlice) (string, string) { return o.Namespace, o.Name })
	v.res.Namespaces = dedupe(r.Namespaces, func(o *corev1.Namespace) (string, string) { return "", o.Name })
	v.res.ServiceExports = dedupe(r.ServiceExports, func(o *mcsv1a1.ServiceExport) (string, string) { return o.Namespace, o.Name })
	v.res.XBackendTrafficPolicies = dedupe(r.XBackendTrafficPolicies, func(o *gatewayxv1a1.XBackendTrafficPolicy) (string, string) { return o.Namespace, o.Name })
	v.res.BackendLBPolicies = dedupe(r.BackendLBPolicies, func(o *backendlb.BackendLBPolicy) (string, string) { return o.Namespace, o.Name })
	v.res.BackendTLSPolicies = dedupe(r.BackendTLSPolicies, func(o *gatewayv1.BackendTLSPolicy) (string, string) { return o.Namespace, o.Name })
	v.res.Secrets = dedupe(r.Secrets, func(o *corev1.Secret) (string, string) { return o.Namespace, o.Name })
	for _, s := range v.res.Secrets {
		v.secrets[s.Namespace+"/"+s.Name] = s
	}
	v.res.ConfigMaps = dedupe(r.ConfigMaps, func(o *corev1.ConfigMap) (string, string) { return o.Namespace, o.Name })
	for _, cm := range v.res.ConfigMaps {
		v.configMaps[cm.Namespace+"/"+cm.Name] = cm
	}
	for _, s := range v.res.Services {
		v.services[s.Namespace+"/"+s.Name] = s
	}
	for _, es := range v.res.EndpointSlices {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := es.Namespace + "/" + svc
		v.slices[key] = append(v.slices[key], es)
	}
	for _, g := range v.res.ReferenceGrants {
		v.grants[g.Namespace] = append(v.grants[g.Namespace], g)
	}
	return v
}

func dedupe[T any](in []*T, key func(*T) (string, string)) []*T {
	out := make([]*T, 0, len(in))
	for _, o := range in {
		if o != nil {
			out = append(out, o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		ni, ai := key(out[i])
		nj, aj := key(out[j])
		if ni != nj {
			return ni < nj
		}
		return ai < aj
	})
	kept := out[:0]
	for i, o := range out {
		if i > 0 {
			pn, pa := key(kept[len(kept)-1])
			if n, a := key(o); n == pn && a == pa {
				continue
			}
		}
		kept = append(kept, o)
	}
	return kept
}

// viewsFor returns the views whose objects are in scope in a cluster: the hub's and the cluster's own.
func (c *compiler) viewsFor(cluster string) []*view {
	vs := []*view{c.hub}
	if v, ok := c.reports[cluster]; ok {
		vs = append(vs, v)
	}
	return vs
}

// AddObject decodes a wire object into its typed form and appends it to r. Unknown kinds are an error.
func (r *Resources) AddObject(o *fedgatepb.Object) error {
	if o == nil {
		return fmt.Errorf("nil object")
	}
	obj, err := resources.Typed(o)
	if err != nil {
		return err
	}
	switch t := obj.(type) {
	case *gatewayv1.GatewayClass:
		r.GatewayClasses = append(r.GatewayClasses, t)
	case *gatewayv1.Gateway:
		r.Gateways = append(r.Gateways, t)
	case *gatewayv1.HTTPRoute:
		r.HTTPRoutes = append(r.HTTPRoutes, t)
	case *gatewayv1.GRPCRoute:
		r.GRPCRoutes = append(r.GRPCRoutes, t)
	case *gatewayv1beta1.ReferenceGrant:
		r.ReferenceGrants = append(r.ReferenceGrants, t)
	case *corev1.Service:
		r.Services = append(r.Services, t)
	case *discoveryv1.EndpointSlice:
		r.EndpointSlices = append(r.EndpointSlices, t)
	case *corev1.Namespace:
		r.Namespaces = append(r.Namespaces, t)
	case *mcsv1a1.ServiceExport:
		r.ServiceExports = append(r.ServiceExports, t)
	case *gatewayxv1a1.XBackendTrafficPolicy:
		r.XBackendTrafficPolicies = append(r.XBackendTrafficPolicies, t)
	case *backendlb.BackendLBPolicy:
		r.BackendLBPolicies = append(r.BackendLBPolicies, t)
	case *gatewayv1.BackendTLSPolicy:
		r.BackendTLSPolicies = append(r.BackendTLSPolicies, t)
	case *corev1.Secret:
		r.Secrets = append(r.Secrets, t)
	case *corev1.ConfigMap:
		r.ConfigMaps = append(r.ConfigMaps, t)
	default:
		return fmt.Errorf("%s: kind %s is not a compiler input", resources.Describe(o.Kind, o.Namespace, o.Name), o.Kind)
	}
	return nil
}

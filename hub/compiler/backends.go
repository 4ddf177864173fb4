package compiler

import (
	"fmt"
	"net"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// backendRefSpec is one backendRef of a rule, from either route kind.
type backendRefSpec struct {
	ref     gatewayv1.BackendObjectReference
	weight  *int32
	filters int // per-backendRef filters, which fedgate does not apply yet
}

// backendProblem is why a reference did not resolve: a ResolvedRefs reason and a message naming the field.
type backendProblem struct {
	reason  gatewayv1.RouteConditionReason
	message string
}

const kindServiceImport = "ServiceImport"

// resolveBackend resolves one backendRef of a route instance in cluster, by the MCS API's reachability (see mcs.go):
// kind Service reaches the cluster's own Service and every other cluster's exported one; kind ServiceImport reaches
// exactly the exporting clusters. An unresolvable reference becomes an Invalid backend — its share of traffic answers
// 500 — and never removes the rest of the rule.
//
// Only cluster-reported Services count: the hub runs no workloads, so a Service applied at the hub would have no
// endpoints anywhere, and letting it satisfy the lookup would turn a clear BackendNotFound into silent 503s.
func (c *compiler) resolveBackend(ro *routeObj, cluster string, br backendRefSpec) (spokeconfig.WeightedBackend, *backendProblem) {
	wb := spokeconfig.WeightedBackend{Weight: weightOf(br)}
	invalid := func(reason gatewayv1.RouteConditionReason, format string, args ...any) (spokeconfig.WeightedBackend, *backendProblem) {
		msg := fmt.Sprintf(format, args...)
		wb.Invalid, wb.Reason = true, msg
		return wb, &backendProblem{reason: reason, message: msg}
	}
	group, kind := "", resources.KindService
	if br.ref.Group != nil {
		group = string(*br.ref.Group)
	}
	if br.ref.Kind != nil {
		kind = string(*br.ref.Kind)
	}
	ns := ro.meta.Namespace
	if br.ref.Namespace != nil {
		ns = string(*br.ref.Namespace)
	}
	name := string(br.ref.Name)
	imported := false
	switch {
	case group == "" && kind == resources.KindService:
	case group == mcsv1a1.GroupName && kind == kindServiceImport:
		imported = true
	default:
		return invalid(gatewayv1.RouteReasonInvalidKind, "%s/%s %q: unsupported backend kind (Service or %s/%s)", group, kind, name, mcsv1a1.GroupName, kindServiceImport)
	}
	if ns != ro.meta.Namespace && !c.granted(cluster, ro.kind, ro.meta.Namespace, group, kind, ns, name) {
		return invalid(gatewayv1.RouteReasonRefNotPermitted, "%s %s/%s: no ReferenceGrant in namespace %q allows %s from namespace %q",
			kind, ns, name, ns, ro.kind, ro.meta.Namespace)
	}
	if br.ref.Port == nil {
		return invalid(gatewayv1.RouteReasonBackendNotFound, "%s %s/%s: port is required", kind, ns, name)
	}
	port := *br.ref.Port
	found, hasPort := false, false
	for _, cl := range c.reachedClusters(cluster, ns, name, imported) {
		found = true
		hasPort = hasPort || servicePort(c.reports[cl].services[ns+"/"+name], port) != nil
	}
	switch {
	case !found && imported:
		return invalid(gatewayv1.RouteReasonBackendNotFound, "ServiceImport %s/%s: no cluster exports Service %s/%s", ns, name, ns, name)
	case !found:
		return invalid(gatewayv1.RouteReasonBackendNotFound, "Service %s/%s not found in cluster %q nor exported by any other cluster", ns, name, cluster)
	case !hasPort:
		return invalid(gatewayv1.RouteReasonBackendNotFound, "%s %s/%s has no port %d in any cluster it reaches", kind, ns, name, port)
	}
	if tp := c.checkBackendTLS(ro, cluster, ns, name, c.servicePortName(ns, name, port, c.clusters)); tp != nil {
		// Fail closed: the BackendTLSPolicy's status says why; the route's references themselves resolved.
		wb.Invalid, wb.Reason = true, fmt.Sprintf("%s %s/%s port %d: %s has an invalid caCertificateRef", kind, ns, name, port, describeRef(tp.ref))
		return wb, nil
	}
	k := backendKey{namespace: ns, name: name, port: port, imported: imported}
	wb.BackendID = k.id()
	if _, ok := c.backendKeys[wb.BackendID]; !ok {
		c.backendKeys[wb.BackendID] = k
	}
	return wb, nil
}

// reachedClusters lists, in cluster order, the clusters whose Service ns/name a backendRef from a route in cluster
// reaches: every exporter, plus the route's own cluster for kind Service when it has the Service.
func (c *compiler) reachedClusters(cluster, ns, name string, imported bool) []string {
	var out []string
	for _, cl := range c.clusters {
		if c.reports[cl].services[ns+"/"+name] == nil {
			continue
		}
		if c.exports(cl, ns, name) || (!imported && cl == cluster) {
			out = append(out, cl)
		}
	}
	return out
}

func backendID(ns, name string, port int32) string { return fmt.Sprintf("%s/%s:%d", ns, name, port) }

func servicePort(svc *corev1.Service, port int32) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// granted reports whether a ReferenceGrant in the target namespace lets an object (a route naming a backend, a
// Gateway naming a certificate) in cluster reference the target. Grants applied at the hub count in every cluster;
// grants a cluster reported count only for object instances in it.
func (c *compiler) granted(cluster, fromKind, fromNamespace, toGroup, toKind, toNamespace, toName string) bool {
	for _, v := range c.viewsFor(cluster) {
		for _, g := range v.grants[toNamespace] {
			if grantAllows(g, fromKind, fromNamespace, toGroup, toKind, toName) {
				return true
			}
		}
	}
	return false
}

func grantAllows(g *gatewayv1beta1.ReferenceGrant, fromKind, fromNamespace, toGroup, toKind, toName string) bool {
	fromOK := false
	for _, f := range g.Spec.From {
		if string(f.Group) == gatewayv1.GroupName && string(f.Kind) == fromKind && string(f.Namespace) == fromNamespace {
			fromOK = true
			break
		}
	}
	if !fromOK {
		return false
	}
	for _, t := range g.Spec.To {
		if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == toName) {
			return true
		}
	}
	return false
}

// backendKey is the Service port behind a backend ID, and whether it was named as a ServiceImport.
type backendKey struct {
	namespace, name string
	port            int32
	imported        bool
}

// id is the backend's ID: "namespace/name:port" for kind Service, "ServiceImport/namespace/name:port" for kind
// ServiceImport. The two reach different endpoints (a cluster's un-exported Service counts for the first only), so a
// spoke needs them apart; the east-west listener looks backends up by ID, so every spoke must name them alike.
func (k backendKey) id() string {
	if k.imported {
		return kindServiceImport + "/" + backendID(k.namespace, k.name, k.port)
	}
	return backendID(k.namespace, k.name, k.port)
}

// useBackends registers the backends an attached route names, so that the graph carries exactly those.
func (c *compiler) useBackends(a spokeconfig.Action) {
	for _, wb := range a.Backends {
		if wb.Invalid || wb.BackendID == "" || c.backends[wb.BackendID] != nil {
			continue
		}
		if k, ok := c.backendKeys[wb.BackendID]; ok {
			c.backends[wb.BackendID] = c.buildBackend(wb.BackendID, k)
		}
	}
}

// buildBackend collects a Service port's endpoints in every cluster the backend may reach — for kind Service every
// cluster that has the Service (Project then gives each cluster its own plus the exporters'), for kind ServiceImport
// the exporters only — and records the exporters. The EndpointSlice port that carries the Service
// port is the one with the same name (Kubernetes names slice ports after Service ports); a single-port Service's
// slice port is unnamed.
func (c *compiler) buildBackend(id string, k backendKey) *BackendNode {
	ns, name, port := k.namespace, k.name, k.port
	bn := &BackendNode{}
	bn.Backend = spokeconfig.Backend{ID: id, Namespace: ns, Name: name, Port: port}
	bn.ServiceImport = k.imported
	for _, cl := range c.clusters {
		v := c.reports[cl]
		svc := v.services[ns+"/"+name]
		if svc == nil {
			continue
		}
		exported := c.exports(cl, ns, name)
		if exported {
			bn.Exporters = append(bn.Exporters, cl)
		}
		if hc := healthCheckOf(svc); hc != nil {
			bn.HealthChecks = append(bn.HealthChecks, ClusterHealthCheck{Cluster: cl, HealthCheck: hc})
		}
		if k.imported && !exported {
			continue
		}
		sp := servicePort(svc, port)
		if sp == nil {
			continue
		}
		bn.Services = append(bn.Services, Source{Cluster: cl, Kind: resources.KindService, Namespace: ns, Name: name, Section: sp.Name})
		if bn.AppProtocol == "" && sp.AppProtocol != nil {
			bn.AppProtocol = *sp.AppProtocol
		}
		bn.Endpoints = append(bn.Endpoints, sliceEndpoints(cl, sp.Name, v.slices[ns+"/"+name])...)
	}
	bn.Endpoints = dedupEndpoints(bn.Endpoints)
	c.applyPolicies(bn, ns+"/"+name)
	bn.TLS = c.backendTLSFor(ns+"/"+name, c.servicePortName(ns, name, port, c.clusters))
	return bn
}

// sliceEndpoints lists the IP endpoints of a Service port in one cluster's EndpointSlices.
func sliceEndpoints(cluster, portName string, slices []*discoveryv1.EndpointSlice) []spokeconfig.Endpoint {
	var out []spokeconfig.Endpoint
	for _, es := range slices {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices name hosts the spoke would have to resolve; not supported.
		}
		target := slicePort(es.Ports, portName)
		if target == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			// EndpointSlice conditions: a nil ready means ready; a nil serving means "same as ready". A terminating
			// endpoint is never ready for new work (kube-proxy's reading), but while it is still serving it drains:
			// the spoke keeps it for sessions already pinned to it and picks it for nothing new.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ready
			if ep.Conditions.Serving != nil {
				serving = *ep.Conditions.Serving
			}
			if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
				ready = false
			}
			zone := ""
			if ep.Zone != nil {
				zone = *ep.Zone
			}
			for _, addr := range ep.Addresses {
				ip, err := netip.ParseAddr(addr)
				if err != nil || ip.Zone() != "" {
					continue
				}
				out = append(out, spokeconfig.Endpoint{
					Cluster: cluster,
					Address: net.JoinHostPort(ip.String(), fmt.Sprint(target)),
					Ready:   ready,
					Serving: serving,
					Zone:    zone,
				})
			}
		}
	}
	return out
}

func slicePort(ports []discoveryv1.EndpointPort, name string) int32 {
	var unnamed []discoveryv1.EndpointPort
	for _, p := range ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		if pn == "" {
			unnamed = append(unnamed, p)
		}
		if pn == name && p.Port != nil && *p.Port > 0 && *p.Port <= 65535 {
			return *p.Port
		}
	}
	if len(ports) == 1 && len(unnamed) == 1 && unnamed[0].Port != nil && *unnamed[0].Port > 0 && *unnamed[0].Port <= 65535 {
		return *unnamed[0].Port
	}
	return 0
}

// dedupEndpoints sorts by (cluster, address) and merges duplicates (an address in two slices during a rollout): ready
// (and serving) if any copy is.
func dedupEndpoints(eps []spokeconfig.Endpoint) []spokeconfig.Endpoint {
	sort.SliceStable(eps, func(i, j int) bool {
		if eps[i].Cluster != eps[j].Cluster {
			return eps[i].Cluster < eps[j].Cluster
		}
		return eps[i].Address < eps[j].Address
	})
	out := eps[:0]
	for _, e := range eps {
		if n := len(out); n > 0 && out[n-1].Cluster == e.Cluster && out[n-1].Address == e.Address {
			out[n-1].Ready = out[n-1].Ready || e.Ready
			out[n-1].Serving = out[n-1].Serving || e.Serving
			continue
		}
		out = append(out, e)
	}
	return out
}

// Package compiler turns the hub's inputs (objects applied at the hub plus every cluster's reported objects) into the
// global routing graph and per-object statuses, and projects the graph for one spoke.
//
// Both stages are pure and deterministic: no I/O, no clocks, no maps iterated into output, no mutation of inputs.
// Equal inputs give byte-equal outputs; the golden tests in testdata/ hold them to it.
package compiler

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/backendlb"
)

// ControllerName is the GatewayClass controllerName fedgate serves.
const ControllerName gatewayv1.GatewayController = "fedgate.io/gateway-controller"

// Inputs is one consistent snapshot of everything the hub knows, read at one etcd revision.
type Inputs struct {
	// Revision is the etcd revision the snapshot was read at; it becomes the graph revision.
	Revision int64 `json:"revision"`
	// Hub holds objects applied at the hub (hubctl apply, or the hub cluster). They apply to every cluster.
	Hub Resources `json:"hub"`
	// Clusters holds each registered cluster's reported objects, keyed by cluster name.
	Clusters map[string]*ClusterInputs `json:"clusters,omitempty"`
}

// ClusterInputs is what one cluster reported, plus what the hub knows of the cluster itself.
type ClusterInputs struct {
	// EastWestAddress is host:port of the cluster spoke's east-west listener.
	EastWestAddress string `json:"eastWestAddress,omitempty"`
	// GossipAddress is host:port of the cluster spoke's memberlist listener (from its Hello); empty when the spoke
	// does not gossip. Other clusters' projections list it as a gossip peer.
	GossipAddress string `json:"gossipAddress,omitempty"`
	// RevokedSerials are the serials (lowercase hex) of revoked certificates issued to the cluster (held before a
	// re-join), in any order. Every projection lists them so spokes refuse them east-west.
	RevokedSerials []string `json:"revokedSerials,omitempty"`
	Resources      `json:",inline"`
}

// Resources are typed Kubernetes objects of the kinds fedgate carries.
type Resources struct {
	GatewayClasses  []*gatewayv1.GatewayClass        `json:"gatewayClasses,omitempty"`
	Gateways        []*gatewayv1.Gateway             `json:"gateways,omitempty"`
	HTTPRoutes      []*gatewayv1.HTTPRoute           `json:"httpRoutes,omitempty"`
	GRPCRoutes      []*gatewayv1.GRPCRoute           `json:"grpcRoutes,omitempty"`
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant `json:"referenceGrants,omitempty"`
	Services        []*corev1.Service                `json:"services,omitempty"`
	EndpointSlices  []*discoveryv1.EndpointSlice     `json:"endpointSlices,omitempty"`
	// Namespaces, reported by clusters (their labels decide allowedRoutes.namespaces.from: Selector there).
	Namespaces     []*corev1.Namespace      `json:"namespaces,omitempty"`
	ServiceExports []*mcsv1a1.ServiceExport `json:"serviceExports,omitempty"`
	// Backend policies (session persistence, retry budgets) targeting Services.
	XBackendTrafficPolicies []*gatewayxv1a1.XBackendTrafficPolicy `json:"xBackendTrafficPolicies,omitempty"`
	BackendLBPolicies       []*backendlb.BackendLBPolicy          `json:"backendLBPolicies,omitempty"`
	// BackendTLSPolicies (v1; v1.1's v1alpha3 is stored as v1): TLS to a Service's endpoints (see backendtls.go).
	BackendTLSPolicies []*gatewayv1.BackendTLSPolicy `json:"backendTLSPolicies,omitempty"`
	// Secrets of type kubernetes.io/tls that listeners' certificateRefs name: applied at the hub with their data (for
	// hub Gateways), reported by a cluster without it and judged there (resources.TLSCheckAnnotation; for that
	// cluster's own Gateways).
	Secrets []*corev1.Secret `json:"secrets,omitempty"`
	// ConfigMaps holding CA bundles (ca.crt) that Gateways' spec.tls.frontend caCertificateRefs and
	// BackendTLSPolicies' caCertificateRefs name: applied at the hub (for hub Gateways and hub policies), reported by
	// a cluster with ca.crt alone (resources.ReportedCAConfigMap; for that cluster's own Gateways and policies).
	ConfigMaps []*corev1.ConfigMap `json:"configMaps,omitempty"`
}

// ObjectRef names an object and where it came from.
type ObjectRef struct {
	// Cluster that reported the object; empty for objects applied at the hub.
	Cluster   string `json:"cluster,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// ObjectStatus is the compiled status of one object. Conditions carry observedGeneration = the object's generation.
type ObjectStatus struct {
	Ref        ObjectRef          `json:"ref"`
	Generation int64              `json:"generation,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Parents: for routes, one entry per (parentRef, cluster); for Gateways, unused.
	Parents []ParentStatus `json:"parents,omitempty"`
	// Listeners: for Gateways, per (listener, cluster).
	Listeners []ListenerStatus `json:"listeners,omitempty"`
	// Clusters: for Gateways applied at the hub, the conditions of each cluster's instance (Conditions then sums
	// them up: True only when every instance is); for policies applied at the hub, the outcome in each cluster where
	// it differs from the hub-wide one (a cluster-reported policy can win a conflict there). Unused for other kinds.
	Clusters []ClusterConditions `json:"clusters,omitempty"`
	// Ancestors: for BackendTLSPolicies, one entry per Gateway whose attached routes use a Service port the policy
	// targets (Gateway API PolicyAncestorStatus), sorted by (cluster, namespace, name). Conditions carries the same
	// conditions as the policy's summary, so a policy no route uses yet still has a status.
	Ancestors []PolicyAncestorStatus `json:"ancestors,omitempty"`
}

// PolicyAncestorStatus is a policy's status for one ancestor Gateway.
type PolicyAncestorStatus struct {
	// Cluster that reported the ancestor Gateway; empty for a Gateway applied at the hub (whatever clusters it is
	// instantiated in).
	Cluster     string                    `json:"cluster,omitempty"`
	AncestorRef gatewayv1.ParentReference `json:"ancestorRef"`
	// ControllerName is always ControllerName.
	ControllerName gatewayv1.GatewayController `json:"controllerName"`
	Conditions     []metav1.Condition          `json:"conditions,omitempty"`
}

// ClusterConditions are the conditions of one object's instance in one cluster.
type ClusterConditions struct {
	Cluster    string             `json:"cluster"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ParentStatus is a route's status for one parentRef in one cluster.
type ParentStatus struct {
	// Cluster where the parent Gateway lives.
	Cluster   string                    `json:"cluster"`
	ParentRef gatewayv1.ParentReference `json:"parentRef"`
	// ControllerName is always ControllerName: the RouteParentStatus field that says fedgate wrote this entry.
	ControllerName gatewayv1.GatewayController `json:"controllerName"`
	Conditions     []metav1.Condition          `json:"conditions,omitempty"`
	// GraphRevision is the revision of Cluster's graph from which on the route stands there as this status says: set
	// by the hub's compile loop when it stores the status (the compiler leaves it 0), kept while the status does not
	// change. Cluster has the route programmed once it acknowledged a graph at least this new; 0 means its graph
	// could not be stored (the cluster keeps an older one).
	GraphRevision int64 `json:"graphRevision,omitempty"`
}

// ListenerStatus is one Gateway listener's status in one cluster.
type ListenerStatus struct {
	Cluster        string `json:"cluster"`
	Name           string `json:"name"`
	AttachedRoutes int32  `json:"attachedRoutes"`
	// SupportedKinds the listener accepts routes of (only kinds fedgate implements).
	SupportedKinds []gatewayv1.RouteGroupKind `json:"supportedKinds"`
	Conditions     []metav1.Condition         `json:"conditions,omitempty"`
}

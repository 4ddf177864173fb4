package compiler

import (
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Graph is the global routing graph: for every cluster, the Gateway instances that live there and the ports they
// open (port → virtual host → routes in precedence order), plus every backend any attached route references, with its
// endpoints in every cluster. It is plain data, YAML/JSON-serialisable, and every node names the object it came from
// (Source) so that a diagnostic on the spoke or in hubctl can point back at what the user wrote.
//
// Graph is the only input of Project; nothing in it depends on which spoke asks.
type Graph struct {
	// Revision is Inputs.Revision.
	Revision int64 `json:"revision"`
	// Clusters, sorted by name: every cluster in Inputs.Clusters.
	Clusters []ClusterNode `json:"clusters,omitempty"`
	// Backends referenced by at least one attached route in any cluster, sorted by ID.
	Backends []BackendNode `json:"backends,omitempty"`
	// ServiceImports: every cluster's ServiceExports merged per namespace/name (MCS API), sorted by namespace/name.
	// Every projection carries all of them: the KEP has every cluster of the clusterset hold every import.
	ServiceImports []spokeconfig.ServiceImport `json:"serviceImports,omitempty"`
	// Statuses is Output.Statuses, kept here because Project hands each cluster the statuses of the objects it
	// reported. Not serialised: Output.Statuses already carries them, and the graph stays about routing.
	Statuses []ObjectStatus `json:"-"`
}

// Source is the provenance of a graph node.
type Source struct {
	// Cluster that reported the object; empty for objects applied at the hub.
	Cluster   string `json:"cluster,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Section within the object: a listener name for Gateways, a rule name for routes.
	Section string `json:"section,omitempty"`
}

// ClusterNode is what one cluster serves.
type ClusterNode struct {
	Name string `json:"name"`
	// EastWestAddress is host:port of the cluster's east-west listener; empty when the cluster has none (its endpoints
	// are then left out of other clusters' projections).
	EastWestAddress string `json:"eastWestAddress,omitempty"`
	// GossipAddress is host:port of the cluster spoke's memberlist listener; empty when it does not gossip.
	GossipAddress string `json:"gossipAddress,omitempty"`
	// RevokedSerials of the cluster's revoked certificates, sorted and de-duplicated.
	RevokedSerials []string `json:"revokedSerials,omitempty"`
	// Gateways instantiated in this cluster (ours only), sorted by (namespace, name, source cluster).
	Gateways []GatewayNode `json:"gateways,omitempty"`
	// Ports opened by programmed listeners, sorted by port.
	Ports []PortNode `json:"ports,omitempty"`
}

// GatewayNode is one Gateway instance in one cluster.
type GatewayNode struct {
	// Source is the Gateway object; Source.Cluster is empty when it was applied at the hub.
	Source    Source         `json:"source"`
	Class     string         `json:"class"`
	Listeners []ListenerNode `json:"listeners,omitempty"`
}

// ListenerNode is one listener of a Gateway instance.
type ListenerNode struct {
	// Source names the Gateway; Section is the listener name.
	Source   Source `json:"source"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
	Hostname string `json:"hostname,omitempty"`
	// Programmed listeners open their port; the others are reported in status only.
	Programmed     bool  `json:"programmed"`
	AttachedRoutes int32 `json:"attachedRoutes"`
}

// PortNode is one listening port of a cluster: the listeners sharing it select virtual hosts by hostname.
type PortNode struct {
	Port     int32                `json:"port"`
	Protocol spokeconfig.Protocol `json:"protocol"`
	// Listeners sharing the port, sorted.
	Listeners    []Source          `json:"listeners"`
	VirtualHosts []VirtualHostNode `json:"virtualHosts,omitempty"`
	// TLS of an HTTPS port: its listeners' certificates (the data of Secrets applied at the hub inline). Only the
	// projection of this port's cluster carries it.
	TLS *spokeconfig.PortTLS `json:"tls,omitempty"`
}

// VirtualHostNode is a hostname pattern on a port ("*" = any) with its routes in precedence order.
type VirtualHostNode struct {
	Hostname string `json:"hostname"`
	// Listener is, on an HTTPS port, the hostname ("*" for none) of the listener the routes attached through: the
	// routes of different listeners never share a virtual host there (spokeconfig.VirtualHost.Listener). Empty on
	// HTTP ports.
	Listener string      `json:"listener,omitempty"`
	Routes   []RouteNode `json:"routes,omitempty"`
}

// RouteNode is one (rule, match) of a route, flattened, with the action every match of the rule shares.
type RouteNode struct {
	// Source is the route object; Section is the rule's name when it has one.
	Source     Source             `json:"source"`
	RuleIndex  int                `json:"ruleIndex"`
	MatchIndex int                `json:"matchIndex"`
	Match      spokeconfig.Match  `json:"match"`
	Action     spokeconfig.Action `json:"action"`
}

// BackendNode is a Service port as seen across clusters.
type BackendNode struct {
	spokeconfig.Backend `json:",inline"`
	// Services behind the backend, one per cluster whose Service it may reach: for kind Service every cluster that
	// reports the Service (its own cluster reaches it exported or not), for kind ServiceImport only the exporters.
	Services []Source `json:"services,omitempty"`
	// Exporters: clusters with a valid ServiceExport of the Service, sorted. Their endpoints reach routes in every
	// cluster; any other cluster's endpoints reach only its own routes (and only for kind Service).
	Exporters []string `json:"exporters,omitempty"`
	// ServiceImport: the backendRef named kind ServiceImport, so even the routing cluster's own endpoints count only
	// when it exports the Service. Its ID is "ServiceImport/namespace/name:port", apart from the Service backend's.
	ServiceImport bool `json:"serviceImport,omitempty"`
	// ClusterPolicies replace Backend's SessionPersistence and RetryBudget in the projections of the clusters listed,
	// where a policy that cluster reported changed the outcome. Sorted by cluster.
	ClusterPolicies []ClusterBackendPolicy `json:"clusterPolicies,omitempty"`
	// HealthChecks are the health checks the clusters' Services set with annotations, for each cluster's own
	// endpoints: Project gives a cluster its own as Backend.HealthCheck. Sorted by cluster; clusters whose Service
	// sets none are left out (their spokes use their defaults).
	HealthChecks []ClusterHealthCheck `json:"healthChecks,omitempty"`
}

// ClusterBackendPolicy is the backend-level policy in force in one cluster.
type ClusterBackendPolicy struct {
	Cluster            string                          `json:"cluster"`
	SessionPersistence *spokeconfig.SessionPersistence `json:"sessionPersistence,omitempty"`
	RetryBudget        *spokeconfig.RetryBudget        `json:"retryBudget,omitempty"`
}

func (s Source) objectRef() spokeconfig.ObjectRef {
	return spokeconfig.ObjectRef{Cluster: s.Cluster, Kind: s.Kind, Namespace: s.Namespace, Name: s.Name}
}

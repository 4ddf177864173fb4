// Package spokeconfig defines SpokeConfig, one spoke's projection of the global routing graph: the boundary type
// between the hub's projection stage and the spoke's table builder. It crosses the wire as JSON inside
// fedgatepb.SpokeConfigUpdate and is written to the spoke's disk cache in the same encoding.
//
// The types here are plain data: no behaviour beyond validation and canonical encoding, no imports of hub/ or spoke/.
// Every slice is emitted in a deterministic order by the hub so that equal graphs encode to equal bytes (and hashes).
package spokeconfig

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// SpokeConfig is everything one spoke needs to serve: its listeners with their routes already sorted by precedence,
// every backend those routes name (with endpoints in every cluster), the backends it must serve for other clusters
// over east-west, and the clusters it may reach.
type SpokeConfig struct {
	// Cluster is the spoke this projection is for.
	Cluster string `json:"cluster"`
	// Revision is the graph revision (etcd revision of the compile inputs).
	Revision int64 `json:"revision"`
	// Ports: one entry per listening port on this spoke, sorted by port.
	Ports []Port `json:"ports,omitempty"`
	// Backends referenced by any route in Ports, and every backend with endpoints in this cluster that a route in any
	// cluster references (served to other spokes over east-west). Sorted by ID.
	Backends []Backend `json:"backends,omitempty"`
	// Clusters that own endpoints named in Backends, other than this one. Sorted by name.
	Clusters []Cluster `json:"clusters,omitempty"`
	// Members are every cluster joined to the hub (this one included), sorted. The east-west listener serves only
	// peers whose certificate names a member, so a cluster removed at the hub is refused by every spoke at the next
	// config, not only when its certificate expires. Empty (a static config) accepts any peer the TLS layer accepts.
	Members []string `json:"members,omitempty"`
	// RevokedSerials are the serials (lowercase hex) of revoked certificates issued to members, sorted: certificates
	// a re-joined cluster held before its re-join. The east-west listener refuses a peer presenting one of them,
	// although it still chains to the hub's CA and names a member.
	RevokedSerials []string `json:"revokedSerials,omitempty"`
	// SessionKeys authenticate session-persistence tokens; the first signs, every one verifies (the hub keeps the
	// previous key for one rotation period). Every spoke gets the same keys, so a token minted in one cluster is
	// honoured in another.
	SessionKeys []SessionKey `json:"sessionKeys,omitempty"`
	// Gossip configures cluster-health gossip among spokes (memberlist). Nil disables it.
	Gossip *Gossip `json:"gossip,omitempty"`
	// Statuses of the objects this cluster reported, as compiled by the hub, sorted by kind, namespace, name. The
	// proxy ignores them; a Kubernetes spoke writes them back to its API server.
	Statuses []ObjectStatus `json:"statuses,omitempty"`
	// ServiceImports this cluster should hold (MCS API), sorted by namespace and name.
	ServiceImports []ServiceImport `json:"serviceImports,omitempty"`
}

// SessionKey is one HMAC key for session tokens.
type SessionKey struct {
	ID     uint8  `json:"id"`
	Secret []byte `json:"secret"` // base64 in JSON
}

// Gossip is the memberlist configuration the hub hands every spoke.
type Gossip struct {
	// Key encrypts gossip (AES-256-GCM; 32 bytes). Rotated by the hub like session keys.
	Key []byte `json:"key"`
	// Peers: gossip addresses (host:port) of the other clusters' spokes, sorted; a spoke joins through any of them.
	Peers []string `json:"peers,omitempty"`
}

// Cluster is a remote cluster reachable over its spoke's east-west listener.
type Cluster struct {
	Name string `json:"name"`
	// EastWestAddress is host:port of that spoke's east-west listener.
	EastWestAddress string `json:"eastWestAddress"`
	// GossipAddress is host:port of that spoke's memberlist listener (empty: the cluster does not gossip).
	GossipAddress string `json:"gossipAddress,omitempty"`
}

// Protocol of a port.
type Protocol string

const (
	ProtocolHTTP  Protocol = "HTTP"  // HTTP/1.1 and h2c (prior knowledge and Upgrade)
	ProtocolHTTPS Protocol = "HTTPS" // TLS terminated by the spoke (Port.TLS), ALPN h2 and http/1.1
)

// Port is one listening socket. Several Gateway listeners may share it; their hostnames select a virtual host.
type Port struct {
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
	// Address to bind; empty means all addresses. Standalone spokes and tests bind 127.0.0.1.
	BindAddress string `json:"bindAddress,omitempty"`
	// Listeners that share this port, for status and diagnostics. Sorted.
	Listeners []ListenerRef `json:"listeners,omitempty"`
	// VirtualHosts: a request selects exactly one: an exact hostname match first, then the longest matching wildcard
	// ("*.example.com" matches any deeper name, not "example.com"), then the catch-all "*". No vhost → 404.
	// Sorted by hostname.
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
	// TLS terminates an HTTPS port: its listeners' certificates. Set exactly when Protocol is HTTPS.
	TLS *PortTLS `json:"tls,omitempty"`
}

// PortTLS is how an HTTPS port terminates TLS. A connection's SNI selects one listener the way a request's Host
// selects a virtual host: the exact hostname first, then the longest matching wildcard, then the listener without a
// hostname ("*"); a connection without SNI gets the "*" listener. No listener for the SNI → the handshake fails. A
// request whose Host selects another listener than its connection's SNI did is answered 421 (Misdirected Request).
type PortTLS struct {
	// Listeners: one per HTTPS listener on the port that has at least one usable certificate, sorted by hostname; no
	// two share a hostname.
	Listeners []TLSListener `json:"listeners"`
}

// TLSListener is one HTTPS listener's TLS termination.
type TLSListener struct {
	// Hostname is the listener's hostname: an exact name, "*.suffix", or "*" when it sets none.
	Hostname string `json:"hostname"`
	// Certificates in the order of the listener's certificateRefs, at least one. The handshake serves the first whose
	// certificate is valid for the SNI, else the first.
	Certificates []Certificate `json:"certificates"`
	// ClientValidation asks clients for a certificate and verifies it (the Gateway's spec.tls.frontend: the entry of
	// perPort for this port, else default). Nil: no client certificate is requested.
	ClientValidation *ClientValidation `json:"clientValidation,omitempty"`
}

// ClientValidationMode is gatewayv1.FrontendValidationModeType's values.
type ClientValidationMode string

const (
	// AllowValidOnly: a client without a certificate that chains to CACertificatesPEM fails the handshake.
	AllowValidOnly ClientValidationMode = "AllowValidOnly"
	// AllowInsecureFallback: such a client is admitted, as one without a verified identity.
	AllowInsecureFallback ClientValidationMode = "AllowInsecureFallback"
)

// ClientValidation verifies client certificates on an HTTPS listener.
type ClientValidation struct {
	// CACertificatesPEM: the trust anchors, the ca.crt of every usable ConfigMap of caCertificateRefs, concatenated
	// in their order. Not secret.
	CACertificatesPEM []byte               `json:"caCertificatesPEM"`
	Mode              ClientValidationMode `json:"mode"`
}

// Certificate is one kubernetes.io/tls Secret of a listener's certificateRefs. Its key is never in a status, a log or
// a report; in etcd it is only inside sealed graph records.
type Certificate struct {
	// Namespace and Name of the Secret.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Local: the Secret is in this spoke's own cluster, where its Gateway is; the spoke reads it there, and the hub
	// never holds its data. Otherwise the Secret was applied at the hub and its data is below.
	Local bool `json:"local,omitempty"`
	// CertPEM and KeyPEM are the Secret's tls.crt and tls.key (a Secret applied at the hub; empty when Local).
	CertPEM []byte `json:"certPEM,omitempty"`
	KeyPEM  []byte `json:"keyPEM,omitempty"`
}

// ListenerRef names a Gateway listener (provenance).
type ListenerRef struct {
	Namespace string `json:"namespace"`
	Gateway   string `json:"gateway"`
	Section   string `json:"section"`
	Hostname  string `json:"hostname,omitempty"`
}

// VirtualHost groups the route rules that apply to one hostname pattern on a port.
type VirtualHost struct {
	// Hostname is an exact name, a wildcard "*.suffix", or "*" for any host.
	Hostname string `json:"hostname"`
	// Listener is, on an HTTPS port, the hostname of the TLS listener (PortTLS.Listeners) the routes attached through
	// ("*" for the listener without a hostname). A request is served only by the virtual hosts of the listener its
	// connection selected (by SNI, which its Host must select too, else 421): Hostname is looked up among those alone,
	// and none matching → 404, even when another listener of the port has a virtual host for the Host. So no two
	// virtual hosts of a port share both Hostname and Listener, while two listeners may each have one for a hostname.
	// The hub sets it on every virtual host of an HTTPS port. Empty (every HTTP port, and a config written without it):
	// on an HTTPS port the virtual host is shared by all the port's listeners, behind each listener's own.
	Listener string `json:"listener,omitempty"`
	// Routes in precedence order: the first whose match holds serves the request. No match → 404.
	Routes []Route `json:"routes,omitempty"`
}

// ObjectRef is the provenance of a graph node.
type ObjectRef struct {
	Cluster   string `json:"cluster,omitempty"` // empty: applied at the hub
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Route is one (rule, match) pair of an HTTPRoute or GRPCRoute, flattened: a rule with N matches becomes N Routes that
// share Action.
type Route struct {
	Source    ObjectRef `json:"source"`
	RuleIndex int       `json:"ruleIndex"`
	// MatchIndex within the rule (0 for a rule with no matches, which means PathPrefix "/").
	MatchIndex int    `json:"matchIndex"`
	Match      Match  `json:"match"`
	Action     Action `json:"action"`
}

// PathMatchType as in the Gateway API.
type PathMatchType string

const (
	PathExact             PathMatchType = "Exact"
	PathPrefix            PathMatchType = "PathPrefix"
	PathRegularExpression PathMatchType = "RegularExpression"
)

// StringMatchType for headers and query parameters.
type StringMatchType string

const (
	MatchExact             StringMatchType = "Exact"
	MatchRegularExpression StringMatchType = "RegularExpression"
)

// Match: every set field must hold (AND).
type Match struct {
	// Path; Type empty means no path condition.
	PathType PathMatchType `json:"pathType,omitempty"`
	Path     string        `json:"path,omitempty"`
	// Method, empty for any.
	Method string `json:"method,omitempty"`
	// Headers: names are canonicalised by the hub (textproto.CanonicalMIMEHeaderKey); for a repeated name only the
	// first entry of the route's list is kept.
	Headers     []StringMatch `json:"headers,omitempty"`
	QueryParams []StringMatch `json:"queryParams,omitempty"`
}

// StringMatch matches one header or query parameter.
type StringMatch struct {
	Name  string          `json:"name"`
	Type  StringMatchType `json:"type,omitempty"` // default Exact
	Value string          `json:"value"`
}

// Action is what a matched route does: a direct response, a redirect, or forwarding to weighted backends.
type Action struct {
	// DirectResponse, when set, answers with this status (e.g. 500 when every backendRef is invalid).
	DirectResponse *DirectResponse `json:"directResponse,omitempty"`
	Redirect       *Redirect       `json:"redirect,omitempty"`
	// Filters applied to requests and responses before forwarding.
	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
	Rewrite         *Rewrite        `json:"rewrite,omitempty"`
	// Backends with weights. A backend with Invalid set answers 500 for its share; weight 0 gets no new traffic.
	Backends []WeightedBackend `json:"backends,omitempty"`
	// Timeouts in milliseconds; 0 = none.
	RequestTimeoutMs        int64 `json:"requestTimeoutMs,omitempty"`
	BackendRequestTimeoutMs int64 `json:"backendRequestTimeoutMs,omitempty"`
	// SessionPersistence of the rule (HTTPRoute/GRPCRoute rule sessionPersistence, or a policy that targets every
	// backend of the rule). Nil: no stickiness at the rule level.
	SessionPersistence *SessionPersistence `json:"sessionPersistence,omitempty"`
	// Retry policy of the rule (HTTPRoute rule retry). Nil: only the built-in retry of idempotent requests on
	// connection failure.
	Retry *Retry `json:"retry,omitempty"`
}

// SessionPersistence pins a client to the endpoint (in whichever cluster) that served its first request.
type SessionPersistence struct {
	// Type "Cookie" (default) or "Header".
	Type string `json:"type,omitempty"`
	// SessionName is the cookie or header name.
	SessionName string `json:"sessionName"`
	// AbsoluteTimeoutMs: hard limit from the session's start; 0 none.
	AbsoluteTimeoutMs int64 `json:"absoluteTimeoutMs,omitempty"`
	// IdleTimeoutMs: rolling expiry renewed by each request (v1.1 BackendLBPolicy); 0 none.
	IdleTimeoutMs int64 `json:"idleTimeoutMs,omitempty"`
	// CookieLifetime "Session" (default: no Max-Age) or "Permanent" (Max-Age = absolute timeout).
	CookieLifetime string `json:"cookieLifetime,omitempty"`
	// Scope names what the session is bound to (rule or backend), so a token cannot be replayed against another.
	Scope string `json:"scope"`
	// Source is the object the policy came from (route, XBackendTrafficPolicy or BackendLBPolicy).
	Source ObjectRef `json:"source"`
}

// Retry per HTTPRoute rule retry (experimental) and XBackendTrafficPolicy retryConstraint.
type Retry struct {
	// Codes: HTTP status codes (400-599) that trigger a retry.
	Codes []int `json:"codes,omitempty"`
	// Attempts after the first try.
	Attempts int `json:"attempts,omitempty"`
	// BackoffMs is the minimum wait between attempts.
	BackoffMs int64 `json:"backoffMs,omitempty"`
}

// RetryBudget bounds retries to a share of active requests (XBackendTrafficPolicy retryConstraint); once spent, a
// request that would be retried gets 503.
type RetryBudget struct {
	Percent             int   `json:"percent"`
	IntervalMs          int64 `json:"intervalMs,omitempty"`
	MinRetriesPerSecond int   `json:"minRetriesPerSecond,omitempty"`
}

// HealthCheck is the active health check of a backend's endpoints in this spoke's cluster, from its Service's
// fedgate.io/health-check* annotations. Nil on a Backend means the spoke's defaults (its --health-check-* flags);
// zero fields take the spoke's default for that field.
type HealthCheck struct {
	// Disabled: the endpoints are not probed (fedgate.io/health-check: "off", or an interval of 0).
	Disabled bool `json:"disabled,omitempty"`
	// Type of probe: HealthCheckHTTP (GET Path, 2xx/3xx is healthy), HealthCheckTCP (a connection opens) or
	// HealthCheckGRPC (grpc.health.v1.Health/Check answers SERVING). Empty: TCP for gRPC and h2c backends (a gRPC
	// server answers a plain GET with 415), HTTP for the others.
	Type               string `json:"type,omitempty"`
	Path               string `json:"path,omitempty"`
	IntervalMs         int64  `json:"intervalMs,omitempty"`
	TimeoutMs          int64  `json:"timeoutMs,omitempty"`
	HealthyThreshold   int    `json:"healthyThreshold,omitempty"`
	UnhealthyThreshold int    `json:"unhealthyThreshold,omitempty"`
	// GRPCService is the service name a HealthCheckGRPC probe asks about; empty asks about the server as a whole.
	GRPCService string `json:"grpcService,omitempty"`
	// Problems are the annotations the hub ignored, and why; the spoke logs them.
	Problems []string `json:"problems,omitempty"`
}

// Health check types (HealthCheck.Type).
const (
	HealthCheckHTTP = "http"
	HealthCheckTCP  = "tcp"
	HealthCheckGRPC = "grpc"
)

// DirectResponse answers without a backend.
type DirectResponse struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
}

// Redirect per HTTPRoute RequestRedirect. Empty fields keep the request's value.
type Redirect struct {
	Scheme   string `json:"scheme,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Port 0 keeps the request's port (omitted when well-known for the scheme).
	Port int32 `json:"port,omitempty"`
	// Path rewrite as in Rewrite.
	Path       *PathRewrite `json:"path,omitempty"`
	StatusCode int          `json:"statusCode,omitempty"` // default 302
}

// Rewrite per HTTPRoute URLRewrite.
type Rewrite struct {
	Hostname string       `json:"hostname,omitempty"`
	Path     *PathRewrite `json:"path,omitempty"`
}

// PathRewrite: exactly one of ReplaceFullPath or ReplacePrefixMatch (with the matched prefix in Prefix).
type PathRewrite struct {
	ReplaceFullPath    *string `json:"replaceFullPath,omitempty"`
	ReplacePrefixMatch *string `json:"replacePrefixMatch,omitempty"`
}

// HeaderModifier per RequestHeaderModifier / ResponseHeaderModifier.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is a name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// WeightedBackend is one backendRef of a rule.
type WeightedBackend struct {
	// BackendID names an entry of SpokeConfig.Backends; empty when Invalid.
	BackendID string `json:"backendID,omitempty"`
	Weight    int32  `json:"weight"`
	// Invalid backends answer 500 for their share of traffic (missing Service, unknown kind, no ReferenceGrant).
	Invalid bool `json:"invalid,omitempty"`
	// Reason for Invalid, for diagnostics.
	Reason string `json:"reason,omitempty"`
}

// Backend is a Service port as seen across clusters.
type Backend struct {
	// ID is "namespace/name:port" for a Service backendRef and "ServiceImport/namespace/name:port" for a ServiceImport
	// one (the two reach different endpoints: a Service also reaches its own cluster's, exported or not).
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port"`
	// AppProtocol of the Service port ("", "http", "kubernetes.io/h2c", ...).
	AppProtocol string `json:"appProtocol,omitempty"`
	// Endpoints in every cluster, sorted by (cluster, address). Endpoints of this spoke's cluster are dialled directly;
	// the others through their cluster's east-west address.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// SessionPersistence from an XBackendTrafficPolicy or BackendLBPolicy targeting this Service; a rule's own
	// sessionPersistence takes precedence.
	SessionPersistence *SessionPersistence `json:"sessionPersistence,omitempty"`
	// RetryBudget from an XBackendTrafficPolicy retryConstraint.
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`
	// HealthCheck overrides the spoke's default active health check for this cluster's endpoints.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// TLS: connections to this backend's endpoints are TLS (BackendTLSPolicy). The spoke that owns an endpoint
	// originates it, so a request entering another cluster rides the mTLS east-west hop first and is encrypted to the
	// backend there, the same whichever cluster it entered. Nil: cleartext.
	TLS *BackendTLS `json:"tls,omitempty"`
}

// BackendTLS is how a spoke connects to a backend's endpoints over TLS (a BackendTLSPolicy's validation).
type BackendTLS struct {
	// Hostname is the SNI sent and, unless SubjectAltNames is set, the name the backend's certificate must be valid for.
	Hostname string `json:"hostname"`
	// CACertificatesPEM: the trust anchors (ca.crt of the policy's caCertificateRefs, concatenated in order). Empty
	// with WellKnownSystem.
	CACertificatesPEM []byte `json:"caCertificatesPEM,omitempty"`
	// WellKnownSystem: trust the spoke's system roots (wellKnownCACertificates: System).
	WellKnownSystem bool `json:"wellKnownSystem,omitempty"`
	// SubjectAltNames: when set, the certificate must carry one of them (instead of Hostname).
	SubjectAltNames []SubjectAltName `json:"subjectAltNames,omitempty"`
}

// SubjectAltName is one name a backend's certificate may carry: Type "Hostname" (a DNS name) or "URI".
type SubjectAltName struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Endpoint is one backend address in one cluster.
type Endpoint struct {
	Cluster string `json:"cluster"`
	// Address is ip:port (the target port, resolved from the EndpointSlice).
	Address string `json:"address"`
	Ready   bool   `json:"ready"`
	// Serving without Ready means terminating (draining): no new sessions, but pinned sessions keep using it.
	Serving bool   `json:"serving,omitempty"`
	Zone    string `json:"zone,omitempty"`
}

// ObjectStatus is the hub's compiled status of one object this spoke's cluster reported, for the spoke to write back
// to its API server. LastTransitionTime is left zero by the hub; the spoke stamps it when a condition changes.
type ObjectStatus struct {
	Kind       string             `json:"kind"`
	Namespace  string             `json:"namespace,omitempty"`
	Name       string             `json:"name"`
	Generation int64              `json:"generation,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Parents: for routes, one entry per parentRef (status.parents).
	Parents []ParentStatus `json:"parents,omitempty"`
	// Listeners: for Gateways (status.listeners).
	Listeners []ListenerStatus `json:"listeners,omitempty"`
	// Addresses: for Gateways (status.addresses), the addresses the spoke's gateway ports are reachable at.
	Addresses []string `json:"addresses,omitempty"`
}

// ParentStatus is a route's status for one parentRef.
type ParentStatus struct {
	ParentRef      gatewayv1.ParentReference `json:"parentRef"`
	ControllerName string                    `json:"controllerName"`
	Conditions     []metav1.Condition        `json:"conditions,omitempty"`
}

// ListenerStatus is one Gateway listener's status.
type ListenerStatus struct {
	Name           string                     `json:"name"`
	AttachedRoutes int32                      `json:"attachedRoutes"`
	SupportedKinds []gatewayv1.RouteGroupKind `json:"supportedKinds,omitempty"`
	Conditions     []metav1.Condition         `json:"conditions,omitempty"`
}

// ServiceImport is the hub's merge of every cluster's ServiceExport of one namespace/name (MCS API); the spoke keeps
// a matching ServiceImport object in its cluster.
type ServiceImport struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Type "ClusterSetIP" or "Headless".
	Type  string              `json:"type,omitempty"`
	Ports []ServiceImportPort `json:"ports,omitempty"`
	// Clusters exporting the Service, sorted.
	Clusters []string `json:"clusters,omitempty"`
	// Conflict, when set, is the MCS conflict condition's message (exports disagree on ports or protocols).
	Conflict string `json:"conflict,omitempty"`
}

// ServiceImportPort is one port of a ServiceImport.
type ServiceImportPort struct {
	Name        string `json:"name,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	AppProtocol string `json:"appProtocol,omitempty"`
	Port        int32  `json:"port"`
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/internal/version"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/health"
	"github.com/fedgate/fedgate/spoke/proxy"
	"github.com/fedgate/fedgate/spoke/source"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// Version is the agent version reported to the hub by default: the build's (internal/version, which make build and
// make images stamp from git describe).
var Version = version.Version()

// Config configures one spoke agent. Zero values take the documented defaults (see Defaults); a test checks that every
// "Default:" below matches the code.
// StatusWriter receives each accepted config (spoke/kstatus.Writer).
type StatusWriter interface {
	Offer(*spokeconfig.SpokeConfig)
	Run(ctx context.Context) error
}

// Runner is a component that runs until ctx ends: nil then, an error when it cannot continue.
type Runner interface {
	Run(ctx context.Context) error
}

// Elector decides which of a cluster's spoke replicas runs the leader-only components (spoke/leader.Elector).
type Elector interface {
	// Run campaigns until ctx ends, calling lead each time this replica becomes leader, with a context that ends when
	// leadership ends; it gives leadership up only after lead has returned.
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

type Config struct {
	// Cluster is this spoke's cluster name, as the hub and other spokes know it. With Credentials it defaults to the
	// certificate's cluster and must equal it; without, it is required.
	Cluster string
	// Credentials is the cluster's hub-issued identity (`hubctl join`). Required with HubAddress: the hub connection
	// and the east-west listener and client are mTLS with it, and it renews itself over the hub connection.
	Credentials *credentials.Store
	// HubAddress is host:port of the hub's gRPC endpoint, or a comma-separated list of the endpoints of one hub's
	// replicas (host:port,host:port): the agent connects to one of them, picked at random, and fails over to another
	// when it goes away. Empty runs without a hub: the agent serves its disk cache and east-west traffic only.
	HubAddress string
	// SourceDir is a directory of Kubernetes manifests describing this cluster's objects (see source.Dir).
	SourceDir string
	// Source overrides SourceDir (tests, and the Kubernetes source later). With neither, the spoke reports no objects.
	Source source.Source
	// EastWestListen is the address of the listener other spokes send cross-cluster requests to.
	// Default: ":15443".
	EastWestListen string
	// EastWestAddress is host:port advertised to the hub for EastWestListen. Empty advertises the listener's bound
	// address, which is only reachable by others when EastWestListen names a concrete host.
	EastWestAddress string
	// GossipListen is host:port of this spoke's memberlist listener (UDP and TCP), through which spokes tell each
	// other within a second that a cluster died, even while the hub is away. Empty disables gossip.
	GossipListen string
	// GossipAddress is advertised to other spokes for GossipListen: host:port, or a host alone (the port is then
	// GossipListen's, so a pod can pass its IP from the downward API, IPv4 or IPv6). Empty advertises GossipListen.
	// An IP here is also what the memberlist member advertises to its peers.
	GossipAddress string
	// ReplicaName tells this replica apart from the other spokes of its cluster (the pod name): its gossip member is
	// named "<Cluster>/<ReplicaName>". Empty names the member "<Cluster>", which only one replica per cluster may do.
	ReplicaName string
	// Elector, when set, runs the cluster-wide duties — reading the Source, the Report stream and the StatusWriter —
	// only while this replica leads, so that one replica of the cluster reports and writes status at a time; every
	// replica subscribes and serves traffic. Nil runs them always (one replica, or a directory source).
	Elector Elector
	// ListenHost overrides the bind address of every gateway port (e.g. 127.0.0.2 so several spokes share one host).
	ListenHost string
	// PortOffset is added to every gateway listener port.
	PortOffset int32
	// CacheDir keeps the last good config so a restarted spoke serves before (and without) reaching the hub. Empty
	// disables the cache.
	CacheDir string
	// Labels describe the cluster to the hub (e.g. region=eu).
	Labels map[string]string
	// GatewayAddresses are the IPs or DNS names this cluster's gateway ports are reachable at (--gateway-address); the
	// Report hello tells the hub, which writes them into the status.addresses of hub-cluster Gateways. At most 16.
	GatewayAddresses []string
	// AgentVersion reported to the hub.
	// Default: Version.
	AgentVersion string
	// MinBackoff is the first reconnect delay after a hub stream breaks; it doubles (with jitter) per failure.
	// Default: 100ms.
	MinBackoff time.Duration
	// MaxBackoff caps the reconnect delay.
	// Default: 10s.
	MaxBackoff time.Duration
	// KeepaliveTime is how long the hub connection may stay silent before the agent pings it, so a vanished hub is
	// noticed and the streams reconnect. The hub's keepalive enforcement policy must allow pings this often
	// (grpc-go's server default, 5m, does not: the client then backs off by doubling after a GOAWAY).
	// Default: 1m0s.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long a ping may go unanswered before the connection is considered dead.
	// Default: 10s.
	KeepaliveTimeout time.Duration
	// StatusWriter, when set, is offered every config the proxy accepted, to write the hub's statuses back to the
	// cluster (spoke/kstatus). It must not block; a failed status write never NACKs a config.
	StatusWriter StatusWriter
	// Cleanup, when set, runs once when the hub says this cluster was removed, before Run returns that as its error:
	// it takes back what fedgate wrote in the cluster (spoke/kstatus Clean, the credentials Secret).
	Cleanup func(ctx context.Context) error
	// DrainTimeout bounds how long the proxy waits for in-flight requests at shutdown.
	// Default: 30s.
	DrainTimeout time.Duration
	// Limits bound what clients and backends control on the data path; zero fields take proxy.DefaultLimits.
	Limits proxy.Limits
	// HealthCheck is the active health check of this cluster's endpoints for Services that set none of their own
	// (the --health-check-* flags); the zero value is spoke/health's built-in defaults.
	HealthCheck health.Defaults
	// TLSSecrets holds the data of the cluster's own TLS Secrets that its Gateways reference: the proxy serves the
	// certificates the hub marks Local from it (proxy Options.LocalSecret), and is reloaded when their data changes.
	// SecretReader (Kubernetes) or the directory source (SourceDir) fills it. Nil: the agent makes one.
	TLSSecrets *tlssecrets.Store
	// SecretReader, when set, keeps TLSSecrets (spoke/source/kube SecretReader). It runs on every replica, leader or
	// not — every replica serves, so every replica needs the certificates — while reporting them stays with the
	// leader's Source.
	SecretReader Runner
	// Proxy overrides the embedded proxy (tests). Nil builds proxy.New from Cluster, ListenHost, PortOffset,
	// DrainTimeout, Limits and HealthCheck.
	Proxy Proxy
	// plaintextHub lets this package's tests talk to spoke/internal/fakehub, which serves no TLS. Unexported: there is
	// no way to run a real spoke without its identity.
	plaintextHub bool
	// Log, default slog.Default().
	Log *slog.Logger
}

// Defaults returns c with every unset field that has a default filled in.
func (c Config) Defaults() Config {
	if c.Cluster == "" && c.Credentials != nil {
		c.Cluster = c.Credentials.Cluster()
	}
	if c.EastWestListen == "" {
		c.EastWestListen = ":15443"
	}
	if c.AgentVersion == "" {
		c.AgentVersion = Version
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.KeepaliveTime == 0 {
		c.KeepaliveTime = time.Minute
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Validate checks a Config after Defaults.
func (c Config) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("cluster: required"))
	} else if strings.ContainsAny(c.Cluster, "/ \t\n") {
		errs = append(errs, fmt.Errorf("cluster %q: must not contain '/' or whitespace", c.Cluster))
	}
	if c.Credentials != nil && c.Cluster != c.Credentials.Cluster() {
		errs = append(errs, fmt.Errorf("cluster %q: the credentials are for cluster %q", c.Cluster, c.Credentials.Cluster()))
	}
	if c.HubAddress != "" {
		if c.Credentials == nil && !c.plaintextHub {
			errs = append(errs, errors.New("credentials: required with a hub address (join the cluster with `hubctl join` first)"))
		}
		for _, a := range c.hubAddresses() {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("hubAddress %q: %v", a, err))
			}
		}
	}
	if c.GossipListen != "" {
		if _, _, err := net.SplitHostPort(c.GossipListen); err != nil {
			errs = append(errs, fmt.Errorf("gossipListen %q: %v", c.GossipListen, err))
		}
	}
	if c.GossipAddress != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddress); err != nil && !isHost(c.GossipAddress) {
			errs = append(errs, fmt.Errorf("gossipAddress %q: want host:port or a host: %v", c.GossipAddress, err))
		}
	}
	if c.GossipAddress != "" && c.GossipListen == "" {
		errs = append(errs, errors.New("gossipAddress: set without gossipListen"))
	}
	if strings.ContainsAny(c.ReplicaName, "/ \t\n") {
		errs = append(errs, fmt.Errorf("replicaName %q: must not contain '/' or whitespace", c.ReplicaName))
	}
	if _, _, err := net.SplitHostPort(c.EastWestListen); err != nil {
		errs = append(errs, fmt.Errorf("eastWestListen %q: %v", c.EastWestListen, err))
	}
	if c.EastWestAddress != "" {
		if _, _, err := net.SplitHostPort(c.EastWestAddress); err != nil {
			errs = append(errs, fmt.Errorf("eastWestAddress %q: %v", c.EastWestAddress, err))
		}
	}
	if c.ListenHost != "" && net.ParseIP(c.ListenHost) == nil {
		errs = append(errs, fmt.Errorf("listenHost %q: not an IP address", c.ListenHost))
	}
	if c.PortOffset < 0 || c.PortOffset > 65534 {
		errs = append(errs, fmt.Errorf("portOffset %d: must be between 0 and 65534", c.PortOffset))
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("backoff %v..%v: need 0 < min <= max", c.MinBackoff, c.MaxBackoff))
	}
	if c.KeepaliveTime < 10*time.Second {
		// grpc-go raises anything lower to 10s anyway; say so rather than silently differ.
		errs = append(errs, fmt.Errorf("keepaliveTime %v: must be at least 10s", c.KeepaliveTime))
	}
	if c.KeepaliveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("keepaliveTimeout %v: must be positive", c.KeepaliveTimeout))
	}
	for k := range c.Labels {
		if k == "" {
			errs = append(errs, errors.New("labels: empty key"))
		}
	}
	if len(c.GatewayAddresses) > 16 {
		errs = append(errs, fmt.Errorf("gatewayAddresses: %d, at most 16 (a Gateway's status.addresses holds 16)", len(c.GatewayAddresses)))
	}
	if err := c.HealthCheck.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("healthCheck: %w", err))
	}
	for _, a := range c.GatewayAddresses {
		// What a Gateway's status.addresses accepts, and so what the hub accepts in a hello.
		if net.ParseIP(a) == nil && len(validation.IsDNS1123Subdomain(a)) > 0 {
			errs = append(errs, fmt.Errorf("gatewayAddresses %q: want an IP address or a lowercase DNS name", a))
		}
	}
	return errors.Join(errs...)
}

// hubAddresses splits HubAddress into the addresses of the hub's replicas (an empty item is kept, so Validate names
// it).
func (c Config) hubAddresses() []string {
	if c.HubAddress == "" {
		return nil
	}
	out := strings.Split(c.HubAddress, ",")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}

// isHost reports whether s is an IP address or a DNS name, without a port.
func isHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if s == "" || len(s) > 253 || strings.ContainsAny(s, ":/[] ") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// gossipAdvertised is the gossip address given to the hub (and so to other clusters' spokes) as host:port: the
// GossipAddress, completed with GossipListen's port when it names a host alone; else GossipListen itself, or nothing
// when that binds every address (no peer could use it).
func (c Config) gossipAdvertised() string {
	if c.GossipListen == "" {
		return ""
	}
	_, port, _ := net.SplitHostPort(c.GossipListen)
	if c.GossipAddress != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddress); err == nil {
			return c.GossipAddress
		}
		return net.JoinHostPort(c.GossipAddress, port)
	}
	host, _, _ := net.SplitHostPort(c.GossipListen)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return ""
	}
	return c.GossipListen
}

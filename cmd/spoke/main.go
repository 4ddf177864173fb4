// Command spoke runs fedgate's per-cluster agent: it reports the cluster's local objects to the hub, applies the
// hub's routing projection to the embedded proxy, and serves east-west traffic for other clusters.
//
// With --static-config it runs the proxy alone from a SpokeConfig JSON file, without a hub (benchmarks, debugging).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	k8sclient "k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/internal/version"
	"github.com/fedgate/fedgate/spoke/agent"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/health"
	"github.com/fedgate/fedgate/spoke/kstatus"
	"github.com/fedgate/fedgate/spoke/leader"
	"github.com/fedgate/fedgate/spoke/proxy"
	"github.com/fedgate/fedgate/spoke/source"
	"github.com/fedgate/fedgate/spoke/source/kube"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
	"github.com/fedgate/fedgate/spoke/uninstall"
)

func main() {
	os.Exit(realMain(os.Args[1:]))
}

// realMain runs the spoke and returns its exit code: 0 also for -h (the usage was asked for, and printed) and --version.
func realMain(args []string) int {
	err := run(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(os.Stderr, "spoke:", err)
	return 1
}

func run(args []string) error {
	defaults := agent.Config{}.Defaults()
	fs := flag.NewFlagSet("spoke", flag.ContinueOnError)
	hub := fs.String("hub", "", "hub gRPC address (host:port), or the addresses of an HA hub's replicas, comma-separated (one is used, another when it goes away); empty serves the config cache only")
	cluster := fs.String("cluster", "", "name of this spoke's cluster (default: the one in --credentials-dir; must match it)")
	// No backquotes in usage strings: flag.PrintDefaults would show the quoted words as the value's placeholder.
	credsDir := fs.String("credentials-dir", "", "directory of the credentials hubctl join wrote (tls.key, tls.crt, ca.crt); required with --hub")
	credsSecret := fs.String("credentials-secret", "", "with --kubernetes: NAMESPACE/NAME of the Secret hubctl join --kubeconfig wrote; the credentials are read from it and renewals kept in it (instead of --credentials-dir)")
	installOwner := fs.String("install-owner", "", "with --kubernetes: the ClusterRole that owns this agent's installation (hubctl join --install sets it); once the cluster is removed at the hub and cleaned up, the agent deletes it and Kubernetes' garbage collector deletes the rest of the installation")
	sourceDir := fs.String("source-dir", "", "directory of Kubernetes YAML describing this cluster's objects")
	eastWestListen := fs.String("east-west-listen", defaults.EastWestListen, "listen address for traffic from other spokes")
	eastWestAddress := fs.String("east-west-address", "", "address advertised to other spokes for --east-west-listen (default: the listen address)")
	gossipListen := fs.String("gossip-listen", "", "memberlist listen address (UDP+TCP) for cluster-health gossip among spokes (empty: no gossip)")
	gossipAddress := fs.String("gossip-address", "", "address advertised to other spokes for --gossip-listen: host:port, or a host (or IP) alone with --gossip-listen's port (default: the listen address)")
	hostname, _ := os.Hostname()
	replicaName := fs.String("replica-name", hostname, "this replica's name among its cluster's spokes (in a pod: its name): gossip member <cluster>/<replica-name>, leader-election identity")
	listenHost := fs.String("listen-host", "", "bind address of every gateway port (e.g. 127.0.0.2 so several spokes share one host)")
	portOffset := fs.Int("port-offset", 0, "added to every gateway listener port")
	cacheDir := fs.String("cache-dir", "", "directory keeping the last good config, served at start before the hub answers (empty: no cache)")
	labels := fs.String("labels", "", "cluster labels, k=v,k=v")
	kubernetes := fs.Bool("kubernetes", false, "read this cluster's objects from its Kubernetes API server and write status back (instead of --source-dir)")
	gatewayAddresses := fs.String("gateway-address", "", "comma-separated IPs or hostnames the gateway is reachable at: told to the hub (status.addresses of the hub cluster's Gateways) and, with --kubernetes, written to this cluster's Gateways")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for --kubernetes (default: $KUBECONFIG, ~/.kube/config, or the pod's service account)")
	leaderElect := fs.Bool("leader-elect", true, "with --kubernetes: replicas elect one leader with a Lease, and only it reports to the hub and writes status (every replica serves traffic)")
	leaderNamespace := fs.String("leader-elect-namespace", "", "namespace of the leader-election Lease (default: the pod's namespace, else "+defaultLeaseNamespace+")")
	leaderLease := fs.String("leader-elect-lease", leader.DefaultLeaseName, "name of the leader-election Lease")
	leaseDuration := fs.Duration("leader-elect-lease-duration", leader.DefaultLeaseDuration, "how long a leader that stopped renewing (crashed) keeps the other replicas waiting; whole seconds")
	renewDeadline := fs.Duration("leader-elect-renew-deadline", leader.DefaultRenewDeadline, "how long a leader keeps leading while it fails to renew its Lease (less than the lease duration)")
	retryPeriod := fs.Duration("leader-elect-retry-period", leader.DefaultRetryPeriod, "how often the leader renews and the others try to acquire (a released Lease is taken over at once)")
	staticConfig := fs.String("static-config", "", "serve this SpokeConfig JSON file without a hub (other hub flags are ignored)")
	debugListen := fs.String("debug-listen", "", "serve Go's /debug/pprof on this loopback address (empty: off)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "at shutdown, how long in-flight requests may finish before their connections are closed")
	lim := proxy.DefaultLimits()
	fs.IntVar(&lim.MaxRequestLineBytes, "max-request-line-bytes", lim.MaxRequestLineBytes, "longest request line a gateway port reads (longer: 414)")
	fs.IntVar(&lim.MaxRequestHeaderBytes, "max-request-header-bytes", lim.MaxRequestHeaderBytes, "largest request head (request line and header fields) a gateway port reads (larger: 431)")
	fs.IntVar(&lim.MaxRequestHeaders, "max-request-headers", lim.MaxRequestHeaders, "most request header fields a gateway port reads (more: 431)")
	fs.IntVar(&lim.MaxResponseHeaderBytes, "max-response-header-bytes", lim.MaxResponseHeaderBytes, "largest response head read from a backend (larger: 502)")
	fs.IntVar(&lim.MaxResponseHeaders, "max-response-headers", lim.MaxResponseHeaders, "most response header fields read from a backend (more: 502)")
	fs.IntVar(&lim.MaxInformationalResponses, "max-informational-responses", lim.MaxInformationalResponses, "most 1xx responses a backend may send before its final response (more: 502)")
	fs.DurationVar(&lim.RequestHeaderTimeout, "request-header-timeout", lim.RequestHeaderTimeout, "time to read a request head from its first byte, and an h2c connection's preface")
	fs.DurationVar(&lim.RequestBodyIdleTimeout, "request-body-idle-timeout", lim.RequestBodyIdleTimeout, "longest wait between two reads of a request body (longer: 408, connection closed)")
	fs.DurationVar(&lim.KeepaliveIdleTimeout, "keepalive-idle-timeout", lim.KeepaliveIdleTimeout, "a client connection idle this long between requests is closed")
	fs.DurationVar(&lim.ResponseSendIdleTimeout, "response-send-idle-timeout", lim.ResponseSendIdleTimeout, "longest wait to write response bytes to a client that does not read (longer: connection closed)")
	fs.DurationVar(&lim.UpstreamResponseHeaderTimeout, "upstream-response-header-timeout", lim.UpstreamResponseHeaderTimeout, "longest wait for a backend's response head when the route sets no timeout (longer: 504)")
	fs.DurationVar(&lim.UpstreamResponseBodyIdleTimeout, "upstream-response-body-idle-timeout", lim.UpstreamResponseBodyIdleTimeout, "longest wait for the next response body bytes from a backend (longer: the response is cut off)")
	fs.IntVar(&lim.MaxClientConnections, "max-client-connections", lim.MaxClientConnections, "most open client connections per gateway port (more are closed at accept)")
	fs.IntVar(&lim.H2CMaxConcurrentStreams, "h2c-max-concurrent-streams", lim.H2CMaxConcurrentStreams, "most concurrent streams on one h2c client connection")
	fs.DurationVar(&lim.TLSHandshakeTimeout, "tls-handshake-timeout", lim.TLSHandshakeTimeout, "time an HTTPS gateway port's client has to finish its TLS handshake (then closed)")
	// Active health checks of this cluster's endpoints, for Services that set nothing else (fedgate.io/health-check*).
	var hc health.Defaults
	fs.DurationVar(&hc.Interval, "health-check-interval", health.DefaultCheckInterval, "how often each local endpoint is probed; 0 turns default checks off (a Service setting fedgate.io/health-check-interval is still probed)")
	fs.DurationVar(&hc.Timeout, "health-check-timeout", health.DefaultCheckTimeout, "how long a probe may take (at most the interval)")
	fs.StringVar(&hc.Path, "health-check-path", health.DefaultCheckPath, "path an HTTP probe GETs (gRPC and h2c backends get a TCP connect unless their Service says otherwise)")
	fs.IntVar(&hc.HealthyThreshold, "health-check-healthy-threshold", health.DefaultHealthyThreshold, "good probes in a row that bring a down endpoint back")
	fs.IntVar(&hc.UnhealthyThreshold, "health-check-unhealthy-threshold", health.DefaultUnhealthyThreshold, "failed probes in a row that take an endpoint out")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(os.Stdout, version.String("spoke"))
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	// controller-runtime (the Kubernetes source and status writer) logs through logr: into this log, not a stack
	// trace at shutdown saying its logger was never set.
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	log.Info("starting", "version", version.Version(), "revision", version.Revision())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *debugListen != "" {
		if err := serveDebug(*debugListen, log); err != nil {
			return err
		}
	}
	if err := lim.Validate(); err != nil {
		return fmt.Errorf("data-path limits: %w", err)
	}
	if *drainTimeout <= 0 {
		return fmt.Errorf("--drain-timeout %v: must be positive", *drainTimeout)
	}
	if *portOffset < 0 || *portOffset > 65534 {
		return fmt.Errorf("--port-offset %d: must be between 0 and 65534", *portOffset)
	}
	if err := hc.Validate(); err != nil {
		return fmt.Errorf("--health-check-*: %w", err)
	}
	if hc.HealthyThreshold == 0 || hc.UnhealthyThreshold == 0 || hc.Timeout == 0 {
		return errors.New("--health-check-timeout and the thresholds must be positive (--health-check-interval=0 turns checks off)")
	}
	hc.Off = hc.Interval == 0
	var gatewayAddrs []string
	for _, a := range strings.Split(*gatewayAddresses, ",") {
		if a = strings.TrimSpace(a); a != "" {
			gatewayAddrs = append(gatewayAddrs, a)
		}
	}
	if *staticConfig != "" {
		// East-west is served in static mode only when asked for, so a benchmark's lone spoke binds nothing extra.
		ew := ""
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "east-west-listen" {
				ew = *eastWestListen
			}
		})
		return runStatic(ctx, log, *staticConfig, ew, proxy.Options{Cluster: *cluster, ListenHost: *listenHost,
			PortOffset: int32(*portOffset), DrainTimeout: *drainTimeout, Limits: lim, HealthCheck: hc})
	}
	lbls, err := parseLabels(*labels)
	if err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	var creds *credentials.Store
	switch {
	case *credsDir != "" && *credsSecret != "":
		return errors.New("--credentials-dir and --credentials-secret: give one")
	case *credsSecret != "" && !*kubernetes:
		return errors.New("--credentials-secret needs --kubernetes (the Secret is read through the cluster's API server)")
	case *credsDir != "":
		if creds, err = credentials.Load(*credsDir); err != nil {
			return fmt.Errorf("--credentials-dir: %w", err)
		}
	case *credsSecret == "" && *hub != "":
		return errors.New("--credentials-dir or --credentials-secret is required with --hub: join the cluster first (hubctl join ... --out DIR, or --kubeconfig)")
	}
	var src source.Source
	var cleanup func(context.Context) error
	var statusWriter agent.StatusWriter
	var elector agent.Elector
	var tlsSecrets *tlssecrets.Store
	var secretReader agent.Runner
	if *installOwner != "" && !*kubernetes {
		return errors.New("--install-owner needs --kubernetes")
	}
	if *kubernetes {
		if *sourceDir != "" {
			return errors.New("--kubernetes and --source-dir: give one source")
		}
		rc, err := kube.RESTConfig(*kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
		// The TLS Secrets the Gateways reference are read on every replica (each serves them); the leader's source
		// reports them from the same store, without their data.
		tlsSecrets = tlssecrets.New()
		if secretReader, err = kube.NewSecretReader(kube.SecretReaderConfig{REST: rc, Store: tlsSecrets, Log: log}); err != nil {
			return fmt.Errorf("kubernetes TLS secrets: %w", err)
		}
		if src, err = kube.New(kube.Config{REST: rc, TLSSecrets: tlsSecrets, Log: log}); err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		w, err := kstatus.New(kstatus.Config{REST: rc, GatewayAddresses: gatewayAddrs, Log: log})
		if err != nil {
			return fmt.Errorf("status writer: %w", err)
		}
		statusWriter = w
		if *credsSecret != "" {
			ns, name, ok := strings.Cut(*credsSecret, "/")
			if !ok || ns == "" || name == "" {
				return fmt.Errorf("--credentials-secret %q: want NAMESPACE/NAME", *credsSecret)
			}
			kc, err := k8sclient.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("--credentials-secret: %w", err)
			}
			if creds, err = credentials.LoadSecret(ctx, kc, ns, name); err != nil {
				return fmt.Errorf("--credentials-secret: %w (was this cluster joined with hubctl join --kubeconfig, or removed at the hub?)", err)
			}
		}
		var le *leader.Elector
		if *leaderElect {
			ns := *leaderNamespace
			if ns == "" {
				ns = podNamespace()
			}
			if le, err = leader.New(leader.Config{REST: rc, Namespace: ns, Name: *leaderLease, Identity: *replicaName,
				LeaseDuration: *leaseDuration, RenewDeadline: *renewDeadline, RetryPeriod: *retryPeriod, Log: log}); err != nil {
				return fmt.Errorf("--leader-elect: %w", err)
			}
			elector = le
		}
		// A cluster removed at the hub takes back what fedgate wrote here: statuses, ServiceImports, the
		// leader-election Lease, its revoked credentials and, with --install-owner, the installation. It starts once no
		// other replica leads (so no status is written after the cleanup). The credentials go last (with the
		// installation, by the garbage collector, when there is one): kept, they let a restarted agent hear of the
		// removal again and finish the job.
		cleanup = func(ctx context.Context) error {
			if le != nil {
				if err := le.AwaitNoOtherLeader(ctx); err != nil {
					return err
				}
			}
			if err := w.Clean(ctx); err != nil {
				return err
			}
			if le != nil {
				if err := le.DeleteLease(ctx); err != nil {
					return err
				}
			}
			if *installOwner == "" {
				return creds.Discard(ctx)
			}
			// The installation goes only while its credentials are still this agent's: a re-join since (which
			// rewrites them and re-applies the installation) belongs to the cluster's new agent.
			ours, err := creds.Held(ctx)
			if err != nil || !ours {
				return err
			}
			// Before the credentials: should it fail, a restarted agent hears of the removal again and retries. The
			// Secret is owned by that ClusterRole too, so the garbage collector takes it with the rest.
			if err := uninstall.Delete(ctx, rc, *installOwner); err != nil {
				return err
			}
			log.Info("deleted the ClusterRole that owns this installation; Kubernetes' garbage collector deletes the rest", "clusterRole", *installOwner)
			return nil
		}
	}
	if *cluster == "" && creds == nil {
		return errors.New("--cluster is required")
	}
	return agent.Run(ctx, agent.Config{
		Source:          src,
		TLSSecrets:      tlsSecrets,
		SecretReader:    secretReader,
		StatusWriter:    statusWriter,
		Cleanup:         cleanup,
		Elector:         elector,
		ReplicaName:     *replicaName,
		Cluster:         *cluster,
		Credentials:     creds,
		HubAddress:      *hub,
		SourceDir:       *sourceDir,
		EastWestListen:  *eastWestListen,
		EastWestAddress: *eastWestAddress,
		GossipListen:    *gossipListen,
		GossipAddress:   *gossipAddress,
		ListenHost:      *listenHost,
		PortOffset:      int32(*portOffset),
		DrainTimeout:    *drainTimeout,
		Limits:          lim,
		CacheDir:        *cacheDir,
		Labels:          lbls,
		Log:             log,

		// Where this cluster's gateway is reached, and how its endpoints are probed.
		GatewayAddresses: gatewayAddrs,
		HealthCheck:      hc,
	})
}

// defaultLeaseNamespace holds the leader-election Lease when the spoke runs outside a pod and no namespace is given.
const defaultLeaseNamespace = "fedgate-system"

// podNamespace is the namespace of the pod the spoke runs in (its service account's), else defaultLeaseNamespace.
func podNamespace() string {
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return defaultLeaseNamespace
}

// parseLabels reads "k=v,k=v".
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%q: duplicate key", k)
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

// runStatic serves one SpokeConfig file until ctx ends, and east-west traffic on eastWestListen if set.
func runStatic(ctx context.Context, log *slog.Logger, path, eastWestListen string, po proxy.Options) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--static-config: %w", err)
	}
	cfg, err := spokeconfig.Decode(b)
	if err != nil {
		return fmt.Errorf("--static-config %s: %w", path, err)
	}
	if po.Cluster == "" {
		po.Cluster = cfg.Cluster
	}
	po.Logger = log
	srv := proxy.New(po)
	if err := srv.Apply(cfg); err != nil {
		_ = srv.Close()
		return fmt.Errorf("--static-config %s: apply: %w", path, err)
	}
	if eastWestListen != "" {
		l, err := net.Listen("tcp", eastWestListen)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("--east-west-listen: %w", err)
		}
		go func() {
			if err := srv.ServeEastWest(l); err != nil && ctx.Err() == nil {
				log.Error("east-west listener failed", "err", err)
			}
		}()
		log.Info("east-west listening", "listen", l.Addr().String())
	}
	log.Info("serving static config", "file", path, "cluster", po.Cluster, "revision", cfg.Revision, "ports", len(cfg.Ports))
	<-ctx.Done()
	log.Info("shutting down")
	return srv.Close()
}

// serveDebug serves net/http/pprof on a loopback address only: profiles reveal internals and must not be reachable
// from the network.
func serveDebug(addr string, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--debug-listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--debug-listen %q: must be a loopback address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(l) }()
	log.Info("debug endpoints listening", "listen", l.Addr().String())
	return nil
}

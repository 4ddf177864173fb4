// Package proxy is the spoke's embedded L7 proxy: it turns a SpokeConfig into an immutable routing Table (Build),
// serves the Gateway ports from the current table (swapped atomically by Apply), sends requests to local endpoints
// directly and to remote clusters through their spokes' east-west listeners, and serves those listeners
// (ServeEastWest) for other spokes.
//
// The request path takes no locks and allocates nothing to route: one map lookup for the host, a walk over
// precompiled matchers, one schedule step and one endpoint pick. Per-endpoint state lives in a registry outside the
// table so it survives swaps. The package knows nothing of the hub or of how configs arrive.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/gossip"
	"github.com/fedgate/fedgate/spoke/health"
)

// Options configure a Server.
type Options struct {
	// Cluster is this spoke's cluster name.
	Cluster string
	// ListenHost overrides the bind address of every gateway port (e.g. "127.0.0.1" in tests and standalone mode).
	ListenHost string
	// PortOffset is added to every Gateway listener port (lets several spokes share one host in tests and the demo).
	PortOffset int32
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// DrainTimeout bounds how long a removed port (or Close) waits for in-flight requests before closing them; 0 means
	// 30s.
	DrainTimeout time.Duration
	// Limits bound what clients and backends control (header sizes, counts, timeouts); zero fields take
	// DefaultLimits.
	Limits Limits
	// EastWestServerTLS and EastWestClientTLS, when set, secure the east-west hop (HTTP/2 over TLS instead of h2c).
	// The mTLS issue fills them in; the rest of the proxy does not care which is used.
	EastWestServerTLS *tls.Config
	EastWestClientTLS *tls.Config
	// EastWestClientTLSFor, when set, takes precedence over EastWestClientTLS: the TLS config for dialing one
	// cluster, so the client can insist that the peer presents that cluster's identity.
	EastWestClientTLSFor func(cluster string) *tls.Config
	// Now is the clock for session tokens, ejections and suspicion; nil means time.Now. Tests inject one.
	Now func() time.Time
	// SuspectHold is how long a cluster is skipped after a failed east-west dial; 0 means health.DefaultSuspectHold.
	SuspectHold time.Duration
	// Outlier configures passive outlier detection; the zero value means health.DefaultOutlier().
	Outlier health.Outlier
	// DisableHealthChecks turns off active health checks of local endpoints altogether, whatever backends ask
	// (benchmarks, and tests that drive health by hand).
	DisableHealthChecks bool
	// HealthCheck is the active health check of local endpoints for backends whose Service sets none of its own (the
	// spoke's --health-check-* flags); the zero value is health's built-in defaults. HealthCheck.Off probes only the
	// backends whose Service sets an interval.
	HealthCheck health.Defaults
	// OnHealthChange, if set, is told when an active check changes an endpoint's verdict.
	OnHealthChange func(cluster, address string, healthy bool)
	// Gossip, if set, makes the proxy run this spoke's memberlist member whenever the applied SpokeConfig has a Gossip
	// section: liveness of other clusters then feeds the health registry.
	Gossip *GossipOptions
	// DialContext, if set, opens every connection to a local endpoint (HTTP/1.1 and h2c; not the east-west hop, not
	// active health checks). Nil means a net.Dialer. Tests use it to map pod IPs, which EndpointSlices require to be
	// non-loopback, onto loopback backends without sending a packet anywhere else.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// LocalSecret, if set, reads a kubernetes.io/tls Secret of this spoke's own cluster (spokeconfig.Certificate.Local)
	// and returns its tls.crt and tls.key. It is called while a table is built (Apply, Reload), once per Secret and
	// build; its error is logged with the Secret's name and the certificate skipped. Nil: local certificates are
	// unusable (skipped and logged the same way).
	LocalSecret func(namespace, name string) (certPEM, keyPEM []byte, err error)
}

// GossipOptions say where this spoke gossips.
type GossipOptions struct {
	// BindAddr is host:port for memberlist (UDP and TCP).
	BindAddr string
	// Replica and AdvertiseAddr: see gossip.Options.
	Replica, AdvertiseAddr string
	// EastWestAddress is advertised to peers in the member metadata.
	EastWestAddress string
	// Observer, if set, is also told of liveness transitions (after the registry is updated).
	Observer gossip.Observer
}

// Stats are cumulative counters of gateway-port outcomes, for metrics and tests.
type Stats struct {
	Requests       atomic.Uint64
	NotFound       atomic.Uint64 // 404: no port, vhost or route
	Invalid        atomic.Uint64 // 500: invalid backend share or all weights zero
	NoEndpoints    atomic.Uint64 // 503
	UpstreamErrors atomic.Uint64 // 502
	Timeouts       atomic.Uint64 // 504
	// BadRequests: requests refused before routing (malformed, ambiguous or over a limit), and request bodies the
	// client framed wrongly or did not finish. None of them counts against an endpoint.
	BadRequests atomic.Uint64
	// BudgetExhausted: 503 because a retry was due and the backend's retry budget was spent.
	BudgetExhausted atomic.Uint64
	Retries         atomic.Uint64
	// SessionHits: requests routed by a valid session token.
	SessionHits atomic.Uint64
	// ConnectionsRefused: client connections closed at accept because their port had Limits.MaxClientConnections.
	ConnectionsRefused atomic.Uint64
	// Misdirected: 421 because a request's Host selects another HTTPS listener than its connection's SNI did.
	Misdirected atomic.Uint64
	// TLSHandshakeErrors: HTTPS connections closed because their handshake failed or timed out (no listener or no
	// certificate for the SNI among them).
	TLSHandshakeErrors atomic.Uint64
	// ClientCertRefused: handshakes on an AllowValidOnly listener refused because the client sent no certificate, or
	// one that does not verify against the listener's CA bundle, or because that bundle is unusable (also counted
	// in TLSHandshakeErrors).
	ClientCertRefused atomic.Uint64
	// ClientCertUnverified: handshakes on an AllowInsecureFallback listener admitted without a valid client
	// certificate.
	ClientCertUnverified atomic.Uint64
}

// Server serves the gateway ports and the east-west listener from the current table.
type Server struct {
	opts  Options
	log   *slog.Logger
	table atomic.Pointer[Table]
	reg   *health.Registry
	stats Stats
	now   func() time.Time

	outlier  health.Outlier
	checker  *health.Checker
	inFlight atomic.Int64

	localH1  *h1Client
	localH2C *http.Transport

	applyMu sync.Mutex               // serialises Apply, Reload and Close
	lastCfg *spokeconfig.SpokeConfig // the config of the table being served (guarded by applyMu)
	mu      sync.Mutex               // guards the fields below
	closed  bool
	ports   map[portKey]*portServer
	remotes map[string]*remoteTransport // east-west transports by cluster name + address
	ew      map[*http.Server]struct{}
	drains  sync.WaitGroup
	gossip  *gossip.Node
	gossipK []byte

	sweepStop, sweepDone chan struct{}
	localAddrs           atomic.Pointer[map[string]struct{}] // local endpoint addresses of the current table
}

// sweepIdle closes stale pooled upstream connections every half idle timeout, and those of endpoints no longer in the
// table.
func (s *Server) sweepIdle() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.localH1.idleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case now := <-t.C:
			s.localH1.sweep(now, s.tableHasEndpoint)
		}
	}
}

// tableHasEndpoint reports whether the current table sends to local endpoint address addr.
func (s *Server) tableHasEndpoint(addr string) bool {
	m := s.localAddrs.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[addr]
	return ok
}

type portKey struct {
	port int32
	addr string
	tls  bool // an HTTPS port
}

// New returns a Server serving nothing until Apply.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SuspectHold == 0 {
		opts.SuspectHold = health.DefaultSuspectHold
	}
	opts.Limits = opts.Limits.withDefaults()
	if opts.Outlier == (health.Outlier{}) {
		opts.Outlier = health.DefaultOutlier()
	}
	h2c := &http.Transport{
		Protocols:           protocols(false, true),
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DialContext:         opts.DialContext,
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger.With("component", "proxy"),
		now:      opts.Now,
		outlier:  opts.Outlier,
		reg:      health.NewRegistry(),
		localH1:  newH1Client(opts.DialContext, opts.Limits),
		localH2C: h2c,
		ports:    map[portKey]*portServer{},
		remotes:  map[string]*remoteTransport{},
		ew:       map[*http.Server]struct{}{},
	}
	s.sweepStop = make(chan struct{})
	s.sweepDone = make(chan struct{})
	go s.sweepIdle()
	if !opts.DisableHealthChecks {
		var onChange func(*health.Endpoint, bool)
		if f := opts.OnHealthChange; f != nil {
			onChange = func(ep *health.Endpoint, ok bool) { f(ep.Key.Cluster, ep.Key.Address, ok) }
		}
		s.checker = health.NewChecker(s.log, onChange, opts.DialContext)
	}
	return s
}

// Health returns the endpoint and cluster health registry (gossip and diagnostics write and read it).
func (s *Server) Health() *health.Registry { return s.reg }

// Gossip returns the running memberlist member, or nil.
func (s *Server) Gossip() *gossip.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gossip
}

func protocols(h1, h2c bool) *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(h1)
	p.SetUnencryptedHTTP2(h2c)
	return &p
}

// Stats returns the live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Table returns the table being served (nil before the first Apply).
func (s *Server) Table() *Table { return s.table.Load() }

// Handler returns the gateway handler for configured port `port`, for tests and for embedding in another server.
func (s *Server) Handler(port int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveGateway(w, r, port) })
}

// Apply builds a table from cfg and swaps it in atomically, opening and closing gateway ports as needed. On error the
// previous table keeps serving and the error explains why (the spoke NACKs with it).
func (s *Server) Apply(cfg *spokeconfig.SpokeConfig) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.applyLocked(cfg)
}

func (s *Server) applyLocked(cfg *spokeconfig.SpokeConfig) error {
	t, err := build(cfg, s.opts, s.reg)
	if err != nil {
		return fmt.Errorf("revision %d: %w", cfg.Revision, err)
	}
	for _, b := range cfg.Backends {
		if hc := b.HealthCheck; hc != nil && len(hc.Problems) > 0 {
			s.log.Warn("health-check annotations of the backend's Service ignored", "backend", b.ID, "revision", cfg.Revision, "problems", hc.Problems)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("proxy is closed")
	}
	for _, rc := range t.remotes {
		rc.rt = s.eastWestTransportLocked(rc)
	}
	s.mu.Unlock()

	want := map[portKey]*portTable{}
	for _, pt := range t.ports {
		want[s.portKeyFor(pt)] = pt
	}
	// Open new ports before publishing, so a bind failure leaves the old table and ports untouched. A port that
	// switches between HTTP and HTTPS is the exception: its socket must be closed before it can be bound again (its
	// connections drain like a removed port's); if the new bind fails, the old protocol is bound again.
	var opened, switched []*portServer
	for k := range want {
		if s.ports[k] != nil {
			continue
		}
		other := k
		other.tls = !k.tls
		if old := s.ports[other]; old != nil {
			old.stopAccepting()
			switched = append(switched, old)
		}
		ps, err := s.listen(k)
		if err != nil {
			for _, o := range opened {
				o.shutdown(0)
			}
			s.rebindSwitched(switched)
			return fmt.Errorf("revision %d: port %d: %w", cfg.Revision, k.port, err)
		}
		opened = append(opened, ps)
	}
	s.lastCfg = cfg
	prev := s.table.Swap(t)
	s.retain(t)
	if prev != nil && !maps.Equal(prev.revoked, t.revoked) {
		// Connections to other spokes were verified against the previous revocations: open them again.
		s.mu.Lock()
		for _, rt := range s.remotes {
			rt.t.CloseIdleConnections()
		}
		s.mu.Unlock()
	}
	if err := s.applyGossip(cfg); err != nil {
		s.log.Error("gossip", "revision", cfg.Revision, "err", err)
	}
	s.mu.Lock()
	for _, ps := range opened {
		s.ports[ps.key] = ps
		go ps.serve()
	}
	for k, ps := range s.ports {
		if _, ok := want[k]; !ok {
			delete(s.ports, k)
			ps.stopAccepting()
			s.drains.Add(1)
			go func() {
				defer s.drains.Done()
				ps.shutdown(s.opts.DrainTimeout)
			}()
		}
	}
	s.mu.Unlock()
	s.log.Info("applied spoke config", "revision", cfg.Revision, "ports", len(t.ports), "backends", len(t.backends))
	return nil
}

func (s *Server) portKeyFor(pt *portTable) portKey {
	host := pt.bindAddr
	if s.opts.ListenHost != "" {
		host = s.opts.ListenHost
	}
	return portKey{port: pt.port, addr: net.JoinHostPort(host, strconv.Itoa(int(pt.port+s.opts.PortOffset))), tls: pt.tls != nil}
}

// rebindSwitched undoes the protocol switch of ports whose new socket could not be opened: each gets its socket back
// (a fresh port server, serving the old table's protocol), and the stopped one drains.
func (s *Server) rebindSwitched(switched []*portServer) {
	for _, old := range switched {
		s.mu.Lock()
		delete(s.ports, old.key)
		s.mu.Unlock()
		s.drains.Add(1)
		go func() {
			defer s.drains.Done()
			old.shutdown(s.opts.DrainTimeout)
		}()
		ps, err := s.listen(old.key)
		if err != nil {
			s.log.Error("gateway port lost: cannot bind it again", "addr", old.key.addr, "err", err)
			continue
		}
		s.mu.Lock()
		s.ports[ps.key] = ps
		s.mu.Unlock()
		go ps.serve()
	}
}

func (s *Server) listen(k portKey) (*portServer, error) {
	ln, err := net.Listen("tcp", k.addr)
	if err != nil {
		return nil, err
	}
	return newPortServer(s, k, ln), nil
}

// eastWestTransportLocked returns the pooled HTTP/2 transport for a remote cluster, creating it on first use. One
// transport per cluster keeps one connection set per peer spoke across table swaps.
func (s *Server) eastWestTransportLocked(rc *remoteCluster) http.RoundTripper {
	key := rc.name + "|" + rc.addr
	if t := s.remotes[key]; t != nil {
		// The cached round tripper, not the bare transport: with TLS it is the scheme-switching wrapper, and handing
		// out the transport itself would send cleartext to a TLS listener from the second table on.
		return t.rt
	}
	t := &http.Transport{
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	tlsConf := s.opts.EastWestClientTLS
	if s.opts.EastWestClientTLSFor != nil {
		tlsConf = s.opts.EastWestClientTLSFor(rc.name)
	}
	rt := &remoteTransport{t: t, rt: t}
	if tlsConf != nil {
		t.TLSClientConfig = tlsConf.Clone()
		// The callee's certificate must not be one the hub revoked, judged by the table current at the handshake.
		verify := t.TLSClientConfig.VerifyConnection
		t.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			if tb := s.table.Load(); tb != nil && tb.revoked[peerSerial(&cs)] {
				return fmt.Errorf("east-west peer %s presents revoked certificate %s", rc.name, peerSerial(&cs))
			}
			return nil
		}
		t.Protocols = &http.Protocols{}
		t.Protocols.SetHTTP2(true)
		// The URL scheme stays "http" in forward; a TLS transport needs https.
		rt.rt = httpsRoundTripper{t}
	} else {
		t.Protocols = protocols(false, true)
	}
	s.remotes[key] = rt
	return rt.rt
}

// remoteTransport is one remote cluster's connection pool and the round tripper that uses it.
type remoteTransport struct {
	t  *http.Transport
	rt http.RoundTripper
}

// httpsRoundTripper switches the request scheme for a TLS east-west transport.
type httpsRoundTripper struct{ t *http.Transport }

func (h httpsRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r.URL.Scheme = "https"
	return h.t.RoundTrip(r)
}

// Limits of the east-west listener.
const (
	EastWestMaxConcurrentStreams = 250
	EastWestMaxHeaderBytes       = 64 << 10
)

// ServeEastWest serves requests from other spokes on l until Close.
func (s *Server) ServeEastWest(l net.Listener) error {
	srv := &http.Server{
		Handler:           http.HandlerFunc(s.serveEastWest),
		Protocols:         protocols(true, true),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    EastWestMaxHeaderBytes,
		// Bounded streams and header tables per connection: a peer cannot open unbounded concurrent work (HTTP/2
		// rapid-reset floods are additionally throttled by net/http itself).
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:      EastWestMaxConcurrentStreams,
			MaxDecoderHeaderTableSize: 4096,
			MaxEncoderHeaderTableSize: 4096,
			MaxReadFrameSize:          1 << 20,
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.opts.EastWestServerTLS != nil {
		srv.Protocols = &http.Protocols{}
		srv.Protocols.SetHTTP2(true)
		srv.Protocols.SetHTTP1(true)
		l = tls.NewListener(l, s.opts.EastWestServerTLS)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	s.ew[srv] = struct{}{}
	s.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every listener; in-flight requests finish (bounded by Options.DrainTimeout).
func (s *Server) Close() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ports := s.ports
	s.ports = map[portKey]*portServer{}
	ews := s.ew
	g := s.gossip
	s.gossip = nil
	s.mu.Unlock()

	var wg sync.WaitGroup
	if g != nil {
		// Leaving first tells peers at once (instead of letting them detect a failure) and steers their traffic away
		// while in-flight requests drain.
		wg.Add(1)
		go func() { defer wg.Done(); g.Leave(time.Second) }()
	}
	for _, ps := range ports {
		wg.Add(1)
		go func() { defer wg.Done(); ps.shutdown(s.opts.DrainTimeout) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainTimeout)
	defer cancel()
	for srv := range ews {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		}()
	}
	wg.Wait()
	s.drains.Wait()
	close(s.sweepStop)
	<-s.sweepDone
	if s.checker != nil {
		s.checker.Close()
	}
	s.localH1.closeIdle()
	s.localH2C.CloseIdleConnections()
	s.mu.Lock()
	for _, t := range s.remotes {
		t.t.CloseIdleConnections()
	}
	s.mu.Unlock()
	return nil
}

// retain drops the health state of endpoints t no longer references and points the active checker at t's local
// endpoints (ready or draining: a draining endpoint still serves its sessions and must be known to be up).
func (s *Server) retain(t *Table) {
	keep := map[health.Key]bool{}
	local := map[string]struct{}{}
	var targets []health.Target
	for _, b := range t.backends {
		for k, ep := range b.serving {
			keep[k] = true
			if ep.remote == nil {
				local[ep.addr] = struct{}{}
			}
			if ep.remote == nil && ep.cluster == t.cluster && b.probe {
				targets = append(targets, health.Target{Endpoint: ep.state, Config: b.check})
			}
		}
	}
	s.reg.Retain(func(k health.Key) bool { return keep[k] })
	s.localAddrs.Store(&local)
	s.localH1.sweep(time.Now(), s.tableHasEndpoint)
	if s.checker != nil {
		s.checker.Sync(targets)
	}
}

// applyGossip starts this spoke's memberlist member on the first config with a Gossip section, rotates its key when
// the config's key changes, and (re)joins the listed peers. Gossip problems are logged, not NACKed: routing works
// without gossip, only failover is slower.
func (s *Server) applyGossip(cfg *spokeconfig.SpokeConfig) error {
	if s.opts.Gossip == nil || cfg.Gossip == nil {
		return nil
	}
	s.mu.Lock()
	g := s.gossip
	s.mu.Unlock()
	if g == nil {
		cluster := s.opts.Cluster
		if cluster == "" {
			cluster = cfg.Cluster
		}
		obs := s.opts.Gossip.Observer
		var err error
		g, err = gossip.Start(gossip.Options{
			Cluster: cluster, Replica: s.opts.Gossip.Replica, BindAddr: s.opts.Gossip.BindAddr,
			AdvertiseAddr: s.opts.Gossip.AdvertiseAddr, EastWestAddress: s.opts.Gossip.EastWestAddress,
			Key: cfg.Gossip.Key, Logger: s.log,
			Load: func() int64 { return s.inFlight.Load() },
			Observer: func(c string, alive bool) {
				s.reg.SetClusterAlive(c, alive)
				if obs != nil {
					obs(c, alive)
				}
			},
		})
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			g.Shutdown()
			return nil
		}
		s.gossip = g
		s.mu.Unlock()
	} else if err := g.UpdateKey(cfg.Gossip.Key); err != nil {
		return err
	}
	// Join only peers not already members: a config revision should not cost a push/pull with every spoke.
	known := map[string]bool{g.Addr(): true}
	for _, m := range g.Members() {
		known[m.Addr] = true
	}
	var peers []string
	for _, p := range cfg.Gossip.Peers {
		if !known[p] {
			peers = append(peers, p)
		}
	}
	if len(peers) > 0 {
		if _, err := g.Join(peers); err != nil {
			// Peers that are down now will join us when they start (they have our address in their config).
			s.log.Info("gossip join", "peers", peers, "err", err)
		}
	}
	return nil
}

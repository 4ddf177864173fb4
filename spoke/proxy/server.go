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
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
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
	// DrainTimeout bounds how long a removed port waits for in-flight requests before closing them; 0 means 30s.
	DrainTimeout time.Duration
	// EastWestServerTLS and EastWestClientTLS, when set, secure the east-west hop (HTTP/2 over TLS instead of h2c).
	// The mTLS issue fills them in; the rest of the proxy does not care which is used.
	EastWestServerTLS *tls.Config
	EastWestClientTLS *tls.Config
}

// Stats are cumulative counters of gateway-port outcomes, for metrics and tests.
type Stats struct {
	Requests       atomic.Uint64
	NotFound       atomic.Uint64 // 404: no port, vhost or route
	Invalid        atomic.Uint64 // 500: invalid backend share or all weights zero
	NoEndpoints    atomic.Uint64 // 503
	UpstreamErrors atomic.Uint64 // 502
	Timeouts       atomic.Uint64 // 504
}

// Server serves the gateway ports and the east-west listener from the current table.
type Server struct {
	opts  Options
	log   *slog.Logger
	table atomic.Pointer[Table]
	reg   *registry
	stats Stats

	localH1  *h1Client
	localH2C *http.Transport

	applyMu sync.Mutex // serialises Apply and Close
	mu      sync.Mutex // guards the fields below
	closed  bool
	ports   map[portKey]*portServer
	remotes map[string]*http.Transport // east-west transports by cluster name + address
	ew      map[*http.Server]struct{}
	drains  sync.WaitGroup
}

type portKey struct {
	port int32
	addr string
}

// New returns a Server serving nothing until Apply.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	h2c := &http.Transport{
		Protocols:           protocols(false, true),
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &Server{
		opts:     opts,
		log:      opts.Logger.With("component", "proxy"),
		reg:      newRegistry(),
		localH1:  newH1Client(),
		localH2C: h2c,
		ports:    map[portKey]*portServer{},
		remotes:  map[string]*http.Transport{},
		ew:       map[*http.Server]struct{}{},
	}
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
	t, err := build(cfg, s.opts, s.reg)
	if err != nil {
		return fmt.Errorf("revision %d: %w", cfg.Revision, err)
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
	// Open new ports before publishing, so a bind failure leaves the old table and ports untouched.
	var opened []*portServer
	for k := range want {
		if s.ports[k] != nil {
			continue
		}
		ps, err := s.listen(k)
		if err != nil {
			for _, o := range opened {
				o.shutdown(0)
			}
			return fmt.Errorf("revision %d: port %d: %w", cfg.Revision, k.port, err)
		}
		opened = append(opened, ps)
	}
	s.table.Store(t)
	s.reg.retain(t)
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
	return portKey{port: pt.port, addr: net.JoinHostPort(host, strconv.Itoa(int(pt.port+s.opts.PortOffset)))}
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
		return t
	}
	t := &http.Transport{
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if s.opts.EastWestClientTLS != nil {
		t.TLSClientConfig = s.opts.EastWestClientTLS.Clone()
		t.Protocols = &http.Protocols{}
		t.Protocols.SetHTTP2(true)
		// The URL scheme stays "http" in forward; a TLS transport needs https.
		s.remotes[key] = t
		return httpsRoundTripper{t}
	}
	t.Protocols = protocols(false, true)
	s.remotes[key] = t
	return t
}

// httpsRoundTripper switches the request scheme for a TLS east-west transport.
type httpsRoundTripper struct{ t *http.Transport }

func (h httpsRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r.URL.Scheme = "https"
	return h.t.RoundTrip(r)
}

// ServeEastWest serves requests from other spokes on l until Close.
func (s *Server) ServeEastWest(l net.Listener) error {
	srv := &http.Server{
		Handler:           http.HandlerFunc(s.serveEastWest),
		Protocols:         protocols(true, true),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
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
	s.mu.Unlock()

	var wg sync.WaitGroup
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
	s.localH1.closeIdle()
	s.localH2C.CloseIdleConnections()
	s.mu.Lock()
	for _, t := range s.remotes {
		t.CloseIdleConnections()
	}
	s.mu.Unlock()
	return nil
}

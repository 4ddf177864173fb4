package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Built-in defaults of the active health check: what Defaults' zero fields mean, and so what a spoke probes with when
// neither its --health-check-* flags nor a Service's annotations say otherwise. They are documented in docs/health.md;
// TestCheckDefaultsMatchDocs keeps the two in step.
const (
	DefaultCheckPath          = "/"
	DefaultCheckInterval      = 5 * time.Second
	DefaultCheckTimeout       = 1 * time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
)

// CheckType is how an endpoint is probed.
type CheckType string

// Probe types (spokeconfig.HealthCheck.Type).
const (
	// CheckHTTP sends GET Path (over h2c for kubernetes.io/h2c backends); a 2xx/3xx answer is healthy.
	CheckHTTP CheckType = spokeconfig.HealthCheckHTTP
	// CheckTCP opens a connection and closes it.
	CheckTCP CheckType = spokeconfig.HealthCheckTCP
	// CheckGRPC calls grpc.health.v1.Health/Check over h2c; SERVING is healthy (a server without the health service
	// answers Unimplemented, which is not).
	CheckGRPC CheckType = spokeconfig.HealthCheckGRPC
)

// Defaults are a spoke's active health check for backends whose Service sets nothing else (the spoke's
// --health-check-* flags). Zero fields take the built-in defaults above.
type Defaults struct {
	// Off: only backends whose Service sets an interval of its own (fedgate.io/health-check-interval) are probed
	// (--health-check-interval=0).
	Off                bool
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
}

// withBuiltins fills d's zero fields with the built-in defaults.
func (d Defaults) withBuiltins() Defaults {
	if d.Path == "" {
		d.Path = DefaultCheckPath
	}
	if d.Interval == 0 {
		d.Interval = DefaultCheckInterval
	}
	if d.Timeout == 0 {
		d.Timeout = DefaultCheckTimeout
	}
	if d.HealthyThreshold == 0 {
		d.HealthyThreshold = DefaultHealthyThreshold
	}
	if d.UnhealthyThreshold == 0 {
		d.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	return d
}

// Validate checks flag values.
func (d Defaults) Validate() error {
	var errs []error
	if d.Interval < 0 || d.Timeout < 0 {
		errs = append(errs, fmt.Errorf("health check interval %v, timeout %v: must not be negative", d.Interval, d.Timeout))
	}
	if d.HealthyThreshold < 0 || d.UnhealthyThreshold < 0 {
		errs = append(errs, fmt.Errorf("health check thresholds %d, %d: must not be negative", d.HealthyThreshold, d.UnhealthyThreshold))
	}
	if d.Path != "" && !strings.HasPrefix(d.Path, "/") {
		errs = append(errs, fmt.Errorf("health check path %q: must start with /", d.Path))
	}
	return errors.Join(errs...)
}

// CheckConfig is a resolved active health check.
type CheckConfig struct {
	Type               CheckType
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
	// H2C probes with HTTP/2 prior knowledge (backends with appProtocol kubernetes.io/h2c).
	H2C bool
	// GRPCService is what a CheckGRPC probe asks about.
	GRPCService string
}

// GRPCAppProtocol reports whether a Service port's appProtocol names gRPC or cleartext HTTP/2, whose servers may
// answer a plain GET with an error (gRPC's 415) however healthy they are.
func GRPCAppProtocol(appProtocol string) bool {
	switch strings.ToLower(appProtocol) {
	case "kubernetes.io/h2c", "h2c", "grpc":
		return true
	}
	return false
}

// ResolveCheck is the check of a backend's endpoints: d (the spoke's defaults) overlaid with hc (from the backend's
// Service; nil: none), the type chosen by appProtocol unless hc names one. ok is false when the endpoints are not to
// be probed: hc disables it, or d is Off and hc sets no interval of its own.
func ResolveCheck(d Defaults, hc *spokeconfig.HealthCheck, appProtocol string) (c CheckConfig, ok bool) {
	d = d.withBuiltins()
	c = CheckConfig{
		Type: CheckHTTP, Path: d.Path, Interval: d.Interval, Timeout: d.Timeout,
		HealthyThreshold: d.HealthyThreshold, UnhealthyThreshold: d.UnhealthyThreshold,
		H2C: appProtocol == "kubernetes.io/h2c",
	}
	if GRPCAppProtocol(appProtocol) {
		c.Type = CheckTCP
	}
	ok = !d.Off
	if hc != nil {
		if hc.Disabled {
			return c, false
		}
		if hc.Type != "" {
			c.Type = CheckType(hc.Type)
		}
		if hc.Path != "" {
			c.Path = hc.Path
		}
		if hc.IntervalMs > 0 {
			c.Interval = time.Duration(hc.IntervalMs) * time.Millisecond
			ok = true
		}
		if hc.TimeoutMs > 0 {
			c.Timeout = time.Duration(hc.TimeoutMs) * time.Millisecond
		}
		if hc.HealthyThreshold > 0 {
			c.HealthyThreshold = hc.HealthyThreshold
		}
		if hc.UnhealthyThreshold > 0 {
			c.UnhealthyThreshold = hc.UnhealthyThreshold
		}
		c.GRPCService = hc.GRPCService
	}
	// A timeout longer than the interval would stack probes; the interval bounds it.
	c.Timeout = min(c.Timeout, c.Interval)
	return c, ok
}

// Target is one endpoint to probe.
type Target struct {
	Endpoint *Endpoint
	Config   CheckConfig
}

// Checker runs active health checks: one goroutine per probed endpoint, a probe (Config.Type) every Config.Interval;
// a probe that succeeds within Config.Timeout is a success. HealthyThreshold successes in a row mark the endpoint
// healthy, UnhealthyThreshold failures in a row mark it down. Endpoints start healthy: Kubernetes readiness already
// vouched for them, and starting them down would turn every config change into a brief outage.
type Checker struct {
	log      *slog.Logger
	onChange func(*Endpoint, bool)
	dial     DialFunc
	h1, h2c  *http.Client

	mu     sync.Mutex
	closed bool
	probes map[*Endpoint]*probe
	wg     sync.WaitGroup
}

type probe struct {
	cfg  CheckConfig
	stop chan struct{}
}

// DialFunc opens a connection to an endpoint.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NewChecker returns a Checker. onChange, if not nil, is called (on the probe's goroutine) whenever an endpoint's
// verdict changes; tests and metrics use it. dial, if not nil, opens the probes' connections (the proxy passes the
// same dialer its traffic to local endpoints uses, so probes reach exactly where requests go).
func NewChecker(log *slog.Logger, onChange func(ep *Endpoint, healthy bool), dial DialFunc) *Checker {
	if log == nil {
		log = slog.Default()
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	h1 := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true, IdleConnTimeout: time.Minute, DialContext: dial}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: &p, DisableCompression: true, IdleConnTimeout: time.Minute, DialContext: dial}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Checker{
		log:      log.With("component", "health-check"),
		onChange: onChange,
		dial:     dial,
		h1:       &http.Client{Transport: h1, CheckRedirect: noRedirect},
		h2c:      &http.Client{Transport: h2, CheckRedirect: noRedirect},
		probes:   map[*Endpoint]*probe{},
	}
}

// Sync makes the set of probed endpoints equal to targets: new ones start, removed ones stop, changed configs
// restart (keeping the verdict). An endpoint that stops being probed is healthy again as far as active checks go.
func (c *Checker) Sync(targets []Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := make(map[*Endpoint]CheckConfig, len(targets))
	for _, t := range targets {
		want[t.Endpoint] = t.Config
	}
	for ep, p := range c.probes {
		cfg, ok := want[ep]
		if ok && cfg == p.cfg {
			continue
		}
		close(p.stop)
		delete(c.probes, ep)
		if !ok && !ep.ActiveHealthy() {
			// No longer probed (its Service turned checks off): a down verdict nothing will ever revise would keep
			// the endpoint out for good. Kubernetes readiness vouches for it again, as for a new endpoint.
			ep.SetActiveHealthy(true)
			c.log.Info("endpoint no longer probed; its failed health check no longer counts", "cluster", ep.Key.Cluster, "address", ep.Key.Address)
			if c.onChange != nil {
				c.onChange(ep, true)
			}
		}
	}
	for ep, cfg := range want {
		if c.probes[ep] != nil {
			continue
		}
		p := &probe{cfg: cfg, stop: make(chan struct{})}
		c.probes[ep] = p
		c.wg.Add(1)
		go c.run(ep, p)
	}
}

// Close stops every probe and waits for them.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	for ep, p := range c.probes {
		close(p.stop)
		delete(c.probes, ep)
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.h1.CloseIdleConnections()
	c.h2c.CloseIdleConnections()
}

func (c *Checker) run(ep *Endpoint, p *probe) {
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-p.stop
		cancel()
	}()
	check, closeCheck := c.prober(ep.Key.Address, p.cfg)
	defer closeCheck()
	// Spread the first probes of a large config over one interval so they do not arrive in a burst.
	wait := time.Duration(rand.Int64N(int64(p.cfg.Interval)/4 + 1))
	var ok, bad int
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-timer.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, p.cfg.Timeout)
		good := check(pctx)
		pcancel()
		if ctx.Err() != nil {
			return
		}
		if good {
			ok, bad = ok+1, 0
			if ok == p.cfg.HealthyThreshold && !ep.ActiveHealthy() {
				c.set(ep, true)
			}
		} else {
			ok, bad = 0, bad+1
			if bad == p.cfg.UnhealthyThreshold && ep.ActiveHealthy() {
				c.set(ep, false)
			}
		}
		timer.Reset(p.cfg.Interval)
	}
}

// prober returns one probe of addr as cfg says, and what releases its resources.
func (c *Checker) prober(addr string, cfg CheckConfig) (check func(context.Context) bool, release func()) {
	switch cfg.Type {
	case CheckTCP:
		return func(ctx context.Context) bool {
			conn, err := c.dial(ctx, "tcp", addr)
			if err != nil {
				return false
			}
			conn.Close()
			return true
		}, func() {}
	case CheckGRPC:
		conn, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return c.dial(ctx, "tcp", a) }),
			// A backend back up is seen at the next probe, not after gRPC's reconnect backoff (up to 2 minutes).
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.Interval},
				MinConnectTimeout: cfg.Timeout,
			}))
		if err != nil { // only for a malformed target, which an ip:port is not
			c.log.Error("gRPC health check client", "address", addr, "err", err)
			return func(context.Context) bool { return false }, func() {}
		}
		hc := healthpb.NewHealthClient(conn)
		return func(ctx context.Context) bool {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: cfg.GRPCService})
			return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
		}, func() { conn.Close() }
	}
	client := c.h1
	if cfg.H2C {
		client = c.h2c
	}
	url := "http://" + addr + cfg.Path
	return func(ctx context.Context) bool { return c.once(ctx, client, url) }, func() {}
}

func (c *Checker) set(ep *Endpoint, healthy bool) {
	ep.SetActiveHealthy(healthy)
	c.log.Info("endpoint health changed", "cluster", ep.Key.Cluster, "address", ep.Key.Address, "healthy", healthy)
	if c.onChange != nil {
		c.onChange(ep, healthy)
	}
}

func (c *Checker) once(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "fedgate-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

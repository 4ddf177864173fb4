package health

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Defaults of the active health check, used for every field a Backend's HealthCheck leaves zero (and for all of them
// when it is nil). They are documented in docs/health.md; TestCheckDefaultsMatchDocs keeps the two in step.
const (
	DefaultCheckPath          = "/"
	DefaultCheckInterval      = 5 * time.Second
	DefaultCheckTimeout       = 1 * time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
)

// CheckConfig is a resolved active health check.
type CheckConfig struct {
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
	// H2C probes with HTTP/2 prior knowledge (backends with appProtocol kubernetes.io/h2c).
	H2C bool
}

// ResolveCheck applies the defaults to a Backend's HealthCheck (nil: all defaults).
func ResolveCheck(hc *spokeconfig.HealthCheck) CheckConfig {
	c := CheckConfig{
		Path: DefaultCheckPath, Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout,
		HealthyThreshold: DefaultHealthyThreshold, UnhealthyThreshold: DefaultUnhealthyThreshold,
	}
	if hc == nil {
		return c
	}
	if hc.Path != "" {
		c.Path = hc.Path
	}
	if hc.IntervalMs > 0 {
		c.Interval = time.Duration(hc.IntervalMs) * time.Millisecond
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
	// A timeout longer than the interval would stack probes; the interval bounds it.
	c.Timeout = min(c.Timeout, c.Interval)
	return c
}

// Target is one endpoint to probe.
type Target struct {
	Endpoint *Endpoint
	Config   CheckConfig
}

// Checker runs active HTTP health checks: one goroutine per probed endpoint, GET Config.Path every Config.Interval; a
// 2xx/3xx answer within Config.Timeout is a success. HealthyThreshold successes in a row mark the endpoint healthy,
// UnhealthyThreshold failures in a row mark it down. Endpoints start healthy: Kubernetes readiness already vouched for
// them, and starting them down would turn every config change into a brief outage.
type Checker struct {
	log      *slog.Logger
	onChange func(*Endpoint, bool)
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
	h1 := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true, IdleConnTimeout: time.Minute, DialContext: dial}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: &p, DisableCompression: true, IdleConnTimeout: time.Minute, DialContext: dial}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Checker{
		log:      log.With("component", "health-check"),
		onChange: onChange,
		h1:       &http.Client{Transport: h1, CheckRedirect: noRedirect},
		h2c:      &http.Client{Transport: h2, CheckRedirect: noRedirect},
		probes:   map[*Endpoint]*probe{},
	}
}

// Sync makes the set of probed endpoints equal to targets: new ones start, removed ones stop, changed configs
// restart. An endpoint that stops being probed keeps its last verdict until its state is dropped from the registry.
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
		if cfg, ok := want[ep]; !ok || cfg != p.cfg {
			close(p.stop)
			delete(c.probes, ep)
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
	client := c.h1
	if p.cfg.H2C {
		client = c.h2c
	}
	url := "http://" + ep.Key.Address + p.cfg.Path
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
		good := c.once(ctx, client, url, p.cfg.Timeout)
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

func (c *Checker) set(ep *Endpoint, healthy bool) {
	ep.SetActiveHealthy(healthy)
	c.log.Info("endpoint health changed", "cluster", ep.Key.Cluster, "address", ep.Key.Address, "healthy", healthy)
	if c.onChange != nil {
		c.onChange(ep, healthy)
	}
}

func (c *Checker) once(ctx context.Context, client *http.Client, url string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
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

package proxy

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/health"
)

// probeCounter is a backend that counts the health checks it gets, by path.
type probeCounter struct {
	mu    sync.Mutex
	paths map[string]int
}

func (p *probeCounter) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paths[path]
}

func countingBackend(t *testing.T) (*probeCounter, *httptest.Server) {
	t.Helper()
	p := &probeCounter{paths: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") == "fedgate-health-check" {
			p.mu.Lock()
			p.paths[r.URL.Path]++
			p.mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	return p, srv
}

// Active health checks follow the spoke's defaults (its --health-check-* flags), a Service's override (its
// annotations, carried in Backend.HealthCheck), and are off where either says so (issue 10: every endpoint was probed
// every 5s with GET /, with no way to change or stop it).
func TestHealthCheckSettings(t *testing.T) {
	fast := health.Defaults{Path: "/default", Interval: 20 * time.Millisecond}
	cases := []struct {
		name     string
		defaults health.Defaults
		hc       *spokeconfig.HealthCheck
		path     string // where probes must arrive; "" for none anywhere
	}{
		{name: "spoke defaults", defaults: fast, path: "/default"},
		{name: "service override", defaults: fast, hc: &spokeconfig.HealthCheck{Path: "/svc", IntervalMs: 20}, path: "/svc"},
		{name: "service off", defaults: fast, hc: &spokeconfig.HealthCheck{Disabled: true}},
		{name: "spoke off", defaults: health.Defaults{Off: true, Path: "/default"}},
		{name: "spoke off, service asks", defaults: health.Defaults{Off: true}, hc: &spokeconfig.HealthCheck{Path: "/svc", IntervalMs: 20}, path: "/svc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			probes, srv := countingBackend(t)
			be := localBackend("ns/a:80", addrOf(srv))
			be.HealthCheck = tc.hc
			gatewayFor(t, Options{HealthCheck: tc.defaults}, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1}), be)
			time.Sleep(300 * time.Millisecond)
			total := 0
			probes.mu.Lock()
			for _, n := range probes.paths {
				total += n
			}
			got := probes.paths
			probes.mu.Unlock()
			switch {
			case tc.path == "" && total > 0:
				t.Errorf("probes arrived although checks are off: %v", got)
			case tc.path != "" && probes.count(tc.path) < 3:
				t.Errorf("want probes at %s every 20ms, got %v in 300ms", tc.path, got)
			case tc.path != "" && probes.count(tc.path) != total:
				t.Errorf("probes elsewhere than %s: %v", tc.path, got)
			}
		})
	}
}

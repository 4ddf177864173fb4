package proxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/health"
)

// TestWRRExactSequence pins the smooth weighted round-robin order (nginx's reference sequence for 5/1/1 is
// a a b a c a a), as Traefik's TestBalancerBias does for its scheduler.
func TestWRRExactSequence(t *testing.T) {
	s := newSchedule([]int32{5, 1, 1})
	var got strings.Builder
	for i := 0; i < 14; i++ {
		got.WriteByte("abc"[s.next()])
	}
	if got.String() != "aabacaaaabacaa" {
		t.Fatalf("sequence %s, want aabacaa twice", got.String())
	}
	s = newSchedule([]int32{0, 2, 1})
	got.Reset()
	for i := 0; i < 6; i++ {
		got.WriteByte("abc"[s.next()])
	}
	if got.String() != "bcbbcb" {
		t.Fatalf("weight 0 honoured? sequence %s", got.String())
	}
}

func testBackend(reg *health.Registry, addrs ...string) *backend {
	b := &spokeconfig.Backend{ID: "ns/b:80"}
	for _, a := range addrs {
		b.Endpoints = append(b.Endpoints, spokeconfig.Endpoint{Cluster: "c1", Address: a, Ready: true})
	}
	return newBackend(b, "c1", nil, reg)
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	reg := health.NewRegistry()
	b := testBackend(reg, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	now := time.Now().UnixNano()
	b.ready[0].state.InFlight.Store(10)
	b.ready[1].state.InFlight.Store(3)
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		counts[b.pick(now, nil).addr]++
	}
	// Two distinct random candidates: the busiest can never win; the idle one wins whenever drawn (2/3 of pairs).
	if counts["10.0.0.1:80"] != 0 {
		t.Errorf("most loaded endpoint picked: %v", counts)
	}
	if c := counts["10.0.0.3:80"]; c < 1800 || c > 2200 {
		t.Errorf("idle endpoint picked %d of 3000, want ~2000: %v", c, counts)
	}
	// Unavailable endpoints are skipped, and the avoid argument keeps retries off the failed one.
	b.ready[2].state.SetActiveHealthy(false)
	for i := 0; i < 100; i++ {
		if ep := b.pick(now, b.ready[1]); ep != b.ready[0] {
			t.Fatalf("pick = %v, want the only available, non-avoided endpoint", ep)
		}
	}
	b.ready[0].state.SetActiveHealthy(false)
	if ep := b.pick(now, b.ready[1]); ep != nil {
		t.Fatalf("pick = %v with nothing available", ep)
	}
}

// gatewayFor applies a one-route config with the given backends on a fresh server and returns its URL.
func gatewayFor(t *testing.T, opts Options, rt spokeconfig.Route, backends ...spokeconfig.Backend) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Cluster = "c1"
	opts.DrainTimeout = 5 * time.Second
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	p := freePort(t)
	if err := s.Apply(&spokeconfig.SpokeConfig{Cluster: "c1", Ports: []spokeconfig.Port{port(p, rt)}, Backends: backends, SessionKeys: testSessionKeys}); err != nil {
		t.Fatal(err)
	}
	return s, fmt.Sprintf("http://127.0.0.1:%d/", p)
}

func localBackend(id string, addrs ...string) spokeconfig.Backend {
	b := spokeconfig.Backend{ID: id}
	for _, a := range addrs {
		b.Endpoints = append(b.Endpoints, spokeconfig.Endpoint{Cluster: "c1", Address: a, Ready: true})
	}
	return b
}

func TestWeightsOverHealthySubsetAndAllDown(t *testing.T) {
	a1, b1 := echoBackend(t, "a1"), echoBackend(t, "b1")
	rt := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 90}, spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 10})
	s, url := gatewayFor(t, Options{DisableHealthChecks: true}, rt, localBackend("ns/a:80", addrOf(a1)), localBackend("ns/b:80", addrOf(b1)))
	s.Health().Endpoint("c1", addrOf(a1)).SetActiveHealthy(false)
	for i := 0; i < 50; i++ {
		if resp, body := get(t, http.DefaultClient, url, nil); resp.StatusCode != 200 || body != "b1:" {
			t.Fatalf("with a down, request %d: %d %q (a's 90%% share must go to b, not fail)", i, resp.StatusCode, body)
		}
	}
	s.Health().Endpoint("c1", addrOf(b1)).SetActiveHealthy(false)
	if resp, _ := get(t, http.DefaultClient, url, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("all endpoints down: status %d, want 503", resp.StatusCode)
	}
}

func TestDrainingServesOnlyItsSessions(t *testing.T) {
	e1 := echoBackend(t, "e1")
	sp := &spokeconfig.SessionPersistence{SessionName: "fg", Scope: "s"}
	rt := stickyRoute(sp, spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
	rt.Match.Path = "/"
	s, url := gatewayFor(t, Options{DisableHealthChecks: true}, rt, localBackend("ns/a:80", addrOf(e1)))
	sc := &sessionClient{c: http.DefaultClient, url: url, sp: sp}
	if got := sc.do(t); got != "e1" {
		t.Fatalf("first request on %q", got)
	}
	draining := localBackend("ns/a:80", addrOf(e1))
	draining.Endpoints[0].Ready, draining.Endpoints[0].Serving = false, true
	tbl := s.Table()
	if err := s.Apply(&spokeconfig.SpokeConfig{Cluster: "c1", Revision: 2, Ports: []spokeconfig.Port{port(tbl.ports[portOf(t, tbl)].port, rt)}, Backends: []spokeconfig.Backend{draining}, SessionKeys: testSessionKeys}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if got := sc.do(t); got != "e1" {
			t.Fatalf("pinned session on a draining endpoint: %q", got)
		}
	}
	if resp, _ := get(t, http.DefaultClient, url, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new session with only draining endpoints: %d, want 503", resp.StatusCode)
	}
}

func portOf(t *testing.T, tbl *Table) int32 {
	for p := range tbl.ports {
		return p
	}
	t.Fatal("no port")
	return 0
}

// flaky answers 500 while failing is set.
func flaky(t *testing.T, name string, failing *atomic.Bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s:", name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	bad, good := flaky(t, "bad", &failing), echoBackend(t, "good")
	clock := newFakeClock()
	rt := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
	s, url := gatewayFor(t, Options{DisableHealthChecks: true, Now: clock.Now}, rt, localBackend("ns/a:80", addrOf(bad), addrOf(good)))
	st := s.Health().Endpoint("c1", addrOf(bad))
	fails := 0
	for i := 0; i < 200 && !st.Ejected(clock.Now().UnixNano()); i++ {
		if resp, _ := get(t, http.DefaultClient, url, nil); resp.StatusCode == 500 {
			fails++
		}
	}
	if !st.Ejected(clock.Now().UnixNano()) || fails != health.DefaultConsecutiveFailures {
		t.Fatalf("after %d failures: ejected=%v, want ejection after %d", fails, st.Ejected(clock.Now().UnixNano()), health.DefaultConsecutiveFailures)
	}
	for i := 0; i < 30; i++ {
		if resp, body := get(t, http.DefaultClient, url, nil); resp.StatusCode != 200 || body != "good:" {
			t.Fatalf("ejected endpoint still served: %d %q", resp.StatusCode, body)
		}
	}
	// Returns after the base ejection time; fails again → ejected for twice as long.
	clock.Advance(health.DefaultBaseEjection + time.Millisecond)
	if st.Ejected(clock.Now().UnixNano()) {
		t.Fatal("still ejected after the base ejection time")
	}
	for i := 0; i < 200 && !st.Ejected(clock.Now().UnixNano()); i++ {
		get(t, http.DefaultClient, url, nil)
	}
	if st.Ejections() != 2 {
		t.Fatalf("ejections in a row = %d, want 2", st.Ejections())
	}
	clock.Advance(health.DefaultBaseEjection + time.Millisecond)
	if !st.Ejected(clock.Now().UnixNano()) {
		t.Fatal("second ejection not longer than the first")
	}
	clock.Advance(health.DefaultBaseEjection)
	failing.Store(false)
	seen := map[string]int{}
	for i := 0; i < 40; i++ {
		_, body := get(t, http.DefaultClient, url, nil)
		seen[body]++
	}
	if seen["bad:"] == 0 || st.Ejections() != 0 {
		t.Fatalf("recovered endpoint: %v, ejections %d", seen, st.Ejections())
	}
}

func TestOutlierCapUnlessAllFailing(t *testing.T) {
	reg := health.NewRegistry()
	b := testBackend(reg, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
	o := health.DefaultOutlier()
	now := time.Now()
	fail := func(i int) bool {
		var ej bool
		for k := 0; k < health.DefaultConsecutiveFailures; k++ {
			ej = o.Failure(b.readyStates[i], b.readyStates, now) || ej
		}
		return ej
	}
	if !fail(0) || !fail(1) {
		t.Fatal("first two of four failing endpoints not ejected")
	}
	if fail(2) {
		t.Fatal("third of four ejected while the fourth is healthy: cap is 50%")
	}
	// Once every endpoint fails, the cap no longer protects them.
	for k := 0; k < health.DefaultConsecutiveFailures; k++ {
		o.Failure(b.readyStates[3], b.readyStates, now)
	}
	if !fail(2) {
		t.Fatal("all failing: the cap must not keep a failing endpoint in")
	}
}

func TestActiveHealthCheck(t *testing.T) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok:")
	}))
	t.Cleanup(srv.Close)
	changes := make(chan bool, 4)
	be := localBackend("ns/a:80", addrOf(srv))
	be.HealthCheck = &spokeconfig.HealthCheck{Path: "/healthz", IntervalMs: 10, TimeoutMs: 200, HealthyThreshold: 2, UnhealthyThreshold: 2}
	rt := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
	_, url := gatewayFor(t, Options{OnHealthChange: func(_, _ string, ok bool) { changes <- ok }}, rt, be)
	if resp, _ := get(t, http.DefaultClient, url, nil); resp.StatusCode != 200 {
		t.Fatalf("healthy endpoint: %d", resp.StatusCode)
	}
	down.Store(true)
	if ok := <-changes; ok {
		t.Fatal("first change was to healthy")
	}
	if resp, _ := get(t, http.DefaultClient, url, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("endpoint failing its check: %d, want 503", resp.StatusCode)
	}
	down.Store(false)
	if ok := <-changes; !ok {
		t.Fatal("second change was not back to healthy")
	}
	if resp, _ := get(t, http.DefaultClient, url, nil); resp.StatusCode != 200 {
		t.Fatalf("recovered endpoint: %d", resp.StatusCode)
	}
}

func TestRetries(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	bad := flaky(t, "bad", &failing)
	good := echoBackend(t, "good")
	// Never ejected in this test: the retry policy alone must hide the failures.
	noEject := Options{DisableHealthChecks: true, Outlier: health.Outlier{Consecutive: 1 << 30, MaxEjectionPercent: 100}}

	t.Run("policy codes", func(t *testing.T) {
		rt := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1}, spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 1})
		rt.Action.Retry = &spokeconfig.Retry{Codes: []int{500}, Attempts: 2, BackoffMs: 1}
		s, url := gatewayFor(t, noEject, rt, localBackend("ns/a:80", addrOf(bad)), localBackend("ns/b:80", addrOf(good)))
		for i := 0; i < 20; i++ {
			if resp, body := get(t, http.DefaultClient, url, nil); resp.StatusCode != 200 || body != "good:" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
		if s.Stats().Retries.Load() != 10 {
			t.Errorf("retries = %d, want 10 (every request scheduled to the bad backend)", s.Stats().Retries.Load())
		}
	})
	t.Run("budget spent is 503", func(t *testing.T) {
		be := localBackend("ns/a:80", addrOf(bad), addrOf(good))
		be.RetryBudget = &spokeconfig.RetryBudget{Percent: 0, IntervalMs: 60_000, MinRetriesPerSecond: 0}
		rt := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
		rt.Action.Retry = &spokeconfig.Retry{Codes: []int{500}, Attempts: 2}
		_, url := gatewayFor(t, noEject, rt, be)
		saw503 := false
		for i := 0; i < 20 && !saw503; i++ {
			resp, body := get(t, http.DefaultClient, url, nil)
			if resp.StatusCode == 500 {
				t.Fatalf("retryable 500 passed through instead of a retry or 503: %q", body)
			}
			saw503 = resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "budget")
		}
		if !saw503 {
			t.Fatal("an empty retry budget never answered 503")
		}
	})
	t.Run("built-in retry of idempotent requests on connection failure", func(t *testing.T) {
		rt := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
		_, url := gatewayFor(t, noEject, rt, localBackend("ns/a:80", "127.0.0.1:1", addrOf(good)))
		for i := 0; i < 20; i++ {
			if resp, body := get(t, http.DefaultClient, url, nil); resp.StatusCode != 200 || body != "good:" {
				t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
			}
		}
		// A POST with a body is not retried: it may have reached the backend.
		failures := 0
		for i := 0; i < 20; i++ {
			resp, err := http.Post(url, "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadGateway {
				failures++
			}
		}
		if failures == 0 {
			t.Fatal("POST with a body was retried on connection failure")
		}
	})
}

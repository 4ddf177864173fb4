package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// BenchmarkStickyVsPlain measures the cost of session persistence end to end: each iteration sends one request on a
// plain route and one on a cookie-sticky route (with a valid token, so the proxy verifies it, routes by it and stamps a
// renewed one) through the same proxy to the same backend over keep-alive connections. Interleaving the two makes
// machine noise hit both alike; the reported sticky/plain ratio is throughput (1.0 = stickiness is free).
//
//	hack/bench-sticky.sh   (= go test -run '^$' -bench StickyVsPlain ./spoke/proxy)
func BenchmarkStickyVsPlain(b *testing.B) {
	be := echoBackend(b, "e1")
	p := freePort(b)
	sp := &spokeconfig.SessionPersistence{SessionName: "fg", Scope: "bench", IdleTimeoutMs: 3_600_000}
	sticky := stickyRoute(sp, spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
	plain := forwardRoute("plain", "/plain", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1})
	s := New(Options{Cluster: "c1", Logger: slog.New(slog.DiscardHandler), DisableHealthChecks: true})
	defer s.Close()
	if err := s.Apply(&spokeconfig.SpokeConfig{Cluster: "c1", Ports: []spokeconfig.Port{port(p, sticky, plain)},
		Backends: []spokeconfig.Backend{localBackend("ns/a:80", addrOf(be))}, SessionKeys: testSessionKeys}); err != nil {
		b.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	base := fmt.Sprintf("http://127.0.0.1:%d", p)
	send := func(req *http.Request) *http.Response {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return resp
	}
	first, _ := http.NewRequest("GET", base+"/app", nil)
	cookies := send(first).Cookies()
	if len(cookies) == 0 {
		b.Fatal("no session cookie")
	}
	stickyReq, _ := http.NewRequest("GET", base+"/app", nil)
	stickyReq.AddCookie(cookies[0])
	plainReq, _ := http.NewRequest("GET", base+"/plain", nil)

	hits := s.Stats().SessionHits.Load()
	var tPlain, tSticky time.Duration
	for b.Loop() {
		t0 := time.Now()
		send(plainReq)
		t1 := time.Now()
		send(stickyReq)
		tSticky += time.Since(t1)
		tPlain += t1.Sub(t0)
	}
	if got := s.Stats().SessionHits.Load() - hits; got != uint64(b.N) {
		b.Fatalf("%d of %d sticky requests were routed by their token", got, b.N)
	}
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "plain-ns/req")
	b.ReportMetric(float64(tSticky.Nanoseconds())/float64(b.N), "sticky-ns/req")
	b.ReportMetric(float64(tPlain)/float64(tSticky), "sticky/plain")
}

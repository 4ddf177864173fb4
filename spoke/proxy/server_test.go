package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// echoBackend answers with its name and echoes what the proxy sent, so tests can check forwarding hygiene.
func echoBackend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Path", r.URL.RequestURI())
		w.Header().Set("X-Seen-Xff", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Seen-Custom", r.Header.Get("X-Custom"))
		w.Header().Set("X-Seen-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Seen-Fedgate", r.Header.Get(HeaderBackend)+r.Header.Get(HeaderEndpoint))
		w.Header().Set("X-Seen-Proto", r.Proto)
		if d := r.URL.Query().Get("sleep"); d != "" {
			ms, _ := strconv.Atoi(d)
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", name, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func freePort(t testing.TB) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func addrOf(srv *httptest.Server) string { return srv.Listener.Addr().String() }

func forwardRoute(name, prefix string, wbs ...spokeconfig.WeightedBackend) spokeconfig.Route {
	return spokeconfig.Route{
		Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: name},
		Match:  spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: prefix},
		Action: spokeconfig.Action{Backends: wbs},
	}
}

func port(p int32, routes ...spokeconfig.Route) spokeconfig.Port {
	return spokeconfig.Port{Port: p, Protocol: spokeconfig.ProtocolHTTP, BindAddress: "127.0.0.1",
		VirtualHosts: []spokeconfig.VirtualHost{{Hostname: "*", Routes: routes}}}
}

func newServer(t *testing.T, cluster string) *Server {
	s := New(Options{Cluster: cluster, DrainTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, c *http.Client, url string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestGatewayForwarding(t *testing.T) {
	be := echoBackend(t, "b1")
	p := freePort(t)
	full := "/replaced"
	timeoutRoute := forwardRoute("slow", "/slow", spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 1})
	timeoutRoute.Action.RequestTimeoutMs = 50
	rewrite := forwardRoute("rw", "/rw", spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 1})
	rewrite.Action.Rewrite = &spokeconfig.Rewrite{Hostname: "rewritten.local", Path: &spokeconfig.PathRewrite{ReplaceFullPath: &full}}
	rewrite.Action.RequestHeaders = &spokeconfig.HeaderModifier{Add: []spokeconfig.Header{{Name: "x-added", Value: "yes"}}}
	rewrite.Action.ResponseHeaders = &spokeconfig.HeaderModifier{Set: []spokeconfig.Header{{Name: "X-Resp", Value: "set"}}, Remove: []string{"x-backend"}}
	redirect := spokeconfig.Route{Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: "redir"},
		Match:  spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/old"},
		Action: spokeconfig.Action{Redirect: &spokeconfig.Redirect{Scheme: "https", Hostname: "new.example.com", Path: &spokeconfig.PathRewrite{ReplacePrefixMatch: &full}}}}
	redirectPort := spokeconfig.Route{Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: "redir-port"},
		Match:  spokeconfig.Match{PathType: spokeconfig.PathExact, Path: "/port"},
		Action: spokeconfig.Action{Redirect: &spokeconfig.Redirect{Port: 8443, StatusCode: 301}}}
	cfg := &spokeconfig.SpokeConfig{
		Cluster: "c1",
		Ports: []spokeconfig.Port{port(p, timeoutRoute, rewrite, redirect, redirectPort,
			forwardRoute("down", "/down", spokeconfig.WeightedBackend{BackendID: "ns/down:80", Weight: 1}),
			forwardRoute("empty", "/empty", spokeconfig.WeightedBackend{BackendID: "ns/empty:80", Weight: 1}),
			forwardRoute("all", "/", spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 1}))},
		Backends: []spokeconfig.Backend{
			{ID: "ns/b:80", Namespace: "ns", Name: "b", Port: 80, Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: addrOf(be), Ready: true}}},
			{ID: "ns/down:80", Namespace: "ns", Name: "down", Port: 80, Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: "127.0.0.1:1", Ready: true}}},
			{ID: "ns/empty:80", Namespace: "ns", Name: "empty", Port: 80, Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: "127.0.0.1:2", Ready: false}}},
		},
	}
	s := newServer(t, "c1")
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", p)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	t.Run("hygiene", func(t *testing.T) {
		resp, body := get(t, c, base+"/x?a=b", http.Header{
			"Connection": {"X-Custom"}, "X-Custom": {"hop"}, HeaderBackend: {"spoofed"}, "X-Forwarded-For": {"1.2.3.4"}})
		if resp.StatusCode != 200 || body != "b1:" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if h := resp.Header.Get("X-Seen-Host"); h != fmt.Sprintf("127.0.0.1:%d", p) {
			t.Errorf("backend saw host %q, want the client's", h)
		}
		if h := resp.Header.Get("X-Seen-Path"); h != "/x?a=b" {
			t.Errorf("backend saw path %q", h)
		}
		if h := resp.Header.Get("X-Seen-Xff"); h != "1.2.3.4, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", h)
		}
		if h := resp.Header.Get("X-Seen-Custom"); h != "" {
			t.Errorf("header named by Connection was forwarded: %q", h)
		}
		if h := resp.Header.Get("X-Seen-Fedgate"); h != "" {
			t.Errorf("client X-Fedgate header reached the backend: %q", h)
		}
	})
	t.Run("rewrite and header filters", func(t *testing.T) {
		resp, _ := get(t, c, base+"/rw/a?q=1", nil)
		if h := resp.Header.Get("X-Seen-Host"); h != "rewritten.local" {
			t.Errorf("host = %q", h)
		}
		if h := resp.Header.Get("X-Seen-Path"); h != "/replaced?q=1" {
			t.Errorf("path = %q", h)
		}
		if resp.Header.Get("X-Seen-Added") != "yes" || resp.Header.Get("X-Resp") != "set" || resp.Header.Get("X-Backend") != "" {
			t.Errorf("header modifiers not applied: %v", resp.Header)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		resp, _ := get(t, c, base+"/old/page?x=1", nil)
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://new.example.com/replaced/page?x=1" {
			t.Errorf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		resp, _ = get(t, c, base+"/port", nil)
		if resp.StatusCode != 301 || resp.Header.Get("Location") != "http://127.0.0.1:8443/port" {
			t.Errorf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("statuses", func(t *testing.T) {
		for path, want := range map[string]int{"/slow?sleep=500": 504, "/down": 502, "/empty": 503} {
			if resp, _ := get(t, c, base+path, nil); resp.StatusCode != want {
				t.Errorf("%s: status %d, want %d", path, resp.StatusCode, want)
			}
		}
	})
	t.Run("post body", func(t *testing.T) {
		resp, err := c.Post(base+"/x", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "b1:payload" {
			t.Errorf("body %q", b)
		}
	})
	t.Run("h2c prior knowledge to gateway, h2c backend", func(t *testing.T) {
		h2be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s", r.Proto)
		}))
		h2be.Config.Protocols = protocols(false, true)
		h2be.Start()
		defer h2be.Close()
		cfg2 := *cfg
		cfg2.Backends = append([]spokeconfig.Backend{{ID: "ns/a:80", AppProtocol: "kubernetes.io/h2c", Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: addrOf(h2be), Ready: true}}}}, cfg.Backends...)
		cfg2.Ports = []spokeconfig.Port{port(p, forwardRoute("h2", "/", spokeconfig.WeightedBackend{BackendID: "ns/a:80", Weight: 1}))}
		if err := s.Apply(&cfg2); err != nil {
			t.Fatal(err)
		}
		h2 := &http.Client{Transport: &http.Transport{Protocols: protocols(false, true)}}
		resp, body := get(t, h2, base+"/", nil)
		if resp.Proto != "HTTP/2.0" || body != "HTTP/2.0" {
			t.Errorf("client proto %s, backend saw %q", resp.Proto, body)
		}
	})
}

func TestWeightedSplitAndInvalidShare(t *testing.T) {
	b1, b2 := echoBackend(t, "b1"), echoBackend(t, "b2")
	p := freePort(t)
	cfg := &spokeconfig.SpokeConfig{
		Cluster: "c1",
		Ports: []spokeconfig.Port{port(p,
			forwardRoute("split", "/split", spokeconfig.WeightedBackend{BackendID: "ns/b1:80", Weight: 90}, spokeconfig.WeightedBackend{BackendID: "ns/b2:80", Weight: 10}),
			forwardRoute("invalid", "/invalid", spokeconfig.WeightedBackend{BackendID: "ns/b1:80", Weight: 3}, spokeconfig.WeightedBackend{Invalid: true, Weight: 1}, spokeconfig.WeightedBackend{BackendID: "ns/b2:80", Weight: 0}),
		)},
		Backends: []spokeconfig.Backend{
			{ID: "ns/b1:80", Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: addrOf(b1), Ready: true}}},
			{ID: "ns/b2:80", Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: addrOf(b2), Ready: true}}},
		},
	}
	s := newServer(t, "c1")
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	count := func(path string, n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d%s", p, path), nil)
			if resp.StatusCode != 200 {
				body = strconv.Itoa(resp.StatusCode)
			}
			got[body]++
		}
		return got
	}
	if got := count("/split", 100); got["b1:"] != 90 || got["b2:"] != 10 {
		t.Errorf("90/10 split over one cycle: %v", got)
	}
	if got := count("/invalid", 40); got["b1:"] != 30 || got["500"] != 10 || got["b2:"] != 0 {
		t.Errorf("3/invalid 1/zero split: %v", got)
	}
}

func ewBackend(id, addr, cluster string) spokeconfig.Backend {
	return spokeconfig.Backend{ID: id, Endpoints: []spokeconfig.Endpoint{{Cluster: cluster, Address: addr, Ready: true}}}
}

func TestEastWest(t *testing.T) {
	beB1, beB2 := echoBackend(t, "in-b-1"), echoBackend(t, "in-b-2")
	ewA, _ := net.Listen("tcp", "127.0.0.1:0")
	ewB, _ := net.Listen("tcp", "127.0.0.1:0")
	pa := freePort(t)
	a, b := newServer(t, "a"), newServer(t, "b")
	go a.ServeEastWest(ewA)
	go b.ServeEastWest(ewB)

	// Cluster a routes to a backend whose endpoints are all in cluster b.
	svc := spokeconfig.Backend{ID: "ns/svc:80", Endpoints: []spokeconfig.Endpoint{
		{Cluster: "b", Address: addrOf(beB1), Ready: true}, {Cluster: "b", Address: addrOf(beB2), Ready: true}}}
	if err := a.Apply(&spokeconfig.SpokeConfig{
		Cluster:  "a",
		Ports:    []spokeconfig.Port{port(pa, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:80", Weight: 1}))},
		Backends: []spokeconfig.Backend{svc},
		Clusters: []spokeconfig.Cluster{{Name: "b", EastWestAddress: ewB.Addr().String()}},
	}); err != nil {
		t.Fatal(err)
	}
	// Cluster b serves svc locally, and also knows a backend that lives only in cluster a.
	if err := b.Apply(&spokeconfig.SpokeConfig{
		Cluster:  "b",
		Backends: []spokeconfig.Backend{svc, ewBackend("ns/only-a:80", "127.0.0.1:9", "a")},
		Clusters: []spokeconfig.Cluster{{Name: "a", EastWestAddress: ewA.Addr().String()}},
	}); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		resp, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", pa), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
		if h := resp.Header.Get("X-Seen-Fedgate"); h != "" {
			t.Errorf("X-Fedgate headers reached the backend: %q", h)
		}
		if h := resp.Header.Get("X-Seen-Xff"); h != "127.0.0.1" {
			t.Errorf("X-Forwarded-For across east-west = %q, want the original client only", h)
		}
		seen[body]++
	}
	// Round-robin at a names each endpoint in turn and b honours the name.
	if seen["in-b-1:"] != 2 || seen["in-b-2:"] != 2 {
		t.Errorf("remote endpoints reached: %v", seen)
	}

	h2c := &http.Client{Transport: &http.Transport{Protocols: protocols(false, true)}}
	ewURL := "http://" + ewB.Addr().String() + "/"
	resp, body := get(t, h2c, ewURL, http.Header{HeaderBackend: {"ns/svc:80"}, HeaderEndpoint: {addrOf(beB2)}})
	if resp.StatusCode != 200 || body != "in-b-2:" || resp.Proto != "HTTP/2.0" {
		t.Errorf("named endpoint over h2c: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	// A backend without local endpoints is refused rather than relayed to cluster a: no loops.
	if resp, _ := get(t, h2c, ewURL, http.Header{HeaderBackend: {"ns/only-a:80"}}); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("backend without local endpoints: status %d, want 421", resp.StatusCode)
	}
	if resp, _ := get(t, http.DefaultClient, ewURL, http.Header{HeaderBackend: {"ns/unknown:80"}}); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("unknown backend: status %d, want 421", resp.StatusCode)
	}
	if resp, _ := get(t, http.DefaultClient, ewURL, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no backend header: status %d, want 400", resp.StatusCode)
	}
}

func TestAtomicSwapUnderLoad(t *testing.T) {
	be := echoBackend(t, "b1")
	stable, extra := freePort(t), freePort(t)
	backends := []spokeconfig.Backend{ewBackend("ns/b:80", addrOf(be), "c1")}
	route := forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 1})
	cfgWith := func(rev int64, withExtra bool) *spokeconfig.SpokeConfig {
		c := &spokeconfig.SpokeConfig{Cluster: "c1", Revision: rev, Ports: []spokeconfig.Port{port(stable, route)}, Backends: backends}
		if withExtra {
			c.Ports = append(c.Ports, port(extra, route))
		}
		return c
	}
	s := newServer(t, "c1")
	if err := s.Apply(cfgWith(1, true)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for ctx.Err() == nil {
				resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", stable))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, resp.Status)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := 0; i < 100; i++ {
		// Each swap happens while requests are being served: wait for progress between swaps.
		before := ok.Load() + failed.Load()
		waitFor(t, func() bool { return ok.Load()+failed.Load() > before })
		if err := s.Apply(cfgWith(int64(i+2), i%2 == 1)); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}

	// Graceful removal: a request in flight on the removed port completes; new connections are refused.
	if err := s.Apply(cfgWith(200, true)); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan string, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/?sleep=300", extra))
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- resp.Status + " " + string(b)
	}()
	waitFor(t, func() bool { return s.Table().backends["ns/b:80"].ready[0].state.InFlight.Load() == 1 })
	if err := s.Apply(cfgWith(201, false)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", extra))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if got := <-inflight; got != "200 OK b1:" {
		t.Fatalf("in-flight request on removed port: %s", got)
	}
}

// waitFor polls cond: the conditions here are observable only from outside (socket state, counters).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestApplyErrorKeepsServing(t *testing.T) {
	be := echoBackend(t, "b1")
	p := freePort(t)
	s := newServer(t, "c1")
	good := &spokeconfig.SpokeConfig{Cluster: "c1", Ports: []spokeconfig.Port{port(p, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/b:80", Weight: 1}))},
		Backends: []spokeconfig.Backend{ewBackend("ns/b:80", addrOf(be), "c1")}}
	if err := s.Apply(good); err != nil {
		t.Fatal(err)
	}
	bad := *good
	bad.Revision = 2
	bad.Ports = []spokeconfig.Port{port(p, spokeconfig.Route{Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: "bad"},
		Match: spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "(["}})}
	if err := s.Apply(&bad); err == nil || !strings.Contains(err.Error(), "revision 2") {
		t.Fatalf("err = %v", err)
	}
	if resp, _ := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", p), nil); resp.StatusCode != 200 {
		t.Fatalf("previous table stopped serving: %d", resp.StatusCode)
	}
}

package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Options.DialContext opens every connection to a local endpoint, HTTP/1.1 and h2c alike: a pod address that exists
// only in the config (TEST-NET-1, never routed) reaches its backend through the hook, and nothing is dialled around it.
func TestDialContextReachesLocalEndpoints(t *testing.T) {
	h1 := echoBackend(t, "h1")
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "h2c:%s", r.Proto)
	}))
	h2.Config.Protocols = new(http.Protocols)
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Start()
	t.Cleanup(h2.Close)

	pods := map[string]string{"192.0.2.10:8080": addrOf(h1), "192.0.2.11:8080": addrOf(h2)}
	var mu sync.Mutex
	var dialled []string
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		to, ok := pods[addr]
		if !ok {
			return nil, fmt.Errorf("refusing %s", addr)
		}
		return d.DialContext(ctx, network, to)
	}
	p := freePort(t)
	cfg := &spokeconfig.SpokeConfig{
		Cluster: "c1",
		Ports: []spokeconfig.Port{port(p,
			forwardRoute("h2", "/h2", spokeconfig.WeightedBackend{BackendID: "ns/h2:80", Weight: 1}),
			forwardRoute("h1", "/", spokeconfig.WeightedBackend{BackendID: "ns/h1:80", Weight: 1}))},
		Backends: []spokeconfig.Backend{
			{ID: "ns/h1:80", Namespace: "ns", Name: "h1", Port: 80, Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: "192.0.2.10:8080", Ready: true}}},
			{ID: "ns/h2:80", Namespace: "ns", Name: "h2", Port: 80, AppProtocol: "kubernetes.io/h2c",
				Endpoints: []spokeconfig.Endpoint{{Cluster: "c1", Address: "192.0.2.11:8080", Ready: true}}},
		},
	}
	s := New(Options{Cluster: "c1", DrainTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
		DisableHealthChecks: true, DialContext: dial})
	t.Cleanup(func() { s.Close() })
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	base := fmt.Sprintf("http://127.0.0.1:%d", p)
	if resp, body := get(t, c, base+"/", nil); resp.StatusCode != 200 || body != "h1:" {
		t.Errorf("HTTP/1.1 backend through the hook: %d %q", resp.StatusCode, body)
	}
	if resp, body := get(t, c, base+"/h2", nil); resp.StatusCode != 200 || body != "h2c:HTTP/2.0" {
		t.Errorf("h2c backend through the hook: %d %q", resp.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{"192.0.2.10:8080": true, "192.0.2.11:8080": true}
	for _, a := range dialled {
		if !want[a] {
			t.Errorf("the hook was asked for %s", a)
		}
		delete(want, a)
	}
	if len(want) != 0 {
		t.Errorf("endpoints never dialled through the hook: %v (dialled %v)", want, dialled)
	}
}

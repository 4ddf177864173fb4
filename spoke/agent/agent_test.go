package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/internal/fakehub"
	"github.com/fedgate/fedgate/spoke/subscriber"
)

// fakeProxy records what the agent does to the proxy.
type fakeProxy struct {
	applied   chan *spokeconfig.SpokeConfig
	eastWest  chan string
	closeOnce sync.Once
	closed    chan struct{}
	reloads   atomic.Int64
}

func newFakeProxy() *fakeProxy {
	return &fakeProxy{applied: make(chan *spokeconfig.SpokeConfig, 16), eastWest: make(chan string, 1), closed: make(chan struct{})}
}

func (p *fakeProxy) Apply(c *spokeconfig.SpokeConfig) error { p.applied <- c; return nil }

func (p *fakeProxy) Reload() error { p.reloads.Add(1); return nil }

func (p *fakeProxy) ServeEastWest(l net.Listener) error {
	p.eastWest <- l.Addr().String()
	<-p.closed
	return nil
}

func (p *fakeProxy) Close() error { p.closeOnce.Do(func() { close(p.closed) }); return nil }

func waitApplied(t *testing.T, p *fakeProxy) *spokeconfig.SpokeConfig {
	t.Helper()
	select {
	case c := <-p.applied:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("proxy.Apply not called within 10s")
		return nil
	}
}

// runAgent starts an agent and returns a stop function that shuts it down and checks it returned cleanly.
func runAgent(t *testing.T, cfg Config) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

func recvReport(t *testing.T, h *fakehub.Hub) *fedgatepb.ReportMessage {
	t.Helper()
	select {
	case r := <-h.Reports:
		return r.Msg
	case <-time.After(10 * time.Second):
		t.Fatal("hub received no report within 10s")
		return nil
	}
}

func recvSub(t *testing.T, h *fakehub.Hub) *fedgatepb.SubscribeMessage {
	t.Helper()
	select {
	case m := <-h.Subscribes:
		return m.Msg
	case <-time.After(10 * time.Second):
		t.Fatal("hub received no subscribe message within 10s")
		return nil
	}
}

func testConfig(t *testing.T, hub string, p *fakeProxy) Config {
	return Config{
		Cluster: "east", HubAddress: hub, EastWestListen: "127.0.0.1:0", Proxy: p, plaintextHub: true,
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Labels: map[string]string{"region": "eu"},
	}
}

func TestAgentReportsSourceAndAppliesHubConfig(t *testing.T) {
	h := fakehub.Start(t, "")
	dir := t.TempDir()
	svc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n"
	if err := os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newFakeProxy()
	cfg := testConfig(t, h.Addr, p)
	cfg.SourceDir = dir
	cfg.CacheDir = t.TempDir()
	a, _ := runAgent(t, cfg)

	// East-west: the proxy serves the listener the agent bound, and the hub hears that address.
	select {
	case got := <-p.eastWest:
		if got != a.EastWestAddress() {
			t.Fatalf("proxy serves east-west on %s, agent advertises %s", got, a.EastWestAddress())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeEastWest not called")
	}
	hello := recvReport(t, h).GetHello()
	if hello == nil || hello.Cluster != "east" || hello.EastWestAddress != a.EastWestAddress() ||
		hello.Labels["region"] != "eu" || hello.AgentVersion != Version {
		t.Fatalf("report hello = %v", hello)
	}
	snap := recvReport(t, h).GetSnapshot()
	// The directory source exports every Service it reads (standalone spokes have no MCS controller).
	if snap == nil || len(snap.Objects) != 2 {
		t.Fatalf("report snapshot = %v, want Service shop/cart and its ServiceExport", snap)
	}
	for i, kind := range []string{"Service", "ServiceExport"} {
		if o := snap.Objects[i]; o.Kind != kind || o.Name != "cart" || o.Namespace != "shop" {
			t.Fatalf("report snapshot object %d = %s %s/%s, want %s shop/cart", i, o.Kind, o.Namespace, o.Name, kind)
		}
	}

	if m := recvSub(t, h).GetHello(); m == nil || m.AppliedRevision != 0 {
		t.Fatalf("subscribe hello = %v", m)
	}
	b, hash, err := spokeconfig.Encode(&spokeconfig.SpokeConfig{Cluster: "east", Revision: 3})
	if err != nil {
		t.Fatal(err)
	}
	h.Push(t, &fedgatepb.SpokeConfigUpdate{Revision: 3, Hash: hash, ConfigJson: b})
	if c := waitApplied(t, p); c.Revision != 3 {
		t.Fatalf("applied revision %d, want 3", c.Revision)
	}
	if ack := recvSub(t, h).GetAck(); ack == nil || ack.Revision != 3 {
		t.Fatalf("want ACK for 3, got %v", ack)
	}
	if rev, _ := a.Applied(); rev != 3 {
		t.Fatalf("Applied = %d, want 3", rev)
	}
}

func TestAgentRestartedWithHubDownServesFromCache(t *testing.T) {
	cacheDir := t.TempDir()
	want := &spokeconfig.SpokeConfig{Cluster: "east", Revision: 9, Ports: []spokeconfig.Port{{Port: 8080, Protocol: spokeconfig.ProtocolHTTP}}}
	b, hash, err := spokeconfig.Encode(want)
	if err != nil {
		t.Fatal(err)
	}

	// First life: the hub sends revision 9, the agent applies, caches and ACKs it.
	h := fakehub.Start(t, "")
	p1 := newFakeProxy()
	cfg := testConfig(t, h.Addr, p1)
	cfg.CacheDir = cacheDir
	_, stop := runAgent(t, cfg)
	recvSub(t, h) // hello
	h.Push(t, &fedgatepb.SpokeConfigUpdate{Revision: 9, Hash: hash, ConfigJson: b})
	waitApplied(t, p1)
	if ack := recvSub(t, h).GetAck(); ack == nil || ack.Revision != 9 {
		t.Fatalf("want ACK for 9, got %v", ack)
	}
	stop()
	h.Stop()

	// Second life: the hub is down (nothing listens on its address); the cached config is applied anyway.
	p2 := newFakeProxy()
	cfg.Proxy = p2
	a, _ := runAgent(t, cfg)
	got := waitApplied(t, p2)
	gb, ghash, err := spokeconfig.Encode(got)
	if err != nil {
		t.Fatal(err)
	}
	if ghash != hash {
		t.Fatalf("applied from cache %s, want %s", gb, b)
	}
	if rev, hh := a.Applied(); rev != 9 || hh != hash {
		t.Fatalf("Applied = %d %s, want 9 %s", rev, hh, hash)
	}

	// When the hub comes back, the agent tells it which config it serves.
	h2 := fakehub.Start(t, h.Addr)
	if m := recvSub(t, h2).GetHello(); m == nil || m.AppliedRevision != 9 || m.AppliedHash != hash {
		t.Fatalf("subscribe hello after hub restart = %v, want applied 9", m)
	}
}

func TestAgentWithoutHubServesCache(t *testing.T) {
	cacheDir := t.TempDir()
	b, hash, err := spokeconfig.Encode(&spokeconfig.SpokeConfig{Cluster: "east", Revision: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := subscriber.WriteCache(cacheDir, subscriber.CacheEntry{Cluster: "east", Revision: 4, Hash: hash, Config: b}); err != nil {
		t.Fatal(err)
	}
	p := newFakeProxy()
	cfg := testConfig(t, "", p)
	cfg.CacheDir = cacheDir
	runAgent(t, cfg)
	if c := waitApplied(t, p); c.Revision != 4 {
		t.Fatalf("applied revision %d, want 4", c.Revision)
	}
}

// With the addresses of an HA hub's replicas the agent fails over (issue 9): it subscribes to one, and each time the
// replica it uses dies it subscribes to another that is alive — naming the config it serves, so nothing is resent —
// skipping an address where nothing listens.
func TestAgentFailsOverAmongHubReplicas(t *testing.T) {
	hubs := []*fakehub.Hub{fakehub.Start(t, ""), fakehub.Start(t, ""), fakehub.Start(t, "")}
	dead := fakehub.Start(t, "")
	dead.Stop() // nothing listens on its address
	addrs := []string{hubs[0].Addr, dead.Addr, hubs[1].Addr, hubs[2].Addr}
	p := newFakeProxy()
	a, _ := runAgent(t, testConfig(t, strings.Join(addrs, ", "), p))

	// hello waits for a subscribe hello on any live replica and returns that replica's index.
	alive := map[int]bool{0: true, 1: true, 2: true}
	hello := func() (int, *fedgatepb.Hello) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			for i := range alive {
				select {
				case m := <-hubs[i].Subscribes:
					if h := m.Msg.GetHello(); h != nil {
						return i, h
					}
				default:
				}
			}
			select {
			case <-deadline:
				t.Fatal("no live replica received a subscribe hello within 10s")
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	first, _ := hello()
	b, hash, err := spokeconfig.Encode(&spokeconfig.SpokeConfig{Cluster: "east", Revision: 7})
	if err != nil {
		t.Fatal(err)
	}
	hubs[first].Push(t, &fedgatepb.SpokeConfigUpdate{Revision: 7, Hash: hash, ConfigJson: b})
	waitApplied(t, p)
	used := first
	for range 2 {
		hubs[used].Stop()
		delete(alive, used)
		next, h := hello()
		if h.AppliedRevision != 7 || h.AppliedHash != hash {
			t.Fatalf("hello to replica %d after replica %d died = %v, want applied revision 7", next, used, h)
		}
		used = next
	}
	if rev, _ := a.Applied(); rev != 7 {
		t.Fatalf("Applied = %d, want 7", rev)
	}
}

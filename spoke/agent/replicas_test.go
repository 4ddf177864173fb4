package agent

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/internal/fakehub"
)

// stepElector is an Elector the test drives: each value sent on terms starts a term that lasts until the value's
// context ends (or the agent stops); lead's return is reported on ended.
type stepElector struct {
	terms chan context.Context
	ended chan struct{}
}

func (e *stepElector) Run(ctx context.Context, lead func(context.Context)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case tctx := <-e.terms:
			c, cancel := context.WithCancel(tctx)
			stop := context.AfterFunc(ctx, cancel)
			lead(c)
			stop()
			cancel()
			e.ended <- struct{}{}
		}
	}
}

// countingWriter is a StatusWriter that records offers and whether Run is going.
type countingWriter struct {
	mu      sync.Mutex
	offers  int
	running bool
	runs    int
}

func (w *countingWriter) Offer(*spokeconfig.SpokeConfig) { w.mu.Lock(); w.offers++; w.mu.Unlock() }

func (w *countingWriter) Run(ctx context.Context) error {
	w.mu.Lock()
	w.running, w.runs = true, w.runs+1
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	w.running = false
	w.mu.Unlock()
	return nil
}

func (w *countingWriter) state() (offers int, running bool, runs int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.offers, w.running, w.runs
}

// With an Elector, the Report stream and the status writer run only during a term; the subscription, the proxy and
// the status offers go on regardless. Each term reports afresh.
func TestAgentRunsDutiesOnlyWhileLeading(t *testing.T) {
	h := fakehub.Start(t, "")
	p := newFakeProxy()
	el := &stepElector{terms: make(chan context.Context), ended: make(chan struct{}, 1)}
	w := &countingWriter{}
	cfg := testConfig(t, h.Addr, p)
	cfg.Elector, cfg.StatusWriter = el, w
	a, _ := runAgent(t, cfg)

	// Not leading: it subscribes and applies, offers status, but neither reports nor writes.
	if m := recvSub(t, h).GetHello(); m == nil {
		t.Fatal("no subscribe hello")
	}
	b, hash, err := spokeconfig.Encode(&spokeconfig.SpokeConfig{Cluster: "east", Revision: 2})
	if err != nil {
		t.Fatal(err)
	}
	h.Push(t, &fedgatepb.SpokeConfigUpdate{Revision: 2, Hash: hash, ConfigJson: b})
	waitApplied(t, p)
	select {
	case r := <-h.Reports:
		t.Fatalf("a replica that does not lead reported %v", r.Msg)
	case <-time.After(300 * time.Millisecond):
	}
	if offers, running, _ := w.state(); offers != 1 || running || a.Leading() {
		t.Fatalf("not leading: offers %d, writer running %v, Leading %v; want 1, false, false", offers, running, a.Leading())
	}

	for term := 1; term <= 2; term++ {
		tctx, end := context.WithCancel(context.Background())
		el.terms <- tctx
		if hello := recvReport(t, h).GetHello(); hello == nil || hello.Cluster != "east" {
			t.Fatalf("term %d: report hello = %v", term, hello)
		}
		if snap := recvReport(t, h).GetSnapshot(); snap == nil {
			t.Fatalf("term %d: no snapshot", term)
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, running, runs := w.state(); !running || runs != term || !a.Leading(); _, running, runs = w.state() {
			if time.Now().After(deadline) {
				t.Fatalf("term %d: writer running %v after %d runs, Leading %v", term, running, runs, a.Leading())
			}
			time.Sleep(5 * time.Millisecond)
		}
		end()
		select {
		case <-el.ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("term %d: duties did not stop within 5s of the term's end", term)
		}
		if _, running, _ := w.state(); running || a.Leading() {
			t.Fatalf("term %d over: writer running %v, Leading %v", term, running, a.Leading())
		}
	}
	if report, subscribe := a.StreamStarts(); report != 2 || subscribe != 1 {
		t.Errorf("stream starts: report %d, subscribe %d; want one report stream per term and one subscription", report, subscribe)
	}
}

func TestReplicaAndGossipAddressConfig(t *testing.T) {
	valid := Config{Cluster: "east", HubAddress: "127.0.0.1:9443", plaintextHub: true}.Defaults()
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"replica with slash", func(c *Config) { c.ReplicaName = "a/b" }, `replicaName "a/b"`},
		{"gossip address not a host", func(c *Config) { c.GossipListen, c.GossipAddress = ":7946", "a b" }, `gossipAddress "a b"`},
		{"gossip address without listener", func(c *Config) { c.GossipAddress = "10.0.0.1" }, "set without gossipListen"},
	} {
		c := valid
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
	for _, tc := range []struct{ listen, address, want string }{
		{"0.0.0.0:7946", "10.1.2.3", "10.1.2.3:7946"},
		{"0.0.0.0:7946", "fd00::5", "[fd00::5]:7946"},
		{"0.0.0.0:7946", "gossip.example:17946", "gossip.example:17946"},
		{"0.0.0.0:7946", "", ""}, // nobody can dial 0.0.0.0: advertise nothing rather than that
		{":7946", "", ""},
		{"127.0.0.2:7946", "", "127.0.0.2:7946"},
		{"", "", ""},
	} {
		c := valid
		c.GossipListen, c.GossipAddress = tc.listen, tc.address
		if err := c.Validate(); err != nil {
			t.Errorf("listen %q address %q: %v", tc.listen, tc.address, err)
		}
		if got := c.gossipAdvertised(); got != tc.want {
			t.Errorf("listen %q address %q: advertised %q, want %q", tc.listen, tc.address, got, tc.want)
		}
	}
}

package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// killableListener lets a test crash an east-west listener: stop accepting and cut every connection it handed out,
// as a dying node would (a graceful shutdown would drain them instead).
type killableListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *killableListener) kill() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// livenessLog records gossip transitions as seen by east.
type livenessLog struct {
	mu    sync.Mutex
	alive map[string]bool
	ch    chan struct{}
}

func (l *livenessLog) observe(c string, alive bool) {
	l.mu.Lock()
	l.alive[c] = alive
	l.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

func (l *livenessLog) await(t *testing.T, c string, alive bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		l.mu.Lock()
		v, ok := l.alive[c]
		l.mu.Unlock()
		if ok && v == alive {
			return
		}
		select {
		case <-l.ch:
		case <-deadline:
			t.Fatalf("gossip never reported %s alive=%v", c, alive)
		}
	}
}

func TestWestKilledUnderLoad(t *testing.T) {
	e1, w1, w2 := echoBackend(t, "e1"), echoBackend(t, "w1"), echoBackend(t, "w2")
	key := bytes.Repeat([]byte{3}, 32)
	gEast, gWest := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ewEastLn, _ := net.Listen("tcp", "127.0.0.1:0")
	rawWest, _ := net.Listen("tcp", "127.0.0.1:0")
	ewWestAddr := rawWest.Addr().String()
	gp := freePort(t)
	svc := spokeconfig.Backend{ID: "ns/svc:80", Endpoints: []spokeconfig.Endpoint{
		{Cluster: "east", Address: addrOf(e1), Ready: true},
		{Cluster: "west", Address: addrOf(w1), Ready: true}, {Cluster: "west", Address: addrOf(w2), Ready: true}}}
	quiet := slog.New(slog.DiscardHandler)
	live := &livenessLog{alive: map[string]bool{}, ch: make(chan struct{}, 1)}

	east := New(Options{Cluster: "east", Logger: quiet, DisableHealthChecks: true, DrainTimeout: 5 * time.Second,
		Gossip: &GossipOptions{BindAddr: gEast, EastWestAddress: ewEastLn.Addr().String(), Observer: live.observe}})
	t.Cleanup(func() { east.Close() })
	go east.ServeEastWest(ewEastLn)
	if err := east.Apply(&spokeconfig.SpokeConfig{Cluster: "east",
		Ports:    []spokeconfig.Port{port(gp, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "ns/svc:80", Weight: 1}))},
		Backends: []spokeconfig.Backend{svc}, Clusters: []spokeconfig.Cluster{{Name: "west", EastWestAddress: ewWestAddr, GossipAddress: gWest}},
		Gossip: &spokeconfig.Gossip{Key: key, Peers: []string{gWest}}}); err != nil {
		t.Fatal(err)
	}
	startWest := func(ln net.Listener) (*Server, *killableListener) {
		w := New(Options{Cluster: "west", Logger: quiet, DisableHealthChecks: true, DrainTimeout: time.Second,
			Gossip: &GossipOptions{BindAddr: gWest, EastWestAddress: ewWestAddr}})
		kl := &killableListener{Listener: ln}
		go w.ServeEastWest(kl)
		if err := w.Apply(&spokeconfig.SpokeConfig{Cluster: "west", Backends: []spokeconfig.Backend{svc},
			Clusters: []spokeconfig.Cluster{{Name: "east", EastWestAddress: ewEastLn.Addr().String(), GossipAddress: gEast}},
			Gossip:   &spokeconfig.Gossip{Key: key, Peers: []string{gEast}}}); err != nil {
			t.Fatal(err)
		}
		return w, kl
	}
	west, westLn := startWest(rawWest)
	t.Cleanup(func() { west.Close() })
	live.await(t, "west", true)

	westRequests := func() uint64 {
		return east.Health().Endpoint("west", addrOf(w1)).Requests.Load() + east.Health().Endpoint("west", addrOf(w2)).Requests.Load()
	}
	// Load: idempotent GETs from 4 clients until told to stop (bounded by the test's phases).
	ctx, stop := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	url := fmt.Sprintf("http://127.0.0.1:%d/", gp)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for ctx.Err() == nil {
				resp, err := c.Get(url)
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
	defer func() { stop(); wg.Wait() }()
	// Traffic reaches west before the crash.
	waitFor(t, func() bool { return westRequests() > 50 })

	// Sample when east last sent anything west: a measurement, not a synchronisation.
	var lastWest atomic.Int64
	sampling, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		prev := westRequests()
		for sampling.Err() == nil {
			if n := westRequests(); n != prev {
				prev = n
				lastWest.Store(time.Now().UnixNano())
			}
			time.Sleep(time.Millisecond)
		}
	}()

	killed := time.Now()
	westLn.kill()
	west.Gossip().Shutdown() // no leave: a crash
	live.await(t, "west", false)
	gossipDown := time.Since(killed)
	// Keep the load on for a while after gossip's verdict, so a late west attempt would be seen.
	okBefore := ok.Load()
	waitFor(t, func() bool { return ok.Load() > okBefore+500 })
	stopSampling()
	<-sampled
	// Requests counted before the crash (or none after it) clamp to zero.
	lastSent := max(time.Duration(lastWest.Load()-killed.UnixNano()), 0)
	t.Logf("west crashed: east's last request west %v after the crash (data path), gossip declared it dead after %v; %d ok, %d failed under load",
		lastSent.Round(time.Millisecond), gossipDown.Round(time.Millisecond), ok.Load(), failed.Load())
	if lastSent > 3*time.Second {
		t.Errorf("east kept sending west for %v after the crash, want < 3s", lastSent)
	}
	if failed.Load() != 0 {
		t.Errorf("%d idempotent requests failed during failover (first: %v)", failed.Load(), firstErr.Load())
	}
	before := westRequests()
	okBefore = ok.Load()
	waitFor(t, func() bool { return ok.Load() > okBefore+200 })
	if westRequests() != before {
		t.Errorf("east sent %d requests to dead west", westRequests()-before)
	}

	// West comes back on the same addresses: gossip says alive and traffic returns.
	west.Close()
	ln, err := net.Listen("tcp", ewWestAddr)
	if err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	west2, _ := startWest(ln)
	t.Cleanup(func() { west2.Close() })
	live.await(t, "west", true)
	waitFor(t, func() bool { return westRequests() > before+50 })
	t.Logf("west back: traffic returned after %v", time.Since(back).Round(time.Millisecond))
	stop()
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d requests failed overall (first: %v)", failed.Load(), firstErr.Load())
	}
}

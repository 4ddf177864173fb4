package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder collects liveness transitions and lets tests wait for a specific one.
type recorder struct {
	mu     sync.Mutex
	alive  map[string]bool
	events chan struct{}
}

func newRecorder() *recorder {
	return &recorder{alive: map[string]bool{}, events: make(chan struct{}, 1)}
}

func (r *recorder) observe(cluster string, alive bool) {
	r.mu.Lock()
	r.alive[cluster] = alive
	r.mu.Unlock()
	select {
	case r.events <- struct{}{}:
	default:
	}
}

// await blocks until cluster's state is alive (or the timeout passes) and returns how long it took.
func (r *recorder) await(t *testing.T, cluster string, alive bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		got, ok := r.alive[cluster]
		r.mu.Unlock()
		if ok && got == alive {
			return time.Since(start)
		}
		select {
		case <-r.events:
		case <-deadline:
			t.Fatalf("cluster %q not alive=%v within %v", cluster, alive, timeout)
		}
	}
}

var testKey = bytes.Repeat([]byte{7}, 32)

func start(t *testing.T, cluster, addr string, key []byte, rec *recorder) *Node {
	t.Helper()
	return startReplica(t, cluster, "", addr, key, rec)
}

func startReplica(t *testing.T, cluster, replica, addr string, key []byte, rec *recorder) *Node {
	t.Helper()
	opts := Options{Cluster: cluster, Replica: replica, BindAddr: addr, Key: key, EastWestAddress: "127.0.0.1:1",
		Logger: slog.New(slog.DiscardHandler)}
	if rec != nil {
		opts.Observer = rec.observe
	}
	n, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	return n
}

func TestFailureDetectionBound(t *testing.T) {
	recA, recB := newRecorder(), newRecorder()
	a := start(t, "a", "127.0.0.1:0", testKey, recA)
	b := start(t, "b", "127.0.0.1:0", testKey, recB)
	c := start(t, "c", "127.0.0.1:0", testKey, nil)
	cAddr := c.Addr()
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	recA.await(t, "c", true, 5*time.Second)
	recB.await(t, "c", true, 5*time.Second)
	if m := a.Members(); len(m) != 3 {
		t.Fatalf("members = %v", m)
	}
	for _, m := range a.Members() {
		if m.Name == "c" && (m.Meta.Cluster != "c" || m.Meta.EastWest != "127.0.0.1:1") {
			t.Errorf("metadata of c = %+v", m.Meta)
		}
	}

	// A crash: no leave message, peers must detect it by probing.
	killed := time.Now()
	c.Shutdown()
	recA.await(t, "c", false, 10*time.Second)
	dA := time.Since(killed)
	recB.await(t, "c", false, 10*time.Second)
	dB := time.Since(killed)
	worst := max(dA, dB)
	t.Logf("failure detection: c declared dead by a within %v and by b within %v of its crash", dA.Round(time.Millisecond), dB.Round(time.Millisecond))
	if worst > 3*time.Second {
		t.Errorf("failure detection took %v, want < 3s with FastConfig", worst)
	}

	// It comes back on the same address, under the same name.
	c2 := start(t, "c", cAddr, testKey, nil)
	if _, err := c2.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	up := recA.await(t, "c", true, 10*time.Second)
	recB.await(t, "c", true, 10*time.Second)
	t.Logf("c back: alive at a after %v", up.Round(time.Millisecond))
}

func TestWrongKeyCannotJoin(t *testing.T) {
	rec := newRecorder()
	a := start(t, "a", "127.0.0.1:0", testKey, rec)
	intruder := start(t, "x", "127.0.0.1:0", bytes.Repeat([]byte{9}, 32), nil)
	if n, err := intruder.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("join with the wrong key: %d joined, err %v", n, err)
	}
	if len(a.Members()) != 1 || len(intruder.Members()) != 1 {
		t.Fatalf("members after failed join: a %v, intruder %v", a.Members(), intruder.Members())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if _, ok := rec.alive["x"]; ok {
		t.Fatal("a was told about the intruder")
	}
}

func TestKeyRotation(t *testing.T) {
	k2 := bytes.Repeat([]byte{8}, 32)
	rec := newRecorder()
	a := start(t, "a", "127.0.0.1:0", testKey, rec)
	b := start(t, "b", "127.0.0.1:0", testKey, nil)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	rec.await(t, "b", true, 5*time.Second)
	// a rotates first; b still only knows the old key but a still accepts it, and b's next rotation catches up.
	if err := a.UpdateKey(k2); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateKey(k2); err != nil {
		t.Fatal(err)
	}
	// A newcomer with only the new key can join.
	c := start(t, "c", "127.0.0.1:0", k2, nil)
	if _, err := c.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("join with the rotated key: %v", err)
	}
	rec.await(t, "c", true, 5*time.Second)
	// A second rotation drops the first key: a newcomer still on it is refused.
	k3 := bytes.Repeat([]byte{5}, 32)
	if err := a.UpdateKey(k3); err != nil {
		t.Fatal(err)
	}
	if keys := a.ring.GetKeys(); len(keys) != 2 {
		t.Fatalf("a holds %d keys after two rotations, want current and previous", len(keys))
	}
	old := start(t, "old", "127.0.0.1:0", testKey, nil)
	if n, err := old.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("join with a retired key: %d, %v", n, err)
	}
}

func TestStartRejectsBadKey(t *testing.T) {
	if _, err := Start(Options{Cluster: "a", BindAddr: "127.0.0.1:0", Key: []byte("short")}); err == nil {
		t.Fatal("5-byte key accepted")
	}
}

// transitions records every liveness transition in order.
type transitions struct {
	mu  sync.Mutex
	log []string
}

func (tr *transitions) observe(cluster string, alive bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.log = append(tr.log, fmt.Sprintf("%s=%v", cluster, alive))
}

func (tr *transitions) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.log)
}

// A cluster with two replicas is two members with distinct names; it stays alive while either runs (a replica that
// leaves or crashes is not its cluster going down) and is declared dead only when the last one goes.
func TestClusterAliveWhileAnyReplicaIs(t *testing.T) {
	rec := newRecorder()
	var tr transitions
	a, err := Start(Options{Cluster: "a", BindAddr: "127.0.0.1:0", Key: testKey, Logger: slog.New(slog.DiscardHandler),
		Observer: func(c string, alive bool) { rec.observe(c, alive); tr.observe(c, alive) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	b1 := startReplica(t, "b", "b-1", "127.0.0.1:0", testKey, nil)
	b2 := startReplica(t, "b", "b-2", "127.0.0.1:0", testKey, nil)
	for _, n := range []*Node{b1, b2} {
		if _, err := n.Join([]string{a.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	rec.await(t, "b", true, 5*time.Second)
	names := func(n *Node) []string {
		var out []string
		for _, m := range n.Members() {
			out = append(out, m.Name)
		}
		slices.Sort(out)
		return out
	}
	want := []string{"a", "b/b-1", "b/b-2"}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(names(a), want) || !slices.Equal(names(b1), want) || !slices.Equal(names(b2), want) {
		if time.Now().After(deadline) {
			t.Fatalf("members: a %v, b-1 %v, b-2 %v; want %v everywhere", names(a), names(b1), names(b2), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b1.Name() != "b/b-1" || !a.Alive("b") || a.Alive("c") {
		t.Fatalf("b-1 named %q; a sees b alive %v, c alive %v", b1.Name(), a.Alive("b"), a.Alive("c"))
	}

	// b-1 leaves cleanly, b-2 is still there: b stays alive.
	if err := b1.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); slices.Contains(names(a), "b/b-1"); {
		if time.Now().After(deadline) {
			t.Fatalf("a still lists b/b-1 after it left: %v", names(a))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := tr.get(); !slices.Equal(got, []string{"b=true"}) || !a.Alive("b") {
		t.Fatalf("after one of b's two replicas left: transitions %v, alive %v; want b to stay alive", got, a.Alive("b"))
	}

	// A replica comes back under a new name (a new pod) and the other crashes silently: still alive throughout.
	b3 := startReplica(t, "b", "b-3", "127.0.0.1:0", testKey, nil)
	if _, err := b3.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(names(a), "b/b-3"); {
		if time.Now().After(deadline) {
			t.Fatalf("a never saw b/b-3: %v", names(a))
		}
		time.Sleep(20 * time.Millisecond)
	}
	b2.Shutdown()
	for deadline := time.Now().Add(10 * time.Second); slices.Contains(names(a), "b/b-2"); {
		if time.Now().After(deadline) {
			t.Fatalf("a still lists b/b-2 after it crashed: %v", names(a))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := tr.get(); !slices.Equal(got, []string{"b=true"}) {
		t.Fatalf("transitions %v while b always had a live replica, want only b=true", got)
	}

	// The last replica goes: b is dead, once.
	b3.Shutdown()
	rec.await(t, "b", false, 10*time.Second)
	if got := tr.get(); !slices.Equal(got, []string{"b=true", "b=false"}) {
		t.Fatalf("transitions %v, want b=true then b=false", got)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bind := l.Addr().String()
	l.Close()
	n, err := Start(Options{Cluster: "a", Replica: "r", BindAddr: bind, AdvertiseAddr: "127.0.0.9:7946", Key: testKey,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if n.Addr() != "127.0.0.9:7946" || n.Name() != "a/r" {
		t.Fatalf("advertised %s as %s, want 127.0.0.9:7946 as a/r", n.Addr(), n.Name())
	}
	for _, bad := range []Options{
		{Cluster: "a", BindAddr: "127.0.0.1:0", AdvertiseAddr: "host.example:7946", Key: testKey},
		{Cluster: "a/b", BindAddr: "127.0.0.1:0", Key: testKey},
		{Cluster: "a", Replica: "x/y", BindAddr: "127.0.0.1:0", Key: testKey},
	} {
		if n, err := Start(bad); err == nil {
			n.Shutdown()
			t.Errorf("Start(%+v) accepted", bad)
		}
	}
}

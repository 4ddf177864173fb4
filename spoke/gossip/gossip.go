// Package gossip runs cluster-health gossip among spokes with hashicorp/memberlist: every spoke is one member named
// after its cluster, carrying its east-west address and current load as metadata. When a member is declared dead (or
// leaves) the other spokes stop routing to that cluster; when it is alive again, they resume. Gossip is encrypted
// with the key the hub distributes (AES-256-GCM via memberlist's keyring).
//
// memberlist's LAN defaults take 4–24 s to declare a member dead; a gateway wants to stop sending traffic to a dead
// cluster much sooner, so Start tunes probing for a small, fast network of spokes (see FastConfig). The data path
// reacts even faster on its own (a refused east-west dial marks the cluster suspect at once); gossip confirms and
// also brings clusters back.
//
// The package knows nothing of routing: it reports (cluster, alive) transitions to an Observer.
package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Observer receives cluster liveness transitions. It is called from memberlist's goroutines and must not block.
type Observer func(cluster string, alive bool)

// Options configure a Node.
type Options struct {
	// Cluster is this spoke's cluster name, used as the member name.
	Cluster string
	// BindAddr is host:port for gossip (UDP and TCP on the same port); port 0 picks a free one.
	BindAddr string
	// EastWestAddress is advertised in the metadata so peers can cross-check where to send traffic.
	EastWestAddress string
	// Key encrypts gossip: 16, 24 or 32 bytes (the hub hands out 32, AES-256-GCM). Required: spokes never gossip in
	// clear text.
	Key []byte
	// Observer, if set, receives liveness transitions of other clusters.
	Observer Observer
	// Load, if set, is sampled every LoadInterval and published in the metadata when it changed.
	Load         func() int64
	LoadInterval time.Duration
	Logger       *slog.Logger
	// Config, if set, replaces FastConfig's timing (tests use it to compare with memberlist's defaults).
	Config func(*memberlist.Config)
}

// Meta is a member's metadata.
type Meta struct {
	Cluster  string `json:"cluster"`
	EastWest string `json:"eastWest,omitempty"`
	Load     int64  `json:"load"`
}

// Member is a live member as seen locally.
type Member struct {
	Name string
	Addr string
	Meta Meta
}

// FastConfig tunes memberlist for a handful of spokes on a reliable network:
//
//   - ProbeInterval 200 ms, ProbeTimeout 100 ms: each member is probed directly about every n×200 ms (round robin
//     over n members), with an indirect probe through IndirectChecks peers when the direct one fails.
//   - SuspicionMult 2, SuspicionMaxTimeoutMult 3: a suspect is declared dead after 2×max(1, log10 n)×200 ms = 400 ms
//     for small n, shortened as other members confirm the suspicion; up to 1.2 s without confirmations.
//   - GossipInterval 50 ms and GossipNodes 3 spread "dead" to everyone within a few gossip rounds.
//
// TestFailureDetectionBound measures the result on loopback (about 0.5–1.5 s from a silent crash to every peer
// calling the member dead; see docs/health.md), against 4–24 s with memberlist's LAN defaults.
func FastConfig(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 50 * time.Millisecond
	c.GossipNodes = 3
	c.GossipToTheDeadTime = 5 * time.Second
	c.IndirectChecks = 2
	c.TCPTimeout = 1 * time.Second
	c.PushPullInterval = 5 * time.Second
	// A spoke that restarts comes back under the same name, possibly on another address: let it reclaim its name
	// quickly instead of being refused as a conflict for the default 0 (never).
	c.DeadNodeReclaimTime = 2 * time.Second
}

// Node is this spoke's memberlist member.
type Node struct {
	opts Options
	log  *slog.Logger
	ml   *memberlist.Memberlist
	ring *memberlist.Keyring
	meta atomic.Pointer[[]byte]

	keyMu   sync.Mutex
	prevKey []byte // the key before the last rotation, still accepted until the next one

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start creates the member and binds its socket. It does not join anyone: call Join.
func Start(opts Options) (*Node, error) {
	if opts.Cluster == "" {
		return nil, errors.New("gossip: cluster name is empty")
	}
	switch len(opts.Key) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("gossip: key for cluster %q is %d bytes, want 16, 24 or 32", opts.Cluster, len(opts.Key))
	}
	host, portStr, err := net.SplitHostPort(opts.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip: bind address %q: %w", opts.BindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip: bind address %q: bad port", opts.BindAddr)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LoadInterval == 0 {
		opts.LoadInterval = 2 * time.Second
	}
	n := &Node{opts: opts, log: opts.Logger.With("component", "gossip", "cluster", opts.Cluster),
		stop: make(chan struct{}), done: make(chan struct{})}
	n.setMeta(0)

	ring, err := memberlist.NewKeyring(nil, append([]byte(nil), opts.Key...))
	if err != nil {
		return nil, fmt.Errorf("gossip: key: %w", err)
	}
	n.ring = ring
	c := memberlist.DefaultLANConfig()
	FastConfig(c)
	if opts.Config != nil {
		opts.Config(c)
	}
	c.Name = opts.Cluster
	c.BindAddr = host
	c.BindPort = port
	c.AdvertisePort = port
	c.Keyring = ring
	c.GossipVerifyIncoming = true
	c.GossipVerifyOutgoing = true
	c.Delegate = n
	c.Events = &events{n: n}
	c.LogOutput = nil
	c.Logger = slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("gossip: cluster %q: %w", opts.Cluster, err)
	}
	n.ml = ml
	go n.loadLoop()
	return n, nil
}

// Addr is the bound gossip address (host:port), useful when BindAddr had port 0.
func (n *Node) Addr() string {
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Join contacts peers (host:port) and returns how many answered. An error with zero answers usually means the peers
// are down or use another key; memberlist keeps trying nothing by itself, so callers retry on the next config.
func (n *Node) Join(peers []string) (int, error) {
	if len(peers) == 0 {
		return 0, nil
	}
	return n.ml.Join(peers)
}

// Members returns the live members (this one included), by name.
func (n *Node) Members() []Member {
	var out []Member
	for _, m := range n.ml.Members() {
		mem := Member{Name: m.Name, Addr: m.Address()}
		_ = json.Unmarshal(m.Meta, &mem.Meta)
		out = append(out, mem)
	}
	return out
}

// Alive reports whether cluster is a live member.
func (n *Node) Alive(cluster string) bool {
	for _, m := range n.ml.Members() {
		if m.Name == cluster {
			return true
		}
	}
	return false
}

// UpdateKey rotates the gossip key: the new key is installed and used for everything this member sends, and the key
// before it stays installed (so peers that have not rotated yet are still understood) until the next rotation removes
// it. Spokes receive the new key at slightly different times; one rotation period of overlap covers that.
func (n *Node) UpdateKey(key []byte) error {
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	cur := n.ring.GetPrimaryKey()
	if string(cur) == string(key) {
		return nil
	}
	if err := n.ring.AddKey(append([]byte(nil), key...)); err != nil {
		return fmt.Errorf("gossip: install key: %w", err)
	}
	if err := n.ring.UseKey(key); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	if n.prevKey != nil && string(n.prevKey) != string(key) {
		if err := n.ring.RemoveKey(n.prevKey); err != nil {
			return fmt.Errorf("gossip: remove old key: %w", err)
		}
	}
	n.prevKey = cur
	n.log.Info("gossip key rotated", "keys", len(n.ring.GetKeys()))
	return nil
}

// Leave announces departure (peers mark the cluster down at once instead of detecting a failure) and shuts down.
func (n *Node) Leave(timeout time.Duration) error {
	select {
	case <-n.stop:
		return nil // already shut down: memberlist cannot leave after that
	default:
	}
	err := n.ml.Leave(timeout)
	return errors.Join(err, n.Shutdown())
}

// Shutdown stops the member without announcing it: to peers this looks like a crash.
func (n *Node) Shutdown() error {
	var err error
	n.once.Do(func() {
		close(n.stop)
		<-n.done
		err = n.ml.Shutdown()
	})
	return err
}

func (n *Node) setMeta(load int64) {
	b, _ := json.Marshal(Meta{Cluster: n.opts.Cluster, EastWest: n.opts.EastWestAddress, Load: load})
	n.meta.Store(&b)
}

// loadLoop republishes the metadata when the load changes, at most every LoadInterval.
func (n *Node) loadLoop() {
	defer close(n.done)
	if n.opts.Load == nil {
		<-n.stop
		return
	}
	t := time.NewTicker(n.opts.LoadInterval)
	defer t.Stop()
	last := int64(0)
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if l := n.opts.Load(); l != last {
			last = l
			n.setMeta(l)
			if err := n.ml.UpdateNode(time.Second); err != nil {
				n.log.Debug("publish load", "err", err)
			}
		}
	}
}

// memberlist.Delegate: only metadata is used.

func (n *Node) NodeMeta(limit int) []byte {
	b := *n.meta.Load()
	if len(b) > limit {
		return nil
	}
	return b
}
func (n *Node) NotifyMsg([]byte)                           {}
func (n *Node) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (n *Node) LocalState(join bool) []byte                { return nil }
func (n *Node) MergeRemoteState(buf []byte, join bool)     {}

// events turns memberlist's join/leave/update into liveness transitions of other clusters.
type events struct{ n *Node }

func (e *events) NotifyJoin(m *memberlist.Node)   { e.notify(m, true) }
func (e *events) NotifyLeave(m *memberlist.Node)  { e.notify(m, false) }
func (e *events) NotifyUpdate(m *memberlist.Node) {}

func (e *events) notify(m *memberlist.Node, alive bool) {
	if m.Name == e.n.opts.Cluster {
		return
	}
	e.n.log.Info("cluster liveness changed", "peer", m.Name, "addr", m.Address(), "alive", alive)
	if e.n.opts.Observer != nil {
		e.n.opts.Observer(m.Name, alive)
	}
}

// Package gossip runs cluster-health gossip among spokes with hashicorp/memberlist: every spoke replica is one member,
// named "<cluster>/<replica>" (or "<cluster>" alone when a cluster runs one replica), carrying its east-west address
// and current load as metadata. A cluster is alive while any of its members is: when the last one is declared dead (or
// leaves) the other spokes stop routing to that cluster; when one is alive again, they resume. Gossip is encrypted
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Observer receives cluster liveness transitions: alive when a cluster's first member appears, dead when its last
// member is gone. It is called from memberlist's goroutines, one call at a time, and must not block.
type Observer func(cluster string, alive bool)

// Options configure a Node.
type Options struct {
	// Cluster is this spoke's cluster name. It must not contain '/'.
	Cluster string
	// Replica names this replica among its cluster's spokes; the member is then "<Cluster>/<Replica>". Empty names
	// the member "<Cluster>", which only one replica per cluster may do (memberlist refuses a second member of a
	// name that is alive).
	Replica string
	// BindAddr is host:port for gossip (UDP and TCP on the same port); port 0 picks a free one.
	BindAddr string
	// AdvertiseAddr, when set, is the IP:port peers reach this member at (a pod's IP when BindAddr binds every
	// address). Empty advertises the bound address, or memberlist's guess of a private IP when that is unspecified.
	AdvertiseAddr string
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

// MemberName is the member name of a cluster's replica: "<cluster>/<replica>", or the cluster alone without a replica.
func MemberName(cluster, replica string) string {
	if replica == "" {
		return cluster
	}
	return cluster + "/" + replica
}

// ClusterOf is the cluster a member name belongs to.
func ClusterOf(member string) string {
	c, _, _ := strings.Cut(member, "/")
	return c
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

	liveMu sync.Mutex
	live   map[string]map[string]bool // other clusters' live members, by cluster then member name

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start creates the member and binds its socket. It does not join anyone: call Join.
func Start(opts Options) (*Node, error) {
	if opts.Cluster == "" || strings.Contains(opts.Cluster, "/") || strings.Contains(opts.Replica, "/") {
		return nil, fmt.Errorf("gossip: cluster %q, replica %q: the cluster must be set and neither may contain '/'", opts.Cluster, opts.Replica)
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
	name := MemberName(opts.Cluster, opts.Replica)
	n := &Node{opts: opts, log: opts.Logger.With("component", "gossip", "member", name),
		stop: make(chan struct{}), done: make(chan struct{}), live: map[string]map[string]bool{}}
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
	c.Name = name
	c.BindAddr = host
	c.BindPort = port
	c.AdvertisePort = port
	if opts.AdvertiseAddr != "" {
		ah, ap, err := net.SplitHostPort(opts.AdvertiseAddr)
		if err != nil || net.ParseIP(ah) == nil {
			return nil, fmt.Errorf("gossip: advertise address %q: want IP:port", opts.AdvertiseAddr)
		}
		if c.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return nil, fmt.Errorf("gossip: advertise address %q: bad port", opts.AdvertiseAddr)
		}
		c.AdvertiseAddr = ah
	}
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

// Name is this member's name.
func (n *Node) Name() string { return n.ml.LocalNode().Name }

// Alive reports whether cluster has a live member.
func (n *Node) Alive(cluster string) bool {
	for _, m := range n.ml.Members() {
		if ClusterOf(m.Name) == cluster {
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

// Leave announces departure (peers drop this member at once instead of detecting a failure, and mark the cluster down
// if it was the cluster's last member) and shuts down.
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

// events turns memberlist's member joins and leaves into liveness transitions of other clusters.
type events struct{ n *Node }

func (e *events) NotifyJoin(m *memberlist.Node)   { e.n.memberChanged(m, true) }
func (e *events) NotifyLeave(m *memberlist.Node)  { e.n.memberChanged(m, false) }
func (e *events) NotifyUpdate(m *memberlist.Node) {}

// memberChanged records a member of another cluster joining or leaving, and tells the Observer when that makes the
// cluster's first member appear or its last one go. The lock is held across the Observer call so that transitions
// reach it in the order they were decided.
func (n *Node) memberChanged(m *memberlist.Node, alive bool) {
	cluster := ClusterOf(m.Name)
	if cluster == n.opts.Cluster {
		return // our own replicas: this cluster's liveness is not ours to judge
	}
	n.liveMu.Lock()
	defer n.liveMu.Unlock()
	members := n.live[cluster]
	before := len(members) > 0
	if alive {
		if members == nil {
			members = map[string]bool{}
			n.live[cluster] = members
		}
		members[m.Name] = true
	} else {
		delete(members, m.Name)
		if len(members) == 0 {
			delete(n.live, cluster)
		}
	}
	after := len(members) > 0
	n.log.Info("peer member changed", "peer", m.Name, "addr", m.Address(), "alive", alive, "clusterMembers", len(members))
	if before == after {
		return
	}
	n.log.Info("cluster liveness changed", "cluster", cluster, "alive", after)
	if n.opts.Observer != nil {
		n.opts.Observer(cluster, after)
	}
}

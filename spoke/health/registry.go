// Package health holds what the spoke knows about the health of every endpoint and cluster it may send traffic to,
// and the two mechanisms that keep it current on the data plane's side: active HTTP checks of this cluster's own
// endpoints (Checker) and passive outlier detection from request outcomes (Outlier). Cluster-level state (down from
// gossip, suspect after a failed dial to a remote spoke) lives here too, so one predicate answers "may a new request
// go to this endpoint now?".
//
// State is keyed by endpoint identity (cluster, address) in a Registry that outlives routing tables: a config swap
// neither forgets an ejection nor resets in-flight counts. Readers on the request path only load atomics; the
// registry's mutex is taken when tables are built or pruned, never per request.
//
// The package decides nothing about routing (weights, sessions): it only answers and records.
package health

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSuspectHold is how long a cluster is skipped after a failed dial to its east-west address. The data path
// acts on the first refused connection instead of waiting for gossip to declare the spoke dead (about a second);
// after the hold the next request probes again, and gossip's verdict, when it comes, replaces the guess.
const DefaultSuspectHold = 2 * time.Second

// Key identifies an endpoint across tables.
type Key struct {
	Cluster string
	Address string
}

// Registry holds Endpoint and Cluster state by identity.
type Registry struct {
	mu       sync.Mutex
	eps      map[Key]*Endpoint
	clusters map[string]*Cluster
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{eps: map[Key]*Endpoint{}, clusters: map[string]*Cluster{}}
}

// Endpoint returns the state for (cluster, address), creating it (healthy) on first use.
func (r *Registry) Endpoint(cluster, address string) *Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := Key{cluster, address}
	e := r.eps[k]
	if e == nil {
		e = &Endpoint{Key: k, cluster: r.clusterLocked(cluster)}
		r.eps[k] = e
	}
	return e
}

// Cluster returns the state of a cluster, creating it (up) on first use. Clusters are never pruned: there are few,
// and gossip may report on a cluster before any config names it.
func (r *Registry) Cluster(name string) *Cluster {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clusterLocked(name)
}

func (r *Registry) clusterLocked(name string) *Cluster {
	c := r.clusters[name]
	if c == nil {
		c = &Cluster{Name: name}
		r.clusters[name] = c
	}
	return c
}

// SetClusterAlive records gossip's verdict on a cluster (a member joined or became alive: true; dead or left: false).
func (r *Registry) SetClusterAlive(name string, alive bool) {
	r.Cluster(name).SetDown(!alive)
}

// Retain drops the state of endpoints for which keep is false.
func (r *Registry) Retain(keep func(Key) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.eps {
		if !keep(k) {
			delete(r.eps, k)
		}
	}
}

// Cluster is the health of a whole cluster as seen from this spoke.
type Cluster struct {
	Name string
	// down: gossip declared the cluster's spoke dead (or it left).
	down atomic.Bool
	// suspectUntil (unix nanoseconds): a dial to its east-west address failed; skip it until then.
	suspectUntil atomic.Int64
}

// Usable reports whether new requests may go to the cluster at now (unix nanoseconds).
func (c *Cluster) Usable(now int64) bool {
	return !c.down.Load() && c.suspectUntil.Load() <= now
}

// Down reports gossip's verdict.
func (c *Cluster) Down() bool { return c.down.Load() }

// SetDown records gossip's verdict. Coming back alive also clears a suspicion: gossip has just heard from the spoke.
func (c *Cluster) SetDown(down bool) {
	c.down.Store(down)
	if !down {
		c.suspectUntil.Store(0)
	}
}

// Suspect skips the cluster until now+hold.
func (c *Cluster) Suspect(now time.Time, hold time.Duration) {
	c.suspectUntil.Store(now.Add(hold).UnixNano())
}

// Endpoint is the live state of one endpoint. The counters are exported for metrics and tests; health is changed
// only through Checker, Outlier and the cluster.
type Endpoint struct {
	Key     Key
	cluster *Cluster

	InFlight atomic.Int64
	Requests atomic.Uint64
	Failures atomic.Uint64

	// activeDown: the active health check's verdict (local endpoints only).
	activeDown atomic.Bool
	// ejectedUntil (unix nanoseconds): passive outlier ejection.
	ejectedUntil atomic.Int64
	// consecutive failures (5xx or connect errors) since the last success.
	consecutive atomic.Int32
	// ejections in a row without a success in between; the ejection time doubles with each.
	ejections atomic.Int32
}

// Available reports whether new requests (and pinned sessions) may go to the endpoint at now (unix nanoseconds).
func (e *Endpoint) Available(now int64) bool {
	return !e.activeDown.Load() && e.ejectedUntil.Load() <= now && e.cluster.Usable(now)
}

// Cluster returns the endpoint's cluster state.
func (e *Endpoint) Cluster() *Cluster { return e.cluster }

// ActiveHealthy is the active check's verdict (true until a check says otherwise).
func (e *Endpoint) ActiveHealthy() bool { return !e.activeDown.Load() }

// SetActiveHealthy records the active check's verdict.
func (e *Endpoint) SetActiveHealthy(ok bool) { e.activeDown.Store(!ok) }

// Ejected reports whether passive outlier detection has the endpoint out at now (unix nanoseconds).
func (e *Endpoint) Ejected(now int64) bool { return e.ejectedUntil.Load() > now }

// Ejections is the number of ejections in a row (for metrics and tests).
func (e *Endpoint) Ejections() int { return int(e.ejections.Load()) }

package proxy

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// maxCycle bounds the precomputed weighted schedule. Weights whose sum (after dividing by their GCD) exceeds it are
// scaled down proportionally, keeping every non-zero weight at least 1; typical splits (90/10, 1/1/1, 80/20) are exact.
const maxCycle = 1024

// schedule is a precomputed smooth weighted round-robin sequence (the nginx algorithm: interleaved, so a 90/10 split
// never sends ten requests in a row to the small side) walked by an atomic counter: lock-free and allocation-free.
type schedule struct {
	seq []uint16
	pos atomic.Uint64
}

func newSchedule(weights []int32) *schedule {
	w := make([]int64, len(weights))
	var g, sum int64
	for i, x := range weights {
		if x > 0 {
			w[i] = int64(x)
			g = gcd(g, w[i])
		}
	}
	for i := range w {
		if g > 0 {
			w[i] /= g
		}
		sum += w[i]
	}
	if sum > maxCycle {
		scaled := int64(0)
		for i := range w {
			if w[i] > 0 {
				w[i] = max(1, w[i]*maxCycle/sum)
				scaled += w[i]
			}
		}
		sum = scaled
	}
	s := &schedule{seq: make([]uint16, 0, sum)}
	cur := make([]int64, len(w))
	for n := int64(0); n < sum; n++ {
		best := -1
		for i := range w {
			if w[i] == 0 {
				continue
			}
			cur[i] += w[i]
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= sum
		s.seq = append(s.seq, uint16(best))
	}
	return s
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// next returns the index of the weighted backend for the next request, or -1 when every weight is zero.
func (s *schedule) next() int {
	if s == nil || len(s.seq) == 0 {
		return -1
	}
	n := s.pos.Add(1) - 1
	return int(s.seq[n%uint64(len(s.seq))])
}

// backend is a Service port with its ready endpoints in every cluster.
type backend struct {
	id  string
	h2c bool
	// ready endpoints in config order (sorted by cluster, address), local and remote.
	ready []*endpoint
	// readyLocal are this cluster's ready endpoints: the only ones east-west requests may reach.
	readyLocal []*endpoint
	// hasLocal: the backend has endpoints (ready or not) in this cluster, so this spoke serves it over east-west.
	hasLocal bool
	rr       atomic.Uint64
	rrLocal  atomic.Uint64
}

// endpoint is one address; remote is nil for this cluster's endpoints.
type endpoint struct {
	addr    string
	cluster string
	remote  *remoteCluster
	state   *EndpointState
}

// remoteCluster is another spoke's east-west listener. rt is attached by the Server before the table is published
// (transports are pooled per cluster on the Server so that connections survive table swaps).
type remoteCluster struct {
	name string
	addr string
	rt   http.RoundTripper
}

func newBackend(b *spokeconfig.Backend, cluster string, remotes map[string]*remoteCluster, reg *registry) *backend {
	out := &backend{id: b.ID, h2c: b.AppProtocol == "kubernetes.io/h2c"}
	for _, e := range b.Endpoints {
		local := e.Cluster == cluster
		if local {
			out.hasLocal = true
		}
		if !e.Ready {
			continue
		}
		ep := &endpoint{addr: e.Address, cluster: e.Cluster, state: reg.get(e.Cluster, e.Address)}
		if local {
			out.readyLocal = append(out.readyLocal, ep)
		} else {
			ep.remote = remotes[e.Cluster]
		}
		out.ready = append(out.ready, ep)
	}
	return out
}

// pick round-robins over ready endpoints in every cluster; nil when none is ready.
func (b *backend) pick() *endpoint {
	if len(b.ready) == 0 {
		return nil
	}
	return b.ready[(b.rr.Add(1)-1)%uint64(len(b.ready))]
}

// pickLocal serves an east-west request: the named endpoint if it is one of this cluster's ready endpoints, else a
// round-robin pick among them. It never returns a remote endpoint, which is what prevents forwarding loops.
func (b *backend) pickLocal(named string) *endpoint {
	if named != "" {
		for _, ep := range b.readyLocal {
			if ep.addr == named {
				return ep
			}
		}
	}
	if len(b.readyLocal) == 0 {
		return nil
	}
	return b.readyLocal[(b.rrLocal.Add(1)-1)%uint64(len(b.readyLocal))]
}

// EndpointState is per-endpoint state that outlives tables: in-flight and outcome counters now, health and
// least-request inputs later.
type EndpointState struct {
	InFlight atomic.Int64
	Requests atomic.Uint64
	Failures atomic.Uint64
}

type endpointKey struct{ cluster, addr string }

// registry holds EndpointState by endpoint identity. It is only locked while a table is built or pruned, never on the
// request path (requests reach states through pointers captured in the table).
type registry struct {
	mu sync.Mutex
	m  map[endpointKey]*EndpointState
}

func newRegistry() *registry { return &registry{m: map[endpointKey]*EndpointState{}} }

func (r *registry) get(cluster, addr string) *EndpointState {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := endpointKey{cluster, addr}
	s := r.m[k]
	if s == nil {
		s = &EndpointState{}
		r.m[k] = s
	}
	return s
}

// retain drops the state of endpoints that t no longer references.
func (r *registry) retain(t *Table) {
	keep := map[endpointKey]bool{}
	for _, b := range t.backends {
		for _, ep := range b.ready {
			keep[endpointKey{ep.cluster, ep.addr}] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.m {
		if !keep[k] {
			delete(r.m, k)
		}
	}
}

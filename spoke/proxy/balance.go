package proxy

import (
	"math/rand/v2"
	"net/http"
	"sync/atomic"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/health"
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

// backend is a Service port with its endpoints in every cluster.
type backend struct {
	id      string
	cluster string // this spoke's cluster
	h2c     bool
	// tls: this cluster's endpoints are reached over TLS with these settings (BackendTLSPolicy); nil: cleartext.
	// Remote endpoints are not: their own spoke originates TLS to them.
	tls *backendTLS
	// ready endpoints in config order (sorted by cluster, address), local and remote: the candidates for new requests.
	ready []*endpoint
	// readyStates are ready's health states, the peer set for the outlier ejection cap.
	readyStates []*health.Endpoint
	// serving are ready and draining (Serving && !Ready) endpoints by identity: what a session token or an east-west
	// request may name. Draining endpoints keep the sessions pinned to them but get no new ones.
	serving map[health.Key]*endpoint
	// readyLocal are this cluster's ready endpoints: the only ones east-west requests may reach without naming one.
	readyLocal []*endpoint
	// hasLocal: the backend has endpoints (ready or not) in this cluster, so this spoke serves it over east-west.
	hasLocal bool
	budget   *retryBudget
	// check is the active health check of this cluster's endpoints, run when probe (see health.ResolveCheck).
	check health.CheckConfig
	probe bool
}

// tlsRT returns the transport to this backend's local endpoints over TLS, on c's pool.
func (b *backend) tlsRT(c *h1Client) http.RoundTripper {
	return &h1TLS{c: c, bt: b.tls, backendID: b.id}
}

// endpoint is one address; remote is nil for this cluster's endpoints.
type endpoint struct {
	addr     string
	cluster  string
	remote   *remoteCluster
	draining bool
	state    *health.Endpoint
}

// remoteCluster is another spoke's east-west listener. rt is attached by the Server before the table is published
// (transports are pooled per cluster on the Server so that connections survive table swaps).
type remoteCluster struct {
	name  string
	addr  string
	rt    http.RoundTripper
	state *health.Cluster
}

func newBackend(b *spokeconfig.Backend, cluster string, remotes map[string]*remoteCluster, reg *health.Registry) *backend {
	out := &backend{id: b.ID, cluster: cluster, h2c: b.AppProtocol == "kubernetes.io/h2c", serving: map[health.Key]*endpoint{}}
	out.check, out.probe = health.ResolveCheck(health.Defaults{}, b.HealthCheck, b.AppProtocol)
	if b.RetryBudget != nil {
		out.budget = newRetryBudget(b.RetryBudget)
	}
	for _, e := range b.Endpoints {
		local := e.Cluster == cluster
		if local {
			out.hasLocal = true
		}
		if !e.Ready && !e.Serving {
			continue
		}
		ep := &endpoint{addr: e.Address, cluster: e.Cluster, draining: !e.Ready, state: reg.Endpoint(e.Cluster, e.Address)}
		if !local {
			ep.remote = remotes[e.Cluster]
			if ep.remote == nil {
				// Validate guarantees every endpoint's cluster is listed; an unlisted one cannot be reached.
				continue
			}
		}
		out.serving[health.Key{Cluster: e.Cluster, Address: e.Address}] = ep
		if ep.draining {
			continue
		}
		if local {
			out.readyLocal = append(out.readyLocal, ep)
		}
		out.ready = append(out.ready, ep)
		out.readyStates = append(out.readyStates, ep.state)
	}
	return out
}

// maxSamples bounds the random draws of one power-of-two-choices pick before it falls back to a linear scan.
const maxSamples = 4

// pick chooses among ready, available endpoints by power of two choices with least request: two distinct random
// candidates, the one with fewer requests in flight wins (ties go to the one with fewer requests so far, which keeps
// a sequential client spread evenly). avoid (may be nil) is skipped: a retry goes elsewhere. Every loop is bounded;
// nil means nothing is available.
func (b *backend) pick(now int64, avoid *endpoint) *endpoint {
	return p2c(b.ready, now, avoid)
}

func p2c(eps []*endpoint, now int64, avoid *endpoint) *endpoint {
	n := len(eps)
	switch n {
	case 0:
		return nil
	case 1:
		if e := eps[0]; e != avoid && e.state.Available(now) {
			return e
		}
		return nil
	}
	// Draw pairs of distinct indices; a pair with an unavailable member is redrawn, keeping the first available
	// endpoint seen as the answer should every draw be spoiled.
	var fallback *endpoint
	for i := 0; i < maxSamples; i++ {
		x := rand.IntN(n)
		y := rand.IntN(n - 1)
		if y >= x {
			y++
		}
		a, c := eps[x], eps[y]
		aok := a != avoid && a.state.Available(now)
		cok := c != avoid && c.state.Available(now)
		switch {
		case aok && cok:
			return lessLoaded(a, c)
		case aok && fallback == nil:
			fallback = a
		case cok && fallback == nil:
			fallback = c
		}
	}
	if fallback != nil {
		return fallback
	}
	// Most of the set is unavailable: scan once from a random start for anything that is.
	start := rand.IntN(n)
	for i := 0; i < n; i++ {
		if e := eps[(start+i)%n]; e != avoid && e.state.Available(now) {
			return e
		}
	}
	return nil
}

// lessLoaded: fewer requests in flight wins; ties go to the endpoint with fewer requests so far, which spreads a
// sequential client evenly instead of by coin flips.
func lessLoaded(a, c *endpoint) *endpoint {
	ai, ci := a.state.InFlight.Load(), c.state.InFlight.Load()
	if ci < ai || ci == ai && c.state.Requests.Load() < a.state.Requests.Load() {
		return c
	}
	return a
}

// available reports whether pick could return an endpoint.
func (b *backend) available(now int64, avoid *endpoint) bool {
	for _, e := range b.ready {
		if e != avoid && e.state.Available(now) {
			return true
		}
	}
	return false
}

// pickLocal serves an east-west request: the named endpoint if it is one of this cluster's serving endpoints (ready,
// or draining with sessions pinned to it) and not known bad here, else a pick among the local ready ones. It never
// returns a remote endpoint, which is what prevents forwarding loops.
func (b *backend) pickLocal(named string, now int64) *endpoint {
	if named != "" {
		if ep := b.serving[health.Key{Cluster: b.cluster, Address: named}]; ep != nil && ep.remote == nil && ep.state.Available(now) {
			return ep
		}
	}
	return p2c(b.readyLocal, now, nil)
}

// pickResult says why an action found no endpoint.
type pickResult int

const (
	picked        pickResult = iota
	pickAllZero              // 500: every weight is zero
	pickInvalid              // 500: the scheduled share belongs to an invalid backendRef
	pickNoHealthy            // 503: nothing available
)

// pick selects a backend by weight and an endpoint in it. Weights apply to the backends that have an available
// endpoint: when the scheduled backend has none, its share goes to the others in proportion to their weights (Caddy
// instead indexes over all weights and applies the result to the healthy subset, which mis-weights exactly when a
// host is down). Invalid backendRefs keep their share: they answer 500 as the spec requires.
func (a *action) pick(now int64, avoid *endpoint) (*backend, *endpoint, pickResult) {
	i := a.sched.next()
	if i < 0 {
		return nil, nil, pickAllZero
	}
	wb := a.backends[i]
	if wb.backend == nil {
		return nil, nil, pickInvalid
	}
	if ep := wb.backend.pick(now, avoid); ep != nil {
		return wb.backend, ep, picked
	}
	return a.pickOthers(now, avoid, i)
}

// pickOthers chooses a backend at random in proportion to weight among those (other than index skip) with an
// available endpoint, and an endpoint in it. Retries use it with skip -1 so they do not advance the shared schedule
// (which would hand the next request the very share that just failed).
func (a *action) pickOthers(now int64, avoid *endpoint, skip int) (*backend, *endpoint, pickResult) {
	i := skip
	var total int64
	for j, o := range a.backends {
		if j != i && o.backend != nil && o.weight > 0 && o.backend.available(now, avoid) {
			total += int64(o.weight)
		}
	}
	if total == 0 {
		return nil, nil, pickNoHealthy
	}
	r := rand.Int64N(total)
	for j, o := range a.backends {
		if j != i && o.backend != nil && o.weight > 0 && o.backend.available(now, avoid) {
			if r -= int64(o.weight); r < 0 {
				if ep := o.backend.pick(now, avoid); ep != nil {
					return o.backend, ep, picked
				}
				break
			}
		}
	}
	return nil, nil, pickNoHealthy
}

// retryBudget bounds retries to a share of requests over a window (XBackendTrafficPolicy retryConstraint): within
// each interval, retries may not exceed max(percent% of requests, minRetriesPerSecond × interval). Counting is per
// window with atomic counters; a window boundary race can let one extra retry through, which a budget tolerates.
type retryBudget struct {
	percent  int64
	interval int64 // nanoseconds
	minCount int64
	window   atomic.Int64 // start of the current window, unix nanoseconds
	requests atomic.Int64
	retries  atomic.Int64
}

func newRetryBudget(rb *spokeconfig.RetryBudget) *retryBudget {
	interval := rb.IntervalMs
	if interval <= 0 {
		interval = 10_000
	}
	min := int64(rb.MinRetriesPerSecond) * interval / 1000
	return &retryBudget{percent: int64(rb.Percent), interval: interval * 1e6, minCount: min}
}

func (rb *retryBudget) roll(now int64) {
	if w := rb.window.Load(); now-w >= rb.interval && rb.window.CompareAndSwap(w, now) {
		rb.requests.Store(0)
		rb.retries.Store(0)
	}
}

// request counts a first attempt.
func (rb *retryBudget) request(now int64) {
	if rb == nil {
		return
	}
	rb.roll(now)
	rb.requests.Add(1)
}

// allow takes a retry from the budget if one is left.
func (rb *retryBudget) allow(now int64) bool {
	if rb == nil {
		return true
	}
	rb.roll(now)
	limit := max(rb.requests.Load()*rb.percent/100, rb.minCount)
	if rb.retries.Add(1) > limit {
		rb.retries.Add(-1)
		return false
	}
	return true
}

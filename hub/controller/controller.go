// Package controller runs the hub's compile loop: it watches the inputs in etcd (hub objects, cluster reports,
// cluster records), coalesces bursts of changes, compiles one consistent snapshot with hub/compiler, projects the
// graph for every cluster and writes the projections and statuses back to etcd, where hub/server streams them to
// spokes.
//
// Only the elected leader compiles (etcd election under store.LeaderPrefix), so several hub replicas can share one
// etcd; every graph and status write is guarded by the leader key, so a replica that lost leadership mid-compile
// cannot overwrite a newer graph. The package does no networking of its own beyond etcd.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/store"
)

// Config tunes the compile loop. Zero values take the defaults.
type Config struct {
	// HoldOff is how long the loop waits after a change for more changes before compiling. Default 20ms.
	HoldOff time.Duration
	// MaxDelay bounds how long a steady stream of changes can postpone a compile. Default 200ms.
	MaxDelay time.Duration
	// Identity is this replica's value in the leader election (shown by etcdctl). Default: hostname and pid.
	Identity string
	// SessionTTL is the leader lease TTL: how long a crashed leader blocks a standby. Default 10s.
	SessionTTL time.Duration
	// KeyRotation is how often the leader replaces the session and gossip keys (--key-rotation); the replaced key
	// still verifies for one more period. Each rotation changes every spoke's config. Default 24h.
	KeyRotation time.Duration
	Logger      *slog.Logger
}

// Defaults of Config.
const (
	DefaultHoldOff    = 20 * time.Millisecond
	DefaultMaxDelay   = 200 * time.Millisecond
	DefaultSessionTTL = 10 * time.Second
	// DefaultKeyRotation: a day keeps a stolen key useful for two days at most while costing one config push a day.
	DefaultKeyRotation = 24 * time.Hour
)

// Validate reports a configuration the loop cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.HoldOff < 0 {
		errs = append(errs, fmt.Errorf("compile hold-off %v: must not be negative", c.HoldOff))
	}
	if c.MaxDelay < 0 {
		errs = append(errs, fmt.Errorf("compile max delay %v: must not be negative", c.MaxDelay))
	}
	if c.HoldOff > 0 && c.MaxDelay > 0 && c.MaxDelay < c.HoldOff {
		errs = append(errs, fmt.Errorf("compile max delay %v: must be at least the hold-off %v", c.MaxDelay, c.HoldOff))
	}
	if c.SessionTTL != 0 && c.SessionTTL < time.Second {
		errs = append(errs, fmt.Errorf("session TTL %v: must be at least 1s", c.SessionTTL))
	}
	if c.KeyRotation != 0 && c.KeyRotation < time.Second {
		errs = append(errs, fmt.Errorf("key rotation %v: must be at least 1s", c.KeyRotation))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.HoldOff == 0 {
		c.HoldOff = DefaultHoldOff
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = DefaultMaxDelay
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.KeyRotation == 0 {
		c.KeyRotation = DefaultKeyRotation
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Controller is the compile loop. Create it with New and start it with Run.
type Controller struct {
	st  *store.Store
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	compiled int64         // input revision of the last successful compile
	compiles int64         // successful compiles since start
	advanced chan struct{} // closed (and replaced) whenever compiled advances
}

// New returns a controller over st.
func New(st *store.Store, cfg Config) *Controller {
	cfg = cfg.withDefaults()
	return &Controller{st: st, cfg: cfg, log: cfg.Logger.With("component", "compile"), advanced: make(chan struct{})}
}

// Compiled is the input revision of the last compile this replica finished.
func (c *Controller) Compiled() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.compiled
}

// Compiles counts the compiles this replica finished (tests use it to see debouncing).
func (c *Controller) Compiles() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.compiles
}

// WaitCompiled blocks until this replica has compiled inputs at revision rev or later. rev should be a revision
// returned by a write of inputs (Apply, a report, a cluster record); only the leader compiles, so a standby replica
// waits until it becomes leader.
func (c *Controller) WaitCompiled(ctx context.Context, rev int64) error {
	for {
		c.mu.Lock()
		done, ch := c.compiled >= rev, c.advanced
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for revision %d to be compiled (last compiled %d): %w", rev, c.Compiled(), ctx.Err())
		}
	}
}

func (c *Controller) markCompiled(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.compiles++
	if rev > c.compiled {
		c.compiled = rev
		close(c.advanced)
		c.advanced = make(chan struct{})
	}
}

// Run campaigns for leadership and compiles while leader, until ctx ends. Losing leadership or an etcd error sends it
// back to campaigning after a short backoff; it returns only ctx's error.
func (c *Controller) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := c.campaignAndLead(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Warn("compile leadership ended; campaigning again", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Controller) campaignAndLead(ctx context.Context) error {
	cli := c.st.Client()
	// The session outlives ctx: Session.Close revokes the lease under the session's own context, and a cancelled one
	// would fail the revoke, leaving the leader key to expire after the TTL instead of going at once.
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(int(c.cfg.SessionTTL/time.Second)), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return fmt.Errorf("leader session: %w", err)
	}
	// Resigns on every way out, a clean shutdown included: a standby, or this hub restarted, takes over at once
	// instead of after the TTL.
	defer session.Close()
	election := concurrency.NewElection(session, store.LeaderPrefix)
	if err := election.Campaign(ctx, c.cfg.Identity); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	c.log.Info("elected compile leader", "identity", c.cfg.Identity, "key", election.Key())
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-session.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(election.Key()), "=", election.Rev())}
	return c.lead(lctx, guard)
}

// lead makes sure the keys exist, compiles once, then on every batch of input changes (key rotations included) until
// ctx ends or a write finds leadership lost.
func (c *Controller) lead(ctx context.Context, guard []clientv3.Cmp) error {
	nextRotation, err := c.rotateKeys(ctx, guard)
	if err != nil {
		return err
	}
	rev, err := c.compile(ctx, guard)
	if err != nil {
		return err
	}
	cli := c.st.Client()
	// Watch from the compiled revision on, so no change between the read and the watch is missed.
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev + 1)}
	hubW := cli.Watch(ctx, store.HubPrefix, opts...)
	reportsW := cli.Watch(ctx, store.ReportsPrefix, opts...)
	clustersW := cli.Watch(ctx, store.ClustersPrefix, opts...)
	keysW := cli.Watch(ctx, store.KeysPrefix, opts...)
	revokedW := cli.Watch(ctx, store.RevokedPrefix, opts...)
	rotation := time.NewTimer(time.Until(nextRotation))
	defer rotation.Stop()

	var d debouncer
	failures := 0 // compiles failed in a row
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	onEvents := func(wr clientv3.WatchResponse, ok bool) error {
		if !ok {
			return errors.New("input watch closed")
		}
		if err := wr.Err(); err != nil {
			// Compacted or cancelled: start over (re-read, re-watch) rather than risk missing a change.
			return fmt.Errorf("input watch: %w", err)
		}
		if len(wr.Events) > 0 {
			timer.Reset(d.event(time.Now(), c.cfg.HoldOff, c.cfg.MaxDelay))
		}
		return nil
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-hubW:
			err = onEvents(wr, ok)
		case wr, ok := <-reportsW:
			err = onEvents(wr, ok)
		case wr, ok := <-clustersW:
			err = onEvents(wr, ok)
		case wr, ok := <-keysW:
			err = onEvents(wr, ok) // a rotation (here or by an operator's restore) reaches every projection
		case wr, ok := <-revokedW:
			err = onEvents(wr, ok) // a re-join's revocations reach every projection
		case <-rotation.C:
			next, rerr := c.rotateKeys(ctx, guard)
			if rerr != nil {
				return rerr
			}
			rotation.Reset(time.Until(next))
		case <-timer.C:
			d.reset()
			_, cerr := c.compile(ctx, guard)
			if cerr == nil {
				failures = 0
				break
			}
			if errors.Is(cerr, store.ErrNotLeader) || ctx.Err() != nil {
				return cerr
			}
			// Keep leadership and retry with backoff: a transient failure (etcd unavailable) clears on an early
			// retry, and one that repeats on the same inputs costs little until they change (a change compiles
			// after the usual hold-off). The spokes keep their last config meanwhile.
			failures++
			retry := retryDelay(failures, c.cfg.MaxDelay)
			c.log.Error("compile failed; retrying", "err", cerr, "failures", failures, "retryIn", retry)
			timer.Reset(retry)
		}
		if err != nil {
			return err
		}
	}
}

// maxRetryDelay bounds the backoff between retries of a failing compile.
const maxRetryDelay = 30 * time.Second

// retryDelay is the wait before retrying a compile that failed failures (≥ 1) times in a row: first, doubling up to
// maxRetryDelay.
func retryDelay(failures int, first time.Duration) time.Duration {
	d := first
	for i := 1; i < failures && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

// debouncer decides when a burst of changes is compiled: HoldOff after the latest change, but never later than
// MaxDelay after the first change of the burst.
type debouncer struct {
	pending bool
	first   time.Time
}

// event records a change at now and returns how long to wait before compiling.
func (d *debouncer) event(now time.Time, holdOff, maxDelay time.Duration) time.Duration {
	if !d.pending {
		d.pending, d.first = true, now
	}
	fire := now.Add(holdOff)
	if deadline := d.first.Add(maxDelay); deadline.Before(fire) {
		fire = deadline
	}
	return max(fire.Sub(now), 0)
}

func (d *debouncer) reset() { d.pending = false }

// rotateKeys creates or rotates the session and gossip keys as due, and returns when the next rotation is due. A
// write that loses a race (another replica, or leadership gone) is not an error here: the guard decides leadership,
// and the next guarded write (a compile) reports it.
func (c *Controller) rotateKeys(ctx context.Context, guard []clientv3.Cmp) (time.Time, error) {
	rotated, next, err := c.st.RotateSecrets(ctx, guard, c.cfg.KeyRotation, time.Now())
	switch {
	case errors.Is(err, store.ErrKeysRaced):
		return time.Now().Add(time.Second), nil
	case err != nil:
		return time.Time{}, err
	}
	if rotated {
		// Never the key material: only that it happened and when the next one is due.
		c.log.Info("rotated session and gossip keys", "nextRotation", next.Format(time.RFC3339))
	}
	return next, nil
}

// compile runs one read → compile → project → write cycle and returns the input revision.
func (c *Controller) compile(ctx context.Context, guard []clientv3.Cmp) (rev int64, err error) {
	start := time.Now()
	in, err := c.st.ReadInputs(ctx)
	if err != nil {
		return 0, err
	}
	// Keys at the inputs' revision, so a compile's projections are one consistent snapshot.
	secrets, err := c.st.ReadSecrets(ctx, in.Revision)
	if err != nil {
		return 0, err
	}
	out, projections, err := compileAndProject(in, projectionSecrets(secrets))
	if err != nil {
		return 0, err
	}
	// Graphs first: each route status is stamped with the revision of the graph it stands in per cluster, which
	// tells whether the cluster has it programmed (its spoke acknowledged that revision or a newer one).
	gw, err := c.st.WriteGraphs(ctx, guard, in.Revision, projections)
	if err != nil {
		return 0, err
	}
	changed, failed := gw.Changed, gw.Failed
	nStatus, err := c.st.WriteStatuses(ctx, guard, out.Statuses, func(prev []byte, next *compiler.ObjectStatus) {
		stampStatus(prev, next, gw.Revisions, start)
	})
	if err != nil {
		return 0, err
	}
	names := make([]string, 0, len(projections))
	for name := range projections {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := failed[name]; err != nil {
			c.log.Warn("cluster gets no new config; it keeps its last one", "cluster", name, "revision", in.Revision, "err", err)
		}
	}
	if err := c.st.RecordProjectionErrors(ctx, in.Revision, names, failed); err != nil {
		return 0, err
	}
	c.markCompiled(in.Revision)
	c.log.Debug("compiled", "revision", in.Revision, "clusters", len(projections), "graphsChanged", changed,
		"projectionErrors", len(failed), "statusWrites", nStatus, "duration", time.Since(start))
	return in.Revision, nil
}

// stampStatus fills in what the compiler leaves out of a status (next) from the stored one (prev, nil when none):
// each condition's LastTransitionTime (kept while its status stays, now when it changes or is new) and, for each
// per-cluster parent of a route, its GraphRevision (kept while that parent's status does not change, since the route
// stands in the cluster's graph as it did; otherwise the cluster's graph revision after this compile, in revisions,
// or 0 when that graph could not be stored).
func stampStatus(prev []byte, next *compiler.ObjectStatus, revisions map[string]int64, now time.Time) {
	var old compiler.ObjectStatus
	if prev != nil {
		_ = json.Unmarshal(prev, &old) // unreadable: everything is stamped anew
	}
	at := metav1.NewTime(now.UTC().Truncate(time.Second))
	stampTransitions(old.Conditions, next.Conditions, at)
	for i := range next.Clusters {
		n := &next.Clusters[i]
		var o []metav1.Condition
		for _, oc := range old.Clusters {
			if oc.Cluster == n.Cluster {
				o = oc.Conditions
			}
		}
		stampTransitions(o, n.Conditions, at)
	}
	for i := range next.Listeners {
		n := &next.Listeners[i]
		var o []metav1.Condition
		for _, ol := range old.Listeners {
			if ol.Cluster == n.Cluster && ol.Name == n.Name {
				o = ol.Conditions
			}
		}
		stampTransitions(o, n.Conditions, at)
	}
	for i := range next.Parents {
		p := &next.Parents[i]
		var o *compiler.ParentStatus
		for j := range old.Parents {
			if old.Parents[j].Cluster == p.Cluster && equality.Semantic.DeepEqual(old.Parents[j].ParentRef, p.ParentRef) {
				o = &old.Parents[j]
			}
		}
		var oc []metav1.Condition
		if o != nil {
			oc = o.Conditions
		}
		stampTransitions(oc, p.Conditions, at)
		if p.Cluster == "" {
			continue
		}
		p.GraphRevision = revisions[p.Cluster]
		if o != nil && o.GraphRevision > 0 && old.Generation == next.Generation && equality.Semantic.DeepEqual(o.Conditions, p.Conditions) {
			p.GraphRevision = o.GraphRevision
		}
	}
}

// stampTransitions sets each condition's LastTransitionTime in next: the one of the same type in old when its status
// is the same, else at.
func stampTransitions(old, next []metav1.Condition, at metav1.Time) {
	for i := range next {
		next[i].LastTransitionTime = at
		for _, o := range old {
			if o.Type == next[i].Type && o.Status == next[i].Status && !o.LastTransitionTime.IsZero() {
				next[i].LastTransitionTime = o.LastTransitionTime
				break
			}
		}
	}
}

// compileAndProject runs the pure stages. A panic in them is a compiler bug: in Compile it becomes the compile's
// error, in one cluster's projection that cluster's error, so the hub keeps serving the last good graphs (of that one
// cluster, or of all) instead of crashing every replica on the same input.
func compileAndProject(in *compiler.Inputs, secrets *compiler.Secrets) (out *compiler.Output, projections map[string]store.Projection, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("compiler panic at revision %d: %v", in.Revision, r)
		}
	}()
	out = compiler.Compile(in)
	projections = make(map[string]store.Projection, len(in.Clusters))
	for name := range in.Clusters {
		projections[name] = project(out.Graph, name, secrets, in.Revision)
	}
	return out, projections, nil
}

func project(g *compiler.Graph, cluster string, secrets *compiler.Secrets, rev int64) (p store.Projection) {
	defer func() {
		if r := recover(); r != nil {
			p = store.Projection{Err: fmt.Errorf("projection panic at revision %d: %v", rev, r)}
		}
	}()
	sc := compiler.Project(g, cluster)
	compiler.AddSecrets(sc, g, secrets)
	return store.Projection{Config: sc}
}

// projectionSecrets turns the stored rings into what projections carry: every live session key (newest first, so it
// signs) and the newest gossip key. memberlist could hold a gossip keyring too, but SpokeConfig carries one key: while
// a gossip rotation propagates (seconds), spokes on different keys cannot gossip, and the data path's own signals keep
// cluster health meanwhile.
func projectionSecrets(s store.Secrets) *compiler.Secrets {
	out := &compiler.Secrets{}
	for _, k := range s.Session.Keys {
		out.SessionKeys = append(out.SessionKeys, spokeconfig.SessionKey{ID: k.ID, Secret: k.Secret})
	}
	if len(s.Gossip.Keys) > 0 {
		out.GossipKey = s.Gossip.Keys[0].Secret
	}
	return out
}

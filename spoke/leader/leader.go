// Package leader elects one of a cluster's spoke replicas with a coordination.k8s.io Lease, so that exactly one of
// them reports the cluster to the hub and writes status back while every replica serves traffic. It wraps client-go's
// leaderelection and adds what a spoke needs from it:
//
//   - The leader's work has stopped before the lease is given up. client-go's ReleaseOnCancel releases the lease as
//     soon as its context ends, while the leader's callback may still be running; here the lease is released only
//     after the callback has returned, so a successor never starts while the old leader is still writing.
//   - A leader's term ends RenewDeadline after it sent its last renewal that succeeded, not RenewDeadline after the
//     start of its last renewal round (client-go's rule). A standby counts the lease duration from when it saw the
//     renewal, never before the renewal was sent; client-go's leader counts from when the answer came back, so slow
//     answers ate the margin between the two and a cut-off leader could still lead when a standby took over.
//   - A released lease is taken over at once. A standby watches the Lease and campaigns again the moment it is
//     released (holder cleared) or deleted, instead of at its next retry (2–4.4 s with client-go's jitter). A leader
//     that vanished without releasing is replaced once the lease expires, as with client-go alone.
//
// It knows nothing of what the leader does.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults for Config: those of Kubernetes' own controllers.
const (
	DefaultLeaseName     = "fedgate-spoke"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// RBACRules are the permissions an Elector needs in the Lease's namespace (grant them with a Role there): create
// (which RBAC cannot restrict by name), and get, update, watch and delete (DeleteLease) of the one Lease. Nothing
// cluster-wide, no events.
func RBACRules(leaseName string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, ResourceNames: []string{leaseName},
			Verbs: []string{"get", "update", "watch", "delete"}},
	}
}

// DeleteLease deletes the Lease once this cluster was removed at the hub (after Run returned): nothing of fedgate's
// stays in the cluster. Only a Lease no one else holds goes (another replica, or a new agent after a re-join, may lead
// by now); gone already is no error.
func (e *Elector) DeleteLease(ctx context.Context) error {
	l, err := e.client.Leases(e.cfg.Namespace).Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" && *h != e.identity {
		return nil
	}
	err = e.client.Leases(e.cfg.Namespace).Delete(ctx, e.cfg.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &l.UID, ResourceVersion: &l.ResourceVersion}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// AwaitNoOtherLeader returns once no other replica holds the Lease: it is released or gone, or its holder has not
// renewed it for a lease duration (a crashed replica). A removed cluster's replicas clean up only then, so no leader
// writes status after the cleanup (every replica hears of the removal on its own stream, at slightly different times).
// Call it after Run has returned. It returns ctx's error if ctx ends first.
func (e *Elector) AwaitNoOtherLeader(ctx context.Context) error {
	var seen string // the resourceVersion last read
	var since time.Time
	for {
		l, err := e.client.Leases(e.cfg.Namespace).Get(ctx, e.cfg.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err == nil:
			if h := l.Spec.HolderIdentity; h == nil || *h == "" || *h == e.identity {
				return nil
			}
			if l.ResourceVersion != seen {
				seen, since = l.ResourceVersion, time.Now()
			} else if time.Since(since) >= e.cfg.LeaseDuration {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the other replicas to stop leading: %w", ctx.Err())
		case <-time.After(e.cfg.RetryPeriod):
		}
	}
}

// Config of an Elector.
type Config struct {
	// REST reaches the cluster's API server. Required.
	REST *rest.Config
	// Namespace of the Lease. Required.
	Namespace string
	// Name of the Lease. Default DefaultLeaseName.
	Name string
	// Identity names this replica (the pod name). The Lease records it with a random suffix, so two replicas given
	// the same name by mistake still never both lead. Required.
	Identity string
	// LeaseDuration is how long a leader that stopped renewing (crashed, cut off) keeps the others waiting.
	// Default DefaultLeaseDuration.
	LeaseDuration time.Duration
	// RenewDeadline is how long a leader keeps leading while its renewals fail; it must be shorter than LeaseDuration,
	// so a leader cut off from the API server stops before another can start. Default DefaultRenewDeadline.
	RenewDeadline time.Duration
	// RetryPeriod is how often a leader renews and a standby tries to acquire. Default DefaultRetryPeriod.
	RetryPeriod time.Duration
	// Log, default slog.Default().
	Log *slog.Logger
}

// Elector campaigns for the Lease. Create with New; Run it once.
type Elector struct {
	cfg      Config
	log      *slog.Logger
	client   coordinationv1client.LeasesGetter // bounded by RenewDeadline
	watcher  coordinationv1client.LeasesGetter // no timeout: watches
	identity string
}

// New checks cfg and returns an Elector; nothing is sent to the API server until Run.
func New(cfg Config) (*Elector, error) {
	if cfg.REST == nil {
		return nil, errors.New("leader election: REST config is required")
	}
	if cfg.Namespace == "" || cfg.Identity == "" {
		return nil, errors.New("leader election: namespace and identity are required")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultLeaseName
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	// client-go's own checks, made here so a bad flag fails at start rather than at each campaign.
	if cfg.LeaseDuration%time.Second != 0 || cfg.LeaseDuration <= cfg.RenewDeadline ||
		cfg.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(cfg.RetryPeriod)) || cfg.RetryPeriod <= 0 {
		return nil, fmt.Errorf("leader election: lease duration %v (whole seconds), renew deadline %v and retry period %v: "+
			"need lease duration > renew deadline > %.1f × retry period > 0", cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod,
			leaderelection.JitterFactor)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	// Lease reads and writes are bounded by the renew deadline, as in Kubernetes' own controllers: client-go bounds a
	// renewal by its context, but not the reads of a standby's attempt. The watch is long-lived and gets no timeout.
	rc := rest.CopyConfig(cfg.REST)
	rc.Timeout = cfg.RenewDeadline
	c, err := coordinationv1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	wc, err := coordinationv1client.NewForConfig(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	id := cfg.Identity + "_" + hex.EncodeToString(suffix)
	return &Elector{cfg: cfg, client: c, watcher: wc, identity: id,
		log: log.With("component", "leader-election", "lease", cfg.Namespace+"/"+cfg.Name, "identity", id)}, nil
}

// Identity is what this replica writes into the Lease's holderIdentity while it leads.
func (e *Elector) Identity() string { return e.identity }

// Run campaigns until ctx ends. Each time this replica becomes leader it calls lead with a context that ends when
// leadership is lost (renewals failed for RenewDeadline) or ctx ends, and it holds the lease until lead has returned:
// only then does it release it (when ctx ended) or campaign again (when leadership was lost). It returns nil once ctx
// has ended and the lease is released.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	released := make(chan struct{}, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go e.watchReleases(wctx, released)
	for ctx.Err() == nil {
		e.campaign(ctx, released, lead)
	}
	return nil
}

// campaign runs one client-go LeaderElector until this replica's leadership ends, ctx ends, or (while not leading)
// the lease is released by its holder.
func (e *Elector) campaign(ctx context.Context, released <-chan struct{}, lead func(context.Context)) {
	// The elector's own context ends only after lead has returned: it renews the lease until then.
	ectx, cancelElector := context.WithCancel(logr.NewContext(context.WithoutCancel(ctx), logr.FromSlogHandler(e.log.Handler())))
	defer cancelElector()
	lock := &timedLock{LeaseLock: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.Name},
		Client:     e.client,
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.identity},
	}}
	var (
		mu       sync.Mutex
		leading  bool
		stopping bool // set once this campaign is ending: a late OnStartedLeading must not lead
		termDone = make(chan struct{})
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: e.cfg.LeaseDuration,
		RenewDeadline: e.cfg.RenewDeadline,
		RetryPeriod:   e.cfg.RetryPeriod,
		// Not ReleaseOnCancel: release below, once lead has returned.
		Name: e.cfg.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if stopping {
					mu.Unlock()
					return
				}
				leading = true
				mu.Unlock()
				defer close(termDone)
				tctx, cancel := context.WithCancel(lctx)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				go e.expireTerm(tctx, lock, cancelElector)
				e.log.Info("leading")
				start := time.Now()
				lead(tctx)
				e.log.Info("stopped leading", "after", time.Since(start).Round(time.Millisecond))
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil { // New checked the timings; nothing else can fail here
		e.log.Error("leader election", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(e.cfg.RetryPeriod):
		}
		return
	}
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		le.Run(ectx)
	}()
	// end stops this campaign: the leader's work first, then the elector's renewals, then the lease is released
	// (when this replica may still hold it: it led, or acquired it just as the campaign ended).
	end := func() {
		mu.Lock()
		stopping = true
		wasLeading := leading
		mu.Unlock()
		if wasLeading {
			<-termDone
		}
		cancelElector()
		<-runDone
		if wasLeading || le.IsLeader() {
			e.release(lock)
		}
	}
	for {
		select {
		case <-ctx.Done():
			end()
			return
		case <-runDone: // renewals failed: lead's context has ended
			end()
			return
		case <-released:
			mu.Lock()
			l := leading
			mu.Unlock()
			if l {
				continue // our own lease; nothing to take over
			}
			// A fresh campaign tries at once; client-go's loop would wait for its next retry.
			e.log.Info("lease released by its holder; campaigning now")
			end()
			return
		}
	}
}

// expireTerm ends the elector (and with it the term) once RenewDeadline has passed since this replica sent its last
// write of the lease that succeeded, unless the term has ended first.
func (e *Elector) expireTerm(term context.Context, lock *timedLock, endElector func()) {
	for {
		left := time.Until(lock.lastWrite().Add(e.cfg.RenewDeadline))
		if left <= 0 {
			e.log.Warn("no renewal of the lease succeeded within the renew deadline; stopping leading", "renewDeadline", e.cfg.RenewDeadline)
			endElector()
			return
		}
		t := time.NewTimer(left)
		select {
		case <-term.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// timedLock notes when the last write of the lease that succeeded was sent: the API server stored it after that, so a
// standby counts the lease duration from then or later.
type timedLock struct {
	*resourcelock.LeaseLock
	mu      sync.Mutex
	written time.Time
}

func (l *timedLock) Create(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	sent := time.Now()
	err := l.LeaseLock.Create(ctx, rec)
	l.note(sent, err)
	return err
}

func (l *timedLock) Update(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	sent := time.Now()
	err := l.LeaseLock.Update(ctx, rec)
	l.note(sent, err)
	return err
}

func (l *timedLock) note(sent time.Time, err error) {
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent.After(l.written) {
		l.written = sent
	}
}

func (l *timedLock) lastWrite() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written
}

// release gives the lease up if it still names this replica: holder cleared, duration one second (what client-go's
// ReleaseOnCancel writes), so a standby may take it at once. The update carries the resourceVersion read, so a lease
// taken over meanwhile is left alone.
func (e *Elector) release(lock *timedLock) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	rec, _, err := lock.Get(ctx)
	if err != nil || rec.HolderIdentity != e.identity {
		if err != nil {
			e.log.Warn("releasing the lease: reading it failed; it expires by itself", "err", err)
		}
		return
	}
	now := metav1.NewTime(time.Now())
	if err := lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaseDurationSeconds: 1, AcquireTime: now, RenewTime: now, LeaderTransitions: rec.LeaderTransitions,
	}); err != nil {
		e.log.Warn("releasing the lease failed; it expires by itself", "err", err)
		return
	}
	e.log.Info("lease released")
}

// watchReleases signals released whenever the Lease is seen without a holder or deleted, until ctx ends. Watch
// failures are retried every RetryPeriod: they only cost the quick takeover, never correctness.
func (e *Elector) watchReleases(ctx context.Context, released chan<- struct{}) {
	leases := e.watcher.Leases(e.cfg.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", e.cfg.Name).String()
	for ctx.Err() == nil {
		w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			e.log.Debug("watching the lease", "err", err)
		} else {
			e.forwardReleases(ctx, w, released)
			w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.cfg.RetryPeriod):
		}
	}
}

func (e *Elector) forwardReleases(ctx context.Context, w watch.Interface, released chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			free := false
			switch ev.Type {
			case watch.Deleted:
				free = true
			case watch.Added, watch.Modified:
				if l, ok := ev.Object.(*coordinationv1.Lease); ok {
					free = l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == ""
				}
			case watch.Error:
				return
			}
			if free {
				select {
				case released <- struct{}{}:
				default:
				}
			}
		}
	}
}

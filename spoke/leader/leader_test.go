package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fedgate/fedgate/test/envtest"
)

var cluster *envtest.Cluster

func TestMain(m *testing.M) {
	cs, stop, err := envtest.Launch(envtest.Options{NoCRDs: true}, "leader")
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	cluster = cs[0]
	code := m.Run()
	_ = stop()
	os.Exit(code)
}

// Short timings keep the tests quick; the ratios are client-go's defaults (15s/10s/2s).
const (
	testLease = 3 * time.Second
	testRenew = 2 * time.Second
	testRetry = 400 * time.Millisecond
)

// request is one API request an elector made, as RBAC sees it.
type request struct{ verb, name string }

// recorder wraps a REST config's transport to note every lease request: RBAC verb and object name (a watch names its
// object by field selector, which is how RBAC's resourceNames apply to it).
type recorder struct {
	mu   sync.Mutex
	seen map[request]bool
}

func (r *recorder) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			r.note(req)
			return rt.RoundTrip(req)
		})
	}
	return cfg
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (r *recorder) note(req *http.Request) {
	_, rest, ok := strings.Cut(req.URL.Path, "/leases")
	if !ok {
		return
	}
	name := strings.TrimPrefix(rest, "/")
	verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[req.Method]
	if req.Method == http.MethodGet {
		switch {
		case req.URL.Query().Get("watch") == "true":
			verb = "watch"
			name = strings.TrimPrefix(req.URL.Query().Get("fieldSelector"), "metadata.name=")
		case name == "":
			verb = "list"
		default:
			verb = "get"
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[request]bool{}
	}
	r.seen[request{verb, name}] = true
}

func (r *recorder) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []request
	for k := range r.seen {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b request) int { return strings.Compare(a.verb+"/"+a.name, b.verb+"/"+b.name) })
	return out
}

// leastPrivilege returns a namespace and the config of a new user granted RBACRules(name) there and nothing else.
func leastPrivilege(t *testing.T, name string, rules []rbacv1.PolicyRule) (string, *rest.Config) {
	t.Helper()
	ctx := context.Background()
	ns := cluster.Namespace(t)
	user := "spoke-" + ns
	for _, o := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leader"}, Rules: rules},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leader"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "leader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		},
	} {
		if err := cluster.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := cluster.AddUser(user)
	if err != nil {
		t.Fatal(err)
	}
	return ns, cfg
}

// term is one leadership term as lead saw it.
type term struct {
	who        string
	start, end time.Time
}

// candidate is one running Elector whose lead records its terms and then blocks until its context ends, taking
// stopDelay more to stop (a leader whose duties take a while to wind down).
type candidate struct {
	name   string
	el     *Elector
	cancel context.CancelFunc
	done   chan struct{}
}

type terms struct {
	mu      sync.Mutex
	all     []term
	changed chan struct{}
}

func newTerms() *terms { return &terms{changed: make(chan struct{}, 1)} }

func (ts *terms) add(tm term) (idx int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.all = append(ts.all, tm)
	select {
	case ts.changed <- struct{}{}:
	default:
	}
	return len(ts.all) - 1
}

func (ts *terms) finish(i int, at time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.all[i].end = at
	select {
	case ts.changed <- struct{}{}:
	default:
	}
}

func (ts *terms) snapshot() []term {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.all)
}

// leader returns who leads now ("" for nobody).
func (ts *terms) leader() string {
	var who []string
	for _, tm := range ts.snapshot() {
		if tm.end.IsZero() {
			who = append(who, tm.who)
		}
	}
	if len(who) > 1 {
		panic(fmt.Sprintf("two leaders at once: %v", who))
	}
	if len(who) == 0 {
		return ""
	}
	return who[0]
}

// await waits until cond holds for the terms, and returns when it first held.
func (ts *terms) await(t *testing.T, what string, timeout time.Duration, cond func([]term) bool) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if cond(ts.snapshot()) {
			return time.Now()
		}
		select {
		case <-ts.changed:
		case <-deadline:
			t.Fatalf("%s: not within %v; terms %+v", what, timeout, ts.snapshot())
		}
	}
}

// checkExclusive fails t if two terms overlap.
func checkExclusive(t *testing.T, all []term) {
	t.Helper()
	for i, a := range all {
		for _, b := range all[i+1:] {
			aEnd, bEnd := a.end, b.end
			if aEnd.IsZero() {
				aEnd = time.Now()
			}
			if bEnd.IsZero() {
				bEnd = time.Now()
			}
			if a.start.Before(bEnd) && b.start.Before(aEnd) {
				t.Errorf("terms overlap: %s %v–%v and %s %v–%v", a.who, a.start.Format("15:04:05.000"), a.end.Format("15:04:05.000"),
					b.who, b.start.Format("15:04:05.000"), b.end.Format("15:04:05.000"))
			}
		}
	}
}

func start(t *testing.T, name string, cfg Config, ts *terms, stopDelay time.Duration) *candidate {
	t.Helper()
	cfg.Identity = name
	cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = testLease, testRenew, testRetry
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	el, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{name: name, el: el, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		if err := el.Run(ctx, func(ctx context.Context) {
			i := ts.add(term{who: name, start: time.Now()})
			<-ctx.Done()
			time.Sleep(stopDelay)
			ts.finish(i, time.Now())
		}); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

func lease(t *testing.T, ns, name string) *coordinationv1.Lease {
	t.Helper()
	var l coordinationv1.Lease
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

// Two replicas, one leader; a leader that stops hands over at once (it releases the lease, the standby's watch sees
// it), but only after its own duties have stopped; RBACRules are exactly the requests an elector makes.
func TestOneLeaderAndCleanHandover(t *testing.T) {
	ns, restricted := leastPrivilege(t, DefaultLeaseName, RBACRules(DefaultLeaseName))
	var rec recorder
	cfg := Config{REST: rec.wrap(restricted), Namespace: ns}
	ts := newTerms()
	const stopDelay = 300 * time.Millisecond
	began := time.Now()
	a := start(t, "a", cfg, ts, stopDelay)
	first := ts.await(t, "a leads", 10*time.Second, func(all []term) bool { return len(all) == 1 })
	t.Logf("a, alone, led %v after it started", first.Sub(began).Round(time.Millisecond))
	b := start(t, "b", cfg, ts, stopDelay)
	// b campaigns for several retry periods and must not lead.
	time.Sleep(5 * testRetry)
	if l := ts.leader(); l != "a" || len(ts.snapshot()) != 1 {
		t.Fatalf("leader %q, terms %+v; want a alone", l, ts.snapshot())
	}
	if h := lease(t, ns, DefaultLeaseName).Spec.HolderIdentity; h == nil || *h != a.el.Identity() {
		t.Fatalf("lease holder %v, want %s", h, a.el.Identity())
	}

	// a stops cleanly: b leads once a's duties have stopped, well within one retry period of that.
	stopped := time.Now()
	a.stop()
	took := ts.await(t, "b leads", 5*time.Second, func(all []term) bool { return len(all) == 2 }).Sub(stopped)
	all := ts.snapshot()
	handover := all[1].start.Sub(all[0].end)
	t.Logf("clean handover: b led %v after a was told to stop (a's duties took %v to stop); %v after they had",
		took.Round(time.Millisecond), stopDelay, handover.Round(time.Millisecond))
	if all[1].who != "b" || all[0].end.IsZero() || handover < 0 {
		t.Fatalf("terms %+v: b must lead only after a's term ended", all)
	}
	if handover > testRetry {
		t.Errorf("b led %v after a released the lease, want at once (< one retry period, %v)", handover, testRetry)
	}
	checkExclusive(t, all)

	// b stops too: the lease is left released, holder cleared.
	b.stop()
	if h := lease(t, ns, DefaultLeaseName).Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("lease still held by %s after every candidate stopped", *h)
	}

	// The cluster was removed at the hub: the Lease goes; gone already is no error.
	if err := b.el.DeleteLease(context.Background()); err != nil {
		t.Fatalf("DeleteLease: %v", err)
	}
	if err := b.el.DeleteLease(context.Background()); err != nil {
		t.Fatalf("second DeleteLease: %v", err)
	}

	// The requests made are exactly what RBACRules grant: none missing (the restricted user led) and none unused.
	var granted []request
	for _, r := range RBACRules(DefaultLeaseName) {
		for _, v := range r.Verbs {
			name := ""
			if len(r.ResourceNames) > 0 {
				name = r.ResourceNames[0]
			}
			granted = append(granted, request{v, name})
		}
	}
	used := rec.requests()
	for i := range used {
		if used[i].verb == "create" {
			used[i].name = "" // RBAC cannot restrict create by name: the rule has none
		}
	}
	slices.SortFunc(granted, func(a, b request) int { return strings.Compare(a.verb+"/"+a.name, b.verb+"/"+b.name) })
	if !slices.Equal(used, granted) {
		t.Errorf("requests made %v, RBACRules grant %v", used, granted)
	}
}

// A leader cut off from the API server (a crash, a partition) stops leading after RenewDeadline, before its lease
// expires, and the standby leads once it has: the two terms never overlap. Reconnected, the old leader stands by.
func TestCutOffLeaderIsReplacedAfterExpiry(t *testing.T) {
	ns := cluster.Namespace(t)
	cut, viaCutter := newCutter(t)
	ts := newTerms()
	start(t, "a", Config{REST: viaCutter, Namespace: ns}, ts, 0)
	ts.await(t, "a leads", 10*time.Second, func(all []term) bool { return len(all) == 1 })
	start(t, "b", Config{REST: cluster.Config, Namespace: ns}, ts, 0)
	time.Sleep(3 * testRetry)

	cutAt := time.Now()
	cut.cut(true)
	ts.await(t, "b leads", 3*testLease, func(all []term) bool { return len(all) == 2 })
	all := ts.snapshot()
	t.Logf("a cut off: a stopped leading after %v, b led after %v (lease %v, renew deadline %v)",
		all[0].end.Sub(cutAt).Round(time.Millisecond), all[1].start.Sub(cutAt).Round(time.Millisecond), testLease, testRenew)
	if all[1].who != "b" || all[0].end.IsZero() {
		t.Fatalf("terms %+v", all)
	}
	if d := all[0].end.Sub(cutAt); d > testRenew+2*testRetry {
		t.Errorf("a kept leading %v after it was cut off, want about the renew deadline %v", d, testRenew)
	}
	checkExclusive(t, all)

	cut.cut(false)
	time.Sleep(testLease)
	if l := ts.leader(); l != "b" || len(ts.snapshot()) != 2 {
		t.Errorf("after a reconnected: leader %q, terms %+v; want b still", l, ts.snapshot())
	}
}

// A leader whose last renewal reached the API server but was answered late (a partition just after the request went
// out, a loaded API server) stops leading RenewDeadline after it sent that renewal. A standby counts the lease duration
// from when it saw the renewal, so counting from the late answer, as client-go's leader does, let the two lead at once.
func TestLateAnswerDoesNotStretchTheTerm(t *testing.T) {
	ns := cluster.Namespace(t)
	st := &staller{}
	ts := newTerms()
	start(t, "a", Config{REST: st.wrap(cluster.Config), Namespace: ns}, ts, 0)
	ts.await(t, "a leads", 10*time.Second, func(all []term) bool { return len(all) == 1 })
	start(t, "b", Config{REST: cluster.Config, Namespace: ns}, ts, 0)
	time.Sleep(3 * testRetry)

	const hold = 1500 * time.Millisecond
	st.stallNext(hold)
	ts.await(t, "b leads", 3*testLease, func(all []term) bool { return len(all) == 2 })
	ts.await(t, "a's term ends", 2*testLease, func(all []term) bool { return !all[0].end.IsZero() })
	all := ts.snapshot()
	sent := st.heldSent()
	t.Logf("a's last renewal answered %v late: a stopped leading %v after sending it, b led %v after (lease %v, renew deadline %v)",
		hold, all[0].end.Sub(sent).Round(time.Millisecond), all[1].start.Sub(sent).Round(time.Millisecond), testLease, testRenew)
	// Without the fix a leads until 1.5 s (the late answer) + a retry period + the renew deadline after it sent, 3.9 s;
	// with it, the renew deadline and the time its duties take to stop.
	if d := all[0].end.Sub(sent); d > testRenew+3*testRetry {
		t.Errorf("a led %v after sending its last renewal, want about the renew deadline %v", d, testRenew)
	}
	checkExclusive(t, all)
}

// staller passes requests through until stallNext: the next write of a lease then reaches the API server but its
// answer is held back, and every later request fails, as in a partition that begins just after a request went out.
type staller struct {
	mu   sync.Mutex
	hold time.Duration
	mode int // 0 pass, 1 hold the next lease write, 2 down
	sent time.Time
}

func (s *staller) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			s.mu.Lock()
			mode, held := s.mode, false
			if mode == 1 && req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/leases/") {
				s.mode, s.sent, held = 2, time.Now(), true
			}
			s.mu.Unlock()
			if mode == 2 {
				return nil, errors.New("staller: cut off")
			}
			resp, err := rt.RoundTrip(req)
			if held {
				time.Sleep(s.hold)
			}
			return resp, err
		})
	}
	return cfg
}

func (s *staller) stallNext(hold time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.mode = hold, 1
}

func (s *staller) heldSent() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// AwaitNoOtherLeader waits while another replica leads, and returns once it released the lease or, cut off, stopped
// renewing it for a lease duration.
func TestAwaitNoOtherLeader(t *testing.T) {
	ns := cluster.Namespace(t)
	cut, viaCutter := newCutter(t)
	ts := newTerms()
	cfg := Config{Namespace: ns, Identity: "b", LeaseDuration: testLease, RenewDeadline: testRenew, RetryPeriod: testRetry,
		REST: cluster.Config, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	await := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*testLease)
		defer cancel()
		began := time.Now()
		err := b.AwaitNoOtherLeader(ctx)
		return time.Since(began), err
	}
	if d, err := await(); err != nil || d > testRetry {
		t.Fatalf("no Lease yet: AwaitNoOtherLeader took %v, %v; want at once", d, err)
	}

	// a leads, then stops cleanly: the wait ends once a released the lease.
	a := start(t, "a", Config{REST: cluster.Config, Namespace: ns}, ts, 0)
	ts.await(t, "a leads", 10*time.Second, func(all []term) bool { return len(all) == 1 })
	stopAt := 2 * testRetry
	go func() { time.Sleep(stopAt); a.stop() }()
	// Released, the wait ends within a poll; had it waited for expiry, a lease duration after a's last renewal.
	if d, err := await(); err != nil || d < stopAt || d > stopAt+testLease-testRetry {
		t.Errorf("a stopped %v in: AwaitNoOtherLeader took %v, %v; want until a released the lease", stopAt, d, err)
	}

	// c leads through the cutter and is cut off: the wait ends a lease duration after c's last renewal was seen.
	start(t, "c", Config{REST: viaCutter, Namespace: ns}, ts, 0)
	ts.await(t, "c leads", 10*time.Second, func(all []term) bool { return len(all) == 2 })
	cut.cut(true)
	d, err := await()
	t.Logf("c cut off: AwaitNoOtherLeader returned after %v (lease %v)", d.Round(time.Millisecond), testLease)
	if err != nil || d < testLease-testRetry || d > testLease+5*testRetry {
		t.Errorf("c cut off: AwaitNoOtherLeader took %v, %v; want about a lease duration (%v)", d, err, testLease)
	}
}

// cutter forwards TCP to an API server until cut, which drops every connection and refuses new ones.
type cutter struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	off    bool
	conns  map[net.Conn]bool
}

// newCutter returns a cutter in front of the test's API server and a config that reaches it through the cutter.
func newCutter(t *testing.T) (*cutter, *rest.Config) {
	t.Helper()
	host := cluster.Config.Host
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(host)
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{l: l, target: u.Host, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); c.cut(true) })
	go c.serve()
	via := rest.CopyConfig(cluster.Config)
	via.Host = "https://" + c.addr()
	return c, via
}

func (c *cutter) addr() string { return c.l.Addr().String() }

func (c *cutter) cut(off bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off = off
	if off {
		for conn := range c.conns {
			conn.Close()
		}
		clear(c.conns)
	}
}

func (c *cutter) serve() {
	for {
		in, err := c.l.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.off {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.conns[in], c.conns[out] = true, true
		c.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

func TestNewChecksTimings(t *testing.T) {
	base := Config{REST: cluster.Config, Namespace: "ns", Identity: "x"}
	for _, mutate := range []func(*Config){
		func(c *Config) { c.LeaseDuration = 1500 * time.Millisecond },
		func(c *Config) { c.RenewDeadline = c.LeaseDuration },
		func(c *Config) { c.RetryPeriod = 9 * time.Second },
		func(c *Config) { c.Namespace = "" },
		func(c *Config) { c.Identity = "" },
	} {
		c := base
		c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = DefaultLeaseDuration, DefaultRenewDeadline, DefaultRetryPeriod
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	el, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(el.Identity(), "x_") || len(el.Identity()) != len("x_")+8 {
		t.Errorf("identity %q, want x_ and 8 hex digits", el.Identity())
	}
}

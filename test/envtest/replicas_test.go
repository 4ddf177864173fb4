package envtest

// Several spoke replicas for one cluster, against a real API server (cluster "two" of this package) and a real hub in
// this process: one replica leads — only it reports to the hub and writes status — every replica serves traffic, each
// gossips as its own member, and leadership moves on when the leader stops (at once) or dies (after the lease).
//
// The member cluster "east" holds a Gateway and an HTTPRoute to Service echo, which only cluster "west" (a standalone
// spoke reading a directory) has and exports: requests to either east replica cross east-west to west's backend on
// loopback. The east replicas run as a user granted exactly what deploy/spoke's ClusterRole and Role grant.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/deploy"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/server"
	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/spoke/agent"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/join"
	"github.com/fedgate/fedgate/spoke/kstatus"
	"github.com/fedgate/fedgate/spoke/leader"
	"github.com/fedgate/fedgate/spoke/proxy"
	kubesource "github.com/fedgate/fedgate/spoke/source/kube"
)

// Leader-election timings of these tests: client-go's ratios (15s/10s/2s), shorter.
const (
	replicaLease = 3 * time.Second
	replicaRenew = 2 * time.Second
	replicaRetry = 500 * time.Millisecond
)

// lockedBuffer collects the in-process components' logs; they are shown only when a test fails.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func freePort(t *testing.T) int {
	_, p, _ := net.SplitHostPort(freeAddr(t))
	var n int
	fmt.Sscan(p, &n)
	return n
}

// eventually polls cond every 20ms until it holds or timeout passes, and returns how long it took.
func eventually(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replicaWorld is what both tests share: the member cluster east (API server "two"), a hub, west's spoke and its
// backend, and the credentials and API access east's replicas use.
type replicaWorld struct {
	ctx       context.Context
	log       *slog.Logger
	member    *Cluster
	ns        string // the test's namespace in east: Gateway, route, Lease
	hub       *server.Hub
	eastCreds string
	spokeUser *rest.Config // deploy/spoke's RBAC, nothing else
	west      *agent.Agent
	westProxy *proxy.Server
	westSeen  *livenessLog // west's view of cluster east's liveness
}

// livenessLog records a gossip observer's transitions for one cluster.
type livenessLog struct {
	cluster string
	mu      sync.Mutex
	events  []bool
}

func (l *livenessLog) observe(cluster string, alive bool) {
	if cluster != l.cluster {
		return
	}
	l.mu.Lock()
	l.events = append(l.events, alive)
	l.mu.Unlock()
}

func (l *livenessLog) get() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func startReplicaWorld(t *testing.T) *replicaWorld {
	t.Helper()
	ctx := context.Background()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(logs.String(), "\n")
			if len(lines) > 200 {
				lines = lines[len(lines)-200:]
			}
			t.Logf("---- last lines of the in-process logs ----\n%s", strings.Join(lines, "\n"))
		}
	})
	w := &replicaWorld{ctx: ctx, log: log, member: clusters[1]}
	w.ns = w.member.Namespace(t)
	w.spokeUser = w.grantDeployRBAC(t)
	w.applyEast(t)

	cfg := server.DefaultConfig()
	cfg.Listen = freeAddr(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "hub-data")
	cfg.ShutdownGrace = time.Second
	cfg.Logger = log.With("component", "hub")
	h, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting the hub: %v", err)
	}
	t.Cleanup(h.Close)
	w.hub = h

	w.eastCreds = w.join(t, "east")
	w.startWest(t, w.join(t, "west"))
	return w
}

// join joins cluster name to the hub (as hubctl join does) and returns its credentials directory.
func (w *replicaWorld) join(t *testing.T, name string) string {
	t.Helper()
	tok, _, err := w.hub.Registration().CreateToken(w.ctx, registration.TokenOptions{TTL: time.Hour, ClusterName: name})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name+"-credentials")
	if _, err := join.Run(w.ctx, join.Options{Hub: w.hub.AdvertiseAddress(), Token: tok.String(), CAHash: w.hub.CA().ActiveHash(),
		ClusterName: name, OutDir: dir}); err != nil {
		t.Fatalf("joining %s: %v", name, err)
	}
	return dir
}

// grantDeployRBAC creates deploy/spoke's ClusterRole (renamed for this test) and leader-election Role (in the test's
// namespace), binds both to a new user, and returns that user's config.
func (w *replicaWorld) grantDeployRBAC(t *testing.T) *rest.Config {
	t.Helper()
	objs, err := deploy.Render(deploy.FS, "spoke")
	if err != nil {
		t.Fatal(err)
	}
	user := "spoke-" + w.ns
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	roles := 0
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole":
			var cr rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &cr); err != nil {
				t.Fatal(err)
			}
			name := cr.Name + "-" + w.ns
			w.create(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: cr.Rules},
				&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subject,
					RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}})
			roles++
		case "Role":
			var r rbacv1.Role
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
				t.Fatal(err)
			}
			w.create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: r.Name}, Rules: r.Rules},
				&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: r.Name}, Subjects: subject,
					RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name}})
			roles++
		}
	}
	if roles != 3 {
		t.Fatalf("deploy/spoke has %d roles, want its ClusterRole, its leader-election Role and its credentials Role", roles)
	}
	cfg, err := w.member.AddUser(user)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (w *replicaWorld) create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := w.member.Client.Create(w.ctx, o); err != nil && !(apierrors.IsAlreadyExists(err) && o.GetNamespace() == "") {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// applyEast creates east's objects: our GatewayClass, Gateway gw (HTTP on port 80) and HTTPRoute echo → Service echo
// (which only west has). The Gateway and route go when the test ends: the next test's spokes read the same API
// server, and two Gateways on port 80 would merge their routes.
func (w *replicaWorld) applyEast(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		for _, o := range []client.Object{
			&gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "echo"}},
			&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "gw"}},
		} {
			if err := w.member.Client.Delete(context.Background(), o); err != nil {
				t.Errorf("deleting %T %s: %v", o, o.GetName(), err)
			}
		}
	})
	w.create(t,
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "fedgate"},
			Spec: gatewayv1.GatewayClassSpec{ControllerName: kubesource.DefaultControllerName}},
		&gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "gw"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "fedgate", Listeners: []gatewayv1.Listener{{
				Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80,
			}}},
		},
		&gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "echo"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo", Port: ptr.To[gatewayv1.PortNumber](80)},
				}}}}},
			},
		},
	)
}

// startWest runs cluster west's spoke in this process: a directory source holding Service echo with one endpoint (a
// loopback backend; a directory spoke exports every Service), gossip, and an observer of east's liveness.
func (w *replicaWorld) startWest(t *testing.T, creds string) {
	t.Helper()
	backend := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(rw, "echo from west")
	})}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = backend.Serve(bl) }()
	t.Cleanup(func() { backend.Close() })
	_, port, _ := net.SplitHostPort(bl.Addr().String())
	dir := t.TempDir()
	yaml := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: echo, namespace: %[1]s}
spec:
  ports: [{name: http, port: 80, targetPort: %[2]s}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: %[1]s
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, port: %[2]s, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
`, w.ns, port)
	if err := os.WriteFile(filepath.Join(dir, "echo.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := credentials.Load(creds)
	if err != nil {
		t.Fatal(err)
	}
	w.westSeen = &livenessLog{cluster: "east"}
	log := w.log.With("cluster", "west")
	ew, gossip := freeAddr(t), freeAddr(t)
	w.westProxy = proxy.New(proxy.Options{Cluster: "west", ListenHost: "127.0.0.1", PortOffset: int32(freePort(t) - 80), Logger: log,
		EastWestServerTLS: c.EastWestServerTLS(), EastWestClientTLSFor: c.EastWestClientTLS,
		Gossip: &proxy.GossipOptions{BindAddr: gossip, Replica: "west-0", EastWestAddress: ew, Observer: w.westSeen.observe}})
	a, err := agent.New(agent.Config{SourceDir: dir, Credentials: c, HubAddress: w.hub.AdvertiseAddress(), Proxy: w.westProxy,
		EastWestListen: ew, GossipListen: gossip, ReplicaName: "west-0", MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	w.west = a
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("west: %v", err)
		}
	})
}

// presence counts the hub's open Report streams of cluster (one key each under presence/<cluster>/).
func (w *replicaWorld) presence(t *testing.T, cluster string) int64 {
	t.Helper()
	resp, err := w.hub.Store().Client().Get(w.ctx, store.PresenceClusterPrefix(cluster), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Errorf("reading presence: %v", err)
		return -1
	}
	return resp.Count
}

// watchPresence samples east's presence at the hub every 20ms until the test ends and returns the highest count seen.
func (w *replicaWorld) watchPresence(t *testing.T) func() int64 {
	var mu sync.Mutex
	var highest int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := w.hub.Store().Client().Get(w.ctx, store.PresenceClusterPrefix("east"), clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				continue // the hub is stopping
			}
			mu.Lock()
			highest = max(highest, resp.Count)
			mu.Unlock()
		}
	}()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(stop); <-done }) })
	return func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return highest
	}
}

// leaseHolder returns the holderIdentity of east's Lease ("" when released or absent).
func (w *replicaWorld) leaseHolder() string {
	var l coordinationv1.Lease
	if err := w.member.Client.Get(w.ctx, client.ObjectKey{Namespace: w.ns, Name: leader.DefaultLeaseName}, &l); err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// get sends one request through a gateway address and returns the status and body ("" and the error on failure).
func get(addr string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// servesEcho waits until the gateway at addr answers from west's backend.
func servesEcho(t *testing.T, who, addr string, timeout time.Duration) {
	t.Helper()
	var code int
	var body string
	if d, ok := eventually(timeout, func() bool {
		code, body = get(addr)
		return code == http.StatusOK && strings.Contains(body, "echo from west")
	}); !ok {
		t.Fatalf("%s (%s) does not serve the route after %v: %d %q", who, addr, d, code, body)
	}
}

// term is one leadership term of an in-process replica, from the start of its duties to their end.
type term struct {
	who        string
	start, end time.Time
}

type termLog struct {
	mu    sync.Mutex
	terms []term
}

func (l *termLog) begin(who string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.terms = append(l.terms, term{who: who, start: time.Now()})
	return len(l.terms) - 1
}

func (l *termLog) finish(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.terms[i].end = time.Now()
}

func (l *termLog) get() []term {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.terms)
}

// leading returns who leads now, failing t if more than one does.
func (l *termLog) leading(t *testing.T) string {
	t.Helper()
	var who []string
	for _, tm := range l.get() {
		if tm.end.IsZero() {
			who = append(who, tm.who)
		}
	}
	if len(who) > 1 {
		t.Fatalf("%v lead at once", who)
	}
	if len(who) == 0 {
		return ""
	}
	return who[0]
}

// within reports whether at lies inside one of who's terms.
func (l *termLog) within(who string, at time.Time) bool {
	for _, tm := range l.get() {
		if tm.who == who && !at.Before(tm.start) && (tm.end.IsZero() || !at.After(tm.end)) {
			return true
		}
	}
	return false
}

// recordingElector records the terms of the elector it wraps: lead returns only once the duties have stopped.
type recordingElector struct {
	inner *leader.Elector
	who   string
	log   *termLog
}

func (r recordingElector) Run(ctx context.Context, lead func(context.Context)) error {
	return r.inner.Run(ctx, func(c context.Context) {
		i := r.log.begin(r.who)
		defer r.log.finish(i)
		lead(c)
	})
}

// write is one status write-back by a replica.
type write struct {
	who string
	at  time.Time
}

// eastReplica is one in-process replica of cluster east, assembled as cmd/spoke does with --kubernetes.
type eastReplica struct {
	name    string
	agent   *agent.Agent
	proxy   *proxy.Server
	gateway string // host:port of its gateway port 80
	cancel  context.CancelFunc
	done    chan error
}

func (w *replicaWorld) startEast(t *testing.T, name string, terms *termLog, writes chan<- write) *eastReplica {
	t.Helper()
	c, err := credentials.Load(w.eastCreds)
	if err != nil {
		t.Fatal(err)
	}
	log := w.log.With("cluster", "east", "replica", name)
	src, err := kubesource.New(kubesource.Config{REST: w.spokeUser, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := kstatus.New(kstatus.Config{REST: w.spokeUser, Log: log, OnApplied: func(_ int64, err error) {
		if err == nil {
			writes <- write{name, time.Now()}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	el, err := leader.New(leader.Config{REST: w.spokeUser, Namespace: w.ns, Identity: name, Log: log,
		LeaseDuration: replicaLease, RenewDeadline: replicaRenew, RetryPeriod: replicaRetry})
	if err != nil {
		t.Fatal(err)
	}
	offset := freePort(t) - 80
	ew, gossip := freeAddr(t), freeAddr(t)
	p := proxy.New(proxy.Options{Cluster: "east", ListenHost: "127.0.0.1", PortOffset: int32(offset), Logger: log,
		EastWestServerTLS: c.EastWestServerTLS(), EastWestClientTLSFor: c.EastWestClientTLS,
		Gossip: &proxy.GossipOptions{BindAddr: gossip, Replica: name, EastWestAddress: ew}})
	a, err := agent.New(agent.Config{
		Source: src, StatusWriter: sw, Elector: recordingElector{el, name, terms}, Credentials: c, HubAddress: w.hub.AdvertiseAddress(),
		EastWestListen: ew, GossipListen: gossip, ReplicaName: name, Proxy: p,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(w.ctx)
	r := &eastReplica{name: name, agent: a, proxy: p, gateway: fmt.Sprintf("127.0.0.1:%d", 80+offset), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *eastReplica) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s", r.name)
	}
}

// memberNames lists the gossip members a proxy's node sees.
func memberNames(p *proxy.Server) []string {
	g := p.Gossip()
	if g == nil {
		return nil
	}
	var out []string
	for _, m := range g.Members() {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

func gatewayAccepted(w *replicaWorld) bool {
	var gw gatewayv1.Gateway
	if err := w.member.Client.Get(w.ctx, client.ObjectKey{Namespace: w.ns, Name: "gw"}, &gw); err != nil {
		return false
	}
	c := meta.FindStatusCondition(gw.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed))
	return c != nil && c.Status == metav1.ConditionTrue
}

// Issues 9 and 10, in process: two replicas of east, exactly one reporting and writing status at a time, both serving;
// a clean stop hands over at once; each gossips as its own member and east stays alive while one runs.
func TestSpokeReplicasOneLeaderBothServe(t *testing.T) {
	w := startReplicaWorld(t)
	highest := w.watchPresence(t)
	terms := &termLog{}
	writes := make(chan write, 1000)
	var writeLog []write
	drainWrites := func() []write {
		for {
			select {
			case wr := <-writes:
				writeLog = append(writeLog, wr)
			default:
				return writeLog
			}
		}
	}

	a := w.startEast(t, "east-a", terms, writes)
	if d, ok := eventually(20*time.Second, func() bool { return terms.leading(t) == "east-a" }); !ok {
		t.Fatalf("east-a, alone, does not lead after %v", d)
	}
	b := w.startEast(t, "east-b", terms, writes)
	replicas := map[string]*eastReplica{"east-a": a, "east-b": b}

	// Both serve, the status is written, and both gossip under their own names, seen by west and by each other.
	servesEcho(t, "east-a", a.gateway, 30*time.Second)
	servesEcho(t, "east-b", b.gateway, 30*time.Second)
	if d, ok := eventually(20*time.Second, func() bool { return gatewayAccepted(w) }); !ok {
		t.Fatalf("Gateway gw not Programmed after %v", d)
	}
	wantMembers := []string{"east/east-a", "east/east-b", "west/west-0"}
	if d, ok := eventually(20*time.Second, func() bool {
		return slices.Equal(memberNames(w.westProxy), wantMembers) && slices.Equal(memberNames(a.proxy), wantMembers) &&
			slices.Equal(memberNames(b.proxy), wantMembers)
	}); !ok {
		t.Fatalf("gossip members after %v: west %v, east-a %v, east-b %v; want %v everywhere", d,
			memberNames(w.westProxy), memberNames(a.proxy), memberNames(b.proxy), wantMembers)
	}
	if got := w.westSeen.get(); !slices.Equal(got, []bool{true}) || !w.westProxy.Gossip().Alive("east") {
		t.Fatalf("west saw east's liveness change %v, want it alive once", got)
	}

	// Exactly one leads, reports and writes: the other has never opened a Report stream nor written status.
	first := terms.leading(t)
	other := map[string]string{"east-a": "east-b", "east-b": "east-a"}[first]
	if first != "east-a" {
		t.Fatalf("leader %q; east-a led first and nothing should have moved it", first)
	}
	if h := w.leaseHolder(); !strings.HasPrefix(h, first+"_") {
		t.Errorf("Lease holder %q, want %s's identity", h, first)
	}
	if n := w.presence(t, "east"); n != 1 {
		t.Errorf("the hub holds %d Report streams of east, want 1", n)
	}
	if rep, sub := replicas[other].agent.StreamStarts(); rep != 0 || sub != 1 || replicas[other].agent.Leading() {
		t.Errorf("%s (not leading) opened %d Report and %d Subscribe streams, leading %v; want 0 and 1", other, rep, sub, replicas[other].agent.Leading())
	}
	// The Gateway's status may show before Apply has returned and reported.
	if d, ok := eventually(10*time.Second, func() bool { return len(drainWrites()) > 0 }); !ok {
		t.Errorf("no status write reported %v after the Gateway was Programmed", d)
	}
	for _, wr := range drainWrites() {
		if wr.who != first {
			t.Errorf("%s wrote status at %v without leading", wr.who, wr.at.Format("15:04:05.000"))
		}
	}

	// Someone clears the Gateway's status. The leader will not write it again before its resync (minutes) unless a
	// config comes; the next leader writes the config it serves as its term begins.
	var gw gatewayv1.Gateway
	if err := w.member.Client.Get(w.ctx, client.ObjectKey{Namespace: w.ns, Name: "gw"}, &gw); err != nil {
		t.Fatal(err)
	}
	gw.Status = gatewayv1.GatewayStatus{}
	if err := w.member.Client.Status().Update(w.ctx, &gw); err != nil {
		t.Fatal(err)
	}

	// The leader stops cleanly: the other leads once its duties have stopped, within a fraction of a retry period.
	stopAt := time.Now()
	replicas[first].stop(t)
	if d, ok := eventually(10*time.Second, func() bool { return terms.leading(t) == other }); !ok {
		t.Fatalf("%s does not lead %v after %s stopped", other, d, first)
	}
	all := terms.get()
	if len(all) != 2 || all[0].end.IsZero() {
		t.Fatalf("terms %+v", all)
	}
	gap := all[1].start.Sub(all[0].end)
	t.Logf("clean handover: %s leads %v after %s was told to stop, %v after its duties had stopped (retry period %v)",
		other, all[1].start.Sub(stopAt).Round(time.Millisecond), first, gap.Round(time.Millisecond), replicaRetry)
	if gap < 0 {
		t.Errorf("%s led before %s's duties had stopped: %+v", other, first, all)
	}
	if gap > replicaRetry {
		t.Errorf("handover took %v after the release, want at once (under one retry period, %v)", gap, replicaRetry)
	}
	if h := w.leaseHolder(); !strings.HasPrefix(h, other+"_") {
		t.Errorf("Lease holder %q, want %s's identity", h, other)
	}
	if d, ok := eventually(10*time.Second, func() bool { return w.presence(t, "east") == 1 }); !ok {
		t.Errorf("the hub holds %d Report streams of east %v after the handover, want 1", w.presence(t, "east"), d)
	}
	if rep, _ := replicas[other].agent.StreamStarts(); rep != 1 {
		t.Errorf("%s opened %d Report streams, want 1", other, rep)
	}
	servesEcho(t, other, replicas[other].gateway, 10*time.Second)

	if d, ok := eventually(10*time.Second, func() bool { return gatewayAccepted(w) }); !ok {
		t.Errorf("the Gateway's status is not back %v after %s took over", d, other)
	}
	for _, wr := range drainWrites() {
		if !terms.within(wr.who, wr.at) {
			t.Errorf("%s wrote status at %v outside its terms %+v", wr.who, wr.at.Format("15:04:05.000"), terms.get())
		}
	}

	// East stayed alive in west's view while one of its replicas ran; the stopped one left the member list.
	if d, ok := eventually(10*time.Second, func() bool { return !slices.Contains(memberNames(w.westProxy), "east/"+first) }); !ok {
		t.Errorf("west still lists east/%s %v after it stopped: %v", first, d, memberNames(w.westProxy))
	}
	if got := w.westSeen.get(); !slices.Equal(got, []bool{true}) || !w.westProxy.Gossip().Alive("east") {
		t.Errorf("west saw east's liveness change %v across the handover, want it alive throughout", got)
	}

	// A new replica (a new pod) joins: it serves and gossips but does not take over.
	c := w.startEast(t, "east-c", terms, writes)
	servesEcho(t, "east-c", c.gateway, 30*time.Second)
	time.Sleep(3 * replicaRetry)
	if l := terms.leading(t); l != other || c.agent.Leading() {
		t.Errorf("after east-c joined, %q leads (east-c leading: %v), want %s", l, c.agent.Leading(), other)
	}

	// A replica that does not lead goes away: the hub still sees east connected, through the leader's one stream.
	c.stop(t)
	time.Sleep(3 * replicaRetry)
	cs, err := w.hub.Store().Clusters(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cs {
		if cl.Record.Name == "east" && !cl.Connected {
			t.Error("the hub shows east disconnected after a replica that did not lead stopped")
		}
	}
	if n := w.presence(t, "east"); n != 1 || terms.leading(t) != other {
		t.Errorf("after east-c stopped: %d Report streams of east at the hub, %q leads; want 1 and %s", n, terms.leading(t), other)
	}
	if h := highest(); h != 1 {
		t.Errorf("the hub held up to %d Report streams of east at once, want 1 at most", h)
	}
	checkNoOverlap(t, terms.get())
}

func checkNoOverlap(t *testing.T, all []term) {
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
				t.Errorf("terms overlap: %+v and %+v", a, b)
			}
		}
	}
}

// spokeProc is one east replica running as the spoke binary.
type spokeProc struct {
	name    string
	cmd     *exec.Cmd
	gateway string
	out     *lockedBuffer
	exited  chan struct{}
}

// buildSpoke builds cmd/spoke once per test.
func buildSpoke(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "spoke")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fedgate/fedgate/cmd/spoke")
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/spoke: %v\n%s", err, b)
	}
	return bin
}

// kubeconfig writes cfg as a kubeconfig file.
func kubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["ctx"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "ctx"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func (w *replicaWorld) startProc(t *testing.T, bin, kc, name string) *spokeProc {
	t.Helper()
	gwPort := freePort(t)
	p := &spokeProc{name: name, gateway: fmt.Sprintf("127.0.0.1:%d", gwPort), out: &lockedBuffer{}, exited: make(chan struct{})}
	ew := freeAddr(t)
	p.cmd = exec.Command(bin,
		"--hub", w.hub.AdvertiseAddress(), "--credentials-dir", w.eastCreds, "--kubernetes", "--kubeconfig", kc,
		"--replica-name", name, "--leader-elect-namespace", w.ns,
		"--leader-elect-lease-duration", replicaLease.String(), "--leader-elect-renew-deadline", replicaRenew.String(),
		"--leader-elect-retry-period", replicaRetry.String(),
		"--east-west-listen", ew, "--east-west-address", ew, "--gossip-listen", freeAddr(t),
		"--listen-host", "127.0.0.1", "--port-offset", fmt.Sprint(gwPort-80), "--drain-timeout", "2s")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("---- %s ----\n%s", name, p.out.String())
		}
	})
	return p
}

// Issues 9 and 10, as deployed: two spoke processes for east, the leader killed (SIGKILL: no release, no gossip
// leave, its streams cut by the kernel). The other leads once the lease has expired; east stays alive in west's view
// and the survivor serves throughout. A survivor stopped with SIGTERM releases the Lease.
func TestSpokeLeaderKilled(t *testing.T) {
	w := startReplicaWorld(t)
	bin := buildSpoke(t)
	highest := w.watchPresence(t)
	kc := kubeconfig(t, w.spokeUser)
	procs := map[string]*spokeProc{}
	for _, name := range []string{"east-a", "east-b"} {
		procs[name] = w.startProc(t, bin, kc, name)
	}
	for _, p := range procs {
		servesEcho(t, p.name, p.gateway, 60*time.Second)
	}
	var holder string
	if d, ok := eventually(20*time.Second, func() bool { holder = w.leaseHolder(); return holder != "" && w.presence(t, "east") == 1 }); !ok {
		t.Fatalf("no leader reporting after %v (holder %q)", d, holder)
	}
	first, _, _ := strings.Cut(holder, "_")
	other := map[string]string{"east-a": "east-b", "east-b": "east-a"}[first]
	if other == "" {
		t.Fatalf("Lease holder %q is neither replica", holder)
	}
	wantMembers := []string{"east/east-a", "east/east-b", "west/west-0"}
	if d, ok := eventually(20*time.Second, func() bool { return slices.Equal(memberNames(w.westProxy), wantMembers) }); !ok {
		t.Fatalf("west's gossip members after %v: %v, want %v", d, memberNames(w.westProxy), wantMembers)
	}

	if err := procs[first].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-procs[first].exited
	// The survivor serves throughout.
	if code, body := get(procs[other].gateway); code != http.StatusOK {
		t.Errorf("%s right after %s was killed: %d %q", other, first, code, body)
	}
	var took time.Duration
	if d, ok := eventually(5*replicaLease, func() bool {
		return strings.HasPrefix(w.leaseHolder(), other+"_") && w.presence(t, "east") == 1
	}); !ok {
		t.Fatalf("%s does not lead and report %v after %s was killed (holder %q, presence %d)", other, d, first, w.leaseHolder(), w.presence(t, "east"))
	} else {
		took = d
	}
	t.Logf("%s killed: %s leads and reports %v later (lease duration %v, retry period %v)", first, other,
		took.Round(time.Millisecond), replicaLease, replicaRetry)
	// The standby counts the lease from when it saw the last renewal (up to one jittered retry, 2.2 periods, after
	// it), and notices the expiry at its next try (up to 2.2 periods more): lease + 4.4 periods, and a little slack.
	if took > replicaLease+6*replicaRetry {
		t.Errorf("takeover after a kill took %v, want within the lease duration and two jittered retries", took)
	}
	if d, ok := eventually(10*time.Second, func() bool { return !slices.Contains(memberNames(w.westProxy), "east/"+first) }); !ok {
		t.Errorf("west still lists east/%s %v after it was killed: %v", first, d, memberNames(w.westProxy))
	}
	if got := w.westSeen.get(); !slices.Equal(got, []bool{true}) || !w.westProxy.Gossip().Alive("east") {
		t.Errorf("west saw east's liveness change %v, want it alive throughout", got)
	}
	servesEcho(t, other, procs[other].gateway, 5*time.Second)

	// The survivor is stopped cleanly: it releases the Lease (holder cleared) and exits 0.
	stopAt := time.Now()
	if err := procs[other].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-procs[other].exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30s of SIGTERM", other)
	}
	if code := procs[other].cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited with %d after SIGTERM", other, code)
	}
	if h := w.leaseHolder(); h != "" {
		t.Errorf("Lease still held by %q after %s stopped cleanly (%v)", h, other, time.Since(stopAt).Round(time.Millisecond))
	}
	if h := highest(); h != 1 {
		t.Errorf("the hub held up to %d Report streams of east at once, want 1 at most", h)
	}
}

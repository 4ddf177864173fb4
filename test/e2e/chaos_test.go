package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/spoke/subscriber"
	"github.com/fedgate/fedgate/test/envtest"
)

// TestChaosHAHubs is issue 9's must-show: three hub replicas (separate processes) on a three-member etcd cluster
// (real etcd processes), two spokes given every replica's address, routes changing continuously through hubctl against
// whichever replica is alive, and traffic (test/cmd/traffic) through both spokes' gateways. The compile leader hub is
// killed with SIGKILL, then the etcd leader; once that member is back, an etcd follower is frozen (SIGSTOP), which
// leaves its clients' connections open and silent. Every change must reach every spoke (the final configs hold the
// last apply), each spoke's applied graph revisions must only go up, no apply to a live replica may fail, and not one
// request may fail. It prints the figures: requests, failures, applies, and how long after each fault a change made
// after it reached every spoke.
func TestChaosHAHubs(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs etcd, hub and spoke processes")
	}
	start := time.Now()
	members := startEtcdCluster(t, 3)
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, m.client)
	}
	cli, err := store.Connect(context.Background(), endpoints, nil) // as the hubs connect
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })

	// The first replica creates the CA; the others are given it, as an operator would (--ca-cert/--ca-key). All share
	// the key that seals the key rings in etcd.
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	kekFile := filepath.Join(t.TempDir(), "key-encryption-key")
	writeFile(t, kekFile, base64.StdEncoding.EncodeToString(kek)+"\n")
	etcdFlag := []string{"--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-allow-plaintext", "--key-encryption-key-file", kekFile}
	hubs := make([]*hub, 3)
	hubs[0] = startHub(t, filepath.Join(t.TempDir(), "hub-0"), "", etcdFlag...)
	caFlags := append(etcdFlag, "--ca-cert", filepath.Join(hubs[0].dataDir, "pki", "ca.crt"),
		"--ca-key", filepath.Join(hubs[0].dataDir, "pki", "ca.key"))
	hubAddrs := []string{hubs[0].addr, fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))}

	// A replica that would make a CA of its own refuses to start, naming the flags that fix it.
	refusal := runRefusedHub(t, etcdFlag)
	if !strings.Contains(refusal, "--ca-cert") || !strings.Contains(refusal, "--ca-key") {
		t.Fatalf("a hub replica with its own CA did not refuse naming --ca-cert/--ca-key:\n%s", refusal)
	}

	// The spokes are given all three replicas but start while only the first serves, so both are connected to it —
	// the replica killed below, once it is shown to lead — and both must fail over.
	color := startEcho(t, "east", "color")
	color2 := startEcho(t, "west", "color2")
	mk := func(cluster, host string, b *echoBackend) *spoke {
		s := &spoke{
			cluster: cluster, host: host, gwPort: freePort(t, host),
			eastWest:  net.JoinHostPort(host, strconv.Itoa(freePort(t, host))),
			gossip:    net.JoinHostPort(host, strconv.Itoa(freePort(t, host))),
			sourceDir: filepath.Join(t.TempDir(), cluster+"-source"),
			cacheDir:  filepath.Join(t.TempDir(), cluster+"-cache"),
			hubAddr:   hubs[0].addr, hubs: hubAddrs,
		}
		writeFile(t, filepath.Join(s.sourceDir, "cluster.yaml"), clusterYAML(s.gwPort, b))
		s.start(t)
		return s
	}
	spokes := []*spoke{mk("east", "127.0.0.2", color), mk("west", "127.0.0.3", color2)}
	if _, ok := eventually(30*time.Second, func() bool {
		b, _ := os.ReadFile(hubs[0].p.log)
		for _, s := range spokes {
			for _, msg := range []string{`msg="cluster connected"`, `msg=subscribed`} {
				if !regexp.MustCompile(msg + `.* cluster=` + s.cluster + ` `).Match(b) {
					return false
				}
			}
		}
		return true
	}); !ok {
		t.Fatal("the spokes did not open their streams to hub-0 within 30 s")
	}
	for i := 1; i < 3; i++ {
		hubs[i] = startHub(t, filepath.Join(t.TempDir(), fmt.Sprintf("hub-%d", i)), hubAddrs[i], caFlags...)
	}
	mustHubctl(t, hubs[1].addr, chaosObjects(0, 0), "apply", "-f", "-")
	c := newClient()
	for _, s := range spokes {
		if _, ok := eventually(30*time.Second, func() bool {
			sp := split(c, s.gatewayURL("/"), "", 40, 4)
			return sp["east"] > 0 && sp["west"] > 0 && errorsIn(sp) == 0
		}); !ok {
			t.Fatalf("%s's gateway never served the canary from both clusters: %v", s.cluster, split(c, s.gatewayURL("/"), "", 20, 1))
		}
	}
	leader := compileLeader(t, cli, hubs)
	t.Logf("set up in %v: etcd %v, hubs %v (compile leader: hub-%d), spokes on %v", time.Since(start).Round(time.Millisecond),
		endpoints, hubAddrs, leader, hubs[0].addr)

	// Traffic: test/cmd/traffic in rounds through each spoke's gateway until the end.
	tr := &trafficRun{}
	stopTraffic := make(chan struct{})
	var trafficWG sync.WaitGroup
	for _, s := range spokes {
		trafficWG.Add(1)
		go func() { defer trafficWG.Done(); tr.loop(t, s.gatewayURL("/"), stopTraffic) }()
	}
	// Churn: every apply changes the canary's weights and the marker route's hostname, against the live replicas in
	// turn; a failed apply is retried (same content) on the next one until it is stored.
	ch := &churn{hubs: hubs}
	stopChurn := make(chan struct{})
	var churnWG sync.WaitGroup
	for w := range churnWorkers {
		churnWG.Add(1)
		go func() { defer churnWG.Done(); ch.run(t, w, stopChurn) }()
	}

	time.Sleep(3 * time.Second)
	killed := time.Now()
	ch.kill(leader)
	t.Logf("killed compile leader hub-%d (SIGKILL)", leader)
	hubStored, hubConverge := ch.converge(t, killed, spokes)
	if next := compileLeader(t, cli, hubs); next == leader {
		t.Fatalf("hub-%d still leads after it was killed", leader)
	} else {
		t.Logf("hub-%d took over the compile", next)
	}

	time.Sleep(2 * time.Second)
	victim := etcdLeader(t, cli, members)
	killed = time.Now()
	members[victim].p.stop(syscall.SIGKILL)
	t.Logf("killed etcd leader %s (SIGKILL)", members[victim].name)
	etcdStored, etcdConverge := ch.converge(t, killed, spokes)

	members[victim].restart(t)
	if _, ok := eventually(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Status(ctx, members[victim].client)
		return err == nil
	}); !ok {
		t.Fatalf("%s did not come back", members[victim].name)
	}
	t.Logf("restarted %s", members[victim].name)
	time.Sleep(2 * time.Second)
	frozen := (etcdLeader(t, cli, members) + 1) % len(members)
	killed = time.Now()
	_ = members[frozen].p.cmd.Process.Signal(syscall.SIGSTOP)
	t.Logf("froze etcd follower %s (SIGSTOP)", members[frozen].name)
	freezeStored, freezeConverge := ch.converge(t, killed, spokes)
	_ = members[frozen].p.cmd.Process.Signal(syscall.SIGCONT)

	time.Sleep(2 * time.Second)
	close(stopChurn)
	churnWG.Wait()
	last := ch.last()
	finalConverge, ok := eventually(30*time.Second, func() bool {
		for _, s := range spokes {
			if !servesLast(servedBy(t, s), last) {
				return false
			}
		}
		return true
	})
	if !ok {
		for _, s := range spokes {
			t.Errorf("%s serves %+v; the last applies were %v", s.cluster, servedBy(t, s), last)
		}
		t.Fatal("lost change: the last applies never reached every spoke")
	}
	close(stopTraffic)
	trafficWG.Wait()

	// Revisions only go up at every spoke: what each applied, in its own log.
	for _, s := range spokes {
		revs, stale := appliedRevisions(t, s.p.log)
		for i := 1; i < len(revs); i++ {
			if revs[i] <= revs[i-1] {
				t.Errorf("%s applied revision %d after %d", s.cluster, revs[i], revs[i-1])
			}
		}
		if stale > 0 {
			t.Errorf("%s was sent %d configs older than the one it served", s.cluster, stale)
		}
		if len(revs) == 0 {
			t.Fatalf("%s applied no config", s.cluster)
		}
		report, subscribe := streamStarts(t, s.p.log)
		t.Logf("%s: %d configs applied, graph revisions %d → %d, monotonic; hub streams opened: %d report, %d subscribe",
			s.cluster, len(revs), revs[0], revs[len(revs)-1], report, subscribe)
		if leader == 0 && subscribe < 2 { // the spokes started on hub-0
			t.Errorf("%s never reconnected its subscribe stream, though its hub was killed", s.cluster)
		}
	}
	// The surviving replicas see both clusters connected (through their new streams).
	live := hubs[(leader+1)%3]
	out := mustHubctl(t, live.addr, "", "get", "clusters")
	for _, s := range spokes {
		connected := false
		for _, line := range strings.Split(out, "\n") {
			// NAME LABELS JOINED CONNECTED ...: none of the first three holds a space.
			if f := strings.Fields(line); len(f) > 3 && f[0] == s.cluster {
				connected = f[3] == "true"
			}
		}
		if !connected {
			t.Errorf("%s not connected after the chaos:\n%s", s.cluster, out)
		}
	}

	reqs, fails, first := tr.totals()
	applies, retries, took, failures, onLive := ch.counts()
	for _, f := range failures {
		t.Logf("failed apply attempt (retried): %s", f)
	}
	t.Logf("chaos figures: %d requests, %d failed; %d applies stored by %d workers (a hubctl apply took %v on average; "+
		"%d attempts failed, on the killed hub, and were retried); after the leader hub's kill the first change begun "+
		"after it was stored at +%v and served by every spoke at +%v; after the etcd leader's kill, stored at +%v, "+
		"served at +%v; after an etcd follower froze, stored at +%v, served at +%v; the last applies reached every "+
		"spoke %v after the churn stopped; whole test %v",
		reqs, fails, applies, churnWorkers, ms(took), retries, ms(hubStored), ms(hubConverge), ms(etcdStored),
		ms(etcdConverge), ms(freezeStored), ms(freezeConverge), ms(finalConverge), ms(time.Since(start)))
	for _, f := range onLive {
		t.Errorf("an apply to a live hub replica failed: %s", f)
	}
	if fails != 0 {
		t.Fatalf("%d of %d requests failed; first: %s", fails, reqs, first)
	}
	if reqs < 1000 {
		t.Fatalf("only %d requests: the traffic did not run", reqs)
	}
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// servesLast reports whether a spoke's config reflects the last apply of every worker: its marker and its weights.
func servesLast(got served, last [churnWorkers]int) bool {
	for w, seq := range last {
		if got.seq[w] != seq || got.weights[w] != churnWeights(seq) {
			return false
		}
	}
	return got.canary == churnWeights(last[0])
}

// etcdMember is one etcd process of the test's cluster.
type etcdMember struct {
	name, client string
	args         []string // to start it again on its data directory
	p            *proc
}

func (m *etcdMember) restart(t *testing.T) {
	t.Helper()
	m.p = startProc(t, m.name+"-restarted", m.args...)
}

// startEtcdCluster starts an n-member etcd cluster on loopback from the etcd binary hack/envtest-bins.sh builds
// (bin/envtest/etcd, found as the envtest tests find it) and waits until it answers.
func startEtcdCluster(t *testing.T, n int) []*etcdMember {
	t.Helper()
	dir, err := envtest.Binaries()
	if err != nil {
		t.Fatalf("etcd binary: %v", err)
	}
	bin := filepath.Join(dir, "etcd")
	members := make([]*etcdMember, n)
	peers := make([]string, n)
	var initial []string
	for i := range members {
		members[i] = &etcdMember{name: fmt.Sprintf("etcd-%d", i),
			client: fmt.Sprintf("http://127.0.0.1:%d", freePort(t, "127.0.0.1"))}
		peers[i] = fmt.Sprintf("http://127.0.0.1:%d", freePort(t, "127.0.0.1"))
		initial = append(initial, members[i].name+"="+peers[i])
	}
	for i, m := range members {
		m.args = []string{bin, "--name", m.name, "--data-dir", filepath.Join(t.TempDir(), m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "fedgate-chaos", "--log-level", "warn"}
		m.p = startProc(t, m.name, m.args...)
	}
	for _, m := range members {
		waitTCP(t, strings.TrimPrefix(m.client, "http://"), 30*time.Second)
	}
	return members
}

// etcdLeader returns the index of the member that leads the etcd cluster.
func etcdLeader(t *testing.T, cli *clientv3.Client, members []*etcdMember) int {
	t.Helper()
	for _, m := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, m.client)
		cancel()
		if err != nil || st.Leader != st.Header.MemberId {
			continue
		}
		return slices.Index(members, m)
	}
	t.Fatal("no etcd member says it leads")
	return -1
}

// compileLeader returns the index of the hub whose process holds the compile election (its identity is
// "<host>/<pid>"), waiting for one to hold it.
func compileLeader(t *testing.T, cli *clientv3.Client, hubs []*hub) int {
	t.Helper()
	idx := -1
	if _, ok := eventually(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, store.LeaderPrefix+"/", clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		_, pid, _ := strings.Cut(string(resp.Kvs[0].Value), "/")
		for i, h := range hubs {
			if strconv.Itoa(h.p.cmd.Process.Pid) == pid {
				idx = i
				return true
			}
		}
		return false
	}); !ok {
		t.Fatal("no live hub holds the compile election")
	}
	return idx
}

// runRefusedHub starts a hub on the etcd cluster with a CA of its own and returns what it printed when it exited.
func runRefusedHub(t *testing.T, etcdFlag []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--data-dir", filepath.Join(t.TempDir(), "hub-own-ca"), "--admin-config", ""}, etcdFlag...)
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "hub"), args...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a hub with its own CA did not refuse to start (err %v):\n%s", err, out)
	}
	return string(out)
}

// churnWorkers apply concurrently (a hubctl apply takes about a second, most of it validating locally), each its own
// objects.
const churnWorkers = 3

// chaosObjects is apply number seq of churn worker w: a route of the worker's own whose weights change on every apply
// and whose hostname names the apply, so a spoke's config tells which apply of each worker it reflects. Worker 0's
// route is the canary itself, which the traffic goes through: its weights change under load.
func chaosObjects(w, seq int) string {
	weights := churnWeights(seq)
	name, hosts := fmt.Sprintf("chaos-%d", w), fmt.Sprintf("w%d-seq-%d.chaos.example.com", w, seq)
	out := fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: %s
  namespace: default
spec:
  parentRefs:
  - name: gw
  hostnames: [%q]
  rules:
  - backendRefs:
    - name: color
      port: 80
      weight: %d
    - name: color2
      port: 80
      weight: %d
`, name, hosts, weights[0], weights[1])
	if w == 0 {
		out += "---\n" + canaryRoute(int(weights[0]), int(weights[1]))
	}
	return out
}

func churnWeights(seq int) [2]int32 {
	w := int32(1 + seq%9)
	return [2]int32{w, 10 - w}
}

var markerHost = regexp.MustCompile(`^w(\d+)-seq-(\d+)\.chaos\.example\.com$`)

// served is what a spoke's config says of the churn: the last apply of each worker it reflects (-1: none), and the
// weights of each worker's route (the canary's for worker 0).
type served struct {
	seq     [churnWorkers]int
	weights [churnWorkers][2]int32
	canary  [2]int32
}

// servedBy reads the config a spoke serves (its cache, written after each apply).
func servedBy(t *testing.T, s *spoke) served {
	t.Helper()
	var out served
	for i := range out.seq {
		out.seq[i] = -1
	}
	e, err := subscriber.ReadCache(s.cacheDir)
	if err != nil || e == nil {
		return out
	}
	cfg, err := spokeconfig.Decode(e.Config)
	if err != nil {
		t.Errorf("%s's cached config: %v", s.cluster, err)
		return out
	}
	for _, p := range cfg.Ports {
		for _, vh := range p.VirtualHosts {
			if m := markerHost.FindStringSubmatch(vh.Hostname); m != nil {
				w, _ := strconv.Atoi(m[1])
				seq, _ := strconv.Atoi(m[2])
				if w < churnWorkers {
					out.seq[w] = seq
				}
			}
			for _, r := range vh.Routes {
				if len(r.Action.Backends) != 2 {
					continue
				}
				weights := [2]int32{r.Action.Backends[0].Weight, r.Action.Backends[1].Weight}
				var w int
				if r.Source.Name == "canary" {
					out.canary = weights
				} else if _, err := fmt.Sscanf(r.Source.Name, "chaos-%d", &w); err == nil && w < churnWorkers {
					out.weights[w] = weights
				}
			}
		}
	}
	return out
}

// churn runs churnWorkers workers, each applying chaosObjects(w, 1), (w, 2), ... until stopped, against the live
// replicas in turn.
type churn struct {
	hubs []*hub

	mu       sync.Mutex
	next     int // the replica the next attempt goes to
	dead     map[int]bool
	stored   [churnWorkers][]storedApply
	took     time.Duration // summed over the successful attempts
	retries  int
	failures []string // the first few failed attempts, for the log
	onLive   []string // failed attempts against a replica that was not killed
}

type storedApply struct {
	seq   int
	start time.Time // when its first attempt began
}

func (c *churn) kill(i int) {
	c.mu.Lock()
	if c.dead == nil {
		c.dead = map[int]bool{}
	}
	c.dead[i] = true
	c.mu.Unlock()
	c.hubs[i].p.stop(syscall.SIGKILL)
}

// run applies worker w's objects until stop is closed; a failed apply is retried, same content, on the next live
// replica (an apply cut by a kill may or may not have been stored; applying it again is harmless).
func (c *churn) run(t *testing.T, w int, stop <-chan struct{}) {
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		begun := time.Now()
		for attempt := 0; ; attempt++ {
			c.mu.Lock()
			for c.dead[c.next%len(c.hubs)] {
				c.next++
			}
			i := c.next % len(c.hubs)
			c.next++
			c.mu.Unlock()
			h, sent := c.hubs[i], time.Now()
			// Longer than the hub's etcd client takes to give up on a frozen member's silent connection (15 s).
			out, err := hubctl(t, h.addr, chaosObjects(w, seq), "apply", "-f", "-", "--timeout", "30s")
			if err == nil {
				c.mu.Lock()
				c.stored[w] = append(c.stored[w], storedApply{seq: seq, start: begun})
				c.took += time.Since(sent)
				c.mu.Unlock()
				break
			}
			failure := fmt.Sprintf("%s worker %d apply %d on %s: %v: %s",
				time.Now().Format("15:04:05.000"), w, seq, h.addr, err, strings.TrimSpace(out))
			c.mu.Lock()
			c.retries++
			if len(c.failures) < 5 {
				c.failures = append(c.failures, failure)
			}
			if !c.dead[i] { // marked before the kill, so an attempt the kill cut finds it marked
				c.onLive = append(c.onLive, failure)
			}
			c.mu.Unlock()
			if attempt >= 20 {
				t.Errorf("apply %d of worker %d failed %d times; last on %s: %v\n%s", seq, w, attempt+1, h.addr, err, out)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// last returns the last stored apply of each worker.
func (c *churn) last() (out [churnWorkers]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for w, s := range c.stored {
		if len(s) > 0 {
			out[w] = s[len(s)-1].seq
		}
	}
	return out
}

func (c *churn) counts() (stored, retries int, meanTook time.Duration, failures, onLive []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.stored {
		stored += len(s)
	}
	if stored > 0 {
		meanTook = c.took / time.Duration(stored)
	}
	return stored, c.retries, meanTook, slices.Clone(c.failures), slices.Clone(c.onLive)
}

// converge waits for the first apply of worker 0 begun after at to be stored, then for every spoke to serve it or a
// later one, and returns how long after at each happened.
func (c *churn) converge(t *testing.T, at time.Time, spokes []*spoke) (stored, servedAll time.Duration) {
	t.Helper()
	seq := -1
	if _, ok := eventually(60*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, a := range c.stored[0] {
			if a.start.After(at) {
				seq = a.seq
				return true
			}
		}
		return false
	}); !ok {
		t.Fatal("no apply was stored within 60 s of the kill")
	}
	stored = time.Since(at)
	if _, ok := eventually(60*time.Second, func() bool {
		for _, s := range spokes {
			if servedBy(t, s).seq[0] < seq {
				return false
			}
		}
		return true
	}); !ok {
		for _, s := range spokes {
			t.Errorf("%s serves worker 0's apply %d", s.cluster, servedBy(t, s).seq[0])
		}
		t.Fatalf("apply %d, stored after the kill, did not reach every spoke within 60 s", seq)
	}
	return stored, time.Since(at)
}

// trafficRun runs test/cmd/traffic in rounds and sums what it printed.
type trafficRun struct {
	mu       sync.Mutex
	requests int
	failed   int
	first    string
}

var trafficCodes = regexp.MustCompile(`^(\d+) requests to .*: status codes map\[(.*)\]$`)

func (r *trafficRun) loop(t *testing.T, url string, stop <-chan struct{}) {
	const n = 200
	for {
		select {
		case <-stop:
			return
		default:
		}
		out, err := exec.Command(filepath.Join(binDir, "traffic"), "-url", url, "-n", strconv.Itoa(n)).CombinedOutput()
		if err != nil {
			t.Errorf("traffic %s: %v\n%s", url, err, out)
			return
		}
		line, _, _ := strings.Cut(string(out), "\n")
		m := trafficCodes.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("traffic printed no status codes:\n%s", out)
			return
		}
		ok := 0
		for _, kv := range strings.Fields(m[2]) {
			code, count, _ := strings.Cut(kv, ":")
			if code == "200" {
				ok, _ = strconv.Atoi(count)
			}
		}
		r.mu.Lock()
		r.requests += n
		r.failed += n - ok
		if ok != n && r.first == "" {
			r.first = fmt.Sprintf("%s at %s: %s", url, time.Now().Format(time.TimeOnly), line)
		}
		r.mu.Unlock()
	}
}

func (r *trafficRun) totals() (requests, failed int, first string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.failed, r.first
}

var appliedRevision = regexp.MustCompile(`msg="applied config".* revision=(\d+)`)

// appliedRevisions returns the graph revisions a spoke's log says it applied, in order, and how many configs it
// ignored as older than the one it served.
func appliedRevisions(t *testing.T, logPath string) (revs []int64, stale int) {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := appliedRevision.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			revs = append(revs, n)
		}
		if strings.Contains(line, `msg="ignoring stale config"`) {
			stale++
		}
	}
	return revs, stale
}

var streamOpened = regexp.MustCompile(`msg="hub stream opened".* stream=(report|subscribe) starts=(\d+)`)

// streamStarts returns how many Report and Subscribe streams a spoke's log says it opened.
func streamStarts(t *testing.T, logPath string) (report, subscribe int) {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range streamOpened.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[2])
		if m[1] == "report" {
			report = max(report, n)
		} else {
			subscribe = max(subscribe, n)
		}
	}
	return report, subscribe
}

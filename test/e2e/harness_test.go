package e2e

// The harness runs fedgate as a user would: the hub, spoke and hubctl binaries as separate processes on loopback,
// with echo backends served by the test itself. Every address is on 127.0.0.0/8.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fedgate-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/fedgate/fedgate/cmd/hub",
		"github.com/fedgate/fedgate/cmd/spoke", "github.com/fedgate/fedgate/cmd/hubctl",
		"github.com/fedgate/fedgate/test/cmd/traffic")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a TCP port free on host at the time of the call.
func freePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a child process whose output goes to a log file, shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc starts args[0] — one of the binaries TestMain built, or a program given by its absolute path — with
// args[1:], in the test's environment; it is killed when the test ends.
func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return launch(t, name, nil, syscall.SIGKILL, args...)
}

// launch starts args[0] as startProc does, with env as its environment (nil: the test's), and stops it with stopSig
// when the test ends.
func launch(t testing.TB, name string, env []string, stopSig syscall.Signal, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	bin := args[0]
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(binDir, bin)
	}
	cmd := exec.Command(bin, args[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(stopSig)
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	return p
}

// stop sends sig and waits for the process to exit.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) dumpLog(t testing.TB) {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	t.Logf("---- last lines of %s log ----\n%s", p.name, strings.Join(lines, "\n"))
}

// hub is a running hub process.
type hub struct {
	addr        string
	dataDir     string
	adminConfig string
	p           *proc
}

// adminConfigs maps a hub address to the admin credential its bootstrap wrote, for hubctl.
var adminConfigs sync.Map

// startHub starts a hub on addr (a free port if empty). Its admin credential lives beside the data directory, so a
// hub restarted on the same directory keeps it (and its CA, in <data-dir>/pki).
func startHub(t testing.TB, dataDir, addr string, extra ...string) *hub {
	t.Helper()
	if addr == "" {
		addr = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	}
	cfg := filepath.Join(filepath.Dir(dataDir), "admin-config")
	args := append([]string{"hub", "--listen", addr, "--advertise-address", addr, "--data-dir", dataDir, "--admin-config", cfg,
		"--etcd-client-port", "0", "--etcd-peer-port", "0", "--log-level", "debug"}, extra...)
	p := startProc(t, "hub", args...)
	// The port is bound first thing (connections wait until the hub serves); the admin credential is written once the
	// hub has its CA and etcd, so hubctl can run only once it is there.
	waitTCP(t, addr, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for _, err := os.Stat(cfg); err != nil; _, err = os.Stat(cfg) {
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("the hub on %s wrote no admin credential at %s within 30s (exited: %v)", addr, cfg, p.exited())
		}
		time.Sleep(20 * time.Millisecond)
	}
	adminConfigs.Store(addr, cfg)
	return &hub{addr: addr, dataDir: dataDir, adminConfig: cfg, p: p}
}

// joinCommand is what `hubctl token create` printed, parsed.
type joinCommand struct {
	line, token, caHash string
}

// createToken runs `hubctl token create` and returns the join command it printed.
func createToken(t testing.TB, hubAddr string, args ...string) joinCommand {
	t.Helper()
	out := mustHubctl(t, hubAddr, "", append([]string{"token", "create"}, args...)...)
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "hubctl join ") {
			continue
		}
		f := strings.Fields(line)
		jc := joinCommand{line: line}
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "--token":
				jc.token = f[i+1]
			case "--ca-hash":
				jc.caHash = f[i+1]
			}
		}
		if jc.token == "" || jc.caHash == "" {
			t.Fatalf("join command without token or CA hash: %q", line)
		}
		return jc
	}
	t.Fatalf("hubctl token create printed no join command:\n%s", out)
	return joinCommand{}
}

// joinCluster creates a token bound to the spoke's cluster and joins with it, as an operator would, and returns the
// output of both commands.
func (s *spoke) join(t testing.TB) string {
	t.Helper()
	jc := createToken(t, s.hubAddr, "--cluster-name", s.cluster, "--description", "e2e "+s.cluster)
	s.credsDir = filepath.Join(t.TempDir(), s.cluster+"-credentials")
	out := runHubctl(t, "", "join", "--hub", s.hubAddr, "--token", jc.token, "--ca-hash", jc.caHash,
		"--cluster-name", s.cluster, "--east-west-address", s.eastWest, "--labels", "e2e=true", "--out", s.credsDir)
	if !strings.Contains(out, "--credentials-dir "+s.credsDir) {
		t.Fatalf("hubctl join for %s did not say how to start the spoke:\n%s", s.cluster, out)
	}
	s.joinOut, s.joinLine = out, jc.line
	return jc.line + "\n" + out
}

// spoke is a running spoke process with its cluster's source directory.
type spoke struct {
	cluster   string
	host      string // loopback address its gateway ports bind
	gwPort    int
	eastWest  string
	gossip    string // memberlist address; empty: no gossip
	sourceDir string
	cacheDir  string
	hubAddr   string
	hubs      []string // when set, the spoke's --hub: the addresses of an HA hub's replicas (join still uses hubAddr)
	credsDir  string   // written by join
	joinOut   string   // what hubctl join printed
	joinLine  string   // the join command hubctl token create printed (it carries the token)
	p         *proc
}

// start runs the spoke with the credentials of its join (joining first if it has none).
func (s *spoke) start(t testing.TB) {
	t.Helper()
	if s.credsDir == "" {
		s.join(t)
	}
	hubFlag := s.hubAddr
	if len(s.hubs) > 0 {
		hubFlag = strings.Join(s.hubs, ",")
	}
	args := []string{"spoke", "--hub", hubFlag, "--credentials-dir", s.credsDir,
		"--source-dir", s.sourceDir, "--east-west-listen", s.eastWest, "--east-west-address", s.eastWest,
		"--listen-host", s.host, "--cache-dir", s.cacheDir, "--log-level", "debug"}
	if s.gossip != "" {
		args = append(args, "--gossip-listen", s.gossip)
	}
	s.p = startProc(t, "spoke-"+s.cluster, args...)
}

// gatewayURL is the URL of the spoke's gateway listener.
func (s *spoke) gatewayURL(path string) string {
	return fmt.Sprintf("http://%s:%d%s", s.host, s.gwPort, path)
}

func waitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not accept connections within %v", addr, timeout)
}

// echoBackend is an HTTP server answering "cluster=<c> name=<n>".
type echoBackend struct {
	cluster, name string
	port          int
	srv           *http.Server
}

func startEcho(t testing.TB, cluster, name string) *echoBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoBackend{cluster: cluster, name: name, port: l.Addr().(*net.TCPAddr).Port}
	e.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "cluster=%s name=%s path=%s\n", cluster, name, r.URL.Path)
	})}
	go func() { _ = e.srv.Serve(l) }()
	t.Cleanup(func() { _ = e.srv.Close() })
	return e
}

// clusterYAML is what a spoke's source directory holds: our GatewayClass, Gateway default/gw with one HTTP listener
// on gwPort, and a Service + EndpointSlice per echo backend.
func clusterYAML(gwPort int, backends ...*echoBackend) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: fedgate
spec:
  controllerName: fedgate.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
spec:
  gatewayClassName: fedgate
  listeners:
  - name: http
    protocol: HTTP
    port: %d
    allowedRoutes:
      namespaces:
        from: All
`, gwPort)
	for _, e := range backends {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
spec:
  ports:
  - name: http
    port: 80
    targetPort: %[2]d
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-1
  namespace: default
  labels:
    kubernetes.io/service-name: %[1]s
addressType: IPv4
ports:
- name: http
  port: %[2]d
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: true
`, e.name, e.port)
	}
	return b.String()
}

// canaryRoute is the seed scenario: default/gw, backends color (weight w1) and color2 (weight w2).
func canaryRoute(w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: canary
  namespace: default
spec:
  parentRefs:
  - name: gw
  rules:
  - backendRefs:
    - name: color
      port: 80
      weight: %d
    - name: color2
      port: 80
      weight: %d
`, w1, w2)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hubctl runs hubctl against the hub, with the hub's admin credential, with stdin and returns its combined output.
func hubctl(t testing.TB, hubAddr, stdin string, args ...string) (string, error) {
	t.Helper()
	cfg, _ := adminConfigs.Load(hubAddr)
	cfgPath, _ := cfg.(string)
	return hubctlWith(t, cfgPath, stdin, append([]string{"--hub", hubAddr}, args...)...)
}

// hubctlWith runs hubctl with the admin config at cfgPath ("" for none) and returns its combined output. Every
// output is returned whole, so tests can look for secrets in what the tool prints.
func hubctlWith(t testing.TB, cfgPath, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "hubctl"), args...)
	if cfgPath == "" {
		cfgPath = filepath.Join(t.TempDir(), "no-admin-config")
	}
	cmd.Env = append(os.Environ(), "FEDGATE_CONFIG="+cfgPath)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// runHubctl runs hubctl without an admin credential (join needs none) and fails the test on an error.
func runHubctl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := hubctlWith(t, "", stdin, args...)
	if err != nil {
		t.Fatalf("hubctl %v: %v\n%s", args, err, out)
	}
	return out
}

func mustHubctl(t testing.TB, hubAddr, stdin string, args ...string) string {
	t.Helper()
	out, err := hubctl(t, hubAddr, stdin, args...)
	if err != nil {
		t.Fatalf("hubctl %v: %v\n%s", args, err, out)
	}
	return out
}

// client is an HTTP client for the gateways: keep-alive, short timeouts, loopback only.
func newClient() *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
					return nil, fmt.Errorf("test dialer refuses non-loopback address %s", addr)
				}
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

// result of one request.
type result struct {
	code    int
	cluster string
	name    string
	err     error
}

func get(c *http.Client, url, host string) result {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return result{err: err}
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	r := result{code: resp.StatusCode}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4096))
	if sc.Scan() {
		for _, kv := range strings.Fields(sc.Text()) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "cluster":
				r.cluster = v
			case "name":
				r.name = v
			}
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return r
}

// split sends n requests and counts answers per cluster; any non-200 or error is counted under "error:<code>".
func split(c *http.Client, url, host string, n, workers int) map[string]int {
	var mu sync.Mutex
	counts := map[string]int{}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				r := get(c, url, host)
				key := r.cluster
				if r.err != nil {
					key = "error:" + r.err.Error()
				} else if r.code != http.StatusOK {
					key = fmt.Sprintf("error:%d", r.code)
				}
				mu.Lock()
				counts[key]++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return counts
}

// errorsIn sums the error entries of a split.
func errorsIn(counts map[string]int) int {
	n := 0
	for k, v := range counts {
		if strings.HasPrefix(k, "error:") {
			n += v
		}
	}
	return n
}

// eventually polls cond every 20 ms until it holds or timeout passes, and reports how long it took.
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

// Package differential sends the same raw HTTP/1.1 bytes to nginx and to fedgate's gateway proxy, each in front of a
// recording backend, and checks what fedgate forwards against invariants (with nginx as the outside reference): it
// never forwards what nginx refuses as malformed, never forwards more requests than the client completed, and
// everything it forwards is strictly valid HTTP/1.1 with exactly one framing. Response-side cases put a misbehaving
// backend behind both proxies; h2c cases check what reaches an HTTP/1.1 backend after a downgrade.
//
// nginx is required: the test fails (it never skips) when nginx is not on PATH; hack/install-peers.sh installs it.
// Every address is on 127.0.0.1. Each case is a subtest that prints what both sides did when it fails (and with -v
// when it passes); run one with, for example:
//
//	go test ./test/differential -v -run 'TestRequestCorpus/smuggle/cl.te-plain'
//	go test ./test/differential -v -run 'TestH2CDowngrade/connect'
//
// TestRequestCorpus subtests wait for a pool that runs only the selected cases; the response and h2c tests run all
// their cases and report the selected ones.
package differential

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/health"
	"github.com/fedgate/fedgate/spoke/proxy"
)

const (
	// A client's read ends when the server closes, when nothing more arrives for readIdle after some bytes did (or for
	// firstByte before any did: generous, so a loaded machine running every package's tests at once does not turn a
	// slow answer into "silence"), or after readMax.
	readIdle  = 400 * time.Millisecond
	firstByte = 1500 * time.Millisecond
	readMax   = 4 * time.Second
	// settle is how long a backend may still be receiving a case's bytes after the client finished.
	settle = time.Second
)

var (
	addrsMu  sync.Mutex
	addrsOut = map[string]bool{}
)

// freeAddr returns a 127.0.0.1 address that was free a moment ago and that no earlier call returned (the kernel may
// hand the same ephemeral port out again once its listener is closed).
func freeAddr(t testing.TB) string {
	t.Helper()
	addrsMu.Lock()
	defer addrsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		if !addrsOut[a] {
			addrsOut[a] = true
			return a
		}
	}
	t.Fatal("no unused 127.0.0.1 port after 100 tries")
	return ""
}

// upstream is one nginx server block: listen on listen, proxy to backend.
type upstream struct {
	name, listen, backend string
}

// startNginx runs nginx in the foreground (no daemon, no master) with one server block per upstream, configured in a
// temporary directory, and stops it when the test ends.
func startNginx(t testing.TB, ups []upstream) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		// Debian installs it in /usr/sbin, which a non-login PATH may lack.
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		t.Fatalf("nginx is not on PATH (%v): the differential tests compare fedgate with nginx; run hack/install-peers.sh "+
			"(it apt-installs nginx, haproxy, wrk and h2load)", err)
	}
	dir := t.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, `daemon off;
master_process off;
worker_processes 1;
error_log %[1]s/error.log info;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
`, dir)
	for _, u := range ups {
		fmt.Fprintf(&conf, `    upstream %[1]s { server %[3]s; keepalive 8; }
    server {
        listen %[2]s;
        location / {
            proxy_pass http://%[1]s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
`, u.name, u.listen, u.backend)
	}
	conf.WriteString("}\n")
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-p", dir+"/", "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, u := range ups {
		for {
			c, err := net.DialTimeout("tcp", u.listen, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-exited:
				log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				t.Fatalf("nginx exited (%v): %s\n%s", err, out.String(), log)
			default:
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				t.Fatalf("nginx is not listening on %s: %v\n%s", u.listen, err, log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// startFedgate runs fedgate's proxy in-process with one gateway port per backend address (vhost "*", PathPrefix "/"
// to a backend with that single endpoint) and returns the ports' addresses.
func startFedgate(t testing.TB, backends []string) []string {
	t.Helper()
	srv := proxy.New(proxy.Options{
		Cluster:             "c",
		ListenHost:          "127.0.0.1",
		Logger:              slog.New(slog.DiscardHandler),
		DisableHealthChecks: true,
		DrainTimeout:        time.Second,
		Limits:              proxy.DefaultLimits(),
		// Never eject the only endpoint: the recording backend answers violations with 400 and some cases provoke
		// 502s on purpose; an ejection would turn later cases into 503s and hide what fedgate does with them.
		Outlier: health.Outlier{Consecutive: math.MaxInt32, BaseEjection: time.Millisecond, MaxEjection: time.Millisecond},
	})
	t.Cleanup(func() { srv.Close() })
	cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: 1}
	var addrs []string
	for i, be := range backends {
		addr := freeAddr(t)
		_, portStr, _ := net.SplitHostPort(addr)
		var port int32
		fmt.Sscan(portStr, &port)
		id := fmt.Sprintf("ns/b%d:80", i)
		cfg.Ports = append(cfg.Ports, spokeconfig.Port{
			Port: port, Protocol: spokeconfig.ProtocolHTTP, BindAddress: "127.0.0.1",
			VirtualHosts: []spokeconfig.VirtualHost{{Hostname: "*", Routes: []spokeconfig.Route{{
				Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: fmt.Sprintf("r%d", i)},
				Match:  spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"},
				Action: spokeconfig.Action{Backends: []spokeconfig.WeightedBackend{{BackendID: id, Weight: 1}}},
			}}}},
		})
		cfg.Backends = append(cfg.Backends, spokeconfig.Backend{
			ID: id, Namespace: "ns", Name: fmt.Sprintf("b%d", i), Port: 80,
			Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: be, Ready: true}},
		})
		addrs = append(addrs, addr)
	}
	if err := srv.Apply(cfg); err != nil {
		t.Fatalf("fedgate Apply: %v", err)
	}
	return addrs
}

// sendOpts shape one client exchange.
type sendOpts struct {
	// closeWrite half-closes the connection after the bytes are written.
	closeWrite bool
	// pause, when set, splits the write at pauseAt and waits this long in between.
	pauseAt int
	pause   time.Duration
}

// exchange writes data on a fresh connection to addr and reads everything the server sends until it closes, nothing
// arrives for readIdle, or readMax passes.
func exchange(addr string, data []byte, o sendOpts) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var got bytes.Buffer
	var rerr error
	done := make(chan struct{})
	start := time.Now()
	// Read concurrently with the write: a server may answer (and close) before the client has written everything.
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			dl := time.Now().Add(readIdle)
			if got.Len() == 0 {
				dl = time.Now().Add(firstByte)
			}
			if end := start.Add(readMax); dl.After(end) {
				dl = end
			}
			c.SetReadDeadline(dl)
			n, err := c.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				var ne net.Error
				if !errors.Is(err, io.EOF) && !(errors.As(err, &ne) && ne.Timeout()) {
					rerr = err
				}
				return
			}
		}
	}()
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	first, second := data, []byte(nil)
	if o.pause > 0 && o.pauseAt > 0 && o.pauseAt < len(data) {
		first, second = data[:o.pauseAt], data[o.pauseAt:]
	}
	c.Write(first)
	if second != nil {
		time.Sleep(o.pause)
		c.Write(second)
	}
	if o.closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	<-done
	return got.Bytes(), rerr
}

// side is one proxy with its recording backend.
type side struct {
	name string
	addr string
	rec  *recorder
}

// outcome is what one side did with one case.
type outcome struct {
	got   []byte
	err   error
	resps []response
	rest  []byte // bytes that did not parse as responses
	seen  seen
}

func (o outcome) finals() []int { return finals(o.resps) }

// firstFinal is the first final status, or 0 when there was none.
func (o outcome) firstFinal() int {
	if f := o.finals(); len(f) > 0 {
		return f[0]
	}
	return 0
}

// run sends data to the side in a new epoch and collects what the client and the backend saw.
func (s side) run(data []byte, o sendOpts) outcome {
	epoch := s.rec.begin()
	got, err := exchange(s.addr, data, o)
	out := outcome{got: got, err: err}
	out.resps, out.rest = parseResponses(got, bytes.HasPrefix(data, []byte("HEAD ")))
	out.seen = s.rec.collect(epoch, settle)
	return out
}

func (o outcome) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "statuses %v", statuses(o.resps))
	if o.err != nil {
		fmt.Fprintf(&b, " (read error: %v)", o.err)
	}
	if len(o.rest) > 0 {
		fmt.Fprintf(&b, " + unparseable %s", quote(o.rest, 160))
	}
	fmt.Fprintf(&b, "\n    client received: %s", quote(o.got, 300))
	fmt.Fprintf(&b, "\n    backend saw: %s", o.seen)
	return b.String()
}

func statuses(rs []response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.status)
	}
	return out
}

// pool runs fn over n jobs with `workers` goroutines, each owning one lane index.
func pool(ctx context.Context, workers, n int, fn func(worker, job int)) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				fn(w, j)
			}
		}()
	}
	for j := range n {
		select {
		case jobs <- j:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
}

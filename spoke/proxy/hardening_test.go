package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Regression tests for the data-path findings of the HTTP hardening review: raw bytes on both sides, because client
// libraries normalise exactly the bytes that matter.

// rawBackend accepts connections on loopback and hands each to serve; it records every byte received.
type rawBackend struct {
	ln    net.Listener
	mu    sync.Mutex
	bytes bytes.Buffer
	conns atomic.Int32
}

func newRawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader, conn int)) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb := &rawBackend{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(rb.conns.Add(1))
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c, bufio.NewReader(io.TeeReader(c, rb)), n)
			}()
		}
	}()
	return rb
}

func (rb *rawBackend) Write(p []byte) (int, error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.bytes.Write(p)
}

func (rb *rawBackend) received() string {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.bytes.String()
}

// readHead reads a request head from br (test backends only; the proxy's output is well-formed by construction).
func readHead(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\r\n" {
			return sb.String(), nil
		}
	}
}

// hardenedProxy serves one port routing everything to addr.
func hardenedProxy(t *testing.T, addr string, lim Limits) (*Server, string) {
	t.Helper()
	if lim.KeepaliveIdleTimeout == 0 {
		lim.KeepaliveIdleTimeout = 300 * time.Millisecond
	}
	s := New(Options{Cluster: "c", DrainTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler),
		DisableHealthChecks: true, Limits: lim})
	t.Cleanup(func() { s.Close() })
	p := freePort(t)
	cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: 1,
		Ports: []spokeconfig.Port{port(p, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "b", Weight: 1}))},
		Backends: []spokeconfig.Backend{{ID: "b", Namespace: "ns", Name: "b", Port: 80,
			Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: addr, Ready: true}}}},
	}
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return s, fmt.Sprintf("127.0.0.1:%d", p)
}

// exchangeRaw writes raw to addr, half-closes, and returns everything the proxy answered within the deadline.
func exchangeRaw(t *testing.T, addr, raw string) string { return exchange(t, addr, raw, true) }

// exchangeOpen is exchangeRaw without the half-close, for requests that wait on a backend: like nginx, the proxy takes
// a client's EOF while its request is in flight as the client leaving. It returns what arrived before the proxy
// closed the connection (hardenedProxy's idle timeout is short) or the deadline passed.
func exchangeOpen(t *testing.T, addr, raw string) string { return exchange(t, addr, raw, false) }

func exchange(t *testing.T, addr, raw string, halfClose bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// okBackend answers every request on a connection with 200 and the request count, framed by Content-Length.
func okBackend(c net.Conn, br *bufio.Reader, _ int) {
	for i := 1; ; i++ {
		head, err := readHead(br)
		if err != nil {
			return
		}
		if cl := rawField(head, "Content-Length"); cl != "" {
			var n int
			fmt.Sscan(cl, &n)
			if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
				return
			}
		}
		body := fmt.Sprintf("req%d", i)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
}

func rawField(head, name string) string {
	for _, l := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestSmugglingRefused(t *testing.T) {
	rb := newRawBackend(t, okBackend)
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	cases := map[string]string{
		"CL space before colon": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 37\r\n\r\n" + smuggled,
		"TE space before colon": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"CL.TE":                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"TE.CL":                 "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n25\r\n" + smuggled + "\r\n0\r\n\r\n",
		"CL.CL":                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n" + smuggled,
		"TE obfuscated":         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled,
		"bare LF":               "POST / HTTP/1.1\nHost: a\nContent-Length: 0\n\n" + smuggled,
		"obs-fold TE":           "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"userinfo host":         "GET / HTTP/1.1\r\nHost: a.example:80@b.example\r\n\r\n",
		"no host":               "GET / HTTP/1.1\r\n\r\n",
		"HTTP/1.9":              "GET / HTTP/1.9\r\nHost: a\r\n\r\n",
		"CONNECT":               "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n",
	}
	for name, raw := range cases {
		out := exchangeRaw(t, addr, raw)
		if !strings.HasPrefix(out, "HTTP/1.1 4") && !strings.HasPrefix(out, "HTTP/1.1 5") {
			t.Errorf("%s: answer %q, want a 4xx/5xx refusal", name, out)
		}
		if strings.Count(out, "HTTP/1.1 ") != 1 {
			t.Errorf("%s: %d responses, want exactly the refusal: %q", name, strings.Count(out, "HTTP/1.1 "), out)
		}
	}
	if got := rb.received(); got != "" {
		t.Fatalf("refused requests reached the backend:\n%s", got)
	}
}

func TestOneFramingFieldUpstream(t *testing.T) {
	rb := newRawBackend(t, okBackend)
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	out := exchangeOpen(t, addr, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"+
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if strings.Count(out, "200 OK") != 2 {
		t.Fatalf("answers %q", out)
	}
	got := rb.received()
	if n := strings.Count(got, "Content-Length:"); n != 1 {
		t.Errorf("%d Content-Length fields upstream, want 1:\n%s", n, got)
	}
	if n := strings.Count(got, "Transfer-Encoding:"); n != 1 {
		t.Errorf("%d Transfer-Encoding fields upstream, want 1:\n%s", n, got)
	}
}

// TestBackendExtraBytesDoNotDesync: a backend that writes past its declared body (at once, or a little later), or
// sends a body with a 204, never changes the response another client gets.
func TestBackendExtraBytesDoNotDesync(t *testing.T) {
	evil := "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nEVIL!!"
	modes := map[string]func(c net.Conn){
		"same write": func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"+evil) },
		"later write": func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
			time.Sleep(20 * time.Millisecond)
			io.WriteString(c, evil)
		},
		"204 with body": func(c net.Conn) { io.WriteString(c, "HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\nEVIL!!"+evil) },
	}
	for name, first := range modes {
		t.Run(name, func(t *testing.T) {
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
				for i := 0; ; i++ {
					head, err := readHead(br)
					if err != nil {
						return
					}
					if strings.HasPrefix(head, "GET /first") {
						first(c)
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
				}
			})
			_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
			exchangeOpen(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
			for i := 0; i < 5; i++ {
				out := exchangeOpen(t, addr, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
				if !strings.HasSuffix(out, "second") || strings.Contains(out, "EVIL") {
					t.Fatalf("another client's response was shifted: %q", out)
				}
			}
		})
	}
}

func TestInvalidResponseIs502(t *testing.T) {
	responses := map[string]string{
		"space before colon": "HTTP/1.1 200 OK\r\nX-Evil : 1\r\nContent-Length: 2\r\n\r\nok",
		"cl and te":          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"endless 1xx":        strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 50) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"huge head":          "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 100) + "\r\n",
	}
	for name, resp := range responses {
		t.Run(name, func(t *testing.T) {
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, err := readHead(br); err == nil {
					io.WriteString(c, resp)
				}
			})
			_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
			out := exchangeOpen(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 502 ") || strings.Contains(out, "X-Evil") {
				t.Fatalf("answer %q, want 502 without the backend's fields", out)
			}
		})
	}
}

// TestClientBodyFaultsEjectNothing: broken client bodies are the client's fault; 5 and 500 of them leave the one
// endpoint serving.
func TestClientBodyFaultsEjectNothing(t *testing.T) {
	rb := newRawBackend(t, okBackend)
	s, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	broken := []string{
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
	}
	for _, n := range []int{5, 500} {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := 0; i < n; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				out := exchangeRaw(t, addr, broken[i%len(broken)])
				if !strings.HasPrefix(out, "HTTP/1.1 400 ") {
					t.Errorf("broken body answered %q, want 400", out)
				}
			}()
		}
		wg.Wait()
		ep := s.Health().Endpoint("c", rb.ln.Addr().String())
		if ep.Ejected(time.Now().UnixNano()) || ep.Ejections() != 0 {
			t.Fatalf("after %d broken client bodies the endpoint was ejected (%d ejections)", n, ep.Ejections())
		}
		if out := exchangeOpen(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200 ") {
			t.Fatalf("after %d broken client bodies a good request got %q", n, out)
		}
	}
	if s.Stats().BadRequests.Load() < 505 {
		t.Fatalf("BadRequests = %d, want ≥ 505", s.Stats().BadRequests.Load())
	}
}

// TestClientLeavingCancelsUpstream: a client that goes away while its request waits on the backend ends the upstream
// exchange (the backend sees its connection close).
func TestClientLeavingCancelsUpstream(t *testing.T) {
	closed := make(chan time.Time, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, err := readHead(br); err != nil {
			return
		}
		br.ReadByte() // blocks until the proxy closes the connection
		closed <- time.Now()
	})
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(300 * time.Millisecond)
	left := time.Now()
	c.Close()
	select {
	case at := <-closed:
		t.Logf("upstream exchange ended %v after the client left", at.Sub(left))
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream exchange outlived its client by 3 s")
	}
}

// TestTimeouts: a slow head, a stalled body and a silent backend are each cut by their limit.
func TestTimeouts(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			head, err := readHead(br)
			if err != nil {
				return
			}
			if strings.HasPrefix(head, "GET /silent") {
				time.Sleep(3 * time.Second)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	lim := Limits{RequestHeaderTimeout: 300 * time.Millisecond, RequestBodyIdleTimeout: 300 * time.Millisecond,
		KeepaliveIdleTimeout: 300 * time.Millisecond, UpstreamResponseHeaderTimeout: 300 * time.Millisecond}
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), lim)

	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(3 * time.Second))
		return c
	}
	// Slow head: one byte at a time, never finished.
	c := dial()
	start := time.Now()
	go func(c net.Conn) {
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}(c)
	if _, err := io.ReadAll(c); err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("slow head: closed after %v (err %v), want ~300ms", time.Since(start), err)
	}
	// Stalled body: 408.
	c = dial()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
	out, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(out), "HTTP/1.1 408 ") {
		t.Fatalf("stalled body answered %q, want 408", out)
	}
	// Idle keep-alive connection: closed.
	c = dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	start = time.Now()
	out, _ = io.ReadAll(c)
	if !strings.HasPrefix(string(out), "HTTP/1.1 200 ") || time.Since(start) > 2*time.Second {
		t.Fatalf("keep-alive idle: %q after %v", out, time.Since(start))
	}
	// Silent backend: 504 after the response-header timeout.
	// (Without a half-close: like nginx, the proxy takes a client's EOF while its request waits as the client leaving.)
	c = dial()
	io.WriteString(c, "GET /silent HTTP/1.1\r\nHost: a\r\n\r\n")
	out2, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(out2, "HTTP/1.1 504 ") {
		t.Fatalf("silent backend answered %q, want 504", out2)
	}
}

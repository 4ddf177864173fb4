package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Regression tests for an outside review of the hardened data path; each failed before its fix.

func slowOK(delay time.Duration) func(c net.Conn, br *bufio.Reader, _ int) {
	return func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			time.Sleep(delay)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}
}

// A pipelined, unfinished head behind a request slow enough to be watched still gets the header timeout.
func TestPipelinedHeadAfterWatchTimesOut(t *testing.T) {
	rb := newRawBackend(t, slowOK(200*time.Millisecond))
	ms := 300 * time.Millisecond
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{RequestHeaderTimeout: ms, KeepaliveIdleTimeout: ms, RequestBodyIdleTimeout: ms})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(4 * time.Second))
	b, _ := io.ReadAll(c)
	if el := time.Since(start); el > 2*time.Second || !strings.Contains(string(b), "200 OK") {
		t.Fatalf("got %q; connection with an unfinished pipelined head open %v (header timeout 300ms)", b, el)
	}
}

func h2cOpen(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	return c, fr
}

func h2cHeaders(fr *http2.Framer, fields ...string) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
}

func h2cStatus(fr *http2.Framer) string {
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "err:" + err.Error()
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			hs, _ := dec.DecodeFull(f.HeaderBlockFragment())
			for _, h := range hs {
				if h.Name == ":status" {
					return h.Value
				}
			}
		case *http2.RSTStreamFrame:
			return "rst:" + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return "goaway:" + f.ErrCode.String()
		}
	}
}

// An h2c :path is written into the upstream HTTP/1.1 request line: a space (or a byte HTTP/1.1 cannot carry) in it is
// refused, never forwarded.
func TestH2CPathInjectionRefused(t *testing.T) {
	rb := newRawBackend(t, okBackend)
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	for _, p := range []string{"/public?x= HTTP/1.1 /admin", "/a#frag", "/caf\xc3\xa9", "/api/..%2fadmin", "*"} {
		_, fr := h2cOpen(t, addr)
		h2cHeaders(fr, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", p)
		if st := h2cStatus(fr); st == "200" {
			t.Errorf(":path %q answered 200", p)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := rb.received(); got != "" {
		t.Fatalf("refused :paths reached the backend:\n%s", got)
	}
}

// An h2c connection whose first HEADERS frame never arrives whole is cut at the header timeout.
func TestH2CPartialFirstHeadersTimesOut(t *testing.T) {
	rb := newRawBackend(t, okBackend)
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{RequestHeaderTimeout: 300 * time.Millisecond, KeepaliveIdleTimeout: 20 * time.Second})
	c, _ := h2cOpen(t, addr)
	// HEADERS on stream 1, END_HEADERS|END_STREAM, length 1000; 3 payload bytes sent.
	c.Write([]byte{0, 0x03, 0xe8, 0x1, 0x5, 0, 0, 0, 1, 0x82, 0x86, 0x84})
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	io.Copy(io.Discard, c)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("h2c connection with an unfinished first HEADERS frame open %v (header timeout 300ms)", el)
	}
	// The preface and nothing after it.
	c2, _ := h2cOpen(t, addr)
	start = time.Now()
	c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	io.Copy(io.Discard, c2)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("h2c connection that sent only its preface open %v (header timeout 300ms)", el)
	}
}

// A client that stops reading its response is cut off after the send idle timeout, releasing the upstream.
func TestClientNotReadingIsCutOff(t *testing.T) {
	wrote := make(chan error, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 33554432\r\n\r\n")
		_, err := c.Write(make([]byte, 32<<20))
		wrote <- err
	})
	_, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{ResponseSendIdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("5 s on, the proxy still writes to a client that does not read (send idle timeout 300ms)")
	}
}

// Paths are cleaned before routing and rewriting: no dot-segment escapes a rewritten prefix, none climbs above the
// root, and encoded characters after the prefix keep their encoding.
func TestPathCleaningAndRewrite(t *testing.T) {
	lines := make(chan string, 16)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			h, err := readHead(br)
			if err != nil {
				return
			}
			lines <- strings.SplitN(h, "\r\n", 2)[0]
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	s, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	repl := "/v1/public"
	rt := forwardRoute("r", "/api", spokeconfig.WeightedBackend{BackendID: "b", Weight: 1})
	rt.Action.Rewrite = &spokeconfig.Rewrite{Path: &spokeconfig.PathRewrite{ReplacePrefixMatch: &repl}}
	cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: 2,
		Ports: []spokeconfig.Port{port(s.Table().ports[int32(mustPort(t, addr))].port, rt)},
		Backends: []spokeconfig.Backend{{ID: "b", Namespace: "ns", Name: "b", Port: 80,
			Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: rb.ln.Addr().String(), Ready: true}}}}}
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/api/x":            "GET /v1/public/x HTTP/1.1",
		"/api/a%2Fb":        "GET /v1/public/a%2Fb HTTP/1.1",
		"/api/x/../y":       "GET /v1/public/y HTTP/1.1",
		"/api/%2e/y":        "GET /v1/public/y HTTP/1.1",
		"/api/%2e%2e/admin": "", // cleans to /admin: no route
		"/api/..%2fadmin":   "", // refused
		"/../api/x":         "", // above the root: refused
	} {
		out := exchangeOpen(t, addr, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		var got string
		select {
		case got = <-lines:
		case <-time.After(200 * time.Millisecond):
		}
		if got != want {
			t.Errorf("%s: backend got %q, want %q (client got %q)", path, got, want, strings.SplitN(out, "\r\n", 2)[0])
		}
	}
}

func mustPort(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

// A backend that answers early (413, then closes) while the request body is still being sent: the client gets that
// answer, and the endpoint is charged nothing.
func TestEarlyResponseRelayed(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		time.Sleep(50 * time.Millisecond)
		c.Close()
	})
	s, addr := hardenedProxy(t, rb.ln.Addr().String(), Limits{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	const n = 16 << 20
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n)
	go c.Write(make([]byte, n))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "413") {
		t.Fatalf("the backend's early 413 was lost: client got %q", line)
	}
	if ep := s.Health().Endpoint("c", rb.ln.Addr().String()); s.Stats().UpstreamErrors.Load() != 0 || ep.Ejections() != 0 {
		t.Fatalf("an early response was counted as an upstream error (%d)", s.Stats().UpstreamErrors.Load())
	}
}

// Pooled upstream connections are closed when they idle past the idle timeout or their endpoint leaves the table.
func TestIdleUpstreamConnectionsReaped(t *testing.T) {
	eofs := make(chan struct{}, 16)
	handler := func(c net.Conn, br *bufio.Reader, _ int) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err == io.EOF {
			eofs <- struct{}{}
		}
	}
	a := newRawBackend(t, handler)
	s, addr := hardenedProxy(t, a.ln.Addr().String(), Limits{})
	if out := exchangeOpen(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("got %q", out)
	}
	// The endpoint leaves the table: its pooled connection is closed at once.
	b := newRawBackend(t, handler)
	cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: 2,
		Ports: []spokeconfig.Port{port(int32(mustPort(t, addr)), forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "b", Weight: 1}))},
		Backends: []spokeconfig.Backend{{ID: "b", Namespace: "ns", Name: "b", Port: 80,
			Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: b.ln.Addr().String(), Ready: true}}}}}
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	select {
	case <-eofs:
	case <-time.After(2 * time.Second):
		t.Fatal("the removed endpoint's pooled connection is still open")
	}
	// An idle connection past the idle timeout is closed by the sweep.
	if out := exchangeOpen(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("got %q", out)
	}
	s.localH1.sweep(time.Now().Add(s.localH1.idleTimeout), s.tableHasEndpoint)
	select {
	case <-eofs:
	case <-time.After(2 * time.Second):
		t.Fatal("a connection idle past the idle timeout is still open after a sweep")
	}
}

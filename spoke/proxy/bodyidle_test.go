package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// A backend that stalls mid-body has its response cut off after UpstreamResponseBodyIdleTimeout (the client sees a
// truncated response and a closed connection, never a completed one, and the stall is counted as a timeout) — on the
// proxy's own HTTP/1.1 client and on a net/http transport (an h2c backend; east-west uses one too).
func TestStalledUpstreamBodyIsCutOff(t *testing.T) {
	const idle = 300 * time.Millisecond
	h1be := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
		time.Sleep(5 * time.Second)
	})
	h2be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "ab")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	h2be.Config.Protocols = protocols(false, true)
	h2be.Start()
	t.Cleanup(h2be.Close)

	for _, tc := range []struct {
		name, addr, appProtocol string
	}{
		{"http/1.1 backend", h1be.ln.Addr().String(), ""},
		{"h2c backend", addrOf(h2be), "kubernetes.io/h2c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := hardenedProxy(t, tc.addr, Limits{UpstreamResponseBodyIdleTimeout: idle})
			if tc.appProtocol != "" {
				_, ps, _ := net.SplitHostPort(addr)
				p, _ := strconv.Atoi(ps)
				cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: 2,
					Ports: []spokeconfig.Port{port(int32(p), forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "b", Weight: 1}))},
					Backends: []spokeconfig.Backend{{ID: "b", Namespace: "ns", Name: "b", Port: 80, AppProtocol: tc.appProtocol,
						Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: tc.addr, Ready: true}}}},
				}
				if err := s.Apply(cfg); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			out := exchangeOpen(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			took := time.Since(start)
			// What was relayed before the stall may still sit in the proxy's write buffer when it aborts: the client
			// gets at most the head and "ab", then the close — never ten bytes of body.
			if out != "" && (!strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.HasSuffix(out, "\r\n\r\nab")) {
				t.Fatalf("client got %q after %v, want at most the head and the two bytes sent, then the connection closed", out, took)
			}
			if took < idle || took > 3*time.Second {
				t.Fatalf("stalled body cut off after %v, want about %v", took, idle)
			}
			if n := s.stats.Timeouts.Load(); n != 1 {
				t.Fatalf("timeouts counted: %d, want 1", n)
			}
		})
	}
}

// A chunked response that keeps sending outlives the idle timeout, and each chunk reaches the client as it comes;
// one that stalls in the middle of a chunk's framing is cut off after the timeout, not left waiting.
func TestChunkedStreamsAndUpstreamBodyIdle(t *testing.T) {
	const idle = 400 * time.Millisecond
	be := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		head, err := readHead(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		if strings.HasPrefix(head, "GET /stall") {
			io.WriteString(c, "2\r\nab\r") // half a chunk's trailing CRLF, then nothing
			time.Sleep(5 * time.Second)
			return
		}
		for range 12 { // 1.2 s of data, a chunk every 100 ms
			time.Sleep(100 * time.Millisecond)
			if _, err := io.WriteString(c, "5\r\nhello\r\n"); err != nil {
				return
			}
		}
		io.WriteString(c, "0\r\n\r\n")
	})
	s, addr := hardenedProxy(t, be.ln.Addr().String(), Limits{UpstreamResponseBodyIdleTimeout: idle})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "hello" {
		t.Fatalf("first chunk: %q %v", first, err)
	}
	if d := time.Since(start); d > idle {
		t.Errorf("the first chunk reached the client after %v: held back instead of flushed", d)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != 11*5 {
		t.Fatalf("a stream sending every 100 ms was cut after %v (%d more bytes, %v); want all of it past the %v idle timeout",
			time.Since(start), len(rest), err, idle)
	}

	start = time.Now()
	out := exchangeOpen(t, addr, "GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
	if took := time.Since(start); took < idle || took > 3*time.Second || strings.HasSuffix(out, "0\r\n\r\n") {
		t.Fatalf("a stall inside a chunk's framing: cut after %v with %q, want cut after about %v, never completed", took, out, idle)
	}
	if n := s.stats.Timeouts.Load(); n != 1 {
		t.Fatalf("timeouts counted: %d, want 1 (the stall only)", n)
	}
}

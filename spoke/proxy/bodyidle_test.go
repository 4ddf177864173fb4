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

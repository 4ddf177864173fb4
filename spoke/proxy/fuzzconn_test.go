package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/proxy/internal/h1"
)

// fuzzRig is one proxy and one strict recording backend shared by the iterations of a fuzzing process (iterations
// run one at a time in a process).
type fuzzRig struct {
	addr      string
	forwarded atomic.Int64 // complete, strictly valid requests the backend received
	invalid   atomic.Int64 // requests the backend could not read strictly
	mu        sync.Mutex
	lastBad   string
}

var (
	rigOnce sync.Once
	rig     *fuzzRig
)

func fuzzSetup(f *testing.F) *fuzzRig {
	rigOnce.Do(func() {
		r := &fuzzRig{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go r.backend(c)
			}
		}()
		s := New(Options{Cluster: "c", DrainTimeout: time.Second, Logger: slog.New(slog.DiscardHandler),
			DisableHealthChecks: true, Limits: Limits{RequestHeaderTimeout: 200 * time.Millisecond,
				RequestBodyIdleTimeout: 200 * time.Millisecond, KeepaliveIdleTimeout: 200 * time.Millisecond,
				MaxRequestHeaderBytes: 8 << 10, MaxRequestLineBytes: 4 << 10}})
		p := freePort(f)
		cfg := &spokeconfig.SpokeConfig{Cluster: "c", Revision: 1,
			Ports: []spokeconfig.Port{port(p, forwardRoute("r", "/", spokeconfig.WeightedBackend{BackendID: "b", Weight: 1}))},
			Backends: []spokeconfig.Backend{{ID: "b", Namespace: "ns", Name: "b", Port: 80,
				Endpoints: []spokeconfig.Endpoint{{Cluster: "c", Address: ln.Addr().String(), Ready: true}}}},
		}
		if err := s.Apply(cfg); err != nil {
			f.Fatal(err)
		}
		r.addr = fmt.Sprintf("127.0.0.1:%d", p)
		rig = r
	})
	return rig
}

var strictLimits = h1.Limits{MaxLine: 8 << 10, MaxBytes: 64 << 10, MaxFields: 200}

// backend reads what the proxy forwards with the strict reader: anything it cannot read is a proxy bug.
func (r *fuzzRig) backend(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	hr := h1.NewReader(br)
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		req, err := hr.ReadRequest(context.Background(), strictLimits, h1.BodyOptions{})
		if err != nil {
			if h1.IsClientFault(err) {
				r.invalid.Add(1)
				r.mu.Lock()
				r.lastBad = err.Error()
				r.mu.Unlock()
			}
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			// The proxy aborts an upstream request whose client body failed by closing the connection: fine, as long
			// as it is not counted (and it never is: it is not complete). Bad chunk syntax would be the proxy's.
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) &&
				!errors.Is(err, syscall.ECONNRESET) {
				r.invalid.Add(1)
				r.mu.Lock()
				r.lastBad = err.Error()
				r.mu.Unlock()
			}
			return
		}
		r.forwarded.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

// completeRequests counts the requests a strict reading of raw holds, one after another, bodies included.
func completeRequests(raw []byte) int {
	hr := h1.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	n := 0
	for {
		req, err := hr.ReadRequest(context.Background(), h1.Limits{MaxLine: 1 << 20, MaxBytes: 1 << 20, MaxFields: 1 << 10}, h1.BodyOptions{})
		if err != nil {
			return n
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return n
		}
		n++
	}
}

// FuzzServeConn sends raw bytes to a gateway port in front of a strict recording backend. Whatever the bytes: the
// proxy never panics, every request it forwards is strictly valid HTTP/1.1 with one framing, and it never forwards
// more requests than the bytes hold complete ones.
func FuzzServeConn(f *testing.F) {
	r := fuzzSetup(f)
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 37\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET http://b/x?y HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: [::1]:8\r\nExpect: 100-continue\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		before := r.forwarded.Load()
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(raw)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		time.Sleep(2 * time.Millisecond)
		got := r.forwarded.Load() - before
		if limit := completeRequests(raw); got > int64(limit) {
			t.Fatalf("forwarded %d requests from bytes holding %d complete ones: %q", got, limit, raw)
		}
		if n := r.invalid.Load(); n > 0 {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("the backend received a request it could not read strictly (%s) after %q", r.lastBad, raw)
		}
	})
}

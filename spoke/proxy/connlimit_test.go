package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A gateway port holds at most Limits.MaxClientConnections client connections, h2c ones included: one more is
// closed at accept, and a slot that frees up serves again.
func TestClientConnectionLimit(t *testing.T) {
	be := newRawBackend(t, okBackend)
	s, addr := hardenedProxy(t, be.ln.Addr().String(), Limits{MaxClientConnections: 3, KeepaliveIdleTimeout: time.Minute})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	get := func(c net.Conn) string {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	// Two h1 connections served once and kept alive, one h2c connection past its preface.
	h1a, h1b := dial(), dial()
	for _, c := range []net.Conn{h1a, h1b} {
		if l := get(c); !strings.HasPrefix(l, "HTTP/1.1 200 ") {
			t.Fatalf("within the limit: %q", l)
		}
	}
	h2t := &http.Transport{Protocols: protocols(false, true)}
	h2 := &http.Client{Transport: h2t, Timeout: 5 * time.Second}
	if resp, err := h2.Get("http://" + addr + "/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("h2c connection within the limit: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The fourth is closed without an answer.
	over := dial()
	if l := get(over); l != "" {
		t.Fatalf("over the limit answered %q, want the connection closed", l)
	}
	if n := s.stats.ConnectionsRefused.Load(); n != 1 {
		t.Fatalf("refused connections counted: %d, want 1", n)
	}
	// Closing the h2c connection frees its slot.
	h2t.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := get(dial()); strings.HasPrefix(l, "HTTP/1.1 200 ") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after an h2c connection closed, a new one still gets %q", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

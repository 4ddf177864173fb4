package differential

// The recording backend: a raw TCP listener on 127.0.0.1 that keeps every byte a proxy sends, parses it with the
// strict parser, answers each complete request (by default with a small Content-Length framed 200, keep-alive) and
// answers a violation with 400 and a close. Everything it sees is an event tagged with the epoch (the case) during
// which the request's first byte arrived, so one backend can serve a sequence of cases over pooled connections.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Event kinds.
const (
	evRequest   = "request"   // a complete request
	evAborted   = "aborted"   // a valid head whose body the proxy cut off by closing the connection
	evViolation = "violation" // bytes that are not a valid request (the backend answered 400 and closed)
	evPartial   = "partial"   // part of a head, then the proxy closed the connection
	evStuck     = "stuck"     // bytes still waiting to become a request when the case ended
)

type event struct {
	epoch int64
	conn  int
	kind  string
	req   *request // evRequest, evAborted, and evStuck with a complete head
	err   string   // evViolation, evPartial, evStuck
	raw   []byte   // the bytes involved (capped)
}

func (e event) String() string {
	s := fmt.Sprintf("conn %d %s", e.conn, e.kind)
	if e.req != nil {
		s += fmt.Sprintf(" %s %s (framing %s, body %d bytes)", e.req.method, clip(e.req.target, 60), e.req.framing, len(e.req.body))
	}
	if e.err != "" {
		s += ": " + e.err
	}
	return s + "\n        bytes: " + quote(e.raw, 400)
}

// responder answers one complete request: the bytes to write, and whether to close the connection after them.
type responder func(r *request) ([]byte, bool)

// okResponder is the default answer: 200, keep-alive, a body naming what the backend saw.
func okResponder(r *request) ([]byte, bool) {
	body := fmt.Sprintf("rec %s %s\n", r.method, clip(r.target, 40))
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Recorder: 1\r\n\r\n", len(body))
	if r.method == "HEAD" {
		return []byte(head), false
	}
	return []byte(head + body), false
}

type recorder struct {
	name    string
	ln      net.Listener
	respond responder
	epoch   atomic.Int64

	mu     sync.Mutex
	conns  []*recConn
	events []event
	wg     sync.WaitGroup
}

type recConn struct {
	id         int
	nc         net.Conn
	pending    []byte // bytes not yet consumed as a complete request
	startEpoch int64  // epoch when pending last became non-empty
	closed     bool
	sent100    bool
}

// newRecorder starts a recording backend; it stops when the test ends.
func newRecorder(t testing.TB, name string, respond responder) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if respond == nil {
		respond = okResponder
	}
	r := &recorder{name: name, ln: ln, respond: respond}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *recorder) addr() string { return r.ln.Addr().String() }

func (r *recorder) accept() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		c := &recConn{id: len(r.conns) + 1, nc: nc}
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c)
	}
}

func (r *recorder) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.nc.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func capped(b []byte) []byte { return bytes.Clone(b[:min(len(b), 256<<10)]) }

func (r *recorder) serve(c *recConn) {
	defer r.wg.Done()
	defer c.nc.Close()
	buf := make([]byte, 64<<10)
	for {
		// Bounded: a proxy that holds a connection open without sending is cut off eventually.
		c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := c.nc.Read(buf)
		if n > 0 {
			r.mu.Lock()
			if len(c.pending) == 0 {
				c.startEpoch = r.epoch.Load()
			}
			c.pending = append(c.pending, buf[:n]...)
			r.mu.Unlock()
			if !r.drain(c) {
				r.mu.Lock()
				c.closed = true
				r.mu.Unlock()
				return
			}
		}
		if err != nil {
			r.mu.Lock()
			if len(c.pending) > 0 {
				req, _, perr := parseRequest(c.pending)
				ev := event{epoch: c.startEpoch, conn: c.id, raw: capped(c.pending)}
				switch {
				case req != nil:
					ev.kind, ev.req = evAborted, req
					ev.err = "connection ended before the body did"
				case errors.Is(perr, errIncomplete):
					ev.kind, ev.err = evPartial, "connection ended inside a request head"
				default:
					ev.kind, ev.err = evViolation, perr.Error()
				}
				r.events = append(r.events, ev)
				c.pending = nil
			}
			c.closed = true
			r.mu.Unlock()
			return
		}
	}
}

// drain consumes every complete request in c.pending and answers it. It reports whether to keep reading.
func (r *recorder) drain(c *recConn) bool {
	for {
		r.mu.Lock()
		req, n, err := parseRequest(c.pending)
		switch {
		case err == nil:
			r.events = append(r.events, event{epoch: c.startEpoch, conn: c.id, kind: evRequest, req: req, raw: capped(req.raw)})
			c.pending = c.pending[n:]
			c.sent100 = false
			r.mu.Unlock()
			resp, closeAfter := r.respond(req)
			c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, werr := c.nc.Write(resp); werr != nil || closeAfter {
				return false
			}
			continue
		case errors.Is(err, errIncomplete):
			send100 := req != nil && req.expect100 && !c.sent100
			c.sent100 = c.sent100 || send100
			r.mu.Unlock()
			if send100 {
				c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.nc.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
			}
			return true
		default:
			r.events = append(r.events, event{epoch: c.startEpoch, conn: c.id, kind: evViolation, err: err.Error(), raw: capped(c.pending)})
			c.pending = nil
			r.mu.Unlock()
			c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.nc.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
			return false
		}
	}
}

// begin starts a new epoch and returns it.
func (r *recorder) begin() int64 { return r.epoch.Add(1) }

// seen is what a backend saw during one epoch.
type seen struct {
	events []event
}

func (s seen) count(kind string) int {
	n := 0
	for _, e := range s.events {
		if e.kind == kind {
			n++
		}
	}
	return n
}

// complete is the number of complete requests.
func (s seen) complete() int { return s.count(evRequest) }

// heads is the number of request heads that reached the backend, complete or not.
func (s seen) heads() int {
	n := 0
	for _, e := range s.events {
		if e.req != nil {
			n++
		}
	}
	return n
}

// bad returns every event that shows the proxy sent something invalid (or left bytes dangling).
func (s seen) bad() []event {
	var out []event
	for _, e := range s.events {
		if e.kind == evViolation || e.kind == evPartial || e.kind == evStuck {
			out = append(out, e)
		}
	}
	return out
}

func (s seen) requests() []*request {
	var out []*request
	for _, e := range s.events {
		if e.req != nil {
			out = append(out, e.req)
		}
	}
	return out
}

func (s seen) String() string {
	if len(s.events) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for _, e := range s.events {
		b.WriteString("\n      ")
		b.WriteString(e.String())
	}
	return b.String()
}

// collect waits (up to settle) until no connection holds unconsumed bytes of epoch, then returns the epoch's events.
// Bytes still pending after that are reported as stuck.
func (r *recorder) collect(epoch int64, settle time.Duration) seen {
	deadline := time.Now().Add(settle)
	for {
		r.mu.Lock()
		busy := false
		for _, c := range r.conns {
			if !c.closed && len(c.pending) > 0 && c.startEpoch == epoch {
				busy = true
			}
		}
		if !busy || time.Now().After(deadline) {
			var s seen
			for _, e := range r.events {
				if e.epoch == epoch {
					s.events = append(s.events, e)
				}
			}
			for _, c := range r.conns {
				if !c.closed && len(c.pending) > 0 && c.startEpoch == epoch {
					req, _, _ := parseRequest(c.pending)
					ev := event{epoch: epoch, conn: c.id, kind: evStuck, req: req, raw: capped(c.pending)}
					if req != nil {
						ev.err = fmt.Sprintf("request head forwarded, body incomplete and the upstream connection still open %v after the client finished", settle)
					} else {
						ev.err = fmt.Sprintf("bytes that are not a complete request head still pending %v after the client finished", settle)
					}
					s.events = append(s.events, ev)
				}
			}
			sort.SliceStable(s.events, func(i, j int) bool { return s.events[i].conn < s.events[j].conn })
			r.mu.Unlock()
			return s
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

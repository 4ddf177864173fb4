package proxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// reqCtx is the context of a request read from a gateway port's HTTP/1.1 connection, cancelled when its client leaves
// or the port's drain time is up. It exists for the hot path: one allocation per request where context.WithCancel
// plus the upstream exchange's context.AfterFunc cost several, and the upstream HTTP/1.1 exchange registers the one
// connection to abort (watchConn) instead of a callback. Contexts derived from it (route timeouts) work through its
// AfterFunc, which the context package uses for any parent that has one.
type reqCtx struct {
	mu    sync.Mutex
	done  chan struct{} // made on the first Done
	err   error
	conn  net.Conn // the upstream connection to abort on cancel
	funcs []*afterFunc
}

type afterFunc struct {
	f    func()
	done bool // ran or stopped; guarded by reqCtx.mu
}

func (c *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *reqCtx) Value(any) any               { return nil }

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *reqCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// cancel ends the request: Done closes, the registered upstream connection's I/O fails at once, and every AfterFunc
// runs in its own goroutine (as with context.AfterFunc).
func (c *reqCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	conn, funcs := c.conn, c.funcs
	c.conn, c.funcs = nil, nil
	for _, af := range funcs {
		af.done = true
	}
	c.mu.Unlock()
	if conn != nil {
		conn.SetDeadline(aLongTimeAgo)
	}
	for _, af := range funcs {
		go af.f()
	}
}

// AfterFunc arranges for f to run after cancellation; stop reports whether it prevented that.
func (c *reqCtx) AfterFunc(f func()) (stop func() bool) {
	af := &afterFunc{f: f}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.funcs = append(c.funcs, af)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if af.done {
			return false
		}
		af.done = true
		for i, g := range c.funcs {
			if g == af {
				c.funcs = append(c.funcs[:i], c.funcs[i+1:]...)
				break
			}
		}
		return true
	}
}

// watchConn registers nc as the connection to abort on cancellation; false means the request is already cancelled.
func (c *reqCtx) watchConn(nc net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	c.conn = nc
	return true
}

// unwatchConn ends the registration; false means cancellation came first (nc's deadline was set in the past).
func (c *reqCtx) unwatchConn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = nil
	return c.err == nil
}

// exchangeStop releases an exchange's hold on its context: the reqCtx registration or a context.AfterFunc.
type exchangeStop struct {
	rc *reqCtx
	fn func() bool
}

func (s exchangeStop) stop() bool {
	if s.rc != nil {
		return s.rc.unwatchConn()
	}
	if s.fn != nil {
		return s.fn()
	}
	return true
}

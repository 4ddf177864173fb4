//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// quietProbe peeks at an idle pooled connection without blocking or consuming. It is built once per connection, so a
// probe allocates nothing.
type quietProbe struct {
	rc    syscall.RawConn
	buf   [1]byte
	alive bool
	fn    func(fd uintptr) bool
}

func newQuietProbe(nc net.Conn) *quietProbe {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	q := &quietProbe{rc: rc}
	q.fn = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), q.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		q.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	}
	return q
}

// quiet reports whether nothing has arrived on the connection while it sat idle: no bytes (a backend that wrote past
// its response, which the next exchange would otherwise read as its own) and no end of stream (a backend that closed
// it). A connection that cannot be probed counts as quiet.
func (q *quietProbe) quiet() bool {
	if q == nil {
		return true
	}
	q.alive = false
	return q.rc.Read(q.fn) == nil && q.alive
}

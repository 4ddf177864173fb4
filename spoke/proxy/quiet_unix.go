//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// quiet reports whether nothing has arrived on an idle pooled connection: no bytes (a backend that wrote past its
// response, which the next exchange would otherwise read as its own) and no end of stream (a backend that closed it).
// It peeks without blocking or consuming.
func quiet(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && alive
}

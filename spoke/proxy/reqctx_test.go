package proxy

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestReqCtx(t *testing.T) {
	c := &reqCtx{}
	if c.Err() != nil {
		t.Fatal("fresh context already ended")
	}
	// A derived context (a route timeout) is cancelled with it, through its AfterFunc, without a goroutine per child.
	child, cancelChild := context.WithTimeout(c, time.Hour)
	defer cancelChild()
	ran := make(chan struct{})
	stopped := c.AfterFunc(func() { t.Error("a stopped AfterFunc ran") })
	if !stopped() {
		t.Fatal("stop did not stop")
	}
	c.AfterFunc(func() { close(ran) })
	// A watched connection's I/O fails at once on cancel.
	a, b := net.Pipe()
	defer b.Close()
	if !c.watchConn(a) {
		t.Fatal("watchConn on a live context")
	}
	done := c.Done()
	readErr := make(chan error, 1)
	go func() { _, err := a.Read(make([]byte, 1)); readErr <- err }()
	c.cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Done not closed")
	}
	select {
	case <-child.Done():
	case <-time.After(time.Second):
		t.Fatal("derived context not cancelled")
	}
	select {
	case <-ran:
	case <-time.After(time.Second):
		t.Fatal("AfterFunc did not run")
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("read on the watched connection succeeded")
		}
	case <-time.After(time.Second):
		t.Fatal("the watched connection was not aborted")
	}
	if !errors.Is(c.Err(), context.Canceled) || c.unwatchConn() || c.watchConn(a) {
		t.Fatal("cancelled context still live")
	}
}

package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// countingConn records each Write it gets (one per syscall on a real connection).
type countingConn struct {
	net.Conn
	writes chan []byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes <- append([]byte(nil), p...)
	return c.Conn.Write(p)
}

func TestBatchWriterCoalescesAndBounds(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	cc := &countingConn{Conn: a, writes: make(chan []byte, 1024)}
	w := newBatchWriter(cc)

	// Writes made back to back reach the connection in fewer, larger writes, in order.
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 0, 1<<20)
		tmp := make([]byte, 4096)
		for len(buf) < 100*10 {
			n, err := b.Read(tmp)
			if err != nil {
				break
			}
			buf = append(buf, tmp[:n]...)
		}
		got <- buf
	}()
	var want bytes.Buffer
	for i := range 100 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 10)
		want.Write(p)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case g := <-got:
		if !bytes.Equal(g, want.Bytes()) {
			t.Fatalf("bytes out of order or lost")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending bytes were never written")
	}
	if n := len(cc.writes); n >= 100 {
		t.Fatalf("%d connection writes for 100 small writes: nothing coalesced", n)
	}

	// A peer that does not read: the writer blocks once maxBatch is pending, it does not buffer without bound.
	blocked := make(chan struct{})
	go func() {
		for range 4 * maxBatch / 1024 {
			w.Write(make([]byte, 1024))
		}
		close(blocked)
	}()
	select {
	case <-blocked:
		t.Fatal("4 × maxBatch written to a peer that reads nothing: the buffer is unbounded")
	case <-time.After(300 * time.Millisecond):
	}
	// Close releases the writer (its write fails) and closes the connection once the last flush gives up.
	a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	w.Close()
	select {
	case <-blocked:
	case <-time.After(3 * time.Second):
		t.Fatal("a writer blocked on a full buffer was not released by Close")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
	io.Copy(io.Discard, b)
}

package proxy

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// batchWriter coalesces the writes of net/http's HTTP/2 server on an h2c client connection. That server flushes
// whenever its write queue runs empty, which with small responses is after every frame: a write syscall per HEADERS
// and per DATA frame. Here a write only appends to a buffer and wakes a flusher goroutine, which yields once (so the
// stream handlers that are ready run and add their frames) and then writes everything pending in one syscall. It
// roughly halves the h2c path's write syscalls and a fifth of its CPU per request (docs/benchmarks.md).
//
// The buffer is bounded (maxBatch): a writer waits while it is full, so a client that does not read still holds the
// server back through TCP, as with direct writes, and write deadlines still apply (to the flusher's writes). Errors
// are sticky and returned to the next write.
type batchWriter struct {
	conn net.Conn

	mu      sync.Mutex
	drained sync.Cond // signalled when the flusher took the buffer
	buf     []byte    // pending bytes
	spare   []byte
	err     error
	closed  bool
	kick    chan struct{}
	done    chan struct{}
}

// maxBatch bounds the pending bytes of one connection.
const maxBatch = 64 << 10

func newBatchWriter(c net.Conn) *batchWriter {
	w := &batchWriter{conn: c, kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.drained.L = &w.mu
	go w.flushLoop()
	return w
}

func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.buf) >= maxBatch && w.err == nil && !w.closed {
		w.drained.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return 0, err
	}
	if w.closed {
		w.mu.Unlock()
		return 0, net.ErrClosed
	}
	first := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	if first {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (w *batchWriter) flushLoop() {
	defer close(w.done)
	for range w.kick {
		runtime.Gosched()
		if !w.flush() {
			return
		}
	}
}

// flush writes out what is pending; it reports false once the connection is closed or failed.
func (w *batchWriter) flush() bool {
	w.mu.Lock()
	out := w.buf
	w.buf = w.spare[:0]
	closed := w.closed
	w.drained.Broadcast()
	w.mu.Unlock()
	var err error
	if len(out) > 0 {
		_, err = w.conn.Write(out)
	}
	w.mu.Lock()
	if cap(out) <= 2*maxBatch {
		w.spare = out[:0]
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	ok := w.err == nil && !closed
	w.drained.Broadcast()
	w.mu.Unlock()
	return ok
}

// Close stops the flusher and, in the background, writes out what is pending (bounded by closeFlushTimeout: the peer
// may not be reading) and closes the connection. It does not wait: net/http closes its connections one after another,
// and a shutdown must not add a timeout per connection.
func (w *batchWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.drained.Broadcast()
	w.mu.Unlock()
	close(w.kick)
	go func() {
		<-w.done
		w.conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		w.flush()
		w.conn.Close()
	}()
	return nil
}

// closeFlushTimeout bounds the last write of a closing h2c connection (a GOAWAY, say).
const closeFlushTimeout = time.Second

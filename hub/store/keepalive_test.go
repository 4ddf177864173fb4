package store

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallingProxy forwards TCP connections to target. Stall makes every connection open at that moment stop forwarding
// in both directions while staying open (what reaches it is read and dropped), as a frozen etcd member or a lost route
// does to its clients; connections made afterwards forward again.
type stallingProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []*atomic.Bool // one "stalled" flag per open connection
}

func startStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{l: l, target: target}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			stalled := new(atomic.Bool)
			p.mu.Lock()
			p.conns = append(p.conns, stalled)
			p.mu.Unlock()
			t.Cleanup(func() { _ = c.Close(); _ = u.Close() })
			go pipe(u, c, stalled)
			go pipe(c, u, stalled)
		}
	}()
	return p
}

// pipe copies src to dst until src ends, dropping what it reads once stalled is set.
func pipe(dst io.Writer, src io.Reader, stalled *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !stalled.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallingProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.conns {
		s.Store(true)
	}
}

// A hub's etcd connection that goes silent without closing — the member froze, a route was lost — is found out by
// pings and replaced, and a watch on it resumes on the new one (issue 9: with one etcd member frozen, the compile
// leader's watches and reads hung on it and no change reached any spoke again). Without pings, this watch would wait
// for TCP to give up, minutes later.
func TestSilentEtcdConnectionIsReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the etcd client's ping timeout (about 15 s)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	direct, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	proxy := startStallingProxy(t, strings.TrimPrefix(e.Endpoints()[0], "https://"))
	cli, err := Connect(ctx, []string{"https://" + proxy.l.Addr().String()}, e.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	const key = Prefix + "test/silent"
	watch := cli.Watch(ctx, key)
	if _, err := direct.Put(ctx, key, "before"); err != nil {
		t.Fatal(err)
	}
	if wr := <-watch; len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "before" {
		t.Fatalf("watch before the stall: %+v", wr)
	}

	proxy.Stall()
	stalled := time.Now()
	if _, err := direct.Put(ctx, key, "after"); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-watch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "after" {
			t.Fatalf("watch after the stall: %+v (err %v)", wr, wr.Err())
		}
		t.Logf("the watch resumed on a new connection %v after the old one went silent", time.Since(stalled).Round(time.Millisecond))
	case <-time.After(40 * time.Second):
		t.Fatal("the watch hung on the silent connection for 40 s")
	}
}

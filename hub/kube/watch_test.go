package kube

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/hub/store"
)

// endingWatcher ends the first watch at once, as etcd ends a watch that requires a leader when its member loses one.
type endingWatcher struct {
	clientv3.Watcher
	once sync.Once
}

func (w *endingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	ended := false
	w.once.Do(func() { ended = true })
	if ended {
		ch := make(chan clientv3.WatchResponse)
		close(ch)
		return ch
	}
	return w.Watcher.Watch(ctx, key, opts...)
}

// The mirror's change triggers survive the end of their watch (issue 9: a watch that requires a leader ends during
// every etcd election, and the mirror then went unpoked until its leadership ended): the prefix is watched again.
func TestWatchTriggerResumesAfterItsWatchEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cli.Watcher = &endingWatcher{Watcher: cli.Watcher}

	pokes := make(chan struct{}, 100)
	go watchTrigger(ctx, cli, store.StatusPrefix, func() { pokes <- struct{}{} })
	select { // the pass after the ended watch
	case <-pokes:
	case <-ctx.Done():
		t.Fatal("no pass after the watch ended")
	}
	// The watch is back: a change pokes. Put until one does, since the new watch starts a little later.
	for {
		if _, err := cli.Put(ctx, store.StatusPrefix+"HTTPRoute/default/r", time.Now().String()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-pokes:
			return
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no poke for a change after the watch ended")
		}
	}
}

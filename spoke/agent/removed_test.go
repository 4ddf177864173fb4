package agent

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgate/fedgate/spoke/internal/fakehub"
)

// When the hub says the cluster was removed, the agent runs Cleanup once and exits with an error that says so —
// it neither reconnects forever nor keeps running as if nothing happened.
func TestRemovedClusterCleansUpAndExits(t *testing.T) {
	h := fakehub.Start(t, "")
	p := newFakeProxy()
	cfg := testConfig(t, h.Addr, p)
	var cleanups atomic.Int32
	cfg.Cleanup = func(context.Context) error { cleanups.Add(1); return nil }
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	recvReport(t, h) // both streams are up
	recvSub(t, h)

	h.Remove("east")
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent still runs 10s after its cluster was removed")
	}
	if err == nil || !strings.Contains(err.Error(), `cluster "east" was removed at the hub`) || !strings.Contains(err.Error(), "cleaned up") {
		t.Fatalf("Run returned %v, want an error saying east was removed and cleaned up", err)
	}
	if n := cleanups.Load(); n != 1 {
		t.Fatalf("Cleanup ran %d times, want once", n)
	}

	// A failing cleanup is said in the exit error.
	h2 := fakehub.Start(t, "")
	cfg = testConfig(t, h2.Addr, newFakeProxy())
	cfg.Cleanup = func(context.Context) error { return errors.New("forbidden") }
	a, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- a.Run(context.Background()) }()
	recvReport(t, h2)
	h2.Remove("east")
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent still runs 10s after its cluster was removed")
	}
	if err == nil || !strings.Contains(err.Error(), "failed (forbidden)") {
		t.Fatalf("Run returned %v, want the cleanup's failure named", err)
	}
}

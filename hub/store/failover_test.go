package store

import (
	"context"
	"errors"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

// What a transaction's Commit does under failingKV.
type commitFault int

const (
	commitOK        commitFault = iota
	commitLost                  // fails as in an election, nothing committed
	commitAmbiguous             // commits, then fails as in an election: the caller cannot tell
)

// failingKV makes the next commits of transactions fail as etcd does while it fails over, in the order given.
type failingKV struct {
	clientv3.KV
	mu     sync.Mutex
	faults []commitFault
}

func (k *failingKV) next() commitFault {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.faults) == 0 {
		return commitOK
	}
	f := k.faults[0]
	k.faults = k.faults[1:]
	return f
}

func (k *failingKV) Txn(ctx context.Context) clientv3.Txn {
	return &failingTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type failingTxn struct {
	clientv3.Txn
	kv *failingKV
}

func (t *failingTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *failingTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *failingTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *failingTxn) Commit() (*clientv3.TxnResponse, error) {
	switch t.kv.next() {
	case commitLost:
		return nil, rpctypes.ErrLeaderChanged
	case commitAmbiguous:
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
		return nil, rpctypes.ErrTimeout
	}
	return t.Txn.Commit()
}

// hubctl's apply and delete ride out an etcd failover (issue 9: during the chaos test, applies against a live hub
// failed with "etcdserver: leader changed"): failed reads and writes are retried, and a write whose outcome etcd did not
// report is told apart by reading back — so the reported action is what happened, not "unchanged" for a write that
// landed.
func TestApplyAndDeleteRideOutEtcdFailover(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	kv := &failingKV{KV: s.cli.KV}
	s.cli.KV = kv
	objs := []*fedgatepb.Object{route("default", "r", "a.example.com")}
	apply := func(faults ...commitFault) string {
		t.Helper()
		kv.faults = faults
		res, rev, err := s.ApplyHub(ctx, objs)
		if err != nil {
			t.Fatalf("apply with faults %v: %v", faults, err)
		}
		if rev == 0 {
			t.Fatalf("apply with faults %v: no revision", faults)
		}
		return res[0].Action
	}
	if got := apply(commitLost, commitLost); got != ActionCreated {
		t.Fatalf("apply after two failed reads: %s, want created", got)
	}
	objs = []*fedgatepb.Object{route("default", "r", "b.example.com")}
	if got := apply(commitOK, commitAmbiguous); got != ActionConfigured {
		t.Fatalf("apply whose write landed unreported: %s, want configured", got)
	}
	objs = []*fedgatepb.Object{route("default", "r", "c.example.com")}
	if got := apply(commitOK, commitLost); got != ActionConfigured {
		t.Fatalf("apply whose write was lost: %s, want configured", got)
	}
	if got := listNames(t, s, false); len(got) != 1 {
		t.Fatalf("stored after the applies: %v", got)
	}

	kv.faults = []commitFault{commitOK, commitAmbiguous}
	ref := &fedgatepb.ObjectRef{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: "default", Name: "r"}
	deleted, notFound, _, err := s.DeleteHub(ctx, []*fedgatepb.ObjectRef{ref})
	if err != nil || len(deleted) != 1 || len(notFound) != 0 {
		t.Fatalf("delete that landed unreported: deleted %v, not found %v, err %v", deleted, notFound, err)
	}

	// Anything else is not retried.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	kv.faults = nil
	if _, _, err := s.ApplyHub(cctx, objs); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a cancelled context: %v", err)
	}
}

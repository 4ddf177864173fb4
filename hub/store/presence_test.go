package store

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// presenceKeys returns the presence keys of cluster.
func presenceKeys(t *testing.T, s *Store, cluster string) []string {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), PresenceClusterPrefix(cluster), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// A presence whose lease is lost while its stream stays open — it expired during an etcd outage longer than the TTL,
// or was revoked — is taken again on a fresh lease (issue 9): the stream is still open, and nothing else would ever
// mark its cluster connected again. Close then releases the new key.
func TestPresenceLostLeaseIsTakenAgain(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	p, err := s.HoldPresence(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	keys := presenceKeys(t, s, "east")
	if len(keys) != 1 {
		t.Fatalf("presence keys after HoldPresence: %v", keys)
	}
	// What an expiry does to the lease, without waiting PresenceTTL for one.
	lost, err := strconv.ParseInt(strings.TrimPrefix(keys[0], PresenceClusterPrefix("east")), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(lost)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		k := presenceKeys(t, s, "east")
		if len(k) == 1 && k[0] != keys[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence not taken again after its lease was lost: keys %v", k)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if k := presenceKeys(t, s, "east"); len(k) != 0 {
		t.Fatalf("presence keys after Close: %v", k)
	}
}

// ClearPresence takes away what a previous process of this hub replica left, and nothing another replica holds
// (issue 10: a restarted hub showed clusters connected on its dead process's leases); with all, everything.
func TestClearPresenceTakesOnlyThisReplicasLeftovers(t *testing.T) {
	a, _ := startStore(t, t.TempDir(), Options{Replica: "hub-a"})
	ctx := context.Background()
	b := New(a.cli, Options{Replica: "hub-b", KeyEncryptionKeys: a.kek, Logger: a.log})
	// hub-a's previous process: a presence on a lease nobody keeps alive any more.
	lease, err := a.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli.Put(ctx, PresenceKey("east", "dead"), `{"since":"2030-01-01T00:00:00Z","hub":"hub-a"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	// hub-b holds west's stream; an old-format key (a bare time) stands for a stream of a hub of unknown name.
	held, err := b.HoldPresence(ctx, "west")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(ctx)
	if _, err := a.cli.Put(ctx, PresenceKey("north", "old"), "2030-01-01T00:00:00Z", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}

	n, err := a.ClearPresence(ctx, false)
	if err != nil || n != 1 {
		t.Fatalf("ClearPresence: %d keys, %v; want 1", n, err)
	}
	if k := presenceKeys(t, a, "east"); len(k) != 0 {
		t.Errorf("hub-a's leftover survived: %v", k)
	}
	if len(presenceKeys(t, a, "west")) != 1 || len(presenceKeys(t, a, "north")) != 1 {
		t.Errorf("ClearPresence of hub-a took another hub's presence: west %v, north %v", presenceKeys(t, a, "west"), presenceKeys(t, a, "north"))
	}
	if n, err := b.ClearPresence(ctx, true); err != nil || n != 2 {
		t.Fatalf("ClearPresence(all): %d keys, %v; want 2", n, err)
	}
}

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

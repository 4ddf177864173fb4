package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRotateSecrets(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	period := time.Hour
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	rotated, next, err := s.RotateSecrets(ctx, nil, period, t0)
	if err != nil || !rotated || !next.Equal(t0.Add(period)) {
		t.Fatalf("first rotation: rotated=%v next=%v err=%v", rotated, next, err)
	}
	first, err := s.ReadSecrets(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, ring := range map[string]KeyRing{"session": first.Session, "gossip": first.Gossip} {
		if len(ring.Keys) != 1 || len(ring.Keys[0].Secret) != SecretKeySize || ring.Keys[0].ID != 1 {
			t.Fatalf("%s ring after creation: %d keys", name, len(ring.Keys))
		}
	}
	if bytes.Equal(first.Session.Keys[0].Secret, first.Gossip.Keys[0].Secret) {
		t.Fatal("session and gossip keys are equal")
	}

	// Not due yet: nothing changes.
	rotated, next, err = s.RotateSecrets(ctx, nil, period, t0.Add(59*time.Minute))
	if err != nil || rotated || !next.Equal(t0.Add(period)) {
		t.Fatalf("early rotation: rotated=%v next=%v err=%v", rotated, next, err)
	}

	// Due: a new key signs, the old one stays second.
	t1 := t0.Add(period)
	if rotated, _, err = s.RotateSecrets(ctx, nil, period, t1); err != nil || !rotated {
		t.Fatalf("second rotation: rotated=%v err=%v", rotated, err)
	}
	second, _ := s.ReadSecrets(ctx, 0)
	if len(second.Session.Keys) != 2 || second.Session.Keys[0].ID != 2 ||
		!bytes.Equal(second.Session.Keys[1].Secret, first.Session.Keys[0].Secret) ||
		bytes.Equal(second.Session.Keys[0].Secret, first.Session.Keys[0].Secret) {
		t.Fatalf("after rotation: ids %d keys", len(second.Session.Keys))
	}

	// A third rotation drops the oldest: the ring never holds more than two keys.
	if _, _, err = s.RotateSecrets(ctx, nil, period, t1.Add(period)); err != nil {
		t.Fatal(err)
	}
	third, _ := s.ReadSecrets(ctx, 0)
	if len(third.Session.Keys) != 2 || third.Session.Keys[0].ID != 3 || !bytes.Equal(third.Session.Keys[1].Secret, second.Session.Keys[0].Secret) {
		t.Fatalf("after third rotation: %d keys, newest id %d", len(third.Session.Keys), third.Session.Keys[0].ID)
	}
}

func TestRotateSecretsGuarded(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	// A guard that does not hold (a deposed leader): nothing is written.
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(LeaderPrefix+"/gone"), "=", 12345)}
	if _, _, err := s.RotateSecrets(ctx, guard, time.Hour, time.Now()); !errors.Is(err, ErrKeysRaced) {
		t.Fatalf("err = %v, want ErrKeysRaced", err)
	}
	got, err := s.ReadSecrets(ctx, 0)
	if err != nil || len(got.Session.Keys) != 0 || len(got.Gossip.Keys) != 0 {
		t.Fatalf("keys written without leadership: %v", err)
	}
	if _, _, err := s.RotateSecrets(ctx, nil, 0, time.Now()); err == nil {
		t.Fatal("zero period accepted")
	}
}

func TestGossipAddressReachesInputs(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:15001", GossipAddress: "127.0.0.1:17001"}); err != nil {
		t.Fatal(err)
	}
	in, err := s.ReadInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci := in.Clusters["east"]; ci == nil || ci.GossipAddress != "127.0.0.1:17001" {
		t.Fatalf("cluster inputs: %+v", in.Clusters["east"])
	}
	// A changed gossip address alone rewrites the record (the compiler reads it).
	rec, err := s.UpsertCluster(ctx, ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:15001", GossipAddress: "127.0.0.1:17009"})
	if err != nil || rec.GossipAddress != "127.0.0.1:17009" {
		t.Fatalf("upsert: %+v %v", rec, err)
	}
}

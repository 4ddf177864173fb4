package controller

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/store"
)

func readConfig(t *testing.T, st *store.Store, cluster string) *spokeconfig.SpokeConfig {
	t.Helper()
	g, _, err := st.ReadGraph(context.Background(), cluster)
	if err != nil || g == nil {
		t.Fatalf("graph of %s: %v %v", cluster, g, err)
	}
	sc, err := spokeconfig.Decode(g.Config)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// Every projection carries the same session keys and the gossip key, with the other clusters' gossip addresses as
// peers; a rotation puts a new signing key in front of the previous one in every projection.
func TestKeysReachEveryProjectionAndRotate(t *testing.T) {
	st := startStore(t)
	ctx := context.Background()
	c := New(st, Config{Logger: quiet(), KeyRotation: time.Second})
	for _, cl := range []struct{ name, ew, gossip string }{
		{"east", "127.0.0.1:15001", "127.0.0.1:17001"},
		{"west", "127.0.0.1:15002", "127.0.0.1:17002"},
		{"north", "127.0.0.1:15003", ""},
	} {
		if _, err := st.UpsertCluster(ctx, store.ClusterRecord{Name: cl.name, EastWestAddress: cl.ew, GossipAddress: cl.gossip}); err != nil {
			t.Fatal(err)
		}
	}
	// Watch east's graph before the controller starts, so every write it makes is seen.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	watch := st.Client().Watch(wctx, store.GraphKey("east"))
	run(t, c)

	var first *spokeconfig.SpokeConfig
	for first == nil || len(first.SessionKeys) == 0 {
		select {
		case wr := <-watch:
			if wr.Err() != nil {
				t.Fatal(wr.Err())
			}
			first = readConfig(t, st, "east")
		case <-wctx.Done():
			t.Fatal("no graph with keys for east")
		}
	}
	if len(first.SessionKeys) != 1 || len(first.SessionKeys[0].Secret) != store.SecretKeySize {
		t.Fatalf("east session keys: %d", len(first.SessionKeys))
	}
	if first.Gossip == nil || len(first.Gossip.Key) != store.SecretKeySize || len(first.Gossip.Peers) != 1 || first.Gossip.Peers[0] != "127.0.0.1:17002" {
		t.Fatalf("east gossip: peers %v", first.Gossip)
	}
	west := readConfig(t, st, "west")
	if !bytes.Equal(west.SessionKeys[0].Secret, first.SessionKeys[0].Secret) || !bytes.Equal(west.Gossip.Key, first.Gossip.Key) {
		t.Fatal("east and west projections carry different keys")
	}
	if len(west.Gossip.Peers) != 1 || west.Gossip.Peers[0] != "127.0.0.1:17001" {
		t.Fatalf("west gossip peers %v", west.Gossip.Peers)
	}

	// The rotation period is 1s: the next write to east's graph carries a new signing key, the old one second.
	for {
		select {
		case wr := <-watch:
			if wr.Err() != nil {
				t.Fatal(wr.Err())
			}
			sc := readConfig(t, st, "east")
			if len(sc.SessionKeys) < 2 {
				continue
			}
			if sc.SessionKeys[0].ID == first.SessionKeys[0].ID || !bytes.Equal(sc.SessionKeys[1].Secret, first.SessionKeys[0].Secret) {
				t.Fatalf("after rotation: ids %d,%d", sc.SessionKeys[0].ID, sc.SessionKeys[1].ID)
			}
			if bytes.Equal(sc.Gossip.Key, first.Gossip.Key) {
				t.Fatal("gossip key did not rotate")
			}
			return
		case <-wctx.Done():
			t.Fatal("no rotation reached east's graph")
		}
	}
}

func TestProjectionSecretsOrder(t *testing.T) {
	s := store.Secrets{
		Session: store.KeyRing{Keys: []store.SecretKey{{ID: 7, Secret: []byte("new")}, {ID: 6, Secret: []byte("old")}}},
		Gossip:  store.KeyRing{Keys: []store.SecretKey{{ID: 3, Secret: []byte("g-new")}, {ID: 2, Secret: []byte("g-old")}}},
	}
	ps := projectionSecrets(s)
	if len(ps.SessionKeys) != 2 || ps.SessionKeys[0].ID != 7 || string(ps.GossipKey) != "g-new" {
		t.Fatalf("projection secrets %+v", ps)
	}
	if empty := projectionSecrets(store.Secrets{}); len(empty.SessionKeys) != 0 || empty.GossipKey != nil {
		t.Fatal("empty rings produced keys")
	}
}

package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClusterRecord is what the hub knows of a cluster apart from its objects.
type ClusterRecord struct {
	Name            string `json:"name"`
	EastWestAddress string `json:"eastWestAddress,omitempty"`
	// GossipAddress is host:port of the spoke's memberlist listener, from its Hello; empty when it does not gossip.
	GossipAddress string            `json:"gossipAddress,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	AgentVersion  string            `json:"agentVersion,omitempty"`
	// GatewayAddresses are the IPs or hostnames the cluster's gateway ports are reachable at, from its Hello (the
	// spoke's --gateway-address); the hub-cluster mirror reports them in hub Gateways' status.addresses.
	GatewayAddresses []string `json:"gatewayAddresses,omitempty"`
	// JoinedAt is when the hub first heard of the cluster; kept across reconnects.
	JoinedAt time.Time `json:"joinedAt"`
	// LastSeen is when the cluster last said hello or disconnected.
	LastSeen time.Time `json:"lastSeen"`
}

// UpsertCluster records a cluster's hello. JoinedAt is kept from an existing record, and so are its addresses (each
// kind: east-west, gossip, gateway) when the hello names none: a stream that does not say where the cluster listens (a second reporter, a tool) never blanks
// the address other spokes reach it at. The record is only rewritten
// when a field the compiler reads changed or LastSeen is older than a minute: every write under clusters/ triggers a
// compile, and a flapping spoke should not make the hub recompile on every reconnect.
func (s *Store) UpsertCluster(ctx context.Context, rec ClusterRecord) (ClusterRecord, error) {
	if err := CheckSegment("cluster", rec.Name, false); err != nil {
		return rec, err
	}
	key := ClusterKey(rec.Name)
	now := s.now().UTC().Truncate(time.Second)
	for attempt := 0; attempt < 10; attempt++ {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return rec, fmt.Errorf("read cluster %s: %w", rec.Name, err)
		}
		next := rec
		next.JoinedAt, next.LastSeen = now, now
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			var old ClusterRecord
			if err := json.Unmarshal(resp.Kvs[0].Value, &old); err == nil {
				if !old.JoinedAt.IsZero() {
					next.JoinedAt = old.JoinedAt
				}
				if next.EastWestAddress == "" {
					next.EastWestAddress = old.EastWestAddress
				}
				if next.GossipAddress == "" {
					next.GossipAddress = old.GossipAddress
				}
				if len(next.GatewayAddresses) == 0 {
					next.GatewayAddresses = old.GatewayAddresses
				}
				if old.EastWestAddress == next.EastWestAddress && old.GossipAddress == next.GossipAddress && old.AgentVersion == next.AgentVersion &&
					maps.Equal(old.Labels, next.Labels) && slices.Equal(old.GatewayAddresses, next.GatewayAddresses) && now.Sub(old.LastSeen) < time.Minute {
					return old, nil
				}
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		v, err := json.Marshal(next)
		if err != nil {
			return rec, err
		}
		tr, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(v))).Commit()
		if err != nil {
			return rec, fmt.Errorf("store cluster %s: %w", rec.Name, err)
		}
		if tr.Succeeded {
			return next, nil
		}
	}
	return rec, errors.New("store cluster: too many concurrent updates")
}

// TouchCluster sets a cluster's LastSeen to now (on disconnect). A missing record is left missing.
func (s *Store) TouchCluster(ctx context.Context, cluster string) error {
	key := ClusterKey(cluster)
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	var rec ClusterRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return fmt.Errorf("cluster record %s: %w", cluster, err)
	}
	rec.LastSeen = s.now().UTC().Truncate(time.Second)
	v, _ := json.Marshal(rec)
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	return err
}

// Presence is a held presence key. Close releases it.
type Presence struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lease clientv3.LeaseID // the lease holding the key now; a lost lease is replaced
}

// PresenceTTL is how long a cluster stays "connected" after its hub vanishes without revoking the lease.
const PresenceTTL = 15 * time.Second

// HoldPresence puts a presence key of its own under presence/<cluster>/ on a fresh lease and keeps it until Close.
// Every stream has its own key, so closing one stream of a cluster never marks the cluster disconnected while another
// of its streams is open. A lease lost while the stream stays open — it expired while etcd was unreachable for longer
// than PresenceTTL, or it was revoked — is replaced by a fresh one and key, retried until Close: the cluster is still
// connected, and nothing else would ever say so again.
func (s *Store) HoldPresence(ctx context.Context, cluster string) (*Presence, error) {
	// The key is held until Close, not until ctx ends: kctx bounds the keepalives.
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	lease, ka, err := s.takePresence(ctx, kctx, cluster)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &Presence{cli: s.cli, lease: lease, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			for range ka { // drain responses so the client does not log "channel full"
			}
			// The channel closes when Close cancels kctx, or when the lease is gone.
			if kctx.Err() != nil {
				return
			}
			s.log.Warn("presence lease lost while the stream is open; taking a new one", "cluster", cluster, "lease", fmt.Sprintf("%x", int64(p.current())))
			for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
				l, k, err := s.takePresence(kctx, kctx, cluster)
				if err == nil {
					p.mu.Lock()
					p.lease, ka = l, k
					p.mu.Unlock()
					break
				}
				if kctx.Err() != nil {
					return
				}
				s.log.Warn("taking presence again", "cluster", cluster, "err", err, "retryIn", delay)
				select {
				case <-kctx.Done():
					return
				case <-time.After(delay):
				}
			}
		}
	}()
	return p, nil
}

// takePresence grants a lease and puts a presence key on it (under ctx), and keeps the lease alive until keep ends or
// the lease is lost, when the returned channel closes.
func (s *Store) takePresence(ctx, keep context.Context, cluster string) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	lease, err := s.cli.Grant(ctx, int64(PresenceTTL/time.Second))
	if err != nil {
		return 0, nil, fmt.Errorf("grant presence lease for %s: %w", cluster, err)
	}
	v, _ := json.Marshal(presenceValue{Since: s.now().UTC().Truncate(time.Second), Hub: s.replica})
	if _, err := s.cli.Put(ctx, PresenceKey(cluster, fmt.Sprintf("%x", int64(lease.ID))), string(v), clientv3.WithLease(lease.ID)); err != nil {
		_, _ = s.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return 0, nil, fmt.Errorf("put presence of %s: %w", cluster, err)
	}
	ka, err := s.cli.KeepAlive(keep, lease.ID)
	if err != nil {
		_, _ = s.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return 0, nil, fmt.Errorf("keep presence lease of %s alive: %w", cluster, err)
	}
	return lease.ID, ka, nil
}

// presenceValue is the value of a presence key. Keys written before it was JSON hold a bare RFC 3339 time.
type presenceValue struct {
	Since time.Time `json:"since"`
	// Hub is the replica (Options.Replica) whose stream the key stands for.
	Hub string `json:"hub,omitempty"`
}

// ClearPresence deletes the presence keys a previous process of this hub replica left: a hub that died without
// closing its streams leaves their keys on leases etcd keeps for up to PresenceTTL — and an etcd that restarts with
// the hub (the embedded one) renews every lease's TTL — so its clusters would show as connected to a hub that no
// longer has their streams. Call it before serving streams. With all, every presence key goes: right only when no
// other hub replica can be holding streams on this etcd (the embedded one, which no other hub reaches). It returns
// how many keys it deleted.
func (s *Store) ClearPresence(ctx context.Context, all bool) (int, error) {
	if !all && s.replica == "" {
		return 0, nil
	}
	resp, err := s.cli.Get(ctx, PresencePrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read presence: %w", err)
	}
	var ops []clientv3.Op
	for _, kv := range resp.Kvs {
		var v presenceValue
		ours := json.Unmarshal(kv.Value, &v) == nil && v.Hub == s.replica
		if all || ours {
			// A stream opened since has a key of its own (named after its own lease), never this one.
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	for start := 0; start < len(ops); start += s.maxOps {
		end := min(start+s.maxOps, len(ops))
		if _, err := s.cli.Txn(ctx).Then(ops[start:end]...).Commit(); err != nil {
			return start, fmt.Errorf("clear presence: %w", err)
		}
	}
	return len(ops), nil
}

func (p *Presence) current() clientv3.LeaseID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lease
}

// Close revokes the lease, deleting this stream's presence key.
func (p *Presence) Close(ctx context.Context) error {
	p.cancel()
	<-p.done
	_, err := p.cli.Revoke(ctx, p.current())
	return err
}

// SyncState is the hub's record of what it sent a cluster and what the cluster answered.
type SyncState struct {
	SentRevision   int64  `json:"sentRevision,omitempty"`
	SentHash       string `json:"sentHash,omitempty"`
	AckedRevision  int64  `json:"ackedRevision,omitempty"`
	AckedHash      string `json:"ackedHash,omitempty"`
	NackedRevision int64  `json:"nackedRevision,omitempty"`
	LastNackError  string `json:"lastNackError,omitempty"`
	// ProjectionError is why the compile at ProjectionRevision gave the cluster no new config (its projection failed
	// or was too large to send or store); the spoke keeps serving its last one. Cleared by the next compile that
	// projects the cluster.
	ProjectionError    string    `json:"projectionError,omitempty"`
	ProjectionRevision int64     `json:"projectionRevision,omitempty"`
	UpdatedAt          time.Time `json:"updatedAt"`
}

// UpdateSyncState applies fn to cluster's sync state with compare-and-swap, so concurrent streams of one cluster never
// lose each other's updates.
func (s *Store) UpdateSyncState(ctx context.Context, cluster string, fn func(*SyncState)) (SyncState, error) {
	key := SyncStateKey(cluster)
	for attempt := 0; attempt < 10; attempt++ {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return SyncState{}, fmt.Errorf("read sync state of %s: %w", cluster, err)
		}
		var st SyncState
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
				s.log.Warn("replacing malformed sync state", "cluster", cluster, "err", err)
				st = SyncState{}
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		fn(&st)
		st.UpdatedAt = s.now().UTC()
		v, _ := json.Marshal(st)
		tr, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(v))).Commit()
		if err != nil {
			return SyncState{}, fmt.Errorf("store sync state of %s: %w", cluster, err)
		}
		if tr.Succeeded {
			return st, nil
		}
	}
	return SyncState{}, errors.New("store sync state: too many concurrent updates")
}

// ClusterStatus joins everything the store knows about one cluster, for ListClusters.
type ClusterStatus struct {
	Record          ClusterRecord
	Connected       bool
	Sync            SyncState
	ReportedObjects int64
}

// Clusters returns every cluster with a record, sorted by name, read at one revision.
func (s *Store) Clusters(ctx context.Context) ([]ClusterStatus, error) {
	resp, err := s.cli.Get(ctx, ClustersPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	rev := resp.Header.Revision
	presence, err := s.cli.Get(ctx, PresencePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("list presence: %w", err)
	}
	connected := map[string]bool{}
	for _, kv := range presence.Kvs {
		cluster, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), PresencePrefix), "/")
		connected[cluster] = true
	}
	syncs, err := s.cli.Get(ctx, SyncStatePrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("list sync state: %w", err)
	}
	syncByName := map[string]SyncState{}
	for _, kv := range syncs.Kvs {
		var st SyncState
		if json.Unmarshal(kv.Value, &st) == nil {
			syncByName[strings.TrimPrefix(string(kv.Key), SyncStatePrefix)] = st
		}
	}
	out := make([]ClusterStatus, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec ClusterRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			s.log.Warn("skipping malformed cluster record", "key", string(kv.Key), "err", err)
			continue
		}
		n, err := s.ReportCount(ctx, rec.Name, rev)
		if err != nil {
			return nil, fmt.Errorf("count report of %s: %w", rec.Name, err)
		}
		out = append(out, ClusterStatus{Record: rec, Connected: connected[rec.Name], Sync: syncByName[rec.Name], ReportedObjects: n})
	}
	return out, nil
}

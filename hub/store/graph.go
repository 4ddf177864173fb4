package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/compiler"
)

// GraphRecord is one cluster's projected SpokeConfig as stored under graph/<cluster> (with Config sealed; see
// storedGraph): what ReadGraph and DecodeGraph return, opened.
type GraphRecord struct {
	// Revision is the graph revision of Config: the input revision of the compile that last changed this cluster's
	// projection. A compile that leaves the projection unchanged leaves the record (and the revision) alone, so
	// spokes are not sent identical configs under new revision numbers.
	Revision int64 `json:"revision"`
	// Hash is spokeconfig.Hash(Config), the hash spokes ACK.
	Hash string `json:"hash"`
	// ContentHash is the hash of the config encoded with Revision 0: what decides whether a new compile changed it.
	ContentHash string `json:"contentHash"`
	// Config is the canonical JSON encoding of spokeconfig.SpokeConfig (already compact, so storing it inside this
	// record keeps its bytes and Hash valid).
	Config json.RawMessage `json:"config"`
}

// storedGraph is what etcd holds under graph/<cluster>: GraphRecord with Config sealed (it carries session, gossip and
// TLS keys), bound to the key. Config in clear is what hubs wrote before sealing: still read, and re-sealed by the
// next WriteGraphs.
type storedGraph struct {
	Revision     int64           `json:"revision"`
	Hash         string          `json:"hash"`
	ContentHash  string          `json:"contentHash"`
	Config       json.RawMessage `json:"config,omitempty"`
	SealedConfig *sealedRing     `json:"sealedConfig,omitempty"`
}

// sealedBy names the key-encryption key the record is sealed with ("" in clear).
func (g *storedGraph) sealedBy() string {
	if g.SealedConfig == nil {
		return ""
	}
	return g.SealedConfig.KeyID
}

// sealGraph is the value to store under key for rec.
func (s *Store) sealGraph(key string, rec GraphRecord) ([]byte, error) {
	if s.kek == nil {
		return nil, fmt.Errorf("graph %s: %w", key, errNoKeyEncryptionKeys)
	}
	sealed, err := s.kek.seal(key, rec.Config)
	if err != nil {
		return nil, err
	}
	return json.Marshal(storedGraph{Revision: rec.Revision, Hash: rec.Hash, ContentHash: rec.ContentHash, SealedConfig: &sealed})
}

// DecodeGraph reads the value stored under a graph key (GraphKey), opening its config. Errors never quote the value.
func (s *Store) DecodeGraph(key string, v []byte) (*GraphRecord, error) {
	var st storedGraph
	if err := json.Unmarshal(v, &st); err != nil {
		return nil, fmt.Errorf("graph %s: malformed", key)
	}
	rec := &GraphRecord{Revision: st.Revision, Hash: st.Hash, ContentHash: st.ContentHash, Config: st.Config}
	if st.SealedConfig != nil {
		if s.kek == nil {
			return nil, fmt.Errorf("graph %s: %w", key, errNoKeyEncryptionKeys)
		}
		plain, err := s.kek.open(key, *st.SealedConfig)
		if err != nil {
			return nil, err
		}
		rec.Config = plain
	}
	if len(rec.Config) == 0 {
		return nil, fmt.Errorf("graph %s: no config", key)
	}
	return rec, nil
}

// Projection is one cluster's compile output for WriteGraphs: its config, or the error that kept the compile from
// projecting it.
type Projection struct {
	Config *spokeconfig.SpokeConfig
	Err    error
}

// ErrProjectionTooLarge is a projection that cannot be sent (spokeconfig.MaxUpdateBytes) or stored (etcd's request
// limit). It is the cluster's alone: the others get their graphs, and the cluster keeps serving its last config.
var ErrProjectionTooLarge = errors.New("projection too large")

// GraphWrite is what WriteGraphs did.
type GraphWrite struct {
	// Changed: the clusters whose graph was written.
	Changed []string
	// Failed: the clusters whose projection failed or was too large, with the reason; each keeps its stored graph.
	Failed map[string]error
	// Revisions: each cluster's graph revision after the write (rev when written, the stored one's when its content
	// did not change); failed clusters are absent.
	Revisions map[string]int64
}

// WriteGraphs stores each cluster's projection whose content changed since the stored one, stamped with revision
// rev, and deletes the graphs of clusters absent from projections. A cluster whose projection failed (Err) or is too
// large to send or store keeps its stored graph and is returned in Failed, with the reason; no cluster's failure
// holds up another's graph. Every write is guarded by guard (the compile leader's election key), so a deposed leader
// cannot overwrite a newer graph.
func (s *Store) WriteGraphs(ctx context.Context, guard []clientv3.Cmp, rev int64, projections map[string]Projection) (GraphWrite, error) {
	var changed []string
	var failed map[string]error
	revisions := make(map[string]int64, len(projections))
	cur, err := s.cli.Get(ctx, GraphPrefix, clientv3.WithPrefix())
	if err != nil {
		return GraphWrite{}, fmt.Errorf("read graphs: %w", err)
	}
	if s.kek == nil {
		return GraphWrite{}, fmt.Errorf("write graphs: %w", errNoKeyEncryptionKeys)
	}
	stored := make(map[string]storedGraph, len(cur.Kvs))
	values := make(map[string][]byte, len(cur.Kvs))
	var b batch
	for _, kv := range cur.Kvs {
		cluster := strings.TrimPrefix(string(kv.Key), GraphPrefix)
		if _, ok := projections[cluster]; !ok {
			b.del(string(kv.Key))
			continue
		}
		var rec storedGraph
		if err := json.Unmarshal(kv.Value, &rec); err == nil {
			stored[cluster], values[cluster] = rec, kv.Value
		}
	}
	names := make([]string, 0, len(projections))
	for name := range projections {
		names = append(names, name)
	}
	sort.Strings(names)
	failed = map[string]error{}
	for _, name := range names {
		if err := CheckSegment("cluster", name, false); err != nil {
			return GraphWrite{}, err
		}
		p := projections[name]
		if p.Err != nil {
			failed[name] = p.Err
			continue
		}
		c := *p.Config // shallow copy: the compiler's output is not ours to mutate
		c.Revision = 0
		_, contentHash, err := spokeconfig.Encode(&c)
		if err != nil {
			failed[name] = fmt.Errorf("encode graph of %s: %w", name, err)
			continue
		}
		if old, ok := stored[name]; ok && old.ContentHash == contentHash {
			if old.sealedBy() == s.kek.ID() {
				revisions[name] = old.Revision
				continue
			}
			// In clear (a hub before sealing) or sealed with another key-encryption key: the same record, re-sealed
			// with the sealing key, so the spoke is sent nothing new. One this hub cannot open is written anew below.
			if v, err := s.resealGraph(GraphKey(name), values[name]); err == nil {
				b.put(GraphKey(name), v)
				revisions[name] = old.Revision
				continue
			}
		}
		c.Revision = rev
		js, hash, err := spokeconfig.Encode(&c)
		if err != nil {
			failed[name] = fmt.Errorf("encode graph of %s: %w", name, err)
			continue
		}
		// The update message carries the config, its hash and revision: 1 KiB covers that envelope.
		if n := len(js) + 1<<10; n > spokeconfig.MaxUpdateBytes {
			failed[name] = fmt.Errorf("%w: the config of %d bytes exceeds the %d-byte limit of a config update", ErrProjectionTooLarge, len(js), spokeconfig.MaxUpdateBytes)
			continue
		}
		v, err := s.sealGraph(GraphKey(name), GraphRecord{Revision: rev, Hash: hash, ContentHash: contentHash, Config: js})
		if err != nil {
			return GraphWrite{}, err
		}
		if n := len(GraphKey(name)) + len(v); n > s.maxBytes-64<<10 {
			failed[name] = fmt.Errorf("%w: the graph record of %d bytes exceeds etcd's request limit of %d bytes", ErrProjectionTooLarge, n, s.maxBytes)
			continue
		}
		b.put(GraphKey(name), v)
		changed = append(changed, name)
		revisions[name] = rev
	}
	_, ok, err := s.commit(ctx, guard, &b)
	if err != nil {
		return GraphWrite{}, fmt.Errorf("write graphs: %w", err)
	}
	if !ok {
		return GraphWrite{}, ErrNotLeader
	}
	return GraphWrite{Changed: changed, Failed: failed, Revisions: revisions}, nil
}

// RecordProjectionErrors makes every cluster's sync state name the error of its latest projection at rev (failed),
// or none: a cluster whose projection failed shows why in `hubctl get clusters`, and the error clears once a compile
// projects it again. Only sync states that change are written.
func (s *Store) RecordProjectionErrors(ctx context.Context, rev int64, clusters []string, failed map[string]error) error {
	cur, err := s.cli.Get(ctx, SyncStatePrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read sync states: %w", err)
	}
	recorded := map[string]string{}
	for _, kv := range cur.Kvs {
		var st SyncState
		if json.Unmarshal(kv.Value, &st) == nil {
			recorded[strings.TrimPrefix(string(kv.Key), SyncStatePrefix)] = st.ProjectionError
		}
	}
	for _, name := range clusters {
		want := ""
		if err := failed[name]; err != nil {
			want = err.Error()
		}
		if recorded[name] == want {
			continue
		}
		if _, err := s.UpdateSyncState(ctx, name, func(st *SyncState) {
			st.ProjectionError, st.ProjectionRevision = want, 0
			if want != "" {
				st.ProjectionRevision = rev
			}
		}); err != nil {
			return err
		}
	}
	return nil
}

// ErrNotLeader is returned by guarded writes when the guard (leadership) no longer holds.
var ErrNotLeader = errors.New("no longer the compile leader")

// ReadGraph returns cluster's stored graph (nil when none), the key's mod revision and the store revision of the read;
// a watch from headerRev+1 sees every later change.
func (s *Store) ReadGraph(ctx context.Context, cluster string) (rec *GraphRecord, headerRev int64, err error) {
	resp, err := s.cli.Get(ctx, GraphKey(cluster))
	if err != nil {
		return nil, 0, fmt.Errorf("read graph of %s: %w", cluster, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	r, err := s.DecodeGraph(GraphKey(cluster), resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, fmt.Errorf("graph of %s: %w", cluster, err)
	}
	return r, resp.Header.Revision, nil
}

// resealGraph is the stored graph value v sealed with the sealing key, its revision and hashes unchanged.
func (s *Store) resealGraph(key string, v []byte) ([]byte, error) {
	rec, err := s.DecodeGraph(key, v)
	if err != nil {
		return nil, err
	}
	return s.sealGraph(key, *rec)
}

// WriteStatuses makes the status/ prefix equal to statuses (writing only changed values), guarded like WriteGraphs.
// When stamp is set, it is called with each status and the stored value of its key (nil when there is none) before
// the status is encoded, and may fill in what depends on the stored one.
func (s *Store) WriteStatuses(ctx context.Context, guard []clientv3.Cmp, statuses []compiler.ObjectStatus, stamp func(prev []byte, next *compiler.ObjectStatus)) (int, error) {
	cur, err := s.cli.Get(ctx, StatusPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read statuses: %w", err)
	}
	have := make(map[string][]byte, len(cur.Kvs))
	for _, kv := range cur.Kvs {
		have[string(kv.Key)] = kv.Value
	}
	want := make(map[string][]byte, len(statuses))
	for i := range statuses {
		r := statuses[i].Ref
		if CheckRef(r.Kind, r.Namespace, r.Name) != nil || (r.Cluster != "" && CheckSegment("cluster", r.Cluster, false) != nil) {
			s.log.Warn("skipping status with malformed ref", "ref", r)
			continue
		}
		key := StatusKey(r.Cluster, r.Kind, r.Namespace, r.Name)
		if stamp != nil {
			stamp(have[key], &statuses[i])
		}
		v, err := json.Marshal(&statuses[i])
		if err != nil {
			return 0, fmt.Errorf("encode status of %s: %w", r.Name, err)
		}
		want[key] = v
	}
	var b batch
	for _, kv := range cur.Kvs {
		if _, ok := want[string(kv.Key)]; !ok {
			b.del(string(kv.Key))
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := have[k]; !ok || !bytes.Equal(v, want[k]) {
			b.put(k, want[k])
		}
	}
	_, ok, err := s.commit(ctx, guard, &b)
	if err != nil {
		return 0, fmt.Errorf("write statuses: %w", err)
	}
	if !ok {
		return 0, ErrNotLeader
	}
	return b.len(), nil
}

// Statuses returns every compiled status keyed by StatusKey, read at rev (0: latest).
func (s *Store) Statuses(ctx context.Context, rev int64) (map[string][]byte, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, StatusPrefix, opts...)
	if err != nil {
		return nil, fmt.Errorf("read statuses: %w", err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

// ReadInputs reads everything the compiler needs at one etcd revision: the hub prefix is read first and its revision
// pins the reads of clusters/ and reports/ (clientv3.WithRev), so the snapshot is consistent even while spokes write.
// Objects that fail to decode are skipped and logged: they were checked on the way in, so this only happens after a
// schema change, and one bad object must not stop every cluster from getting a graph.
func (s *Store) ReadInputs(ctx context.Context) (*compiler.Inputs, error) {
	for attempt := 0; ; attempt++ {
		in, err := s.readInputs(ctx)
		// A compaction between the first and the pinned reads: read again at a newer revision.
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 3 {
			continue
		}
		return in, err
	}
}

func (s *Store) readInputs(ctx context.Context) (*compiler.Inputs, error) {
	hub, err := s.cli.Get(ctx, HubPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read hub objects: %w", err)
	}
	rev := hub.Header.Revision
	clusters, err := s.cli.Get(ctx, ClustersPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("read clusters: %w", err)
	}
	reports, err := s.cli.Get(ctx, ReportsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("read reports: %w", err)
	}
	revoked, err := s.cli.Get(ctx, RevokedPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	in := &compiler.Inputs{Revision: rev, Clusters: map[string]*compiler.ClusterInputs{}}
	for _, kv := range hub.Kvs {
		o, err := s.decodeHubKV(string(kv.Key), kv.Value)
		if err == nil {
			err = in.Hub.AddObject(o)
		}
		if err != nil {
			s.log.Warn("compile input skipped", "key", string(kv.Key), "err", err)
		}
	}
	for _, kv := range clusters.Kvs {
		var rec ClusterRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.Name == "" {
			s.log.Warn("compile input skipped", "key", string(kv.Key), "err", err)
			continue
		}
		in.Clusters[rec.Name] = &compiler.ClusterInputs{EastWestAddress: rec.EastWestAddress, GossipAddress: rec.GossipAddress}
	}
	for _, kv := range reports.Kvs {
		cluster, o, err := decodeReportKV(string(kv.Key), kv.Value)
		if err == nil {
			ci := in.Clusters[cluster]
			if ci == nil {
				// Reports without a record (record deleted by an operator): still compiled, without an east-west address.
				ci = &compiler.ClusterInputs{}
				in.Clusters[cluster] = ci
			}
			err = ci.Resources.AddObject(o)
		}
		if err != nil {
			s.log.Warn("compile input skipped", "key", string(kv.Key), "err", err)
		}
	}
	// Revocations of clusters in the snapshot only: a cluster that is gone is no member, so spokes refuse it anyway.
	for _, kv := range revoked.Kvs {
		var rec struct {
			Cluster string `json:"cluster"`
		}
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			s.log.Warn("compile input skipped", "key", string(kv.Key), "err", err)
			continue
		}
		if ci := in.Clusters[rec.Cluster]; ci != nil {
			ci.RevokedSerials = append(ci.RevokedSerials, strings.TrimPrefix(string(kv.Key), RevokedPrefix))
		}
	}
	return in, nil
}

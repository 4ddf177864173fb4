package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Options tune a Store to the etcd it talks to.
type Options struct {
	// MaxTxnOps is the server's --max-txn-ops (DefaultMaxTxnOps for an external etcd unless it was raised).
	MaxTxnOps int
	// MaxRequestBytes is the server's --max-request-bytes.
	MaxRequestBytes int
	// KeyEncryptionKeys seal the session and gossip key rings in etcd; without them the rings can be neither read nor
	// written.
	KeyEncryptionKeys *KeyEncryptionKeys
	Logger            *slog.Logger
	// Replica names this hub replica in the presence keys it holds, so that a restarted replica can clear what its
	// previous process left (ClearPresence). The same replica restarted must give the same name; replicas sharing an
	// etcd must give different ones. Empty: presence is not attributed, and only ClearPresence(all) clears it.
	Replica string
}

// Store is typed access to the fedgate key space. It is safe for concurrent use.
type Store struct {
	cli      *clientv3.Client
	maxOps   int
	maxBytes int
	kek      *KeyEncryptionKeys
	log      *slog.Logger
	now      func() time.Time
	replica  string
}

// New wraps an etcd client.
func New(cli *clientv3.Client, o Options) *Store {
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Store{cli: cli, maxOps: o.MaxTxnOps, maxBytes: o.MaxRequestBytes, kek: o.KeyEncryptionKeys, log: o.Logger, now: time.Now, replica: o.Replica}
}

// Client is the underlying etcd client (watches, leases, elections).
func (s *Store) Client() *clientv3.Client { return s.cli }

// ErrTooLarge is returned when a write that must be atomic does not fit in one etcd transaction.
var ErrTooLarge = errors.New("too large for one etcd transaction")

// Apply actions, as kubectl names them.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
)

// ApplyResult is the outcome for one object of ApplyHub.
type ApplyResult struct {
	Ref    *fedgatepb.ObjectRef
	Action string
}

// ApplyHub stores objects applied at the hub (hubctl), all in one transaction or none. The caller validates them
// first. An object mirrored from the hub cluster refuses the whole request (ErrMirrored). The hub keeps their uid, creationTimestamp and generation as an API server would (stampMetadata). Objects
// whose stored JSON would not change are left untouched (no new revision, no recompile).
func (s *Store) ApplyHub(ctx context.Context, objs []*fedgatepb.Object) ([]ApplyResult, int64, error) {
	return s.applyHub(ctx, objs, true)
}

// ApplyMirrored stores objects mirrored from the hub cluster: their metadata (generation, creationTimestamp) is the
// hub cluster API server's and is kept as it is, so statuses written back carry that server's generation. The mirror
// stores everything it sees on every pass, so its writes need not be atomic as a whole: they are committed in chunks
// that fit etcd's limits (MaxTxnOps objects, MaxRequestBytes), each chunk atomic, and any number of objects fits.
func (s *Store) ApplyMirrored(ctx context.Context, objs []*fedgatepb.Object) ([]ApplyResult, int64, error) {
	return s.applyHub(ctx, objs, false)
}

// span is a range [start, end) of a slice.
type span struct{ start, end int }

// chunks splits n items into spans of at most s.maxOps items and, by size(i), of at most the request limit less
// headroom for a guard and the request envelope (an item larger than that gets a span of its own, where the write
// fails or reports it too large).
func (s *Store) chunks(n int, size func(i int) int) []span {
	var out []span
	start, bytes := 0, 0
	for i := 0; i < n; i++ {
		if i > start && (i-start >= s.maxOps || bytes+size(i) > s.maxBytes-64<<10) {
			out = append(out, span{start, i})
			start, bytes = i, 0
		}
		bytes += size(i)
	}
	if n > start {
		out = append(out, span{start, n})
	}
	return out
}

// applyHub validates every object, then writes them: hubctl's apply (stamp) in one transaction or not at all, the
// mirror's in chunks.
func (s *Store) applyHub(ctx context.Context, objs []*fedgatepb.Object, stamp bool) ([]ApplyResult, int64, error) {
	keys := make([]string, len(objs))
	seen := make(map[string]int, len(objs))
	for i, o := range objs {
		if err := checkObject(o); err != nil {
			return nil, 0, fmt.Errorf("objects[%d]: %w", i, err)
		}
		keys[i] = HubKey(o.Kind, o.Namespace, o.Name)
		if j, dup := seen[keys[i]]; dup {
			return nil, 0, fmt.Errorf("objects[%d]: %s is also objects[%d]", i, resources.Describe(o.Kind, o.Namespace, o.Name), j)
		}
		seen[keys[i]] = i
	}
	spans := []span{{0, len(objs)}}
	if !stamp {
		spans = s.chunks(len(objs), func(i int) int { return len(keys[i]) + len(objs[i].Json) })
	} else if len(objs) > s.maxOps {
		return nil, 0, fmt.Errorf("apply of %d objects: %w (etcd allows %d operations per transaction, --etcd-max-txn-ops)", len(objs), ErrTooLarge, s.maxOps)
	}
	results := make([]ApplyResult, 0, len(objs))
	var rev int64
	for _, sp := range spans {
		r, rv, err := s.applyChunk(ctx, objs[sp.start:sp.end], keys[sp.start:sp.end], sp.start, stamp)
		if err != nil {
			return nil, 0, err
		}
		results, rev = append(results, r...), max(rev, rv)
	}
	return results, rev, nil
}

// applyChunk writes objs (objects[offset:] of the request) in one transaction, or nothing.
func (s *Store) applyChunk(ctx context.Context, objs []*fedgatepb.Object, keys []string, offset int, stamp bool) ([]ApplyResult, int64, error) {
	// Optimistic concurrency: read, decide, then write only if none of the keys moved in between. A concurrent apply
	// of the same object makes us re-read instead of reporting a wrong action.
	//
	// While etcd fails over (a leader election, a member gone) both steps are retried. A write that failed that way
	// may have committed: the next read tells, and when every key holds what it wrote, its results stand.
	var f failover
	var unsure *ambiguousPut
	for attempt := 0; ; attempt++ {
		reads := make([]clientv3.Op, len(keys))
		for i, k := range keys {
			reads[i] = clientv3.OpGet(k)
		}
		rr, err := s.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			if f.retry(ctx, err) {
				attempt--
				continue
			}
			return nil, 0, fmt.Errorf("read hub objects: %w", err)
		}
		if rev, ok := unsure.landed(rr); ok {
			return unsure.results, rev, nil
		}
		unsure = nil
		results := make([]ApplyResult, len(objs))
		var cmps []clientv3.Cmp
		var puts []clientv3.Op
		size := 0
		for i, o := range objs {
			kvs := rr.Responses[i].GetResponseRange().Kvs
			ref := &fedgatepb.ObjectRef{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}
			var prev []byte // the stored object's JSON, opened when its kind is sealed
			if len(kvs) > 0 {
				if prev, err = s.openHub(keys[i], kvs[0].Value); err != nil {
					return nil, 0, fmt.Errorf("objects[%d]: %s: %w", offset+i, resources.Describe(o.Kind, o.Namespace, o.Name), err)
				}
			}
			if stamp && len(kvs) > 0 && Mirrored(prev) {
				return nil, 0, mirroredError(offset+i, "objects", o.Kind, o.Namespace, o.Name)
			}
			value := o.Json
			if stamp {
				if value, err = stampMetadata(prev, o.Json, s.now()); err != nil {
					return nil, 0, fmt.Errorf("objects[%d]: %s: %w", offset+i, resources.Describe(o.Kind, o.Namespace, o.Name), err)
				}
			}
			switch {
			case len(kvs) == 0:
				results[i] = ApplyResult{Ref: ref, Action: ActionCreated}
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", 0))
			case bytes.Equal(prev, value):
				results[i] = ApplyResult{Ref: ref, Action: ActionUnchanged}
				continue
			default:
				results[i] = ApplyResult{Ref: ref, Action: ActionConfigured}
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys[i]), "=", kvs[0].ModRevision))
			}
			if value, err = s.sealHub(keys[i], value); err != nil {
				return nil, 0, fmt.Errorf("objects[%d]: %s: %w", offset+i, resources.Describe(o.Kind, o.Namespace, o.Name), err)
			}
			puts = append(puts, clientv3.OpPut(keys[i], string(value)))
			size += len(keys[i]) + len(value)
		}
		if len(puts) == 0 {
			return results, rr.Header.Revision, nil
		}
		if size > s.maxBytes-64<<10 {
			return nil, 0, fmt.Errorf("apply of %d bytes: %w (etcd allows %d bytes)", size, ErrTooLarge, s.maxBytes)
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		if err != nil {
			if f.retry(ctx, err) {
				unsure = newAmbiguousPut(results, puts)
				attempt--
				continue
			}
			return nil, 0, fmt.Errorf("store hub objects: %w", err)
		}
		if tr.Succeeded {
			return results, tr.Header.Revision, nil
		}
		if attempt >= 10 {
			return nil, 0, errors.New("store hub objects: too many concurrent changes to the same objects")
		}
	}
}

// ambiguousPut is an apply's write whose outcome etcd did not report (it failed over meanwhile).
type ambiguousPut struct {
	results []ApplyResult
	values  map[string][]byte // what the write put, by key
}

func newAmbiguousPut(results []ApplyResult, puts []clientv3.Op) *ambiguousPut {
	a := &ambiguousPut{results: results, values: make(map[string][]byte, len(puts))}
	for _, op := range puts {
		a.values[string(op.KeyBytes())] = op.ValueBytes()
	}
	return a
}

// landed reports whether a read (of every key of the apply) finds every value the write put, and at which revision
// the last of them was written: then the write committed, and its results stand.
func (a *ambiguousPut) landed(rr *clientv3.TxnResponse) (int64, bool) {
	if a == nil {
		return 0, false
	}
	found, rev := 0, int64(0)
	for _, r := range rr.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			want, ok := a.values[string(kv.Key)]
			if !ok {
				continue
			}
			if !bytes.Equal(kv.Value, want) {
				return 0, false
			}
			found, rev = found+1, max(rev, kv.ModRevision)
		}
	}
	return rev, found == len(a.values)
}

// DeleteHub removes objects applied at the hub (hubctl), in one transaction. Refs that name nothing are returned in
// notFound. An object mirrored from the hub cluster refuses the whole request (ErrMirrored).
func (s *Store) DeleteHub(ctx context.Context, refs []*fedgatepb.ObjectRef) (deleted, notFound []*fedgatepb.ObjectRef, rev int64, err error) {
	return s.deleteHub(ctx, refs, false)
}

// DeleteMirrored removes objects the hub-cluster mirror stored, once they are gone from the hub cluster: in chunks
// of at most MaxTxnOps, like ApplyMirrored.
func (s *Store) DeleteMirrored(ctx context.Context, refs []*fedgatepb.ObjectRef) (deleted, notFound []*fedgatepb.ObjectRef, rev int64, err error) {
	return s.deleteHub(ctx, refs, true)
}

// deleteHub checks every ref, then deletes: hubctl's delete in one transaction or not at all, the mirror's in chunks.
func (s *Store) deleteHub(ctx context.Context, refs []*fedgatepb.ObjectRef, mirror bool) (deleted, notFound []*fedgatepb.ObjectRef, rev int64, err error) {
	keys := make([]string, len(refs))
	for i, r := range refs {
		if err := CheckRef(r.Kind, r.Namespace, r.Name); err != nil {
			return nil, nil, 0, fmt.Errorf("refs[%d]: %w", i, err)
		}
		keys[i] = HubKey(r.Kind, r.Namespace, r.Name)
	}
	spans := []span{{0, len(refs)}}
	if mirror {
		spans = s.chunks(len(refs), func(i int) int { return len(keys[i]) })
	} else if len(refs) > s.maxOps {
		return nil, nil, 0, fmt.Errorf("delete of %d objects: %w (etcd allows %d operations per transaction, --etcd-max-txn-ops)", len(refs), ErrTooLarge, s.maxOps)
	}
	for _, sp := range spans {
		d, nf, rv, err := s.deleteChunk(ctx, refs[sp.start:sp.end], keys[sp.start:sp.end], sp.start, mirror)
		if err != nil {
			return nil, nil, 0, err
		}
		deleted, notFound, rev = append(deleted, d...), append(notFound, nf...), max(rev, rv)
	}
	return deleted, notFound, rev, nil
}

// deleteChunk deletes refs (refs[offset:] of the request) in one transaction, or nothing.
func (s *Store) deleteChunk(ctx context.Context, refs []*fedgatepb.ObjectRef, keys []string, offset int, mirror bool) (deleted, notFound []*fedgatepb.ObjectRef, rev int64, err error) {
	// hubctl's deletes read first and delete only what they read, so a mirrored object stored in between (by the
	// mirror) makes them read again and refuse, rather than delete it. While etcd fails over both steps are retried,
	// as in applyChunk: a delete whose outcome was not reported committed if none of what it read is there any more.
	var f failover
	var unsure []bool // for a delete whose outcome is unknown: which refs it found
	for attempt := 0; attempt < 10; attempt++ {
		var cmps []clientv3.Cmp
		var existed []bool
		if !mirror {
			reads := make([]clientv3.Op, len(keys))
			for i, k := range keys {
				reads[i] = clientv3.OpGet(k)
			}
			rr, err := s.cli.Txn(ctx).Then(reads...).Commit()
			if err != nil {
				if f.retry(ctx, err) {
					attempt--
					continue
				}
				return nil, nil, 0, fmt.Errorf("read hub objects: %w", err)
			}
			if unsure != nil {
				gone := true
				for i := range refs {
					gone = gone && (!unsure[i] || len(rr.Responses[i].GetResponseRange().Kvs) == 0)
				}
				if gone {
					for i, r := range refs {
						if unsure[i] {
							deleted = append(deleted, r)
						} else {
							notFound = append(notFound, r)
						}
					}
					return deleted, notFound, rr.Header.Revision, nil
				}
				unsure = nil
			}
			existed = make([]bool, len(refs))
			for i, r := range refs {
				kvs := rr.Responses[i].GetResponseRange().Kvs
				if len(kvs) == 0 {
					cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", 0))
					continue
				}
				if Mirrored(kvs[0].Value) {
					return nil, nil, 0, mirroredError(offset+i, "refs", r.Kind, r.Namespace, r.Name)
				}
				existed[i] = true
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys[i]), "=", kvs[0].ModRevision))
			}
		}
		ops := make([]clientv3.Op, len(keys))
		for i, k := range keys {
			ops[i] = clientv3.OpDelete(k)
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			if f.retry(ctx, err) {
				unsure = existed // nil for the mirror, whose deletes are simply repeated
				attempt--
				continue
			}
			return nil, nil, 0, fmt.Errorf("delete hub objects: %w", err)
		}
		if !tr.Succeeded {
			continue
		}
		for i, r := range refs {
			if tr.Responses[i].GetResponseDeleteRange().Deleted > 0 {
				deleted = append(deleted, r)
			} else {
				notFound = append(notFound, r)
			}
		}
		return deleted, notFound, tr.Header.Revision, nil
	}
	return nil, nil, 0, errors.New("delete hub objects: too many concurrent changes to the same objects")
}

// StoredObject is an object read back from the store.
type StoredObject struct {
	// Cluster that reported it; empty for hub objects.
	Cluster string
	Object  *fedgatepb.Object
}

// ListObjects returns hub objects (and, with includeReports, reported objects) of the given kinds (all when empty) in
// namespace (all when empty), read at one revision.
func (s *Store) ListObjects(ctx context.Context, kinds []string, namespace string, includeReports bool) ([]StoredObject, int64, error) {
	resp, err := s.cli.Get(ctx, HubPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list hub objects: %w", err)
	}
	rev := resp.Header.Revision
	want := func(kind, ns string) bool {
		if namespace != "" && ns != namespace {
			return false
		}
		if len(kinds) == 0 {
			return true
		}
		for _, k := range kinds {
			if k == kind {
				return true
			}
		}
		return false
	}
	var out []StoredObject
	for _, kv := range resp.Kvs {
		o, err := s.decodeHubKV(string(kv.Key), kv.Value)
		if err != nil {
			s.log.Warn("skipping malformed stored object", "key", string(kv.Key), "err", err)
			continue
		}
		if want(o.Kind, o.Namespace) {
			out = append(out, StoredObject{Object: o})
		}
	}
	if includeReports {
		rresp, err := s.cli.Get(ctx, ReportsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			return nil, 0, fmt.Errorf("list reported objects: %w", err)
		}
		for _, kv := range rresp.Kvs {
			cluster, o, err := decodeReportKV(string(kv.Key), kv.Value)
			if err != nil {
				s.log.Warn("skipping malformed stored report", "key", string(kv.Key), "err", err)
				continue
			}
			if want(o.Kind, o.Namespace) {
				out = append(out, StoredObject{Cluster: cluster, Object: o})
			}
		}
	}
	return out, rev, nil
}

// checkObject refuses objects whose identity cannot be a key. (Content is validated by hub/validation.)
func checkObject(o *fedgatepb.Object) error {
	if o == nil {
		return errors.New("object: Required value")
	}
	if err := CheckRef(o.Kind, o.Namespace, o.Name); err != nil {
		return err
	}
	if len(o.Json) == 0 {
		return fmt.Errorf("%s: json: Required value", resources.Describe(o.Kind, o.Namespace, o.Name))
	}
	return nil
}

// CheckRef refuses an object identity that cannot be stored: a missing or key-breaking kind, namespace or name, or a
// namespace on a cluster-scoped kind. Errors name the object and field.
func CheckRef(kind, namespace, name string) error {
	desc := resources.Describe(kind, namespace, name)
	if err := CheckSegment("kind", kind, false); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if err := CheckSegment("metadata.namespace", namespace, !resources.Namespaced(kind)); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if !resources.Namespaced(kind) && namespace != "" {
		return fmt.Errorf("%s: metadata.namespace: Invalid value: %q: %s is cluster-scoped", desc, namespace, kind)
	}
	if err := CheckSegment("metadata.name", name, false); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	return nil
}

// decodeObjectKV rebuilds a wire object from a key under prefix and its Kubernetes JSON value.
func decodeObjectKV(key, prefix string, value []byte) (*fedgatepb.Object, error) {
	kind, ns, name, err := objectKeyParts(strings.TrimPrefix(key, prefix))
	if err != nil {
		return nil, err
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(value, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return &fedgatepb.Object{ApiVersion: head.APIVersion, Kind: kind, Namespace: ns, Name: name, Json: value}, nil
}

// decodeHubKV is decodeObjectKV for a key under HubPrefix, opening a sealed value.
func (s *Store) decodeHubKV(key string, value []byte) (*fedgatepb.Object, error) {
	plain, err := s.openHub(key, value)
	if err != nil {
		return nil, err
	}
	return decodeObjectKV(key, HubPrefix, plain)
}

func decodeReportKV(key string, value []byte) (string, *fedgatepb.Object, error) {
	tail := strings.TrimPrefix(key, ReportsPrefix)
	cluster, rest, ok := strings.Cut(tail, "/")
	if !ok || cluster == "" {
		return "", nil, fmt.Errorf("malformed report key %q", key)
	}
	o, err := decodeObjectKV(rest, "", value)
	return cluster, o, err
}

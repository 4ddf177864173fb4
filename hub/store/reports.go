package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

// ReplaceReport makes the stored report of cluster equal to snapshot: new and changed objects are written, objects
// missing from the snapshot are deleted, identical ones are left alone (so an unchanged resync costs no revision and
// no recompile). When the diff fits one transaction it is applied atomically, guarded against a concurrent writer of
// the same cluster's report; a larger diff is chunked, and the compile may briefly see a partly replaced report.
// The caller has decoded every object already: nothing here judges content, except that a Secret must come without
// its data (checkReportedSecret) and a ConfigMap with its ca.crt alone (checkReportedConfigMap; ErrInvalidObject).
func (s *Store) ReplaceReport(ctx context.Context, cluster string, snapshot []*fedgatepb.Object) (int64, error) {
	if err := CheckSegment("cluster", cluster, false); err != nil {
		return 0, err
	}
	want := make(map[string][]byte, len(snapshot))
	for i, o := range snapshot {
		if err := checkObject(o); err != nil {
			return 0, fmt.Errorf("snapshot.objects[%d]: %w", i, err)
		}
		if err := checkReportedSecret(o); err != nil {
			return 0, fmt.Errorf("snapshot.objects[%d]: %w", i, err)
		}
		if err := checkReportedConfigMap(o); err != nil {
			return 0, fmt.Errorf("snapshot.objects[%d]: %w", i, err)
		}
		want[ReportKey(cluster, o.Kind, o.Namespace, o.Name)] = o.Json
	}
	for attempt := 0; attempt < 10; attempt++ {
		prefix := ReportClusterPrefix(cluster)
		cur, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return 0, fmt.Errorf("read report of %s: %w", cluster, err)
		}
		have := make(map[string][]byte, len(cur.Kvs))
		var b batch
		for _, kv := range cur.Kvs {
			have[string(kv.Key)] = kv.Value
			if _, ok := want[string(kv.Key)]; !ok {
				b.del(string(kv.Key))
			}
		}
		for _, o := range snapshot {
			k := ReportKey(cluster, o.Kind, o.Namespace, o.Name)
			if v, ok := have[k]; !ok || !bytes.Equal(v, o.Json) {
				b.put(k, o.Json)
			}
		}
		if b.len() == 0 {
			return cur.Header.Revision, nil
		}
		var guard []clientv3.Cmp
		if b.len() <= s.maxOps {
			guard = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(prefix).WithPrefix(), "<", cur.Header.Revision+1)}
		}
		rev, ok, err := s.commit(ctx, guard, &b)
		if err != nil {
			return 0, fmt.Errorf("store report of %s: %w", cluster, err)
		}
		if ok {
			return rev, nil
		}
	}
	return 0, errors.New("store report: too many concurrent changes to the same cluster's report")
}

// ApplyReportDelta upserts and deletes objects of cluster's report, atomically when it fits one transaction.
func (s *Store) ApplyReportDelta(ctx context.Context, cluster string, upserts []*fedgatepb.Object, deletes []*fedgatepb.ObjectRef) (int64, error) {
	if err := CheckSegment("cluster", cluster, false); err != nil {
		return 0, err
	}
	var b batch
	for i, r := range deletes {
		if err := CheckRef(r.Kind, r.Namespace, r.Name); err != nil {
			return 0, fmt.Errorf("delta.deletes[%d]: %w", i, err)
		}
		b.del(ReportKey(cluster, r.Kind, r.Namespace, r.Name))
	}
	// Upserts after deletes: a delta that deletes and re-adds an object keeps it.
	for i, o := range upserts {
		if err := checkObject(o); err != nil {
			return 0, fmt.Errorf("delta.upserts[%d]: %w", i, err)
		}
		if err := checkReportedSecret(o); err != nil {
			return 0, fmt.Errorf("delta.upserts[%d]: %w", i, err)
		}
		if err := checkReportedConfigMap(o); err != nil {
			return 0, fmt.Errorf("delta.upserts[%d]: %w", i, err)
		}
		b.put(ReportKey(cluster, o.Kind, o.Namespace, o.Name), o.Json)
	}
	if b.len() == 0 {
		return 0, nil
	}
	rev, _, err := s.commit(ctx, nil, &b)
	if err != nil {
		return 0, fmt.Errorf("store report delta of %s: %w", cluster, err)
	}
	return rev, nil
}

// ReportCount returns how many objects cluster has reported.
func (s *Store) ReportCount(ctx context.Context, cluster string, rev int64) (int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, ReportClusterPrefix(cluster), opts...)
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// Report returns cluster's stored report (for tests and diagnostics).
func (s *Store) Report(ctx context.Context, cluster string) ([]*fedgatepb.Object, error) {
	resp, err := s.cli.Get(ctx, ReportClusterPrefix(cluster), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]*fedgatepb.Object, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		_, o, err := decodeReportKV(string(kv.Key), kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// batch collects writes that need not be atomic as a whole and commits them in as few transactions as etcd's limits
// allow.
type batch struct {
	ops   []clientv3.Op
	sizes []int
}

func (b *batch) put(key string, value []byte) {
	b.ops = append(b.ops, clientv3.OpPut(key, string(value)))
	b.sizes = append(b.sizes, len(key)+len(value)+16)
}

func (b *batch) del(key string) {
	b.ops = append(b.ops, clientv3.OpDelete(key))
	b.sizes = append(b.sizes, len(key)+16)
}

func (b *batch) len() int { return len(b.ops) }

// commit writes the batch, every chunk guarded by guard (for example "this replica still holds the leader key").
// ok is false when a guard failed; chunks committed before it stay committed, which callers accept because they
// only use commit for data that the next successful write replaces whole. rev is the revision of the last chunk.
func (s *Store) commit(ctx context.Context, guard []clientv3.Cmp, b *batch) (rev int64, ok bool, err error) {
	if b.len() == 0 {
		return 0, true, nil
	}
	for _, sp := range s.chunks(b.len(), func(i int) int { return b.sizes[i] }) {
		tr, err := s.cli.Txn(ctx).If(guard...).Then(b.ops[sp.start:sp.end]...).Commit()
		if err != nil {
			return 0, false, fmt.Errorf("etcd txn of %d ops: %w", sp.end-sp.start, err)
		}
		rev, ok = tr.Header.Revision, tr.Succeeded
		if !ok {
			return rev, false, nil
		}
	}
	return rev, ok, nil
}

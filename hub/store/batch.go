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
	// Leave headroom for the guard and the request envelope.
	maxOps := s.maxOps
	maxBytes := s.maxBytes - 64<<10
	start, size := 0, 0
	flush := func(end int) error {
		tr, err := s.cli.Txn(ctx).If(guard...).Then(b.ops[start:end]...).Commit()
		if err != nil {
			return fmt.Errorf("etcd txn of %d ops: %w", end-start, err)
		}
		rev = tr.Header.Revision
		ok = tr.Succeeded
		start, size = end, 0
		return nil
	}
	for i := range b.ops {
		if i > start && (i-start >= maxOps || size+b.sizes[i] > maxBytes) {
			if err := flush(i); err != nil {
				return 0, false, err
			}
			if !ok {
				return rev, false, nil
			}
		}
		size += b.sizes[i]
	}
	if err := flush(len(b.ops)); err != nil {
		return 0, false, err
	}
	return rev, ok, nil
}

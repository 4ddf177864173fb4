package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// CAKey holds the public half of the CA every hub replica sharing this etcd signs with. The first replica to start
// records its own; a later one with another CA refuses to start (hub/server), so replicas never hand out
// certificates the others reject.
const CAKey = Prefix + "ca"

// CARecord is the stored CA. It holds public certificates only: the key stays in each replica's files.
type CARecord struct {
	// Active is the pin (identity.CAHash) of the CA that signs.
	Active string `json:"active"`
	// Pins are the pins of every CA in Bundle, active first.
	Pins []string `json:"pins"`
	// Bundle is the CA certificates in PEM, active first (the old ones stay during a rotation).
	Bundle string `json:"bundle"`
	// RecordedAt is when a replica wrote this record.
	RecordedAt time.Time `json:"recordedAt"`
}

// ClaimCA stores rec as the hub CA unless a record is already there, in one transaction (create if absent). It returns
// the record stored afterwards, its mod revision (for ReplaceCA) and whether this call wrote it.
func (s *Store) ClaimCA(ctx context.Context, rec CARecord) (stored CARecord, modRev int64, created bool, err error) {
	if rec.Active == "" || rec.Bundle == "" {
		return CARecord{}, 0, false, errors.New("CA record: active pin and bundle are required")
	}
	if rec.RecordedAt.IsZero() {
		rec.RecordedAt = s.now().UTC().Truncate(time.Second)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return CARecord{}, 0, false, err
	}
	tr, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(CAKey), "=", 0)).
		Then(clientv3.OpPut(CAKey, string(v))).
		Else(clientv3.OpGet(CAKey)).
		Commit()
	if err != nil {
		return CARecord{}, 0, false, fmt.Errorf("record the hub CA: %w", err)
	}
	if tr.Succeeded {
		return rec, tr.Header.Revision, true, nil
	}
	kvs := tr.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		// Deleted between the compare and the read: cannot happen within one transaction; say so if it ever does.
		return CARecord{}, 0, false, errors.New("record the hub CA: record vanished during the transaction")
	}
	if err := json.Unmarshal(kvs[0].Value, &stored); err != nil {
		return CARecord{}, 0, false, fmt.Errorf("stored hub CA record %s is malformed: %w", CAKey, err)
	}
	return stored, kvs[0].ModRevision, false, nil
}

// ReplaceCA replaces the stored CA record with rec if it is still at modRev (a replica that rotated the CA records the
// new bundle). It reports false, writing nothing, when the record changed since.
func (s *Store) ReplaceCA(ctx context.Context, rec CARecord, modRev int64) (bool, error) {
	if rec.RecordedAt.IsZero() {
		rec.RecordedAt = s.now().UTC().Truncate(time.Second)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	tr, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(CAKey), "=", modRev)).
		Then(clientv3.OpPut(CAKey, string(v))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("record the rotated hub CA: %w", err)
	}
	return tr.Succeeded, nil
}

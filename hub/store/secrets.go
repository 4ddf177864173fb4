package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Secret keys the hub generates and hands to every spoke: the HMAC keys that authenticate session-persistence tokens
// and the key that encrypts gossip among spokes. They live in etcd (keys/session, keys/gossip) so every hub replica
// hands out the same keys and a restarted hub keeps honouring the sessions its spokes minted.
//
// Rotation: the newest key signs; the previous one stays valid (verifies) for one more period, so a token minted just
// before a rotation survives it. Each ring therefore holds at most two keys, newest first. Key material is never
// logged: KeyRing has no String method that would print it, and no function here logs a ring.

// Key names under KeysPrefix.
const (
	KeysPrefix     = Prefix + "keys/"
	SessionKeysKey = KeysPrefix + "session"
	GossipKeysKey  = KeysPrefix + "gossip"
)

// SecretKeySize is the size of every generated key: 32 bytes (HMAC-SHA256, AES-256-GCM for memberlist).
const SecretKeySize = 32

// SecretKey is one generated key.
type SecretKey struct {
	// ID distinguishes keys in tokens (a byte, so it wraps; the two live keys always differ).
	ID uint8 `json:"id"`
	// Secret is the key material, SecretKeySize bytes (base64 in JSON).
	Secret []byte `json:"secret"`
	// CreatedAt is when the hub generated it; the next rotation is due one period later.
	CreatedAt time.Time `json:"createdAt"`
}

// KeyRing is a stored ring: newest (signing) key first, then the previous one.
type KeyRing struct {
	Keys []SecretKey `json:"keys"`
}

// maxRingKeys: the signing key and the one it replaced.
const maxRingKeys = 2

// Secrets are both rings, read at one revision.
type Secrets struct {
	Session KeyRing
	Gossip  KeyRing
}

// ReadSecrets reads both rings at rev (0: latest). A missing ring is empty.
func (s *Store) ReadSecrets(ctx context.Context, rev int64) (Secrets, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, KeysPrefix, opts...)
	if err != nil {
		return Secrets{}, fmt.Errorf("read keys: %w", err)
	}
	var out Secrets
	for _, kv := range resp.Kvs {
		var ring KeyRing
		if err := json.Unmarshal(kv.Value, &ring); err != nil {
			// Never log the value: it is key material.
			return Secrets{}, fmt.Errorf("key ring %s: malformed", kv.Key)
		}
		switch string(kv.Key) {
		case SessionKeysKey:
			out.Session = ring
		case GossipKeysKey:
			out.Gossip = ring
		}
	}
	return out, nil
}

// RotateSecrets makes sure both rings exist and have a key younger than period at now, generating a new key (and
// dropping all but the one it replaces) where one is due. Writes are guarded by guard (the compile leader's key) and
// by the rings' mod revisions, so two replicas never rotate twice. It returns whether anything was written and when
// the next rotation is due.
func (s *Store) RotateSecrets(ctx context.Context, guard []clientv3.Cmp, period time.Duration, now time.Time) (rotated bool, next time.Time, err error) {
	if period <= 0 {
		return false, time.Time{}, fmt.Errorf("key rotation period %v: must be positive", period)
	}
	now = now.UTC()
	resp, err := s.cli.Get(ctx, KeysPrefix, clientv3.WithPrefix())
	if err != nil {
		return false, time.Time{}, fmt.Errorf("read keys: %w", err)
	}
	type current struct {
		ring KeyRing
		mod  int64
	}
	rings := map[string]current{}
	for _, kv := range resp.Kvs {
		var ring KeyRing
		if json.Unmarshal(kv.Value, &ring) != nil {
			ring = KeyRing{} // unreadable: replaced by a fresh ring below (old tokens then read as no session)
		}
		rings[string(kv.Key)] = current{ring: ring, mod: kv.ModRevision}
	}
	cmps := append([]clientv3.Cmp(nil), guard...)
	var puts []clientv3.Op
	for _, key := range []string{SessionKeysKey, GossipKeysKey} {
		cur := rings[key]
		due := len(cur.ring.Keys) == 0 || len(cur.ring.Keys[0].Secret) != SecretKeySize || !now.Before(cur.ring.Keys[0].CreatedAt.Add(period))
		if !due {
			if n := cur.ring.Keys[0].CreatedAt.Add(period); next.IsZero() || n.Before(next) {
				next = n
			}
			continue
		}
		ring, err := rotate(cur.ring, now)
		if err != nil {
			return false, time.Time{}, err
		}
		v, err := json.Marshal(ring)
		if err != nil {
			return false, time.Time{}, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", cur.mod))
		puts = append(puts, clientv3.OpPut(key, string(v)))
		if n := now.Add(period); next.IsZero() || n.Before(next) {
			next = n
		}
	}
	if len(puts) == 0 {
		return false, next, nil
	}
	tr, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return false, time.Time{}, fmt.Errorf("store keys: %w", err)
	}
	if !tr.Succeeded {
		// Leadership lost, or another replica rotated first: either way nothing to do now; the caller re-reads.
		return false, time.Time{}, ErrKeysRaced
	}
	return true, next, nil
}

// ErrKeysRaced: the rotation's guarded write found leadership or the rings changed under it.
var ErrKeysRaced = errors.New("key rotation raced with another writer")

// rotate returns ring with a fresh key in front and at most one older key behind it.
func rotate(ring KeyRing, now time.Time) (KeyRing, error) {
	secret := make([]byte, SecretKeySize)
	if _, err := rand.Read(secret); err != nil {
		return KeyRing{}, fmt.Errorf("generate key: %w", err)
	}
	id := uint8(1)
	if len(ring.Keys) > 0 {
		id = ring.Keys[0].ID + 1
		if id == 0 {
			id = 1 // keep 0 free: a zero ID reads as "unset" in diagnostics
		}
	}
	keys := []SecretKey{{ID: id, Secret: secret, CreatedAt: now}}
	if len(ring.Keys) > 0 && len(ring.Keys[0].Secret) == SecretKeySize {
		keys = append(keys, ring.Keys[0])
	}
	return KeyRing{Keys: keys[:min(len(keys), maxRingKeys)]}, nil
}

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
//
// At rest a ring is sealed with the store's key-encryption keys (keyencryption.go): etcd holds a sealedRing, never
// the ring's JSON. A ring stored in clear, as hubs wrote them before sealing, is still read, and the compile leader
// re-seals it (RotateSecrets), as it does a ring sealed with a key-encryption key other than the sealing one.

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

// sealedRing is what etcd holds under a ring's key: the ring's JSON sealed with AES-256-GCM under the key-encryption
// key KeyID names, with the etcd key as additional data, so a value cannot be moved to the other ring's key.
type sealedRing struct {
	KeyID  string `json:"keyEncryptionKey"`
	Nonce  []byte `json:"nonce"`
	Sealed []byte `json:"sealed"`
}

// storedRing reads either form a ring's key may hold: sealed, or the ring in clear (Keys, from hubs before sealing).
type storedRing struct {
	sealedRing
	Keys json.RawMessage `json:"keys"`
}

// errMalformedRing: a ring's value is neither form. RotateSecrets replaces such a ring; readers fail on it.
var errMalformedRing = errors.New("malformed")

// openRing reads the ring stored under key and reports the id of the key-encryption key it was sealed with ("" for
// a ring in clear). Errors never carry the value: it may be key material.
func (s *Store) openRing(key string, value []byte) (KeyRing, string, error) {
	if s.kek == nil {
		return KeyRing{}, "", errNoKeyEncryptionKeys
	}
	var st storedRing
	if json.Unmarshal(value, &st) != nil || (st.KeyID == "") == (st.Keys == nil) {
		return KeyRing{}, "", fmt.Errorf("key ring %s: %w", key, errMalformedRing)
	}
	plain := value
	if st.KeyID != "" {
		var err error
		if plain, err = s.kek.open(key, st.sealedRing); err != nil {
			return KeyRing{}, "", err
		}
	}
	var ring KeyRing
	if json.Unmarshal(plain, &ring) != nil {
		return KeyRing{}, "", fmt.Errorf("key ring %s: %w", key, errMalformedRing)
	}
	return ring, st.KeyID, nil
}

// sealRing is the value to store for ring under key (the caller checked that the store has key-encryption keys).
func (s *Store) sealRing(key string, ring KeyRing) (string, error) {
	plain, err := json.Marshal(ring)
	if err != nil {
		return "", err
	}
	v, err := s.sealValue(key, plain)
	return string(v), err
}

var errNoKeyEncryptionKeys = errors.New("key rings: the store has no key-encryption keys (Options.KeyEncryptionKeys)")

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
		ring, _, err := s.openRing(string(kv.Key), kv.Value)
		if err != nil {
			return Secrets{}, err
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

// CheckSecrets reports an error when a stored ring is sealed with a key-encryption key this store lacks (wrapping
// ErrUnknownKeyEncryptionKey) or does not open: a hub must not start then, since as compile leader it could neither
// hand out the keys nor rotate them without replacing the ones its peers' spokes hold. It writes nothing.
func (s *Store) CheckSecrets(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, KeysPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	for _, kv := range resp.Kvs {
		if _, _, err := s.openRing(string(kv.Key), kv.Value); err != nil && !errors.Is(err, errMalformedRing) {
			return err
		}
	}
	return nil
}

// RotateSecrets makes sure both rings exist and have a key younger than period at now, generating a new key (and
// dropping all but the one it replaces) where one is due, and re-seals with the sealing key-encryption key a ring
// stored in clear or sealed with another key. A ring sealed with a key the store lacks is an error, never replaced.
// Writes are guarded by guard (the compile leader's key) and by the rings' mod revisions, so two replicas never
// rotate twice. It returns whether a key was rotated and when the next rotation is due.
func (s *Store) RotateSecrets(ctx context.Context, guard []clientv3.Cmp, period time.Duration, now time.Time) (rotated bool, next time.Time, err error) {
	if period <= 0 {
		return false, time.Time{}, fmt.Errorf("key rotation period %v: must be positive", period)
	}
	if s.kek == nil {
		return false, time.Time{}, errNoKeyEncryptionKeys
	}
	now = now.UTC()
	resp, err := s.cli.Get(ctx, KeysPrefix, clientv3.WithPrefix())
	if err != nil {
		return false, time.Time{}, fmt.Errorf("read keys: %w", err)
	}
	type current struct {
		ring     KeyRing
		sealedBy string
		mod      int64
	}
	rings := map[string]current{}
	for _, kv := range resp.Kvs {
		ring, sealedBy, err := s.openRing(string(kv.Key), kv.Value)
		switch {
		case errors.Is(err, errMalformedRing):
			ring = KeyRing{} // unreadable: replaced by a fresh ring below (old tokens then read as no session)
		case err != nil:
			return false, time.Time{}, err
		}
		rings[string(kv.Key)] = current{ring: ring, sealedBy: sealedBy, mod: kv.ModRevision}
	}
	cmps := append([]clientv3.Cmp(nil), guard...)
	var puts []clientv3.Op
	var resealed []string
	for _, key := range []string{SessionKeysKey, GossipKeysKey} {
		cur := rings[key]
		ring := cur.ring
		due := len(ring.Keys) == 0 || len(ring.Keys[0].Secret) != SecretKeySize || !now.Before(ring.Keys[0].CreatedAt.Add(period))
		if due {
			if ring, err = rotate(cur.ring, now); err != nil {
				return false, time.Time{}, err
			}
			rotated = true
		} else if cur.sealedBy != s.kek.ID() {
			resealed = append(resealed, key)
		} else {
			if n := ring.Keys[0].CreatedAt.Add(period); next.IsZero() || n.Before(next) {
				next = n
			}
			continue
		}
		v, err := s.sealRing(key, ring)
		if err != nil {
			return false, time.Time{}, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", cur.mod))
		puts = append(puts, clientv3.OpPut(key, v))
		if n := ring.Keys[0].CreatedAt.Add(period); next.IsZero() || n.Before(next) {
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
	for _, key := range resealed {
		s.log.Info("re-sealed key ring", "ring", key, "keyEncryptionKey", s.kek.ID())
	}
	return rotated, next, nil
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

package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testKEKLine is a key-file line for a test key made of seed repeated.
func testKEKLine(seed byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{seed}, KeyEncryptionKeySize))
}

// testKEK is a key file of the test keys for seeds, the first sealing.
func testKEK(t *testing.T, seeds ...byte) *KeyEncryptionKeys {
	t.Helper()
	var lines []string
	for _, s := range seeds {
		lines = append(lines, testKEKLine(s))
	}
	k, err := ParseKeyEncryptionKeys([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rawRings reads the values etcd holds under the keys prefix.
func rawRings(t *testing.T, s *Store) map[string][]byte {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), KeysPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// encodings are the forms a secret could take in a stored value: raw, base64 (JSON's []byte), hex.
func encodings(secret []byte) [][]byte {
	return [][]byte{secret, []byte(base64.StdEncoding.EncodeToString(secret)), []byte(base64.RawStdEncoding.EncodeToString(secret)),
		[]byte(base64.URLEncoding.EncodeToString(secret)), []byte(hex.EncodeToString(secret))}
}

// Neither etcd's values under keys/ nor its files on disk hold a byte of key material: the rings are sealed.
func TestKeyRingsHoldNoKeyMaterialAtRest(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, stop := startStore(t, dir, Options{})
	t0 := time.Now()
	for i := range 2 { // two keys in each ring: the signing one and the one it replaced
		if _, _, err := s.RotateSecrets(ctx, nil, time.Hour, t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	secrets, err := s.ReadSecrets(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var all [][]byte
	for _, ring := range []KeyRing{secrets.Session, secrets.Gossip} {
		if len(ring.Keys) != 2 {
			t.Fatalf("ring of %d keys", len(ring.Keys))
		}
		for _, k := range ring.Keys {
			all = append(all, encodings(k.Secret)...)
		}
	}
	raw := rawRings(t, s)
	if len(raw) != 2 {
		t.Fatalf("%d values under %s, want the two rings", len(raw), KeysPrefix)
	}
	for key, v := range raw {
		for _, enc := range all {
			if bytes.Contains(v, enc) {
				t.Fatalf("%s holds key material in clear", key)
			}
		}
		var sealed sealedRing
		if err := json.Unmarshal(v, &sealed); err != nil || sealed.KeyID != s.kek.ID() || len(sealed.Sealed) == 0 {
			t.Fatalf("%s is not a ring sealed with the store's key: %v", key, err)
		}
		if bytes.Contains(v, []byte(`"keys"`)) {
			t.Fatalf("%s holds a ring in clear", key)
		}
	}
	// etcd's WAL and database hold every value written: none of them held a key either.
	stop()
	err = filepath.WalkDir(filepath.Join(dir, "member"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, enc := range all {
			if bytes.Contains(b, enc) {
				t.Errorf("%s holds key material in clear", p)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A ring sealed with a key-encryption key the store lacks is refused by every reader and never replaced; one sealed
// for the other ring's key does not open there; a key file listing the old key second opens it and re-seals.
func TestKeyRingsSealedWithAnotherKey(t *testing.T) {
	ctx := context.Background()
	a, _ := startStore(t, t.TempDir(), Options{KeyEncryptionKeys: testKEK(t, 1)})
	if _, _, err := a.RotateSecrets(ctx, nil, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	want, err := a.ReadSecrets(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := rawRings(t, a)

	b := New(a.cli, Options{KeyEncryptionKeys: testKEK(t, 2), Logger: quietLogger()})
	if err := b.CheckSecrets(ctx); !errors.Is(err, ErrUnknownKeyEncryptionKey) || !strings.Contains(err.Error(), a.kek.ID()) {
		t.Fatalf("check with another key: %v, want ErrUnknownKeyEncryptionKey naming key %s", err, a.kek.ID())
	}
	if _, err := b.ReadSecrets(ctx, 0); !errors.Is(err, ErrUnknownKeyEncryptionKey) {
		t.Fatalf("read with another key: %v", err)
	}
	if _, _, err := b.RotateSecrets(ctx, nil, time.Hour, time.Now().Add(48*time.Hour)); !errors.Is(err, ErrUnknownKeyEncryptionKey) {
		t.Fatalf("rotate with another key: %v", err)
	}
	if after := rawRings(t, a); !bytes.Equal(after[SessionKeysKey], before[SessionKeysKey]) || !bytes.Equal(after[GossipKeysKey], before[GossipKeysKey]) {
		t.Fatal("a store without the key replaced the rings")
	}

	// The session ring's value under the gossip key: bound to its key, it does not open there.
	if _, err := a.cli.Put(ctx, GossipKeysKey, string(before[SessionKeysKey])); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReadSecrets(ctx, 0); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("a ring moved to the other key: %v", err)
	}
	if _, err := a.cli.Put(ctx, GossipKeysKey, string(before[GossipKeysKey])); err != nil {
		t.Fatal(err)
	}

	// Replacing the key: the new one first, the old one second. The leader re-seals without rotating.
	c := New(a.cli, Options{KeyEncryptionKeys: testKEK(t, 2, 1), Logger: quietLogger()})
	if err := c.CheckSecrets(ctx); err != nil {
		t.Fatal(err)
	}
	rotated, _, err := c.RotateSecrets(ctx, nil, time.Hour, time.Now())
	if err != nil || rotated {
		t.Fatalf("re-seal: rotated=%v err=%v", rotated, err)
	}
	for key, v := range rawRings(t, c) {
		var sealed sealedRing
		if err := json.Unmarshal(v, &sealed); err != nil || sealed.KeyID != c.kek.ID() {
			t.Fatalf("%s not re-sealed with the new key", key)
		}
	}
	got, err := b.ReadSecrets(ctx, 0) // the new key alone now opens them
	if err != nil || !bytes.Equal(got.Session.Keys[0].Secret, want.Session.Keys[0].Secret) || !bytes.Equal(got.Gossip.Keys[0].Secret, want.Gossip.Keys[0].Secret) {
		t.Fatalf("rings after re-sealing: %v", err)
	}
	if err := a.CheckSecrets(ctx); !errors.Is(err, ErrUnknownKeyEncryptionKey) {
		t.Fatalf("the retired key still opens the rings: %v", err)
	}
}

// Rings stored in clear by hubs before sealing are read as they are and re-sealed by the next leader, keys unchanged.
func TestKeyRingsInClearAreResealed(t *testing.T) {
	ctx := context.Background()
	s, _ := startStore(t, t.TempDir(), Options{})
	now := time.Now().UTC().Truncate(time.Second)
	clear := map[string]KeyRing{
		SessionKeysKey: {Keys: []SecretKey{{ID: 7, Secret: bytes.Repeat([]byte{7}, SecretKeySize), CreatedAt: now}}},
		GossipKeysKey:  {Keys: []SecretKey{{ID: 9, Secret: bytes.Repeat([]byte{9}, SecretKeySize), CreatedAt: now}}},
	}
	for key, ring := range clear {
		v, _ := json.Marshal(ring)
		if _, err := s.cli.Put(ctx, key, string(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CheckSecrets(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadSecrets(ctx, 0)
	if err != nil || got.Session.Keys[0].ID != 7 || got.Gossip.Keys[0].ID != 9 {
		t.Fatalf("rings in clear: %+v %v", got.Session.Keys, err)
	}
	rotated, next, err := s.RotateSecrets(ctx, nil, time.Hour, now.Add(time.Minute))
	if err != nil || rotated || !next.Equal(now.Add(time.Hour)) {
		t.Fatalf("re-seal: rotated=%v next=%v err=%v", rotated, next, err)
	}
	for key, v := range rawRings(t, s) {
		for _, enc := range encodings(clear[key].Keys[0].Secret) {
			if bytes.Contains(v, enc) {
				t.Fatalf("%s still in clear", key)
			}
		}
	}
	again, err := s.ReadSecrets(ctx, 0)
	if err != nil || !bytes.Equal(again.Session.Keys[0].Secret, clear[SessionKeysKey].Keys[0].Secret) ||
		!bytes.Equal(again.Gossip.Keys[0].Secret, clear[GossipKeysKey].Keys[0].Secret) || !again.Session.Keys[0].CreatedAt.Equal(now) {
		t.Fatalf("re-sealed rings differ: %v", err)
	}
	// Nothing left to re-seal: no write.
	before := rawRings(t, s)
	if _, _, err := s.RotateSecrets(ctx, nil, time.Hour, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if after := rawRings(t, s); !bytes.Equal(after[SessionKeysKey], before[SessionKeysKey]) {
		t.Fatal("a sealed ring was written again")
	}
}

func TestStoreWithoutKeyEncryptionKeysRefusesRings(t *testing.T) {
	s, _ := startStore(t, t.TempDir(), Options{})
	bare := New(s.cli, Options{Logger: quietLogger()})
	if _, _, err := bare.RotateSecrets(context.Background(), nil, time.Hour, time.Now()); err == nil {
		t.Fatal("rings written without key-encryption keys")
	}
	if len(rawRings(t, s)) != 0 {
		t.Fatal("something was written")
	}
}

func TestKeyEncryptionKeyFile(t *testing.T) {
	secret := testKEKLine(5)
	for _, tc := range []struct{ content, want string }{
		{"", "no key"},
		{"\n  \n", "no key"},
		{"not base64!\n", "line 1: not base64"},
		{testKEKLine(1) + "\n" + base64.StdEncoding.EncodeToString([]byte("short")), "line 2: 5 bytes, want 32"},
		{secret + "\n\n" + secret, "line 3: the same key as line 1"},
	} {
		_, err := ParseKeyEncryptionKeys([]byte(tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.content, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("error carries the key: %v", err)
		}
	}

	dir := filepath.Join(t.TempDir(), "new")
	path := filepath.Join(dir, "key-encryption-key")
	if _, err := LoadKeyEncryptionKeys(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	made, err := LoadOrCreateKeyEncryptionKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]fs.FileMode{dir: 0o700, path: 0o600} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode().Perm(), err, mode)
		}
	}
	again, err := LoadOrCreateKeyEncryptionKeys(path)
	if err != nil || again.ID() != made.ID() {
		t.Fatalf("second load made another key: %v", err)
	}
}

package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fedgate/fedgate/internal/atomicfile"
)

// Key-encryption keys seal the session and gossip key rings, the Secrets applied at the hub and the graph records
// (which carry keys to spokes) before they are written to etcd (AES-256-GCM), so whoever reads etcd — its data files,
// a snapshot, a backup, a client of an external cluster — finds no key material.
// They are never stored in etcd. A key file holds one or more keys, each the standard base64 of KeyEncryptionKeySize
// random bytes on a line of its own (`head -c 32 /dev/urandom | base64`): the first seals, every one opens. To replace
// a key, add the new one as a second line on every hub, then make it the first (each hub re-seals the rings with it
// when it starts), then drop the old line. Every hub sharing one etcd needs the same file.

// KeyEncryptionKeySize is the size of a key-encryption key: 32 bytes, AES-256.
const KeyEncryptionKeySize = 32

// KeyEncryptionKeys are the keys of one key file, the sealing key first.
type KeyEncryptionKeys struct {
	keys []keyEncryptionKey
}

type keyEncryptionKey struct {
	id   string
	aead cipher.AEAD
}

// ErrUnknownKeyEncryptionKey: a value is sealed with a key-encryption key the hub does not hold.
var ErrUnknownKeyEncryptionKey = errors.New("sealed with a key-encryption key this hub does not hold")

// ParseKeyEncryptionKeys reads the content of a key file. Errors name lines, never their content.
func ParseKeyEncryptionKeys(content []byte) (*KeyEncryptionKeys, error) {
	k := &KeyEncryptionKeys{}
	seen := map[string]int{}
	for i, line := range bytes.Split(content, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		raw := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
		n, err := base64.StdEncoding.Decode(raw, line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64", i+1)
		}
		if n != KeyEncryptionKeySize {
			return nil, fmt.Errorf("line %d: %d bytes, want %d", i+1, n, KeyEncryptionKeySize)
		}
		kek, err := newKeyEncryptionKey(raw[:n])
		if err != nil {
			return nil, err
		}
		if j, dup := seen[kek.id]; dup {
			return nil, fmt.Errorf("line %d: the same key as line %d", i+1, j)
		}
		seen[kek.id] = i + 1
		k.keys = append(k.keys, kek)
	}
	if len(k.keys) == 0 {
		return nil, errors.New("no key in it")
	}
	return k, nil
}

func newKeyEncryptionKey(key []byte) (keyEncryptionKey, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return keyEncryptionKey{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return keyEncryptionKey{}, err
	}
	// The id names the key in each sealed value; a hash of it says nothing about the key itself.
	sum := sha256.Sum256(append([]byte("fedgate key-encryption key id\x00"), key...))
	return keyEncryptionKey{id: hex.EncodeToString(sum[:8]), aead: aead}, nil
}

// LoadKeyEncryptionKeys reads a key file.
func LoadKeyEncryptionKeys(path string) (*KeyEncryptionKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKeyEncryptionKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateKeyEncryptionKeys reads the key file at path or, when there is none, writes one with a fresh key
// (mode 0600, in a directory made 0700). It suits a hub with its own etcd; hubs sharing one must share a file.
func LoadOrCreateKeyEncryptionKeys(path string) (*KeyEncryptionKeys, error) {
	k, err := LoadKeyEncryptionKeys(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	key := make([]byte, KeyEncryptionKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return LoadKeyEncryptionKeys(path)
}

// ID names the sealing key (a hash; safe to log).
func (k *KeyEncryptionKeys) ID() string { return k.keys[0].id }

// seal encrypts plaintext with the sealing key, bound to the etcd key it is stored under.
func (k *KeyEncryptionKeys) seal(etcdKey string, plaintext []byte) (sealedRing, error) {
	kek := k.keys[0]
	nonce := make([]byte, kek.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return sealedRing{}, err
	}
	return sealedRing{KeyID: kek.id, Nonce: nonce, Sealed: kek.aead.Seal(nil, nonce, plaintext, []byte(etcdKey))}, nil
}

// open decrypts a value sealed under etcdKey.
func (k *KeyEncryptionKeys) open(etcdKey string, s sealedRing) ([]byte, error) {
	for _, kek := range k.keys {
		if kek.id != s.KeyID {
			continue
		}
		if len(s.Nonce) != kek.aead.NonceSize() {
			return nil, fmt.Errorf("sealed value %s: malformed", etcdKey)
		}
		plain, err := kek.aead.Open(nil, s.Nonce, s.Sealed, []byte(etcdKey))
		if err != nil {
			return nil, fmt.Errorf("sealed value %s: does not open with key-encryption key %s (altered, or moved from another key)", etcdKey, s.KeyID)
		}
		return plain, nil
	}
	return nil, fmt.Errorf("sealed value %s is %w (key id %s)", etcdKey, ErrUnknownKeyEncryptionKey, s.KeyID)
}

package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/store"
)

// sharesEtcdOf points a hub at the embedded etcd of first, as a replica sharing it would be: its https endpoints, with
// first's client certificate as --etcd-ca/--etcd-cert/--etcd-key, and first's key-encryption key (made in its data
// dir, the directory holding its etcd's certificates).
func sharesEtcdOf(first *testHub) func(*Config) {
	return func(c *Config) {
		files := first.etcd.ClientFiles()
		c.EtcdEndpoints = first.etcd.Endpoints()
		c.EtcdCA, c.EtcdCert, c.EtcdKey = files.CA, files.Cert, files.Key
		c.KeyEncryptionKeyFile = filepath.Join(filepath.Dir(filepath.Dir(files.CA)), keyEncryptionKeyFile)
	}
}

// externalEtcd starts an etcd serving TLS with client-certificate auth, standing for an external cluster, and returns
// it with the files a hub needs to reach it.
func externalEtcd(t *testing.T) (*store.Embedded, store.TLSFiles) {
	t.Helper()
	e, err := store.StartEmbedded(testCtx(t), store.EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, e.ClientFiles()
}

// writeKEK writes a key file holding a fresh key and returns its path.
func writeKEK(t *testing.T) string {
	t.Helper()
	key := make([]byte, store.KeyEncryptionKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key-encryption-key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertRingsSealed fails unless etcd's values under the keys prefix are sealed and hold none of the ring's keys.
func assertRingsSealed(t *testing.T, h *Hub) {
	t.Helper()
	ctx := testCtx(t)
	secrets, err := h.Store().ReadSecrets(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets.Session.Keys) == 0 || len(secrets.Gossip.Keys) == 0 {
		t.Fatal("no key rings")
	}
	resp, err := h.Store().Client().Get(ctx, store.KeysPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		for _, k := range append(secrets.Session.Keys, secrets.Gossip.Keys...) {
			for _, enc := range []string{string(k.Secret), base64.StdEncoding.EncodeToString(k.Secret)} {
				if bytes.Contains(kv.Value, []byte(enc)) {
					t.Fatalf("%s holds key material in clear", kv.Key)
				}
			}
		}
		var sealed struct {
			KeyID string `json:"keyEncryptionKey"`
		}
		if json.Unmarshal(kv.Value, &sealed) != nil || sealed.KeyID == "" {
			t.Fatalf("%s is not sealed", kv.Key)
		}
	}
}

// A hub reaches an external etcd that serves TLS and checks client certificates with --etcd-ca, --etcd-cert and
// --etcd-key; without them, or with files that are missing or of another CA, it does not start and says why.
func TestHubOnExternalEtcdOverMutualTLS(t *testing.T) {
	e, files := externalEtcd(t)
	kek := writeKEK(t)
	external := func(c *Config) {
		c.EtcdEndpoints = e.Endpoints()
		c.EtcdCA, c.EtcdCert, c.EtcdKey = files.CA, files.Cert, files.Key
		c.KeyEncryptionKeyFile = kek
	}
	h := startHub(t, external)
	ctx := testCtx(t)
	applied, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{route("over-mtls")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Controller().WaitCompiled(ctx, applied.Revision); err != nil {
		t.Fatal(err)
	}
	assertRingsSealed(t, h.Hub)
	if h.etcd != nil {
		t.Fatal("a hub given etcd endpoints started an embedded etcd")
	}

	otherCA := t.TempDir()
	other, err := store.StartEmbedded(ctx, store.EmbeddedConfig{DataDir: otherCA})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	otherFiles := other.ClientFiles()
	missing := filepath.Join(t.TempDir(), "absent.crt")
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"no etcd TLS flags", func(c *Config) { c.EtcdCA, c.EtcdCert, c.EtcdKey = "", "", "" }, []string{"https needs etcd-ca"}},
		{"no client certificate", func(c *Config) { c.EtcdCert, c.EtcdKey = "", "" }, []string{"unreachable", "etcd-cert and etcd-key"}},
		{"a client certificate of another CA", func(c *Config) { c.EtcdCert, c.EtcdKey = otherFiles.Cert, otherFiles.Key }, []string{"unreachable"}},
		{"a missing CA file", func(c *Config) { c.EtcdCA = missing }, []string{"etcd-ca " + missing}},
		{"a missing key file", func(c *Config) { c.EtcdKey = missing }, []string{"etcd-key " + missing}},
		{"a key of another certificate", func(c *Config) { c.EtcdKey = otherFiles.Key }, []string{"etcd-cert " + files.Cert + " and etcd-key " + otherFiles.Key}},
	} {
		cfg := DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.DataDir = t.TempDir()
		external(&cfg)
		tc.mutate(&cfg)
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		h, err := Start(sctx, cfg)
		cancel()
		if err == nil {
			h.Close()
			t.Errorf("%s: the hub started", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		for _, want := range tc.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want it to name %q", tc.name, err, want)
			}
		}
	}
}

// A hub whose key-encryption key is not the one the rings in etcd are sealed with refuses to start, naming its key
// file, rather than replacing keys its spokes hold — on an external etcd shared by replicas, and on its own data dir.
func TestHubWithAnotherKeyEncryptionKeyRefuses(t *testing.T) {
	first := startHub(t)
	assertRingsSealed(t, first.Hub)
	wrong := writeKEK(t)

	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	sharesEtcdOf(first)(&cfg)
	cfg.KeyEncryptionKeyFile = wrong
	h, err := Start(testCtx(t), cfg)
	if err == nil {
		h.Close()
		t.Fatal("a replica with another key-encryption key started")
	}
	t.Logf("refused as it should be: %v", err)
	if !errors.Is(err, store.ErrUnknownKeyEncryptionKey) || !strings.Contains(err.Error(), "key-encryption-key-file "+wrong) ||
		!strings.Contains(err.Error(), "same key file") {
		t.Fatalf("refusal %v: want ErrUnknownKeyEncryptionKey naming %s and the shared file", err, wrong)
	}

	// The embedded etcd's own key file replaced under a stopped hub.
	dataDir := t.TempDir()
	own := DefaultConfig()
	own.Listen = "127.0.0.1:0"
	own.DataDir = dataDir
	h, err = Start(testCtx(t), own)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Controller().WaitCompiled(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	h.Close()
	kekPath := filepath.Join(dataDir, keyEncryptionKeyFile)
	if st, err := os.Stat(kekPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, want a file of mode 0600", kekPath, err)
	}
	b, err := os.ReadFile(wrong)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kekPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if h, err = Start(testCtx(t), own); err == nil {
		h.Close()
		t.Fatal("a hub with a replaced key-encryption key started")
	}
	if !errors.Is(err, store.ErrUnknownKeyEncryptionKey) || !strings.Contains(err.Error(), kekPath) {
		t.Fatalf("refusal %v: want ErrUnknownKeyEncryptionKey naming %s", err, kekPath)
	}
}

// A data dir from a hub before key rings were sealed (rings in clear, no etcd certificates, no key-encryption key)
// starts: the hub makes its certificates and key, hands out the same keys, and the rings are sealed in etcd.
func TestRingsInClearFromAnOlderDataDirAreSealed(t *testing.T) {
	dataDir := t.TempDir()
	ctx := testCtx(t)
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clear := map[string]store.KeyRing{}
	for i, key := range []string{store.SessionKeysKey, store.GossipKeysKey} {
		ring := store.KeyRing{Keys: []store.SecretKey{{ID: 1, Secret: bytes.Repeat([]byte{byte(i + 1)}, store.SecretKeySize), CreatedAt: time.Now().UTC()}}}
		v, _ := json.Marshal(ring)
		if _, err := cli.Put(ctx, key, string(v)); err != nil {
			t.Fatal(err)
		}
		clear[key] = ring
	}
	cli.Close()
	e.Close()
	if err := os.RemoveAll(filepath.Join(dataDir, store.EmbeddedTLSDir)); err != nil {
		t.Fatal(err)
	}

	h := startHub(t, func(c *Config) { c.DataDir = dataDir })
	waitKey(t, h.Store().Client(), store.SessionKeysKey, func(v []byte) bool { return bytes.Contains(v, []byte(`"keyEncryptionKey"`)) })
	waitKey(t, h.Store().Client(), store.GossipKeysKey, func(v []byte) bool { return bytes.Contains(v, []byte(`"keyEncryptionKey"`)) })
	assertRingsSealed(t, h.Hub)
	got, err := h.Store().ReadSecrets(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Session.Keys[0].Secret, clear[store.SessionKeysKey].Keys[0].Secret) ||
		!bytes.Equal(got.Gossip.Keys[0].Secret, clear[store.GossipKeysKey].Keys[0].Secret) {
		t.Fatal("sealing the rings changed their keys")
	}
}

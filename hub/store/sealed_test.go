package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// testKeyPEM stands in for a private key: the tests look for it in etcd's values.
const testKeyPEM = "-----BEGIN PRIVATE KEY-----\nZmVkZ2F0ZSB0ZXN0IGtleQ==\n-----END PRIVATE KEY-----\n"

func tlsSecretObject(ns, name, key string) *fedgatepb.Object {
	js, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": name, "namespace": ns},
		"type": "kubernetes.io/tls",
		"data": map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\n"), "tls.key": []byte(key)},
	})
	return &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindSecret, Namespace: ns, Name: name, Json: js}
}

// assertNothingInClear fails when any etcd value holds one of the needles, as such or base64-encoded (JSON's form of
// []byte).
func assertNothingInClear(t *testing.T, cli *clientv3.Client, needles ...[]byte) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		for _, n := range needles {
			b64, _ := json.Marshal(n)
			if bytes.Contains(kv.Value, n) || bytes.Contains(kv.Value, bytes.Trim(b64, `"`)) {
				t.Errorf("%s holds key material in clear", kv.Key)
			}
		}
	}
}

// TestHubSecretSealed: a Secret applied at the hub is stored sealed under its key, read back whole by ListObjects and
// ReadInputs, unchanged when applied again with the same content (sealing is not a change), and a sealed value moved
// to another Secret's key does not open there.
func TestHubSecretSealed(t *testing.T) {
	s, stop := startStore(t, t.TempDir(), Options{})
	defer stop()
	ctx := context.Background()
	sec := tlsSecretObject("infra", "cert", testKeyPEM)
	res, _, err := s.ApplyHub(ctx, []*fedgatepb.Object{sec})
	if err != nil || res[0].Action != ActionCreated {
		t.Fatalf("apply: %v %v", res, err)
	}
	assertNothingInClear(t, s.cli, []byte(testKeyPEM), []byte("PRIVATE KEY"))

	res, _, err = s.ApplyHub(ctx, []*fedgatepb.Object{tlsSecretObject("infra", "cert", testKeyPEM)})
	if err != nil || res[0].Action != ActionUnchanged {
		t.Fatalf("re-apply: %v %v", res, err)
	}
	objs, _, err := s.ListObjects(ctx, []string{resources.KindSecret}, "", false)
	if err != nil || len(objs) != 1 || !strings.Contains(string(objs[0].Object.Json), `"tls.key"`) {
		t.Fatalf("list: %v %v", objs, err)
	}
	in, err := s.ReadInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Hub.Secrets) != 1 || string(in.Hub.Secrets[0].Data["tls.key"]) != testKeyPEM {
		t.Fatalf("inputs: %d secrets", len(in.Hub.Secrets))
	}

	// Moved to another key, the sealed value does not open (it is bound to its key): the object is skipped.
	v, err := s.cli.Get(ctx, HubKey(resources.KindSecret, "infra", "cert"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, HubKey(resources.KindSecret, "infra", "moved"), string(v.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	if objs, _, _ := s.ListObjects(ctx, []string{resources.KindSecret}, "", false); len(objs) != 1 {
		t.Fatalf("a sealed value moved to another key was read: %d objects", len(objs))
	}
	if _, err := s.openHub(HubKey(resources.KindSecret, "infra", "moved"), v.Kvs[0].Value); err == nil || strings.Contains(err.Error(), testKeyPEM) {
		t.Fatalf("open of a moved value: %v", err)
	}
}

// TestHubSecretNeedsKeyEncryptionKeys: a store without key-encryption keys refuses to store a Secret rather than
// store it in clear.
func TestHubSecretNeedsKeyEncryptionKeys(t *testing.T) {
	a, stop := startStore(t, t.TempDir(), Options{})
	defer stop()
	s := New(a.cli, Options{Logger: quietLogger()})
	if _, _, err := s.ApplyHub(context.Background(), []*fedgatepb.Object{tlsSecretObject("infra", "cert", testKeyPEM)}); err == nil {
		t.Fatal("a Secret was stored without key-encryption keys")
	}
	assertNothingInClear(t, s.cli, []byte(testKeyPEM))
}

// TestReportedSecretWithDataRefused: a cluster reports Secrets only without their data; one with data (or
// stringData) refuses the whole report and stores nothing of it.
func TestReportedSecretWithDataRefused(t *testing.T) {
	s, stop := startStore(t, t.TempDir(), Options{})
	defer stop()
	ctx := context.Background()
	withData := tlsSecretObject("apps", "cert", testKeyPEM)
	stringData := &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindSecret, Namespace: "apps", Name: "s",
		Json: []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"apps"},"stringData":{"tls.key":"k"}}`)}
	clean := &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindSecret, Namespace: "apps", Name: "ok",
		Json: []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ok","namespace":"apps","annotations":{"fedgate.io/tls-check":"valid"}},"type":"kubernetes.io/tls"}`)}
	for _, bad := range []*fedgatepb.Object{withData, stringData} {
		if _, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{clean, bad}); !errors.Is(err, ErrInvalidObject) || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("snapshot with %s: %v", bad.Name, err)
		}
		if _, err := s.ApplyReportDelta(ctx, "east", []*fedgatepb.Object{bad}, nil); !errors.Is(err, ErrInvalidObject) {
			t.Errorf("delta with %s: %v", bad.Name, err)
		}
	}
	if objs, err := s.Report(ctx, "east"); err != nil || len(objs) != 0 {
		t.Fatalf("a refused report stored %d objects (%v)", len(objs), err)
	}
	if _, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{clean}); err != nil {
		t.Fatalf("data-free Secret: %v", err)
	}
	in, err := s.ReadInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci := in.Clusters["east"]; ci == nil || len(ci.Secrets) != 1 || ci.Secrets[0].Annotations[resources.TLSCheckAnnotation] != resources.TLSCheckValid {
		t.Fatalf("reported Secret not in the inputs: %+v", ci)
	}
}

// TestGraphRecordsSealed: graph records hold their SpokeConfig sealed — no TLS key, session key or gossip key in clear
// — and ReadGraph opens them with Hash and ContentHash as before; a record in clear (written by a hub before sealing)
// is read, and re-sealed by the next WriteGraphs without a new revision.
func TestGraphRecordsSealed(t *testing.T) {
	s, stop := startStore(t, t.TempDir(), Options{})
	defer stop()
	ctx := context.Background()
	session, gossip := bytes.Repeat([]byte{0xa5}, SecretKeySize), bytes.Repeat([]byte{0x5a}, SecretKeySize)
	cfg := &spokeconfig.SpokeConfig{
		Cluster:     "east",
		SessionKeys: []spokeconfig.SessionKey{{ID: 1, Secret: session}},
		Gossip:      &spokeconfig.Gossip{Key: gossip},
		Ports: []spokeconfig.Port{{Port: 443, Protocol: spokeconfig.ProtocolHTTPS, TLS: &spokeconfig.PortTLS{Listeners: []spokeconfig.TLSListener{{
			Hostname: "*", Certificates: []spokeconfig.Certificate{{Namespace: "infra", Name: "cert", CertPEM: []byte("-----BEGIN CERTIFICATE-----\n"), KeyPEM: []byte(testKeyPEM)}},
		}}}}},
	}
	w, err := s.WriteGraphs(ctx, nil, 7, map[string]Projection{"east": {Config: cfg}})
	if err != nil || len(w.Changed) != 1 {
		t.Fatalf("write: %+v %v", w, err)
	}
	assertNothingInClear(t, s.cli, []byte(testKeyPEM), []byte("PRIVATE KEY"), session, gossip)

	rec, _, err := s.ReadGraph(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Revision != 7 || rec.Hash != spokeconfig.Hash(rec.Config) || !bytes.Contains(rec.Config, []byte(`"keyPEM"`)) {
		t.Fatalf("read back: revision %d, hash ok %v", rec.Revision, rec.Hash == spokeconfig.Hash(rec.Config))
	}
	back, err := spokeconfig.Decode(rec.Config)
	if err != nil || string(back.Ports[0].TLS.Listeners[0].Certificates[0].KeyPEM) != testKeyPEM {
		t.Fatalf("decoded config: %v", err)
	}

	// A record in clear, as hubs before sealing wrote them: read as it is, re-sealed by the next write as it was.
	clear, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Put(ctx, GraphKey("east"), string(clear)); err != nil {
		t.Fatal(err)
	}
	if legacy, _, err := s.ReadGraph(ctx, "east"); err != nil || legacy.Hash != rec.Hash {
		t.Fatalf("clear record: %v", err)
	}
	w, err = s.WriteGraphs(ctx, nil, 9, map[string]Projection{"east": {Config: cfg}})
	if err != nil || len(w.Changed) != 0 || w.Revisions["east"] != 7 {
		t.Fatalf("re-seal: %+v %v", w, err)
	}
	assertNothingInClear(t, s.cli, []byte(testKeyPEM), session, gossip)
	if again, _, err := s.ReadGraph(ctx, "east"); err != nil || again.Revision != 7 || again.Hash != rec.Hash {
		t.Fatalf("re-sealed record: %+v %v", again, err)
	}

	// A hub whose key file lacks the record's key cannot open it: it writes the record anew, under a new revision.
	other := New(s.cli, Options{KeyEncryptionKeys: testKEK(t, 2), Logger: quietLogger()})
	if _, _, err := other.ReadGraph(ctx, "east"); !errors.Is(err, ErrUnknownKeyEncryptionKey) {
		t.Fatalf("read with another key: %v", err)
	}
	w, err = other.WriteGraphs(ctx, nil, 11, map[string]Projection{"east": {Config: cfg}})
	if err != nil || len(w.Changed) != 1 || w.Revisions["east"] != 11 {
		t.Fatalf("write over an unreadable record: %+v %v", w, err)
	}
	if got, _, err := other.ReadGraph(ctx, "east"); err != nil || got.Revision != 11 {
		t.Fatalf("rewritten record: %v", err)
	}
}

package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// TestSecretLastAppliedNotKept: a Secret applied with kubectl's last-applied-configuration annotation (which quotes
// the whole object, its data included) is stored without it, so neither hubctl's List, nor etcd, nor the stored
// object holds the key through it; List shows a Secret's allowlisted metadata and fedgate's annotations only.
func TestSecretLastAppliedNotKept(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	certPEM, keyPEM := testKeyPair(t, "shop.example.com")
	b64 := base64.StdEncoding.EncodeToString
	lastApplied, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
		"metadata":   map[string]any{"name": "shop-cert", "namespace": "infra"},
		"data":       map[string]any{"tls.crt": b64(certPEM), "tls.key": b64(keyPEM)},
		"stringData": map[string]any{"raw": string(keyPEM)},
	})
	if err != nil {
		t.Fatal(err)
	}
	secret := yamlObject(t, fmt.Sprintf(`{apiVersion: v1, kind: Secret, type: kubernetes.io/tls, data: {tls.crt: %s, tls.key: %s}, metadata: {name: shop-cert, namespace: infra, labels: {app: shop}, annotations: {%s: %q, other.example.com/note: %q, fedgate.io/owner: team-a}}}`,
		b64(certPEM), b64(keyPEM), lastAppliedAnnotation, lastApplied, string(keyPEM)))
	if _, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{secret}}); err != nil {
		t.Fatal(err)
	}

	needles := [][]byte{keyPEM, []byte(b64(keyPEM)), []byte("PRIVATE KEY"), []byte(lastAppliedAnnotation)}

	list, err := h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "secrets"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Objects) != 1 {
		t.Fatalf("listed %d Secrets", len(list.Objects))
	}
	js := list.Objects[0].Object.Json
	for _, n := range needles {
		if bytes.Contains(js, n) {
			t.Errorf("listed Secret holds %.20q: %s", n, js)
		}
	}
	var listed struct {
		Type     string `json:"type"`
		Metadata struct {
			Name, Namespace, UID string
			Labels               map[string]string
			Annotations          map[string]string
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &listed); err != nil {
		t.Fatal(err)
	}
	m := listed.Metadata
	if listed.Type != "kubernetes.io/tls" || m.Name != "shop-cert" || m.Namespace != "infra" || m.UID == "" || m.Labels["app"] != "shop" ||
		len(m.Annotations) != 1 || m.Annotations["fedgate.io/owner"] != "team-a" {
		t.Errorf("listed Secret: %s", js)
	}

	// The stored object (opened) has no last-applied-configuration; its data is intact.
	objs, _, err := h.Store().ListObjects(ctx, []string{resources.KindSecret}, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("stored %d Secrets", len(objs))
	}
	var stored struct {
		Data     map[string]string `json:"data"`
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(objs[0].Object.Json, &stored); err != nil {
		t.Fatal(err)
	}
	if _, ok := stored.Metadata.Annotations[lastAppliedAnnotation]; ok {
		t.Error("the stored Secret keeps kubectl's last-applied-configuration")
	}
	if stored.Data["tls.key"] != b64(keyPEM) {
		t.Error("the stored Secret lost its tls.key")
	}

	all, err := h.Store().Client().Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		for _, n := range needles[:3] {
			if bytes.Contains(kv.Value, n) {
				t.Errorf("etcd key %s holds key material in clear", kv.Key)
			}
		}
	}
	if strings.Contains(string(js), "managedFields") {
		t.Errorf("listed Secret: %s", js)
	}
}

// TestRedactSecretAllowlist: redaction keeps apiVersion, kind, type and the allowlisted metadata alone, whatever else
// a stored Secret carries (a mirrored one may keep kubectl's annotation, managedFields, ...).
func TestRedactSecretAllowlist(t *testing.T) {
	in := &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindSecret, Namespace: "infra", Name: "s", Json: []byte(`{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/tls",` +
		`"data":{"tls.key":"S0VZ"},"stringData":{"k":"KEY"},"extra":"KEY",` +
		`"metadata":{"name":"s","namespace":"infra","uid":"u","resourceVersion":"7","generation":2,"creationTimestamp":"2026-01-01T00:00:00Z",` +
		`"labels":{"a":"b"},"managedFields":[{"x":"KEY"}],"finalizers":["KEY"],` +
		`"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"KEY","hub.fedgate.io/origin":"kubernetes","fedgate.io/tls-check":"valid","notfedgate.io/x":"KEY"}}}`)}
	out := redactSecret(in)
	var got map[string]any
	if err := json.Unmarshal(out.Json, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": map[string]any{
		"name": "s", "namespace": "infra", "uid": "u", "resourceVersion": "7", "generation": float64(2), "creationTimestamp": "2026-01-01T00:00:00Z",
		"labels":      map[string]any{"a": "b"},
		"annotations": map[string]any{"hub.fedgate.io/origin": "kubernetes", "fedgate.io/tls-check": "valid"},
	}}
	if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
		t.Errorf("redacted:\n got %s\nwant %s", g, w)
	}
	if bytes.Contains(out.Json, []byte("KEY")) || bytes.Contains(out.Json, []byte("S0VZ")) {
		t.Errorf("redacted Secret holds data: %s", out.Json)
	}
	if out := redactSecret(&fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindSecret, Namespace: "n", Name: "x", Json: []byte("not json KEY")}); bytes.Contains(out.Json, []byte("KEY")) {
		t.Errorf("redacted unreadable Secret: %s", out.Json)
	}
}

package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
	"github.com/fedgate/fedgate/spoke/tlssecrets/tlstest"
)

func tlsSecretYAML(name string, cert, key []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: shop
  annotations:
    note: not-reported
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
`, name, base64.StdEncoding.EncodeToString(cert), base64.StdEncoding.EncodeToString(key))
}

const httpsGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: shop
spec:
  gatewayClassName: fedgate
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: shop.example.com
    tls:
      certificateRefs:
      - name: shop-cert
`

// A directory's TLS Secrets: only those a Gateway references are held (data in the store) and reported (no data);
// an edit of one reaches both; the Gateway dropping its reference drops the Secret from both.
func TestDirTLSSecrets(t *testing.T) {
	dir := t.TempDir()
	cert, key := tlstest.SelfSigned(t, "shop.example.com")
	_, otherKey := tlstest.SelfSigned(t, "other.example.com")
	writeAtomic(t, filepath.Join(dir, "gw.yaml"), httpsGateway)
	writeAtomic(t, filepath.Join(dir, "secrets.yaml"), tlsSecretYAML("shop-cert", cert, key)+"---\n"+tlsSecretYAML("unreferenced", cert, key))

	store := tlssecrets.New()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Snapshot, 16)
	done := make(chan error, 1)
	d := &Dir{Path: dir, Debounce: 20 * time.Millisecond, PollInterval: time.Hour, TLSSecrets: store}
	go func() { done <- d.Run(ctx, func(s Snapshot) { ch <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	s := next(t, ch)
	if got, want := ids(s), "Gateway/shop/edge,Secret/shop/shop-cert"; got != want {
		t.Fatalf("snapshot %s, want %s", got, want)
	}
	js := find(t, s, "Secret/shop/shop-cert")
	var reported map[string]any
	if err := json.Unmarshal([]byte(js), &reported); err != nil {
		t.Fatal(err)
	}
	if _, has := reported["data"]; has || strings.Contains(js, "not-reported") || !strings.Contains(js, `"`+resources.TLSCheckAnnotation+`":"valid"`) {
		t.Errorf("reported Secret %s", js)
	}
	if c, k, err := store.Lookup("shop", "shop-cert"); err != nil || !bytes.Equal(c, cert) || !bytes.Equal(k, key) {
		t.Errorf("store Lookup: %v", err)
	}
	if _, _, err := store.Lookup("shop", "unreferenced"); err == nil {
		t.Error("the unreferenced Secret is in the store")
	}

	// The key replaced by one that is not the certificate's: the store and the report say so.
	writeAtomic(t, filepath.Join(dir, "secrets.yaml"), tlsSecretYAML("shop-cert", cert, otherKey)+"---\n"+tlsSecretYAML("unreferenced", cert, key))
	s = next(t, ch)
	if js := find(t, s, "Secret/shop/shop-cert"); !strings.Contains(js, "private key does not match public key") {
		t.Errorf("reported Secret after the key change: %s", js)
	}
	if _, _, err := store.Lookup("shop", "shop-cert"); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("store Lookup after the key change: %v", err)
	}

	// No reference any more: neither held nor reported.
	writeAtomic(t, filepath.Join(dir, "gw.yaml"), gateway)
	s = next(t, ch)
	if strings.Contains(ids(s), "Secret/") {
		t.Errorf("snapshot %s still reports a Secret", ids(s))
	}
	if len(store.Refs()) != 0 {
		t.Errorf("store still holds %v", store.Refs())
	}
	for _, o := range s.Objects {
		if strings.Contains(string(o.Json), "PRIVATE KEY") || strings.Contains(string(o.Json), base64.StdEncoding.EncodeToString(key)[:20]) {
			t.Errorf("%s carries key material", ObjectID(o))
		}
	}
}

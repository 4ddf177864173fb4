package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fedgate/fedgate/spoke/internal/fakehub"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
	"github.com/fedgate/fedgate/spoke/tlssecrets/tlstest"
)

// fillingReader is a SecretReader that puts one Secret in the store and reports that it ran.
type fillingReader struct {
	store  *tlssecrets.Store
	secret *corev1.Secret
	ran    chan struct{}
}

func (r *fillingReader) Run(ctx context.Context) error {
	if err := r.store.Set(r.secret); err != nil {
		return err
	}
	close(r.ran)
	<-ctx.Done()
	return nil
}

func secret(cert, key []byte, rv string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cert", ResourceVersion: rv}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
}

// waitReloads waits until the proxy was reloaded want times, then checks that no further reload follows.
func waitReloads(t *testing.T, p *fakeProxy, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.reloads.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * secretReloadDelay)
	if got := p.reloads.Load(); got != want {
		t.Fatalf("proxy reloaded %d times, want %d", got, want)
	}
}

// The secret reader runs on a replica that never leads (every replica serves), and a burst of changes to a local
// TLS Secret's data reloads the proxy once; a change of its resourceVersion alone does not reload it.
func TestAgentReloadsProxyWhenALocalSecretChanges(t *testing.T) {
	h := fakehub.Start(t, "")
	p := newFakeProxy()
	cfg := testConfig(t, h.Addr, p)
	store := tlssecrets.New()
	certA, keyA := tlstest.SelfSigned(t, "a.example.com")
	certB, keyB := tlstest.SelfSigned(t, "b.example.com")
	reader := &fillingReader{store: store, secret: secret(certA, keyA, "1"), ran: make(chan struct{})}
	cfg.TLSSecrets, cfg.SecretReader = store, reader
	cfg.Elector = &stepElector{terms: make(chan context.Context), ended: make(chan struct{}, 1)} // never leads
	a, _ := runAgent(t, cfg)
	select {
	case <-reader.ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the secret reader did not run on a replica that does not lead")
	}
	if a.Leading() {
		t.Fatal("leading without a term")
	}
	waitReloads(t, p, 1) // the reader's first read

	for i := range 5 {
		c, k := certA, keyA
		if i%2 == 0 {
			c, k = certB, keyB
		}
		if err := store.Set(secret(c, k, "2")); err != nil {
			t.Fatal(err)
		}
	}
	waitReloads(t, p, 2)

	if err := store.Set(secret(certB, keyB, "3")); err != nil { // same data as the burst's last
		t.Fatal(err)
	}
	waitReloads(t, p, 2)
	store.Delete("ns", "cert")
	waitReloads(t, p, 3)
}

// Without a SecretReader, the directory source fills the agent's store: a referenced Secret is reported without its
// data and held with it.
func TestAgentDirSourceFillsTheStore(t *testing.T) {
	h := fakehub.Start(t, "")
	dir := t.TempDir()
	cert, key := tlstest.SelfSigned(t, "shop.example.com")
	yaml := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: fedgate
  listeners:
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: ns}
type: kubernetes.io/tls
data:
  tls.crt: ` + base64.StdEncoding.EncodeToString(cert) + `
  tls.key: ` + base64.StdEncoding.EncodeToString(key) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "gw.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newFakeProxy()
	cfg := testConfig(t, h.Addr, p)
	cfg.SourceDir = dir
	a, _ := runAgent(t, cfg)
	if hello := recvReport(t, h).GetHello(); hello == nil {
		t.Fatal("no hello")
	}
	snap := recvReport(t, h).GetSnapshot()
	var found bool
	for _, o := range snap.GetObjects() {
		if o.Kind == "Secret" {
			found = true
			if o.Name != "cert" || strings.Contains(string(o.Json), `"data"`) {
				t.Errorf("reported %s %s", o.Name, o.Json)
			}
		}
	}
	if !found {
		t.Errorf("snapshot %v lacks the Secret", snap)
	}
	if c, k, err := a.secrets.Lookup("ns", "cert"); err != nil || !bytes.Equal(c, cert) || !bytes.Equal(k, key) {
		t.Errorf("store Lookup: %v", err)
	}
	waitReloads(t, p, 1)
}

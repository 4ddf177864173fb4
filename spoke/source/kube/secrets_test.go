package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/source"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
	"github.com/fedgate/fedgate/spoke/tlssecrets/tlstest"
)

// requestLog records the requests made through a rest.Config.
type requestLog struct {
	mu   sync.Mutex
	urls []*url.URL
}

func (l *requestLog) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			l.mu.Lock()
			l.urls = append(l.urls, r.URL)
			l.mu.Unlock()
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

func (l *requestLog) secretRequests() []*url.URL {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*url.URL
	for _, u := range l.urls {
		if strings.Contains(u.Path, "/secrets") {
			out = append(out, u)
		}
	}
	return out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// runWithSecrets starts a SecretReader and a Source reporting its store on cfg; both stop when the test ends.
func runWithSecrets(t *testing.T, cfg *rest.Config) (*tlssecrets.Store, <-chan source.Snapshot) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := tlssecrets.New()
	reader, err := NewSecretReader(SecretReaderConfig{REST: cfg, Store: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Config{REST: cfg, Debounce: 20 * time.Millisecond, SyncTimeout: time.Minute, TLSSecrets: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	snaps := make(chan source.Snapshot, 100)
	done := make(chan error, 2)
	go func() { done <- reader.Run(ctx) }()
	go func() { done <- src.Run(ctx, func(s source.Snapshot) { snaps <- s }) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	})
	return store, snaps
}

func tlsSecret(ns, name string, cert, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{"note": "not-reported"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
	}
}

// waitStore waits until ok holds of the store.
func waitStore(t *testing.T, store *tlssecrets.Store, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		changed := store.Changed()
		if ok() {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("store: no %s; holds %v", what, store.Refs())
		}
	}
}

// The spoke reads exactly the Secrets its Gateways reference, each by name (a least-privilege user with RBACRules):
// the referenced one is held with its data and reported without it, an update reaches both, a Secret created after
// its reference is picked up, one no longer referenced is dropped, and an unreferenced Secret is never requested.
func TestReferencedTLSSecrets(t *testing.T) {
	ctx := context.Background()
	c := full.Client
	ns := full.Namespace(t)
	cert, key := tlstest.SelfSigned(t, "shop.example.com")
	_, otherKey := tlstest.SelfSigned(t, "other.example.com")
	mustCreate(t, c, tlsSecret(ns, "cert", cert, key), tlsSecret(ns, "unreferenced", cert, key))
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "fedgate",
		Listeners: []gatewayv1.Listener{{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
			TLS: &gatewayv1.ListenerTLSConfig{Mode: ptr.To(gatewayv1.TLSModeTerminate), CertificateRefs: []gatewayv1.SecretObjectReference{
				{Name: "cert"}, {Name: "later", Kind: ptr.To[gatewayv1.Kind]("Secret")},
			}}}},
	}}
	mustCreate(t, c, gw)

	var reqs requestLog
	store, snaps := runWithSecrets(t, reqs.wrap(grant(t, full, "tls-"+ns, RBACRules())))
	secretIn := func(s source.Snapshot, name string) string {
		if o := inScope(s, ns, "-")["Secret/"+ns+"/"+name]; o != nil {
			return string(o.Json)
		}
		return ""
	}
	// The first snapshot already has it: the source waited for the reader.
	s := waitFor(t, snaps, "the first snapshot", func(source.Snapshot) bool { return true })
	js := secretIn(s, "cert")
	if js == "" {
		t.Fatalf("first snapshot lacks the referenced Secret: %v", keys(inScope(s, ns, "-")))
	}
	var reported map[string]any
	if err := json.Unmarshal([]byte(js), &reported); err != nil {
		t.Fatal(err)
	}
	if _, has := reported["data"]; has || strings.Contains(js, "not-reported") || bytes.Contains([]byte(js), []byte("PRIVATE KEY")) ||
		!strings.Contains(js, `"`+resources.TLSCheckAnnotation+`":"valid"`) || !strings.Contains(js, `"uid"`) {
		t.Errorf("reported Secret %s", js)
	}
	if secretIn(s, "unreferenced") != "" || secretIn(s, "later") != "" {
		t.Errorf("snapshot reports %v", keys(inScope(s, ns, "-")))
	}
	if c, k, err := store.Lookup(ns, "cert"); err != nil || !bytes.Equal(c, cert) || !bytes.Equal(k, key) {
		t.Errorf("store Lookup: %v", err)
	}

	// An update with a key that is not the certificate's: the store and the report's check say so.
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cert"}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Data[corev1.TLSPrivateKeyKey] = otherKey
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "the mismatched key's check", func(s source.Snapshot) bool {
		return strings.Contains(secretIn(s, "cert"), "private key does not match public key")
	})
	if _, _, err := store.Lookup(ns, "cert"); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("store Lookup after the key change: %v", err)
	}

	// A referenced Secret created later is read; the unreferenced one, updated meanwhile, still is not.
	mustCreate(t, c, tlsSecret(ns, "later", cert, key))
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "unreferenced"}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Data[corev1.TLSPrivateKeyKey] = otherKey
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "the Secret created later", func(s source.Snapshot) bool { return secretIn(s, "later") != "" })
	if _, _, err := store.Lookup(ns, "unreferenced"); !errors.Is(err, tlssecrets.ErrNotFound) {
		t.Errorf("store Lookup of the unreferenced Secret: %v", err)
	}

	// The reference to "cert" removed: dropped from the report and the store.
	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	gw.Spec.Listeners[0].TLS.CertificateRefs = gw.Spec.Listeners[0].TLS.CertificateRefs[1:]
	if err := c.Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, snaps, "the unreferenced cert gone", func(s source.Snapshot) bool { return secretIn(s, "cert") == "" })
	if secretIn(s, "later") == "" || secretIn(s, "unreferenced") != "" {
		t.Errorf("snapshot %v", keys(inScope(s, ns, "-")))
	}
	waitStore(t, store, "cert dropped", func() bool {
		_, _, err := store.Lookup(ns, "cert")
		return errors.Is(err, tlssecrets.ErrNotFound)
	})

	// Every Secret request named one referenced Secret in its namespace: no list or watch of Secrets at large.
	got := reqs.secretRequests()
	if len(got) == 0 {
		t.Fatal("no Secret requests recorded")
	}
	for _, u := range got {
		sel := u.Query().Get("fieldSelector")
		if !strings.HasPrefix(u.Path, "/api/v1/namespaces/"+ns+"/secrets") ||
			(sel != "metadata.name=cert" && sel != "metadata.name=later") {
			t.Errorf("Secret request %s", u)
		}
	}
}

// Without the secrets rule, the source fails naming it instead of reporting listeners' certificates as missing.
func TestTLSSecretsWithoutRBAC(t *testing.T) {
	ns := full.Namespace(t)
	mustCreate(t, full.Client, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "fedgate",
		Listeners: []gatewayv1.Listener{{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert"}}}}},
	}})
	var short []rbacv1.PolicyRule
	for _, r := range RBACRules() {
		r = *r.DeepCopy()
		r.Resources = slices.DeleteFunc(r.Resources, func(res string) bool { return res == "secrets" })
		if len(r.Resources) > 0 {
			short = append(short, r)
		}
	}
	cfg := grant(t, full, "nosecrets-"+ns, short)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := tlssecrets.New()
	reader, err := NewSecretReader(SecretReaderConfig{REST: cfg, Store: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Config{REST: cfg, SyncTimeout: 3 * time.Second, TLSSecrets: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Run(ctx) }()
	err = src.Run(ctx, func(source.Snapshot) { t.Error("snapshot emitted before the referenced Secrets were read") })
	if err == nil || !strings.Contains(err.Error(), "TLS Secrets") || !strings.Contains(err.Error(), "RBAC") {
		t.Errorf("Run without the secrets rule: %v", err)
	}
	cancel()
	if err := <-readerDone; err != nil {
		t.Errorf("reader Run: %v", err)
	}
}

// A cluster without the Gateway API references no Secret: the reader holds none and says it is synced.
func TestTLSSecretsWithoutGatewayAPI(t *testing.T) {
	store := tlssecrets.New()
	reader, err := NewSecretReader(SecretReaderConfig{REST: bare.Config, Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reader.Run(ctx) }()
	select {
	case <-store.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("not synced")
	}
	if len(store.Refs()) != 0 {
		t.Errorf("store holds %v", store.Refs())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

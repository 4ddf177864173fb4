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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

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
	ourClass(t)
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
	ourClass(t)
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

// ourClass makes sure the GatewayClass "fedgate", of DefaultControllerName, exists in full: the readers follow only
// the references of its Gateways.
func ourClass(t *testing.T) {
	t.Helper()
	gc := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "fedgate"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultControllerName}}
	if err := full.Client.Create(context.Background(), gc); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// A tenant's Gateway cannot make the spoke read a Secret fedgate would not use: one of another GatewayClass names a
// Secret, which is never requested, held or reported; a reference of ours to another namespace is read only while a
// ReferenceGrant there permits it (and dropped once the grant goes); a grant for another name or another namespace
// does not count.
func TestTLSSecretsOnlyOurClassesAndGrantedNamespaces(t *testing.T) {
	ourClass(t)
	ctx := context.Background()
	c := full.Client
	ns, certs := full.Namespace(t), full.Namespace(t)
	cert, key := tlstest.SelfSigned(t, "shop.example.com")
	mustCreate(t, c,
		tlsSecret(ns, "own", cert, key), tlsSecret(ns, "theirs", cert, key),
		tlsSecret(certs, "cross", cert, key), tlsSecret(certs, "victim", cert, key),
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "theirs-" + ns}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}})
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "theirs-" + ns}})
	})
	listener := func(refs ...gatewayv1.SecretObjectReference) []gatewayv1.Listener {
		return []gatewayv1.Listener{{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
			TLS: &gatewayv1.ListenerTLSConfig{Mode: ptr.To(gatewayv1.TLSModeTerminate), CertificateRefs: refs}}}
	}
	mustCreate(t, c,
		&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ours"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "fedgate",
			Listeners: listener(gatewayv1.SecretObjectReference{Name: "own"},
				gatewayv1.SecretObjectReference{Name: "cross", Namespace: ptr.To(gatewayv1.Namespace(certs))}),
		}},
		// Another controller's Gateway, naming a Secret of its own namespace and one of another (granted below).
		&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: gatewayv1.ObjectName("theirs-" + ns),
			Listeners: listener(gatewayv1.SecretObjectReference{Name: "theirs"},
				gatewayv1.SecretObjectReference{Name: "victim", Namespace: ptr.To(gatewayv1.Namespace(certs))}),
		}},
		// Grants that do not cover ours/cross: another name, another from-namespace, another kind.
		&gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: certs, Name: "other-name"}, Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: gatewayv1.Namespace(ns)}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret", Name: ptr.To[gatewayv1.ObjectName]("victim")}},
		}},
		&gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: certs, Name: "other-from"}, Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "elsewhere"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret"}},
		}},
		&gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: certs, Name: "routes"}, Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: gatewayv1.Namespace(ns)}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret"}},
		}},
	)

	var reqs requestLog
	store, snaps := runWithSecrets(t, reqs.wrap(grant(t, full, "scope-"+ns, RBACRules())))
	reported := func(s source.Snapshot) []string {
		var out []string
		for _, o := range s.Objects {
			if o.Kind == resources.KindSecret && (o.Namespace == ns || o.Namespace == certs) {
				out = append(out, o.Namespace+"/"+o.Name)
			}
		}
		slices.Sort(out)
		return out
	}
	s := waitFor(t, snaps, "the first snapshot", func(source.Snapshot) bool { return true })
	if got, want := reported(s), []string{ns + "/own"}; !slices.Equal(got, want) {
		t.Errorf("first snapshot reports Secrets %v, want %v", got, want)
	}
	// The cluster is shared with other tests: only this test's namespaces count.
	held := func() []tlssecrets.Ref {
		return slices.DeleteFunc(store.Refs(), func(r tlssecrets.Ref) bool { return r.Namespace != ns && r.Namespace != certs })
	}
	if got := held(); !slices.Equal(got, []tlssecrets.Ref{{Namespace: ns, Name: "own"}}) {
		t.Errorf("store holds %v", got)
	}

	// The grant: the cross-namespace Secret is read, held and reported.
	rg := &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: certs, Name: "gateways"}, Spec: gatewayv1beta1.ReferenceGrantSpec{
		From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: gatewayv1.Namespace(ns)}},
		To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret", Name: ptr.To[gatewayv1.ObjectName]("cross")}},
	}}
	mustCreate(t, c, rg)
	waitFor(t, snaps, "the granted Secret", func(s source.Snapshot) bool {
		want := []string{certs + "/cross", ns + "/own"}
		slices.Sort(want)
		return slices.Equal(reported(s), want)
	})
	if c, k, err := store.Lookup(certs, "cross"); err != nil || !bytes.Equal(c, cert) || !bytes.Equal(k, key) {
		t.Errorf("store Lookup of the granted Secret: %v", err)
	}

	// The grant deleted: dropped from the report and the store.
	if err := c.Delete(ctx, rg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "the Secret no longer granted gone", func(s source.Snapshot) bool {
		return slices.Equal(reported(s), []string{ns + "/own"})
	})
	waitStore(t, store, "cross dropped", func() bool {
		_, _, err := store.Lookup(certs, "cross")
		return errors.Is(err, tlssecrets.ErrNotFound)
	})
	if got := held(); !slices.Equal(got, []tlssecrets.Ref{{Namespace: ns, Name: "own"}}) {
		t.Errorf("store holds %v", got)
	}

	// Of this test's namespaces, only ours/own and, while granted, certs/cross were ever requested (other tests'
	// Gateways of the class fedgate remain in the shared cluster).
	for _, u := range reqs.secretRequests() {
		if !strings.HasPrefix(u.Path, "/api/v1/namespaces/"+ns+"/") && !strings.HasPrefix(u.Path, "/api/v1/namespaces/"+certs+"/") {
			continue
		}
		sel := u.Query().Get("fieldSelector")
		if !(strings.HasPrefix(u.Path, "/api/v1/namespaces/"+ns+"/secrets") && sel == "metadata.name=own") &&
			!(strings.HasPrefix(u.Path, "/api/v1/namespaces/"+certs+"/secrets") && sel == "metadata.name=cross") {
			t.Errorf("Secret request %s", u)
		}
	}
}

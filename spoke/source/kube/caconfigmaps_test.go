package kube

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/source"
)

func caConfigMap(ns, name, bundle string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"note": "not-reported"},
			Annotations: map[string]string{"note": "not-reported"}},
		Data: map[string]string{resources.CACertKey: bundle, "other": "not-reported"},
	}
}

// The Source reads exactly the CA ConfigMaps its Gateways' client-certificate validation references, each by name (a
// least-privilege user with RBACRules): the referenced one is reported with its ca.crt alone from the first snapshot,
// an update is followed, one created after its reference is picked up, one no longer referenced is dropped, and an
// unreferenced ConfigMap is never requested.
func TestReferencedCAConfigMaps(t *testing.T) {
	ourClass(t)
	ctx := context.Background()
	c := full.Client
	ns := full.Namespace(t)
	mustCreate(t, c, caConfigMap(ns, "ca", "BUNDLE-1"), caConfigMap(ns, "unreferenced", "BUNDLE-X"))
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "fedgate",
		Listeners:        []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
		TLS: &gatewayv1.GatewayTLSConfig{Frontend: &gatewayv1.FrontendTLSConfig{
			Default: gatewayv1.TLSConfig{Validation: &gatewayv1.FrontendTLSValidation{CACertificateRefs: []gatewayv1.ObjectReference{
				{Kind: "ConfigMap", Name: "ca"},
			}}},
			PerPort: []gatewayv1.TLSPortConfig{{Port: 8443, TLS: gatewayv1.TLSConfig{Validation: &gatewayv1.FrontendTLSValidation{
				CACertificateRefs: []gatewayv1.ObjectReference{{Kind: "ConfigMap", Name: "later"}},
			}}}},
		}},
	}}
	mustCreate(t, c, gw)

	var reqs requestLog
	cfg := reqs.wrap(grant(t, full, "ca-"+ns, RBACRules()))
	src, err := New(Config{REST: cfg, Debounce: 20 * time.Millisecond, SyncTimeout: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	snaps := make(chan source.Snapshot, 100)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx, func(s source.Snapshot) { snaps <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	cmIn := func(s source.Snapshot, name string) string {
		if o := inScope(s, ns, "-")["ConfigMap/"+ns+"/"+name]; o != nil {
			return string(o.Json)
		}
		return ""
	}

	// The first snapshot already has it, with ca.crt alone.
	s := waitFor(t, snaps, "the first snapshot", func(source.Snapshot) bool { return true })
	js := cmIn(s, "ca")
	if js == "" {
		t.Fatalf("first snapshot lacks the referenced ConfigMap: %v", keys(inScope(s, ns, "-")))
	}
	var reported corev1.ConfigMap
	if err := json.Unmarshal([]byte(js), &reported); err != nil {
		t.Fatal(err)
	}
	if len(reported.Data) != 1 || reported.Data[resources.CACertKey] != "BUNDLE-1" || strings.Contains(js, "not-reported") ||
		reported.UID == "" || reported.ResourceVersion == "" || reported.Kind != resources.KindConfigMap {
		t.Errorf("reported ConfigMap %s", js)
	}
	if cmIn(s, "unreferenced") != "" || cmIn(s, "later") != "" {
		t.Errorf("snapshot reports %v", keys(inScope(s, ns, "-")))
	}

	// An update is followed.
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ca"}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data[resources.CACertKey] = "BUNDLE-2"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "the updated bundle", func(s source.Snapshot) bool { return strings.Contains(cmIn(s, "ca"), "BUNDLE-2") })

	// A referenced ConfigMap created later is read (the per-port reference); the unreferenced one, updated meanwhile,
	// still is not.
	mustCreate(t, c, caConfigMap(ns, "later", "BUNDLE-L"))
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "unreferenced"}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data[resources.CACertKey] = "BUNDLE-Y"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, snaps, "the ConfigMap created later", func(s source.Snapshot) bool { return cmIn(s, "later") != "" })
	if cmIn(s, "unreferenced") != "" {
		t.Errorf("snapshot reports %v", keys(inScope(s, ns, "-")))
	}

	// The default's reference removed: "ca" dropped, "later" kept.
	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	gw.Spec.TLS.Frontend.Default.Validation = nil
	if err := c.Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, snaps, "the unreferenced ca gone", func(s source.Snapshot) bool { return cmIn(s, "ca") == "" })
	if cmIn(s, "later") == "" || cmIn(s, "unreferenced") != "" {
		t.Errorf("snapshot %v", keys(inScope(s, ns, "-")))
	}

	// Deleting the referenced ConfigMap withdraws it.
	if err := c.Delete(ctx, caConfigMap(ns, "later", "")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "the deleted ConfigMap gone", func(s source.Snapshot) bool { return cmIn(s, "later") == "" })

	// Every ConfigMap request named one referenced ConfigMap in its namespace: no list or watch at large.
	reqs.mu.Lock()
	var got []string
	for _, u := range reqs.urls {
		if strings.Contains(u.Path, "/configmaps") {
			got = append(got, u.String())
			sel := u.Query().Get("fieldSelector")
			if !strings.HasPrefix(u.Path, "/api/v1/namespaces/"+ns+"/configmaps") || (sel != "metadata.name=ca" && sel != "metadata.name=later") {
				t.Errorf("ConfigMap request %s", u)
			}
		}
	}
	reqs.mu.Unlock()
	if len(got) == 0 {
		t.Fatal("no ConfigMap requests recorded")
	}
}

// Without the configmaps rule, the source fails naming it instead of reporting a bundle as missing.
func TestCAConfigMapsWithoutRBAC(t *testing.T) {
	ourClass(t)
	ns := full.Namespace(t)
	mustCreate(t, full.Client, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "fedgate",
		Listeners:        []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
		TLS: &gatewayv1.GatewayTLSConfig{Frontend: &gatewayv1.FrontendTLSConfig{
			Default: gatewayv1.TLSConfig{Validation: &gatewayv1.FrontendTLSValidation{CACertificateRefs: []gatewayv1.ObjectReference{
				{Kind: "ConfigMap", Name: "ca"},
			}}},
		}},
	}})
	var short []rbacv1.PolicyRule
	for _, r := range RBACRules() {
		r = *r.DeepCopy()
		r.Resources = slices.DeleteFunc(r.Resources, func(res string) bool { return res == "configmaps" })
		if len(r.Resources) > 0 {
			short = append(short, r)
		}
	}
	src, err := New(Config{REST: grant(t, full, "noconfigmaps-"+ns, short), SyncTimeout: 3 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Run(context.Background(), func(source.Snapshot) { t.Error("snapshot emitted before the referenced ConfigMaps were read") })
	if err == nil || !strings.Contains(err.Error(), "CA ConfigMaps") || !strings.Contains(err.Error(), "configmaps") {
		t.Errorf("Run without the configmaps rule: %v", err)
	}
}

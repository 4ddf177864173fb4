package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// The CA ConfigMap references go through the same rule as the Secrets': only Gateways of our classes, and another
// namespace only with a ReferenceGrant; a class or grant change recomputes the watched set.
func TestRefWatcherFollowsOnlyPermittedReferences(t *testing.T) {
	// A context already done: reconcile starts no watch; the test looks at the set it computes (wantLocked).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	kind := refKind{what: "CA ConfigMap", kind: resources.KindConfigMap, refs: tlssecrets.CARefs,
		informer: func(kubernetes.Interface, tlssecrets.Ref) toolscache.SharedIndexInformer {
			t.Error("a watch started")
			return nil
		},
		set: func(tlssecrets.Ref, any) {},
		del: func(tlssecrets.Ref) {},
	}
	w := newRefWatcher(ctx, kind, DefaultControllerName, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	watched := func() string {
		w.mu.Lock()
		defer w.mu.Unlock()
		return fmt.Sprint(w.wantLocked())
	}
	gw := func(name, class string) *unstructured.Unstructured {
		return toUnstructured(t, &gatewayv1.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: gatewayv1.GatewaySpec{
				GatewayClassName: gatewayv1.ObjectName(class),
				TLS: &gatewayv1.GatewayTLSConfig{Frontend: &gatewayv1.FrontendTLSConfig{Default: gatewayv1.TLSConfig{
					Validation: &gatewayv1.FrontendTLSValidation{CACertificateRefs: []gatewayv1.ObjectReference{
						{Kind: "ConfigMap", Name: gatewayv1.ObjectName(name + "-ca")},
						{Kind: "ConfigMap", Name: gatewayv1.ObjectName(name + "-pki"), Namespace: new(gatewayv1.Namespace("pki"))},
					}}}}},
			}})
	}
	class := func(name, controller string) *unstructured.Unstructured {
		return toUnstructured(t, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: gatewayv1.GatewayClassSpec{ControllerName: gatewayv1.GatewayController(controller)}})
	}
	rg := toUnstructured(t, &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "pki", Name: "g"},
		Spec: gatewayv1.ReferenceGrantSpec{
			From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "shop"}},
			To:   []gatewayv1.ReferenceGrantTo{{Kind: "ConfigMap"}},
		}})

	w.gateway(gw("ours", "fedgate"), false)
	w.gateway(gw("theirs", "other"), false)
	if got := watched(); got != "map[]" {
		t.Errorf("before any class: %s", got)
	}
	w.class(class("fedgate", DefaultControllerName), false)
	w.class(class("other", "example.com/other"), false)
	if got, want := watched(), "map[shop/ours-ca:true]"; got != want {
		t.Errorf("our class: %s, want %s", got, want)
	}
	w.grant(rg, false)
	if got, want := watched(), "map[pki/ours-pki:true shop/ours-ca:true]"; got != want {
		t.Errorf("with the grant: %s, want %s", got, want)
	}
	w.grant(rg, true)
	if got, want := watched(), "map[shop/ours-ca:true]"; got != want {
		t.Errorf("grant deleted: %s, want %s", got, want)
	}
	w.class(class("fedgate", "example.com/taken-over"), false)
	if got := watched(); got != "map[]" {
		t.Errorf("class no longer ours: %s", got)
	}
}

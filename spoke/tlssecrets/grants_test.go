package tlssecrets

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestPermitted(t *testing.T) {
	rg := func(ns string, from []gatewayv1.ReferenceGrantFrom, to ...gatewayv1.ReferenceGrantTo) *gatewayv1.ReferenceGrant {
		return &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "g"},
			Spec: gatewayv1.ReferenceGrantSpec{From: from, To: to}}
	}
	gwFrom := func(ns string) []gatewayv1.ReferenceGrantFrom {
		return []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: gatewayv1.Namespace(ns)}}
	}
	secret := gatewayv1.ReferenceGrantTo{Kind: "Secret"}
	named := func(kind, name string) gatewayv1.ReferenceGrantTo {
		return gatewayv1.ReferenceGrantTo{Kind: gatewayv1.Kind(kind), Name: ptr.To(gatewayv1.ObjectName(name))}
	}
	to := Ref{Namespace: "certs", Name: "cert"}
	for _, tc := range []struct {
		name   string
		from   string
		kind   string
		grants []*gatewayv1.ReferenceGrant
		want   bool
	}{
		{"same namespace, no grant", "certs", "Secret", nil, true},
		{"other namespace, no grant", "shop", "Secret", nil, false},
		{"grant for every Secret", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("shop"), secret)}, true},
		{"grant for this name", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("shop"), named("Secret", "cert"))}, true},
		{"grant for another name", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("shop"), named("Secret", "other"))}, false},
		{"grant in another namespace", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("shop", gwFrom("shop"), secret)}, false},
		{"grant from another namespace", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("other"), secret)}, false},
		{"grant from HTTPRoutes", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs",
			[]gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "shop"}}, secret)}, false},
		{"grant from another group's Gateway", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs",
			[]gatewayv1.ReferenceGrantFrom{{Group: "example.com", Kind: "Gateway", Namespace: "shop"}}, secret)}, false},
		{"grant to ConfigMaps", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("shop"), gatewayv1.ReferenceGrantTo{Kind: "ConfigMap"})}, false},
		{"grant to another group's Secrets", "shop", "Secret", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("shop"),
			gatewayv1.ReferenceGrantTo{Group: "example.com", Kind: "Secret"})}, false},
		{"ConfigMap grant", "shop", "ConfigMap", []*gatewayv1.ReferenceGrant{rg("certs", gwFrom("shop"), named("ConfigMap", "cert"))}, true},
		{"one of several", "shop", "Secret", []*gatewayv1.ReferenceGrant{nil, rg("certs", gwFrom("other"), secret),
			rg("certs", append(gwFrom("other"), gwFrom("shop")...), named("Secret", "x"), secret)}, true},
	} {
		if got := Permitted(tc.from, to, tc.kind, tc.grants); got != tc.want {
			t.Errorf("%s: Permitted = %v, want %v", tc.name, got, tc.want)
		}
	}
}

package tlssecrets

import (
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func caRef(kind, name string, ns ...string) gatewayv1.ObjectReference {
	r := gatewayv1.ObjectReference{Kind: gatewayv1.Kind(kind), Name: gatewayv1.ObjectName(name)}
	if len(ns) > 0 {
		r.Namespace = ptr.To(gatewayv1.Namespace(ns[0]))
	}
	return r
}

func TestCARefs(t *testing.T) {
	if got := CARefs(&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "gw"}}); got != nil {
		t.Errorf("CARefs without tls: %v", got)
	}
	if got := CARefs(&gatewayv1.Gateway{Spec: gatewayv1.GatewaySpec{TLS: &gatewayv1.GatewayTLSConfig{}}}); got != nil {
		t.Errorf("CARefs without frontend: %v", got)
	}
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		Listeners: []gatewayv1.Listener{{Name: "https", Port: 443, TLS: &gatewayv1.ListenerTLSConfig{
			CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert"}}}}},
		TLS: &gatewayv1.GatewayTLSConfig{Frontend: &gatewayv1.FrontendTLSConfig{
			Default: gatewayv1.TLSConfig{Validation: &gatewayv1.FrontendTLSValidation{CACertificateRefs: []gatewayv1.ObjectReference{
				caRef("ConfigMap", "zeta"),
				caRef("ConfigMap", "alpha"),
				caRef("Secret", "secret-ca"), // not a ConfigMap: not read
				caRef("ConfigMap", "alpha", "shop"),
				caRef("ConfigMap", ""),
				{Group: "example.com", Kind: "ConfigMap", Name: "other-group"},
			}}},
			PerPort: []gatewayv1.TLSPortConfig{
				{Port: 8443, TLS: gatewayv1.TLSConfig{Validation: &gatewayv1.FrontendTLSValidation{CACertificateRefs: []gatewayv1.ObjectReference{
					caRef("ConfigMap", "ca", "pki"), caRef("ConfigMap", "zeta"),
				}}}},
				{Port: 9443}, // no validation
				{Port: 10443, TLS: gatewayv1.TLSConfig{Validation: &gatewayv1.FrontendTLSValidation{CACertificateRefs: []gatewayv1.ObjectReference{
					caRef("ConfigMap", "port-only"),
				}}}},
			},
		}},
	}}
	if got, want := fmt.Sprint(CARefs(gw)), "[pki/ca shop/alpha shop/port-only shop/zeta]"; got != want {
		t.Errorf("CARefs = %s, want %s", got, want)
	}
	// Listener certificates are GatewayRefs', not CARefs'.
	if got, want := fmt.Sprint(GatewayRefs(gw)), "[shop/cert]"; got != want {
		t.Errorf("GatewayRefs = %s, want %s", got, want)
	}
}

func TestReportedCAObject(t *testing.T) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ca", UID: "u1", ResourceVersion: "7",
			Labels: map[string]string{"l": "x"}, Annotations: map[string]string{"a": "x"}},
		Data: map[string]string{"ca.crt": "PEM", "other": "not-reported"},
	}
	o, err := ReportedCAObject(cm)
	if err != nil {
		t.Fatal(err)
	}
	if o.ApiVersion != "v1" || o.Kind != "ConfigMap" || o.Namespace != "shop" || o.Name != "ca" {
		t.Errorf("object %s %s %s/%s", o.ApiVersion, o.Kind, o.Namespace, o.Name)
	}
	var got corev1.ConfigMap
	if err := json.Unmarshal(o.Json, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 1 || got.Data["ca.crt"] != "PEM" || got.UID != "u1" || got.ResourceVersion != "7" ||
		got.Labels != nil || got.Annotations != nil || got.Kind != "ConfigMap" {
		t.Errorf("reported %s", o.Json)
	}
}

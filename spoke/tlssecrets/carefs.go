package tlssecrets

import (
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// CARefs returns the CA-bundle ConfigMaps gw's client-certificate validation references in gw's own cluster,
// deduplicated and sorted: every caCertificateRef of spec.tls.frontend.default.validation and of each
// spec.tls.frontend.perPort[].tls.validation whose group is the core group ("") and kind ConfigMap, its namespace
// defaulting to the Gateway's. Other kinds (a Secret, an implementation's own kind) are not read by the spoke. As for
// GatewayRefs, these are all the references: a reader follows only the permitted ones (Permitted).
func CARefs(gw *gatewayv1.Gateway) []Ref {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil
	}
	f := gw.Spec.TLS.Frontend
	vals := []*gatewayv1.FrontendTLSValidation{f.Default.Validation}
	for _, p := range f.PerPort {
		vals = append(vals, p.TLS.Validation)
	}
	seen := map[Ref]bool{}
	var out []Ref
	for _, v := range vals {
		if v == nil {
			continue
		}
		for _, c := range v.CACertificateRefs {
			if c.Group != "" || c.Kind != resources.KindConfigMap {
				continue
			}
			r := Ref{Namespace: gw.Namespace, Name: string(c.Name)}
			if c.Namespace != nil && *c.Namespace != "" {
				r.Namespace = string(*c.Namespace)
			}
			if r.Name == "" || seen[r] {
				continue
			}
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ReportedCAObject is what a spoke reports of cm, a ConfigMap a Gateway's caCertificateRefs name:
// resources.ReportedCAConfigMap (name, namespace, uid, resourceVersion and ca.crt alone) in its wire form. CA
// certificates are public, so the bundle itself is reported.
func ReportedCAObject(cm *corev1.ConfigMap) (*fedgatepb.Object, error) {
	r := resources.ReportedCAConfigMap(cm)
	js, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindConfigMap, Namespace: r.Namespace, Name: r.Name, Json: js}, nil
}

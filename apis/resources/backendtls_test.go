package resources

import (
	"strings"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// v11BackendTLSPolicy is the Gateway API v1.1 release notes' example (v1alpha3).
const v11BackendTLSPolicy = `
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: tls-upstream-dev}
spec:
  targetRefs:
  - kind: Service
    name: dev-service
    group: ""
    sectionName: https
  validation:
    wellKnownCACertificates: "System"
    hostname: dev.example.com
`

func TestUpgradeBackendTLSPolicyV1alpha3(t *testing.T) {
	if !Known("gateway.networking.k8s.io/v1alpha3", KindBackendTLSPolicy) || !Known("gateway.networking.k8s.io/v1", KindBackendTLSPolicy) {
		t.Fatal("BackendTLSPolicy v1alpha3 and v1 must be known")
	}
	if Known("gateway.networking.k8s.io/v1alpha2", KindBackendTLSPolicy) {
		t.Fatal("BackendTLSPolicy v1alpha2 (v1.0's) must not be known")
	}
	objs, err := DecodeYAML(strings.NewReader(v11BackendTLSPolicy), "test", "dev")
	if err != nil {
		t.Fatal(err)
	}
	o := objs[0]
	w, err := Upgrade(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w, "v1alpha3 is stored as gateway.networking.k8s.io/v1") || !strings.Contains(w, `BackendTLSPolicy "dev/tls-upstream-dev"`) {
		t.Errorf("warning = %q", w)
	}
	if o.ApiVersion != "gateway.networking.k8s.io/v1" || !strings.Contains(string(o.Json), `"apiVersion":"gateway.networking.k8s.io/v1"`) {
		t.Errorf("stored as %s: %s", o.ApiVersion, o.Json)
	}
	obj, err := Typed(o)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := obj.(*gatewayv1.BackendTLSPolicy)
	if !ok {
		t.Fatalf("Typed = %T", obj)
	}
	v := p.Spec.Validation
	if len(p.Spec.TargetRefs) != 1 || p.Spec.TargetRefs[0].Name != "dev-service" || p.Spec.TargetRefs[0].Kind != "Service" ||
		p.Spec.TargetRefs[0].SectionName == nil || *p.Spec.TargetRefs[0].SectionName != "https" ||
		v.WellKnownCACertificates == nil || *v.WellKnownCACertificates != gatewayv1.WellKnownCACertificatesSystem ||
		v.Hostname != "dev.example.com" {
		t.Errorf("spec = %+v", p.Spec)
	}
	// An object not yet upgraded still decodes, as v1.
	objs, _ = DecodeYAML(strings.NewReader(v11BackendTLSPolicy), "test", "dev")
	if obj, err := Typed(objs[0]); err != nil {
		t.Fatal(err)
	} else if _, ok := obj.(*gatewayv1.BackendTLSPolicy); !ok {
		t.Fatalf("Typed(v1alpha3) = %T", obj)
	}
	// v1 is stored as written.
	o1 := objs[0]
	o1.ApiVersion = "gateway.networking.k8s.io/v1"
	if w, err := Upgrade(o1); w != "" || err != nil {
		t.Errorf("Upgrade(v1) = %q, %v", w, err)
	}
}

package backendlb

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

func TestDeepCopySharesNothing(t *testing.T) {
	name, abs, idle := "foo-session", gatewayv1.Duration("1h"), gatewayv1.Duration("30m")
	typ, life := gatewayv1.CookieBasedSessionPersistence, gatewayv1.SessionCookieLifetimeType
	orig := &BackendLBPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "lb-policy", Namespace: "foo-ns", Labels: map[string]string{"a": "b"}},
		Spec: BackendLBPolicySpec{
			TargetRefs: []gatewayv1.LocalPolicyTargetReference{{Group: "", Kind: "Service", Name: "foo"}},
			SessionPersistence: &SessionPersistence{SessionName: &name, AbsoluteTimeout: &abs, IdleTimeout: &idle, Type: &typ,
				CookieConfig: &CookieConfig{LifetimeType: &life}},
		},
	}
	cp := orig.DeepCopyObject().(*BackendLBPolicy)
	if diff := cmp.Diff(orig, cp); diff != "" {
		t.Fatalf("copy differs (-orig +copy):\n%s", diff)
	}
	*cp.Spec.SessionPersistence.SessionName = "changed"
	*cp.Spec.SessionPersistence.CookieConfig.LifetimeType = gatewayv1.PermanentCookieLifetimeType
	cp.Spec.TargetRefs[0].Name = "bar"
	cp.Labels["a"] = "z"
	if *orig.Spec.SessionPersistence.SessionName != "foo-session" || *orig.Spec.SessionPersistence.CookieConfig.LifetimeType != life ||
		orig.Spec.TargetRefs[0].Name != "foo" || orig.Labels["a"] != "b" {
		t.Fatalf("mutating the copy changed the original: %+v", orig)
	}
	list := &BackendLBPolicyList{Items: []BackendLBPolicy{*orig}}
	lc := list.DeepCopyObject().(*BackendLBPolicyList)
	lc.Items[0].Spec.TargetRefs[0].Name = "baz"
	if list.Items[0].Spec.TargetRefs[0].Name != "foo" {
		t.Fatal("list copy shares items with the original")
	}
}

// The v1.1 release notes' example decodes into the type through a scheme, with every field kept.
func TestSchemeDecodesReleaseNotesExample(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	obj, err := s.New(SchemeGroupVersion.WithKind(Kind))
	if err != nil {
		t.Fatal(err)
	}
	doc := `
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: BackendLBPolicy
metadata:
  name: lb-policy
  namespace: foo-ns
spec:
  targetRefs:
  - group: core
    kind: service
    name: foo
  sessionPersistence:
    sessionName: foo-session
    absoluteTimeout: 1h
    idleTimeout: 30m
    type: Cookie
    cookieConfig:
      lifetimeType: Session
`
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		t.Fatal(err)
	}
	p := obj.(*BackendLBPolicy)
	sp := p.Spec.SessionPersistence
	if p.Spec.TargetRefs[0].Kind != "service" || *sp.SessionName != "foo-session" || *sp.IdleTimeout != "30m" ||
		*sp.AbsoluteTimeout != "1h" || *sp.CookieConfig.LifetimeType != gatewayv1.SessionCookieLifetimeType {
		t.Fatalf("decoded %+v", p.Spec)
	}
}

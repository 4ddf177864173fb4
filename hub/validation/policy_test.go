package validation

import (
	"strings"
	"testing"

	"github.com/fedgate/fedgate/apis/resources"
)

func decodeOne(t *testing.T, doc string) error {
	t.Helper()
	objs, err := resources.DecodeYAML(strings.NewReader(doc), "test", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("decoded %d objects", len(objs))
	}
	return Validate(objs[0])
}

// releaseNotesBackendLBPolicy is the example of the Gateway API v1.1 release notes, verbatim.
const releaseNotesBackendLBPolicy = `
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

func TestBackendLBPolicyReleaseNotesExampleAccepted(t *testing.T) {
	if err := decodeOne(t, releaseNotesBackendLBPolicy); err != nil {
		t.Fatal(err)
	}
}

func TestBackendLBPolicyDefaults(t *testing.T) {
	objs, err := resources.DecodeYAML(strings.NewReader(`
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: BackendLBPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: "", kind: Service, name: foo}]
  sessionPersistence: {sessionName: s, cookieConfig: {}}
`), "test", "default")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Normalize(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type":"Cookie"`, `"lifetimeType":"Session"`} {
		if !strings.Contains(string(n.Json), want) {
			t.Errorf("normalized %s lacks default %s", n.Json, want)
		}
	}
}

func TestBackendLBPolicyRefused(t *testing.T) {
	cases := []struct {
		name, spec string
		want       []string
	}{
		{"no targets", `targetRefs: []`, []string{"spec.targetRefs: Invalid value: 0: spec.targetRefs in body should have at least 1 items"}},
		{"too many targets", `targetRefs: [` + targetList(17) + `]`,
			[]string{"spec.targetRefs: Too many: 17: must have at most 16 items"}},
		{"bad durations", `targetRefs: [{group: "", kind: Service, name: a}]
  sessionPersistence: {sessionName: s, absoluteTimeout: 1d, idleTimeout: "-5s"}`, []string{
			`spec.sessionPersistence.absoluteTimeout: Invalid value: "1d": spec.sessionPersistence.absoluteTimeout in body should match '^([0-9]{1,5}(h|m|s|ms)){1,4}$'`,
			`spec.sessionPersistence.idleTimeout: Invalid value: "-5s": spec.sessionPersistence.idleTimeout in body should match '^([0-9]{1,5}(h|m|s|ms)){1,4}$'`,
		}},
		{"long session name", `targetRefs: [{group: "", kind: Service, name: a}]
  sessionPersistence: {sessionName: ` + strings.Repeat("x", 129) + `}`, []string{
			"spec.sessionPersistence.sessionName: Too long: may not be more than 128 bytes",
		}},
		{"bad enums", `targetRefs: [{group: "", kind: Service, name: a}]
  sessionPersistence: {sessionName: s, type: URL, cookieConfig: {lifetimeType: Forever}}`, []string{
			`spec.sessionPersistence.cookieConfig.lifetimeType: Unsupported value: "Forever": supported values: "Permanent", "Session"`,
			`spec.sessionPersistence.type: Unsupported value: "URL": supported values: "Cookie", "Header"`,
		}},
		{"permanent without absolute timeout", `targetRefs: [{group: "", kind: Service, name: a}]
  sessionPersistence: {sessionName: s, idleTimeout: 5m, cookieConfig: {lifetimeType: Permanent}}`, []string{
			"spec.sessionPersistence: Invalid value: AbsoluteTimeout must be specified when cookie lifetimeType is Permanent",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeOne(t, "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: BackendLBPolicy\nmetadata: {name: p}\nspec:\n  "+tc.spec+"\n")
			if err == nil {
				t.Fatal("accepted")
			}
			got := invalidMessages(t, err)
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || g == w
				}
				if !found {
					t.Errorf("missing message %q in %q", w, got)
				}
			}
		})
	}
}

func targetList(n int) string {
	var parts []string
	for i := 0; i < n; i++ {
		parts = append(parts, `{group: "", kind: Service, name: s`+strings.Repeat("a", i+1)+`}`)
	}
	return strings.Join(parts, ",")
}

func TestXBackendTrafficPolicy(t *testing.T) {
	ok := `
apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackendTrafficPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: "", kind: Service, name: foo}]
  retryConstraint:
    budget: {percent: 20, interval: 10s}
    minRetryRate: {count: 3, interval: 1s}
  sessionPersistence: {sessionName: s, type: Header}
`
	if err := decodeOne(t, ok); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(ok, "interval: 10s", "interval: 2h", 1)
	err := decodeOne(t, bad)
	if err == nil {
		t.Fatal("budget interval of 2h accepted")
	}
	if msgs := invalidMessages(t, err); len(msgs) != 1 || !strings.Contains(msgs[0], "interval cannot be greater than one hour") {
		t.Errorf("messages %q", msgs)
	}
}

// v1.1's BackendTLSPolicy example is v1alpha3; the CRD still serves it, and Upgrade stores it as v1.
func TestBackendTLSPolicy(t *testing.T) {
	const v1alpha3 = "apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: BackendTLSPolicy\nmetadata: {name: tls-upstream-dev}\n" +
		"spec:\n  targetRefs:\n  - {kind: Service, name: dev-service, group: \"\"}\n  validation:\n    wellKnownCACertificates: \"System\"\n    hostname: dev.example.com\n"
	if err := decodeOne(t, v1alpha3); err != nil {
		t.Fatalf("v1alpha3: %v", err)
	}
	objs, err := resources.DecodeYAML(strings.NewReader(v1alpha3), "test", "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resources.Upgrade(objs[0]); err != nil {
		t.Fatal(err)
	}
	if err := Validate(objs[0]); err != nil {
		t.Fatalf("upgraded to v1: %v", err)
	}
	ok := "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p}\nspec:\n  targetRefs:\n  - {kind: Service, name: s, group: \"\"}\n" +
		"  validation:\n    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]\n    hostname: s.example.com\n    subjectAltNames: [{type: URI, uri: \"spiffe://td/ns/default/sa/s\"}]\n"
	if err := decodeOne(t, ok); err != nil {
		t.Fatalf("v1: %v", err)
	}
	// Both CA forms at once is refused by the CRD's CEL rules.
	both := strings.Replace(ok, "    hostname:", "    wellKnownCACertificates: System\n    hostname:", 1)
	if err := decodeOne(t, both); err == nil {
		t.Error("caCertificateRefs and wellKnownCACertificates together: accepted")
	}
}

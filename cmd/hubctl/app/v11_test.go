package app

import (
	"strings"
	"testing"

	"github.com/fedgate/fedgate/apis/resources"
)

// Gateway API v1.1's listener-level client-certificate validation is applied in today's shape (per port, on the
// Gateway) with a warning naming both fields; the release notes' malformed example is refused before anything reaches
// the hub, saying that spec.listeners must be a list.
func TestApplyV11ClientValidationGateway(t *testing.T) {
	f, addr := startHub(t)
	const gw = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: client-validation-basic
spec:
  gatewayClassName: acme-lb
  listeners:
  - name: foo-https
    protocol: HTTPS
    port: 443
    hostname: foo.example.com
    tls:
      certificateRefs:
      - kind: Secret
        group: ""
        name: foo-example-com-cert
      frontendValidation:
        caCertificateRefs:
        - kind: ConfigMap
          group: ""
          name: foo-example-com-ca-cert
`
	stdout, stderr, code := hubctl(t, gw, "--hub", addr, "apply", "-f", "-")
	if code != 0 || stdout != "gateway.gateway.networking.k8s.io/client-validation-basic created\n" {
		t.Fatalf("apply: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	want := `Warning: <stdin>: Gateway "default/client-validation-basic": spec.listeners[0].tls.frontendValidation (Gateway API v1.1) is stored as spec.tls.frontend.perPort[port 443].tls.validation.caCertificateRefs`
	if !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr %q, want it to start %q", stderr, want)
	}
	f.mu.Lock()
	got := f.objects[key(resources.KindGateway, "default", "client-validation-basic")]
	f.mu.Unlock()
	if got == nil || !strings.Contains(string(got.Json), `"perPort":[{"port":443,"tls":{"validation":{"caCertificateRefs":[{"group":"","kind":"ConfigMap","name":"foo-example-com-ca-cert"}]}}}]`) ||
		strings.Contains(string(got.Json), "frontendValidation") {
		t.Errorf("the hub was sent %s, want the validation under spec.tls.frontend.perPort and none on the listener", got.GetJson())
	}

	const malformed = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: client-validation-basic
spec:
  gatewayClassName: acme-lb
  listeners:
    name: foo-https
    protocol: HTTPS
    port: 443
    hostname: foo.example.com
  tls:
    certificateRefs:
      kind: Secret
      group: ""
      name: foo-example-com-cert
    frontendValidation:
      caCertificateRefs:
        kind: ConfigMap
        group: ""
        name: foo-example-com-ca-cert
`
	calls := f.calls()
	_, stderr, code = hubctl(t, malformed, "--hub", addr, "apply", "-f", "-")
	if code != 1 || !strings.Contains(stderr, "spec.listeners must be a list") {
		t.Errorf("malformed release-notes Gateway: exit %d stderr %q, want the list error", code, stderr)
	}
	if f.calls() != calls {
		t.Error("the malformed Gateway reached the hub")
	}
}

package resources

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fedgate/fedgate/apis/fedgatepb"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The client-validation Gateway of Gateway API v1.1's release notes, as printed there: listeners as one mapping and
// the listener's tls under spec.
const v11ReleaseNotesGateway = `apiVersion: gateway.networking.k8s.io/v1
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

// The same Gateway as v1.1 meant it: the validation on the listener.
const v11ListenerValidationGateway = `apiVersion: gateway.networking.k8s.io/v1
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
  - name: bar-https
    protocol: HTTPS
    port: 443
    hostname: bar.example.com
    tls:
      certificateRefs:
      - name: bar-example-com-cert
      frontendValidation:
        caCertificateRefs:
        - kind: ConfigMap
          group: ""
          name: foo-example-com-ca-cert
`

func upgradeV11Gateway(t *testing.T, y string) (*gatewayv1.Gateway, string, error) {
	t.Helper()
	objs, err := DecodeYAML(strings.NewReader(y), "gw.yaml", "default")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("decoded %d objects", len(objs))
	}
	w, err := upgradeGatewayV11(objs[0])
	if err != nil {
		return nil, w, err
	}
	typed, err := Typed(objs[0])
	if err != nil {
		t.Fatalf("typed after upgrade: %v", err)
	}
	return typed.(*gatewayv1.Gateway), w, nil
}

func TestV11ReleaseNotesGatewayGetsTheListError(t *testing.T) {
	_, _, err := upgradeV11Gateway(t, v11ReleaseNotesGateway)
	if err == nil {
		t.Fatal("the malformed release-notes Gateway was accepted")
	}
	for _, want := range []string{`Gateway "default/client-validation-basic"`, "spec.listeners must be a list", "spec.tls.certificateRefs is a listener field", "spec.tls.frontendValidation is a listener field"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestV11ListenerValidationMovesToFrontendPerPort(t *testing.T) {
	gw, warning, err := upgradeV11Gateway(t, v11ListenerValidationGateway)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spec.listeners[0].tls.frontendValidation", "spec.tls.frontend.perPort[port 443].tls.validation.caCertificateRefs"} {
		if !strings.Contains(warning, want) {
			t.Errorf("warning %q does not name %q", warning, want)
		}
	}
	fe := gw.Spec.TLS
	if fe == nil || fe.Frontend == nil || len(fe.Frontend.PerPort) != 1 {
		t.Fatalf("spec.tls.frontend.perPort not set: %+v", fe)
	}
	pp := fe.Frontend.PerPort[0]
	if pp.Port != 443 || pp.TLS.Validation == nil || len(pp.TLS.Validation.CACertificateRefs) != 1 || pp.TLS.Validation.CACertificateRefs[0].Name != "foo-example-com-ca-cert" {
		t.Fatalf("perPort = %+v", pp)
	}
	if fe.Frontend.Default.Validation != nil {
		t.Errorf("default validation set: %+v", fe.Frontend.Default)
	}
	for i, l := range gw.Spec.Listeners {
		if l.TLS == nil || len(l.TLS.CertificateRefs) != 1 {
			t.Errorf("listener %d lost its certificateRefs: %+v", i, l.TLS)
		}
	}
}

func TestV11ListenerValidationConflicts(t *testing.T) {
	differ := strings.Replace(v11ListenerValidationGateway, "name: foo-example-com-ca-cert\n", "name: other-ca\n", 2)
	differ = strings.Replace(differ, "name: other-ca\n", "name: foo-example-com-ca-cert\n", 1)
	if _, _, err := upgradeV11Gateway(t, differ); err == nil || !strings.Contains(err.Error(), "share port 443 but name different CA certificates") {
		t.Errorf("listeners on one port with different CAs: err = %v", err)
	}
	both := strings.Replace(v11ListenerValidationGateway, "spec:\n", "spec:\n  tls:\n    frontend:\n      default: {}\n      perPort:\n      - port: 443\n        tls: {}\n", 1)
	if _, _, err := upgradeV11Gateway(t, both); err == nil || !strings.Contains(err.Error(), "both configure port 443") {
		t.Errorf("v1.1 validation beside a perPort entry for its port: err = %v", err)
	}
	// A Gateway without v1.1 fields is left alone.
	plain := "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: c\n  listeners:\n  - {name: http, protocol: HTTP, port: 80}\n"
	if _, w, err := upgradeV11Gateway(t, plain); err != nil || w != "" {
		t.Errorf("plain Gateway: warning %q, err %v", w, err)
	}
}

// upgradeGatewayV11 runs on whatever a hubctl user or a cluster sends (spec below): no input may panic it, and what
// it accepts stays JSON.
func FuzzUpgradeGatewayV11(f *testing.F) {
	for _, spec := range []string{
		`{"listeners":[{"port":443,"tls":{"frontendValidation":{"caCertificateRefs":[{"name":"a"}]}}}],"tls":{"frontend":{"perPort":["x"]}}}`,
		`{"listeners":[{"port":443,"tls":{"frontendValidation":{"caCertificateRefs":[{"name":"a"}]}}}],"tls":"x"}`,
		`{"listeners":[{"port":443,"tls":{"frontendValidation":{"caCertificateRefs":[{"name":"a"}]}}}],"tls":{"frontend":[1]}}`,
		`{"listeners":[{"port":443,"tls":{"frontendValidation":{"caCertificateRefs":[{"name":"a"}]}}}],"tls":{"frontend":{"perPort":{"a":1}}}}`,
		`{"listeners":{"name":"x"},"tls":{"certificateRefs":{}}}`,
		`{"listeners":[7,"x",{"tls":"y"},{"tls":{"frontendValidation":"z"}}]}`,
		`[]`,
	} {
		f.Add(spec)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		o := &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: KindGateway, Namespace: "default", Name: "g",
			Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"g","namespace":"default"},"spec":` + spec + `}`)}
		if _, err := upgradeGatewayV11(o); err == nil && !json.Valid(o.Json) {
			t.Fatalf("spec %q accepted as invalid JSON %q", spec, o.Json)
		}
	})
}

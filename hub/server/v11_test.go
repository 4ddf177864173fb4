package server

import (
	"strings"
	"testing"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

// Through the hub's own validation (the Gateway API CRDs' schema and CEL rules): Gateway API v1.1's listener-level
// client-certificate validation is stored in today's shape, with a warning; the release notes' malformed example is
// refused with the list error and nothing is stored.
func TestAdminApplyV11ClientValidationGateway(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	const spec = `{"gatewayClassName":"acme-lb","listeners":[{"name":"foo-https","protocol":"HTTPS","port":443,"hostname":"foo.example.com",
	  "tls":{"certificateRefs":[{"kind":"Secret","group":"","name":"foo-example-com-cert"}],
	         "frontendValidation":{"caCertificateRefs":[{"kind":"ConfigMap","group":"","name":"foo-example-com-ca-cert"}]}}}]}`
	resp, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{
		object("gateway.networking.k8s.io/v1", "Gateway", "default", "client-validation-basic", spec)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "spec.tls.frontend.perPort[port 443].tls.validation.caCertificateRefs") {
		t.Errorf("warnings %q", resp.Warnings)
	}
	list, err := h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "gateways"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Objects) != 1 || !strings.Contains(string(list.Objects[0].Object.Json), `"perPort":[{"port":443,"tls":{"validation":{"caCertificateRefs":[{"group":"","kind":"ConfigMap","name":"foo-example-com-ca-cert"}]}}}]`) {
		t.Fatalf("stored %v", list.Objects)
	}

	const malformed = `{"gatewayClassName":"acme-lb","listeners":{"name":"foo-https","protocol":"HTTPS","port":443,"hostname":"foo.example.com"},
	  "tls":{"certificateRefs":{"kind":"Secret","group":"","name":"foo-example-com-cert"},
	         "frontendValidation":{"caCertificateRefs":{"kind":"ConfigMap","group":"","name":"foo-example-com-ca-cert"}}}}`
	_, err = h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{
		object("gateway.networking.k8s.io/v1", "Gateway", "default", "malformed", malformed)}})
	if err == nil || !strings.Contains(err.Error(), "spec.listeners must be a list") {
		t.Fatalf("malformed release-notes Gateway: err = %v, want the list error", err)
	}
	list, err = h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "gateways"})
	if err != nil || len(list.Objects) != 1 {
		t.Fatalf("after the refused apply: %v objects, err %v", len(list.Objects), err)
	}
}

package resources

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

// upgradeGatewayV11 rewrites a Gateway's client-certificate validation from Gateway API v1.1's shape to the one served
// since: v1.1 put it on each listener (`spec.listeners[].tls.frontendValidation.caCertificateRefs`), later releases
// on the Gateway, per port (`spec.tls.frontend.perPort[].tls.validation.caCertificateRefs`). Listeners on one port
// must then name the same CA certificates. The warning names both fields.
//
// It also refuses, with errors that say what the shape must be, the malformed example of v1.1's release notes:
// `spec.listeners` written as one mapping instead of a list, and a listener's `tls` (certificateRefs,
// frontendValidation) written under `spec.tls`.
func upgradeGatewayV11(o *fedgatepb.Object) (string, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(o.Json); err != nil {
		return "", fmt.Errorf("%s: %w", Describe(o.Kind, o.Namespace, o.Name), err)
	}
	spec, _ := u.Object["spec"].(map[string]any)
	if spec == nil {
		return "", nil
	}
	who := Describe(o.Kind, o.Namespace, o.Name)
	var errs []error
	switch l := spec["listeners"].(type) {
	case nil, []any:
	case map[string]any:
		errs = append(errs, fmt.Errorf("%s: spec.listeners must be a list of listeners (each starting with \"- name:\"), not a single mapping", who))
	default:
		errs = append(errs, fmt.Errorf("%s: spec.listeners must be a list of listeners, not %T", who, l))
	}
	if tls, ok := spec["tls"].(map[string]any); ok {
		for _, f := range []string{"certificateRefs", "frontendValidation", "mode", "options"} {
			if _, ok := tls[f]; ok {
				errs = append(errs, fmt.Errorf("%s: spec.tls.%s is a listener field: write it under spec.listeners[].tls (spec.tls holds only frontend and backend)", who, f))
			}
		}
	}
	if len(errs) > 0 {
		return "", errors.Join(errs...)
	}
	listeners, _ := spec["listeners"].([]any)
	type moved struct {
		listener int
		refs     []any
	}
	byPort := map[int64]moved{}
	var ports []int64
	for i, item := range listeners {
		l, _ := item.(map[string]any)
		tls, _ := l["tls"].(map[string]any) // another shape: not v1.1's; validation reports it
		fv, ok := tls["frontendValidation"]
		if !ok {
			continue
		}
		port, ok := portOf(l["port"])
		if !ok {
			return "", fmt.Errorf("%s: spec.listeners[%d].tls.frontendValidation: the listener has no valid port", who, i)
		}
		fvm, _ := fv.(map[string]any)
		refs, _ := fvm["caCertificateRefs"].([]any)
		if len(refs) == 0 {
			return "", fmt.Errorf("%s: spec.listeners[%d].tls.frontendValidation.caCertificateRefs: must name at least one CA certificate", who, i)
		}
		for k := range fvm {
			if k != "caCertificateRefs" {
				return "", fmt.Errorf("%s: spec.listeners[%d].tls.frontendValidation.%s: unknown field (v1.1 had only caCertificateRefs)", who, i, k)
			}
		}
		if prev, ok := byPort[port]; ok {
			if !reflect.DeepEqual(prev.refs, refs) {
				return "", fmt.Errorf("%s: spec.listeners[%d].tls.frontendValidation: listeners %d and %d share port %d but name different CA certificates; client validation is per port (spec.tls.frontend.perPort)", who, i, prev.listener, i, port)
			}
		} else {
			byPort[port] = moved{listener: i, refs: refs}
			ports = append(ports, port)
		}
		delete(tls, "frontendValidation")
		if len(tls) == 0 {
			delete(l, "tls")
		}
	}
	if len(ports) == 0 {
		return "", nil
	}
	// Today's fields, where the v1.1 ones go; anything of another shape is an error, never overwritten.
	gtls, ok := spec["tls"].(map[string]any)
	if _, set := spec["tls"]; set && !ok {
		return "", fmt.Errorf("%s: spec.tls must be an object", who)
	}
	if gtls == nil {
		gtls = map[string]any{}
		spec["tls"] = gtls
	}
	frontend, ok := gtls["frontend"].(map[string]any)
	if _, set := gtls["frontend"]; set && !ok {
		return "", fmt.Errorf("%s: spec.tls.frontend must be an object", who)
	}
	if frontend == nil {
		frontend = map[string]any{"default": map[string]any{}}
		gtls["frontend"] = frontend
	}
	perPort, ok := frontend["perPort"].([]any)
	if _, set := frontend["perPort"]; set && !ok {
		return "", fmt.Errorf("%s: spec.tls.frontend.perPort must be a list", who)
	}
	var moves []string
	for _, port := range ports {
		for j, pp := range perPort {
			entry, ok := pp.(map[string]any)
			if !ok {
				return "", fmt.Errorf("%s: spec.tls.frontend.perPort[%d] must be an object", who, j)
			}
			if p, ok := portOf(entry["port"]); ok && p == port {
				return "", fmt.Errorf("%s: spec.listeners[%d].tls.frontendValidation and spec.tls.frontend.perPort both configure port %d: keep one", who, byPort[port].listener, port)
			}
		}
		perPort = append(perPort, map[string]any{
			"port": port,
			"tls":  map[string]any{"validation": map[string]any{"caCertificateRefs": byPort[port].refs}},
		})
		moves = append(moves, fmt.Sprintf("spec.listeners[%d].tls.frontendValidation (Gateway API v1.1) is stored as spec.tls.frontend.perPort[port %d].tls.validation.caCertificateRefs", byPort[port].listener, port))
	}
	frontend["perPort"] = perPort
	js, err := u.MarshalJSON()
	if err != nil {
		return "", err
	}
	o.Json = js
	return who + ": " + strings.Join(moves, "; "), nil
}

// portOf reads a port number from decoded JSON or YAML.
func portOf(v any) (int64, bool) {
	switch p := v.(type) {
	case int64:
		return p, p >= 1 && p <= 65535
	case float64:
		return int64(p), p >= 1 && p <= 65535 && p == float64(int64(p))
	case int:
		return int64(p), p >= 1 && p <= 65535
	}
	return 0, false
}

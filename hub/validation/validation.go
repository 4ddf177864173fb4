// Package validation refuses objects applied at the hub exactly as a Kubernetes API server with the Gateway API
// v1.6.3 CRDs (experimental channel) and the MCS API v0.5.2 ServiceExport CRD installed would refuse them.
//
// Objects applied through hubctl never pass an API server, so the hub runs the API server's own custom-resource
// pipeline in-process, from the CRD YAML embedded in crds/: strict decoding (unknown fields are errors, as with
// kubectl's default --validate=strict), pruning, defaulting, then the OpenAPI schema, list-type, embedded-metadata and
// CEL (x-kubernetes-validations) checks, with the same field paths and messages. Keeping the CRD files as the single
// source of rules means an upgrade of the Gateway API is a file copy, not a rewrite of hand-made checks.
//
// Core kinds (Service, EndpointSlice) have no CRD; they get light checks only (names, ports, address types) — enough
// to keep malformed reports out of the compiler, not the full k8s.io/kubernetes validation.
//
// The package is pure: no I/O after start-up, no logging, safe for concurrent use. It must not import hub/ packages
// that hold state; hub/server calls Validate from Admin.Apply and hubctl calls it before sending anything.
package validation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Validate returns an error naming the object and every offending field when o would be refused by an API server
// with the Gateway API v1.6.3 CRDs. A refusal for field-level reasons is an *InvalidError; a malformed body, an
// unknown field or an unknown apiVersion/kind is a plain error that still names the object.
func Validate(o *fedgatepb.Object) error {
	_, err := Normalize(o)
	return err
}

// Normalize validates o and returns it as an API server would store it: status dropped, nulls without defaults pruned
// and schema defaults applied (for example a backendRef's group "" and kind "Service"). Callers that store objects
// may keep the result so that the compiler sees the same defaulted shape a Kubernetes cluster would report.
func Normalize(o *fedgatepb.Object) (*fedgatepb.Object, error) {
	if o == nil {
		return nil, errors.New("validation: nil object")
	}
	gv, err := schema.ParseGroupVersion(o.ApiVersion)
	if err != nil {
		return nil, fmt.Errorf("%s: apiVersion %q: %w", resources.Describe(o.Kind, o.Namespace, o.Name), o.ApiVersion, err)
	}
	gvk := gv.WithKind(o.Kind)

	// utiljson, not encoding/json: whole numbers must decode as int64, as the API server decodes them, or the
	// schema's integer types and the CEL rules see float64 and fail with "expected int".
	var obj map[string]any
	if err := utiljson.Unmarshal(o.Json, &obj); err != nil {
		return nil, fmt.Errorf("%s: body is not a JSON object: %w", resources.Describe(o.Kind, o.Namespace, o.Name), err)
	}
	if obj == nil {
		return nil, fmt.Errorf("%s: body is empty", resources.Describe(o.Kind, o.Namespace, o.Name))
	}
	if err := checkEnvelope(o, obj); err != nil {
		return nil, err
	}

	var errs field.ErrorList
	switch gvk.GroupKind() {
	case coreServiceGK:
		errs, err = validateService(o)
	case coreEndpointSliceGK:
		errs, err = validateEndpointSlice(o)
	case coreNamespaceGK:
		errs, err = validateNamespace(o)
	case coreSecretGK:
		errs, err = validateSecret(o)
	case coreConfigMapGK:
		errs, err = validateConfigMap(o)
	default:
		v, lookupErr := crdValidatorFor(gvk)
		if lookupErr != nil {
			return nil, lookupErr
		}
		errs, err = v.validate(context.Background(), o, obj)
	}
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, &InvalidError{GroupKind: gvk.GroupKind(), Namespace: o.Namespace, Name: o.Name, Errors: errs}
	}

	js, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: re-encoding: %w", resources.Describe(o.Kind, o.Namespace, o.Name), err)
	}
	return &fedgatepb.Object{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, Json: js}, nil
}

// checkEnvelope makes sure the wire fields and the body agree, as an API server checks the URL against the body:
// the hub keys objects by the wire fields, so a body claiming another identity would be stored under a wrong key.
func checkEnvelope(o *fedgatepb.Object, obj map[string]any) error {
	desc := resources.Describe(o.Kind, o.Namespace, o.Name)
	if o.Kind == "" || o.ApiVersion == "" {
		return fmt.Errorf("%s: apiVersion and kind must be set", desc)
	}
	if k, _ := obj["kind"].(string); k != o.Kind {
		return fmt.Errorf("%s: body kind %q does not match kind %q", desc, k, o.Kind)
	}
	if v, _ := obj["apiVersion"].(string); v != o.ApiVersion {
		return fmt.Errorf("%s: body apiVersion %q does not match apiVersion %q", desc, v, o.ApiVersion)
	}
	md, _ := obj["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	if name != o.Name {
		// Same wording as the API server's check of the body against the URL.
		return fmt.Errorf("%s: the name of the object (%s) does not match the name on the URL (%s)", desc, name, o.Name)
	}
	ns, _ := md["namespace"].(string)
	if ns != "" && ns != o.Namespace {
		return fmt.Errorf("%s: the namespace of the provided object (%s) does not match the namespace sent on the request (%s)", desc, ns, o.Namespace)
	}
	return nil
}

// InvalidError is a refusal for field-level reasons, carrying every field error as the API server would list them.
type InvalidError struct {
	GroupKind schema.GroupKind
	Namespace string
	Name      string
	Errors    field.ErrorList
}

// Error renders like the API server's Invalid status (what kubectl prints after "Error from server"), except that the
// object is named with its namespace, since the hub serves every namespace at once:
//
//	HTTPRoute.gateway.networking.k8s.io "default/color" is invalid: spec.rules[0].backendRefs[0].weight: Invalid value: ...
//
// Several errors are bracketed and comma-separated, as the API server does.
func (e *InvalidError) Error() string {
	name := e.Name
	if e.Namespace != "" {
		name = e.Namespace + "/" + e.Name
	}
	agg := e.Errors.ToAggregate()
	if agg == nil {
		return fmt.Sprintf("%s %q is invalid", e.GroupKind.String(), name)
	}
	return fmt.Sprintf("%s %q is invalid: %v", e.GroupKind.String(), name, agg)
}

// Messages returns one line per field error ("path: Type: detail"), deduplicated and in the order found.
func (e *InvalidError) Messages() []string {
	agg := e.Errors.ToAggregate()
	if agg == nil {
		return nil
	}
	var out []string
	for _, err := range agg.Errors() {
		out = append(out, err.Error())
	}
	return out
}

// Status makes InvalidError an APIStatus, so apierrors.IsInvalid(err) holds and callers can turn it into the same
// metav1.Status an API server returns.
func (e *InvalidError) Status() metav1.Status {
	causes := make([]metav1.StatusCause, 0, len(e.Errors))
	for _, fe := range e.Errors {
		causes = append(causes, metav1.StatusCause{Type: metav1.CauseType(fe.Type), Message: fe.ErrorBody(), Field: fe.Field})
	}
	return metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnprocessableEntity,
		Reason:  metav1.StatusReasonInvalid,
		Message: e.Error(),
		Details: &metav1.StatusDetails{Group: e.GroupKind.Group, Kind: e.GroupKind.Kind, Name: e.Name, Causes: causes},
	}
}

// UnknownFieldsError is a strict-decoding refusal: the body has fields the schema does not declare. kubectl's default
// (--validate=strict) makes the API server refuse these rather than silently drop them; so does the hub, because a
// silently dropped field (a misspelt "weigth") would route traffic differently from what the author wrote.
type UnknownFieldsError struct {
	Object string // resources.Describe form
	Fields []string
}

func (e *UnknownFieldsError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = fmt.Sprintf("unknown field %q", f)
	}
	return fmt.Sprintf("%s: strict decoding error: %s", e.Object, strings.Join(parts, ", "))
}

func sortedUnique(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

package validation

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"sync"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/api/operation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/features"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// crdFiles are the upstream CRDs, vendored verbatim (see crds/README.md for their source versions).
//
//go:embed crds/*.yaml
var crdFiles embed.FS

// crdIndex maps each group/kind to its CRD file and scope. Reading every CRD header is cheap; building validators is
// not (the HTTPRoute CRD alone compiles hundreds of CEL programs), so that is deferred per kind.
type crdIndex struct {
	kinds map[schema.GroupKind]*crdEntry
}

// crdEntry builds one CRD's validators on first use. sync.Once (not a package-wide lock) so that the first HTTPRoute
// does not wait for the Gateway CRD to compile, and concurrent Applies share one build.
type crdEntry struct {
	file string

	once     sync.Once
	versions map[string]*versionValidator // served versions only
	err      error
}

var (
	indexOnce sync.Once
	index     *crdIndex
	indexErr  error
)

func loadIndex() (*crdIndex, error) {
	indexOnce.Do(func() {
		idx := &crdIndex{kinds: map[schema.GroupKind]*crdEntry{}}
		files, err := fs.Glob(crdFiles, "crds/*.yaml")
		if err != nil {
			indexErr = err
			return
		}
		for _, f := range files {
			crd, err := readCRD(f)
			if err != nil {
				indexErr = err
				return
			}
			gk := schema.GroupKind{Group: crd.Spec.Group, Kind: crd.Spec.Names.Kind}
			idx.kinds[gk] = &crdEntry{file: f}
		}
		index = idx
	})
	return index, indexErr
}

func readCRD(file string) (*apiextensionsv1.CustomResourceDefinition, error) {
	raw, err := crdFiles.ReadFile(file)
	if err != nil {
		return nil, err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(raw, crd); err != nil {
		return nil, fmt.Errorf("embedded CRD %s: %w", path.Base(file), err)
	}
	if crd.Kind != "CustomResourceDefinition" || crd.Spec.Names.Kind == "" {
		return nil, fmt.Errorf("embedded file %s is not a CustomResourceDefinition", path.Base(file))
	}
	return crd, nil
}

// Preload builds the validators of every embedded CRD now instead of on first use. Building compiles every CEL rule
// (a few hundred milliseconds for the HTTPRoute CRD on one core); the hub calls it at start-up to keep that cost
// off its first Apply. An error means an embedded CRD is unusable, which is a build defect.
func Preload() error {
	idx, err := loadIndex()
	if err != nil {
		return fmt.Errorf("validation: loading embedded CRDs: %w", err)
	}
	var errs []error
	for gk, e := range idx.kinds {
		if !knownToFedgate(gk) {
			continue
		}
		e.once.Do(func() { e.versions, e.err = buildVersions(e.file) })
		if e.err != nil {
			errs = append(errs, e.err)
		}
	}
	return errors.Join(errs...)
}

// crdValidatorFor returns the validator of one served version, building the kind's validators on first use.
func crdValidatorFor(gvk schema.GroupVersionKind) (*versionValidator, error) {
	idx, err := loadIndex()
	if err != nil {
		return nil, fmt.Errorf("validation: loading embedded CRDs: %w", err)
	}
	e, ok := idx.kinds[gvk.GroupKind()]
	if !ok || !knownToFedgate(gvk.GroupKind()) {
		return nil, fmt.Errorf("no matches for kind %q in version %q: kind %s is not supported by fedgate",
			gvk.Kind, gvk.GroupVersion().String(), gvk.GroupKind().String())
	}
	e.once.Do(func() { e.versions, e.err = buildVersions(e.file) })
	if e.err != nil {
		return nil, e.err
	}
	v, ok := e.versions[gvk.Version]
	if !ok {
		// kubectl's wording when the CRD does not serve the version.
		return nil, fmt.Errorf("no matches for kind %q in version %q", gvk.Kind, gvk.GroupVersion().String())
	}
	return v, nil
}

// knownToFedgate keeps the validator from accepting kinds whose CRD happens to be embedded but that the rest of the
// hub does not carry.
func knownToFedgate(gk schema.GroupKind) bool {
	for _, k := range resources.Kinds {
		if k == gk {
			return true
		}
	}
	return false
}

// versionValidator holds everything the API server's custom-resource handler builds for one served version.
type versionValidator struct {
	gvk             schema.GroupVersionKind
	namespaced      bool
	hasStatus       bool
	structural      *structuralschema.Structural
	schemaValidator apiservervalidation.SchemaValidator
	cel             *cel.Validator
}

// buildVersions mirrors k8s.io/apiextensions-apiserver/pkg/apiserver.(*crdHandler).getOrCreateServingInfoFor: convert
// each version's schema to the internal type, build the structural schema, prune defaults, build the OpenAPI schema
// validator and the CEL validator.
func buildVersions(file string) (map[string]*versionValidator, error) {
	crd, err := readCRD(file)
	if err != nil {
		return nil, err
	}
	out := map[string]*versionValidator{}
	for i := range crd.Spec.Versions {
		ver := &crd.Spec.Versions[i]
		if !ver.Served {
			continue
		}
		gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: ver.Name, Kind: crd.Spec.Names.Kind}
		v1Validation := ver.Schema
		if v1Validation == nil || v1Validation.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("embedded CRD %s: version %s has no schema", path.Base(file), ver.Name)
		}
		internal := &apiextensionsinternal.CustomResourceValidation{}
		if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v1Validation, internal, nil); err != nil {
			return nil, fmt.Errorf("embedded CRD %s %s: converting schema: %w", path.Base(file), ver.Name, err)
		}
		s, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
		if err != nil {
			return nil, fmt.Errorf("embedded CRD %s %s: structural schema: %w", path.Base(file), ver.Name, err)
		}
		// As the API server does: its own copy, with defaults that would be pruned away removed, so that defaulting
		// never inserts a field that pruning would then drop.
		s = s.DeepCopy()
		if err := structuraldefaulting.PruneDefaults(s); err != nil {
			return nil, fmt.Errorf("embedded CRD %s %s: pruning defaults: %w", path.Base(file), ver.Name, err)
		}
		sv, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
		if err != nil {
			return nil, fmt.Errorf("embedded CRD %s %s: schema validator: %w", path.Base(file), ver.Name, err)
		}
		out[ver.Name] = &versionValidator{
			gvk:             gvk,
			namespaced:      crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
			hasStatus:       ver.Subresources != nil && ver.Subresources.Status != nil,
			structural:      s,
			schemaValidator: sv,
			// CEL programs are compiled here, once; the per-call limit is the API server's.
			cel: cel.NewValidator(s, true, celconfig.PerCallLimit),
		}
	}
	return out, nil
}

// validate runs the create path of the API server on obj, in its order: decode (strict unknown-field check, pruning,
// metadata coercion), defaulting, PrepareForCreate (status dropped), then the strategy's Validate. obj is modified in
// place into the stored form.
func (v *versionValidator) validate(ctx context.Context, o *fedgatepb.Object, obj map[string]any) (field.ErrorList, error) {
	desc := resources.Describe(o.Kind, o.Namespace, o.Name)

	// Decoding. Metadata is taken out first and put back after pruning, exactly as the handler's schema coercer does,
	// because the CRD schemas do not describe ObjectMeta.
	meta, foundMeta, unknown, err := schemaobjectmeta.GetObjectMetaWithOptions(obj, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return nil, fmt.Errorf("%s: metadata: %w", desc, err)
	}
	if v.hasStatus {
		// PrepareForCreate drops status; dropping it before pruning also keeps stale status fields from reading as
		// unknown-field errors.
		delete(obj, "status")
	}
	unknown = append(unknown, structuralpruning.PruneWithOptions(obj, v.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, v.structural)
	fe, paths := schemaobjectmeta.CoerceWithOptions(nil, obj, v.structural, false, schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true})
	if fe != nil {
		return field.ErrorList{fe}, nil
	}
	unknown = append(unknown, paths...)
	// As rest.BeforeCreate does: the request's namespace fills an empty one, and cluster-scoped kinds have none.
	if meta == nil {
		meta = &metav1.ObjectMeta{}
	}
	if !v.namespaced {
		meta.Namespace = ""
	} else if meta.Namespace == "" {
		meta.Namespace = o.Namespace
	}
	if foundMeta || meta.Namespace != "" {
		if err := schemaobjectmeta.SetObjectMeta(obj, meta); err != nil {
			return nil, fmt.Errorf("%s: metadata: %w", desc, err)
		}
	}
	if len(unknown) > 0 {
		return nil, &UnknownFieldsError{Object: desc, Fields: sortedUnique(unknown)}
	}

	// Defaulting comes before validation: the CEL rules assume defaulted fields (a backendRef's group and kind).
	structuraldefaulting.Default(obj, v.structural)

	// The strategy's Validate, in the API server's order, starting with its metadata check (declarative rules
	// included, under the same feature gate).
	var errs field.ErrorList
	errs = append(errs, apimachineryvalidation.ValidateObjectMetaDeclaratively(ctx, operation.Create, meta, nil, v.namespaced,
		apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"), utilfeature.DefaultFeatureGate.Enabled(features.DeclarativeValidationBeta))...)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, v.schemaValidator)...)
	errs = append(errs, schemaobjectmeta.Validate(ctx, nil, obj, v.structural, false)...)
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	if blocked, fe := hasBlockingErr(errs); blocked {
		errs = append(errs, fe)
	} else {
		celErrs, _ := v.cel.Validate(ctx, nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		// The CEL validator visits sibling properties in map order, so its errors come out in a different order from
		// run to run. Order them by field path (stable within a field: a field's rules keep schema order), so the
		// same object always gets the same message.
		sort.SliceStable(celErrs, func(i, j int) bool { return celErrs[i].Field < celErrs[j].Field })
		errs = append(errs, celErrs...)
	}
	return errs, nil
}

// hasBlockingErr is the API server's rule (registry/customresource.hasBlockingErr): CEL rules are skipped when the
// object is so malformed that they could not be evaluated meaningfully, and a note says so.
func hasBlockingErr(errs field.ErrorList) (bool, *field.Error) {
	for _, err := range errs {
		switch err.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation")
		}
	}
	return false, nil
}

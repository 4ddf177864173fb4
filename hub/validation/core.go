package validation

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Core kinds have no CRD to evaluate, and their real validation lives in k8s.io/kubernetes, which fedgate does not
// import (it is not meant to be a library). These are light checks only — the ones whose failure would confuse the
// compiler: names, ports, protocols and address types — worded as the API server words them. Anything subtler
// (clusterIP families, session affinity, topology hints) is left to the cluster that reported the object.

var (
	coreServiceGK       = schema.GroupKind{Group: "", Kind: resources.KindService}
	coreEndpointSliceGK = schema.GroupKind{Group: discoveryv1.GroupName, Kind: resources.KindEndpointSlice}
	coreNamespaceGK     = schema.GroupKind{Group: "", Kind: resources.KindNamespace}
	coreSecretGK        = schema.GroupKind{Group: "", Kind: resources.KindSecret}
	coreConfigMapGK     = schema.GroupKind{Group: "", Kind: resources.KindConfigMap}

	supportedProtocols = sets.New(string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP))
)

func validateService(o *fedgatepb.Object) (field.ErrorList, error) {
	obj, err := resources.Typed(o)
	if err != nil {
		return nil, err
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected type %T", resources.Describe(o.Kind, o.Namespace, o.Name), obj)
	}
	if svc.Namespace == "" {
		svc.Namespace = o.Namespace
	}
	errs := apimachineryvalidation.ValidateObjectMeta(&svc.ObjectMeta, true, apimachineryvalidation.NameIsDNS1035Label, field.NewPath("metadata"))

	specPath := field.NewPath("spec")
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	if len(svc.Spec.Ports) == 0 && !headless && svc.Spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, field.Required(specPath.Child("ports"), ""))
	}
	names := sets.New[string]()
	for i, p := range svc.Spec.Ports {
		pp := specPath.Child("ports").Index(i)
		if len(svc.Spec.Ports) > 1 || p.Name != "" {
			switch {
			case p.Name == "":
				errs = append(errs, field.Required(pp.Child("name"), ""))
			case names.Has(p.Name):
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			default:
				for _, msg := range utilvalidation.IsDNS1123Label(p.Name) {
					errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
				}
			}
			names.Insert(p.Name)
		}
		for _, msg := range utilvalidation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		errs = append(errs, validateProtocol(pp.Child("protocol"), p.Protocol, true)...)
		switch p.TargetPort.Type {
		case intstr.Int:
			// 0 means "same as port" once defaulted.
			if p.TargetPort.IntVal != 0 {
				for _, msg := range utilvalidation.IsValidPortNum(int(p.TargetPort.IntVal)) {
					errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.IntVal, msg))
				}
			}
		case intstr.String:
			for _, msg := range utilvalidation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		}
	}
	return errs, nil
}

// EndpointSlice limits from k8s.io/kubernetes/pkg/apis/discovery/validation.
const (
	maxEndpointSliceEndpoints = 1000
	maxEndpointSlicePorts     = 20000
	maxEndpointAddresses      = 100
)

var supportedAddressTypes = sets.New(string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6), string(discoveryv1.AddressTypeFQDN))

// validateNamespace checks what the compiler reads of a reported Namespace: its name and labels.
func validateNamespace(o *fedgatepb.Object) (field.ErrorList, error) {
	obj, err := resources.Typed(o)
	if err != nil {
		return nil, err
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected type %T", resources.Describe(o.Kind, o.Namespace, o.Name), obj)
	}
	return apimachineryvalidation.ValidateObjectMeta(&ns.ObjectMeta, false, apimachineryvalidation.ValidateNamespaceName, field.NewPath("metadata")), nil
}

func validateEndpointSlice(o *fedgatepb.Object) (field.ErrorList, error) {
	obj, err := resources.Typed(o)
	if err != nil {
		return nil, err
	}
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected type %T", resources.Describe(o.Kind, o.Namespace, o.Name), obj)
	}
	if es.Namespace == "" {
		es.Namespace = o.Namespace
	}
	errs := apimachineryvalidation.ValidateObjectMeta(&es.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))

	at := string(es.AddressType)
	switch {
	case at == "":
		errs = append(errs, field.Required(field.NewPath("addressType"), ""))
	case !supportedAddressTypes.Has(at):
		errs = append(errs, field.NotSupported(field.NewPath("addressType"), at, sets.List(supportedAddressTypes)))
	}

	epsPath := field.NewPath("endpoints")
	if len(es.Endpoints) > maxEndpointSliceEndpoints {
		errs = append(errs, field.TooMany(epsPath, len(es.Endpoints), maxEndpointSliceEndpoints))
	}
	for i, ep := range es.Endpoints {
		ap := epsPath.Index(i).Child("addresses")
		switch {
		case len(ep.Addresses) == 0:
			errs = append(errs, field.Required(ap, "must contain at least 1 address"))
		case len(ep.Addresses) > maxEndpointAddresses:
			errs = append(errs, field.TooMany(ap, len(ep.Addresses), maxEndpointAddresses))
		}
		for j, addr := range ep.Addresses {
			errs = append(errs, validateEndpointAddress(ap.Index(j), discoveryv1.AddressType(at), addr)...)
		}
	}

	portsPath := field.NewPath("ports")
	if len(es.Ports) > maxEndpointSlicePorts {
		errs = append(errs, field.TooMany(portsPath, len(es.Ports), maxEndpointSlicePorts))
	}
	names := sets.New[string]()
	for i, p := range es.Ports {
		pp := portsPath.Index(i)
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name != "" {
			for _, msg := range utilvalidation.IsDNS1123Label(name) {
				errs = append(errs, field.Invalid(pp.Child("name"), name, msg))
			}
		}
		if names.Has(name) {
			errs = append(errs, field.Duplicate(pp.Child("name"), name))
		}
		names.Insert(name)
		if p.Port != nil {
			for _, msg := range utilvalidation.IsValidPortNum(int(*p.Port)) {
				errs = append(errs, field.Invalid(pp.Child("port"), *p.Port, msg))
			}
		}
		if p.Protocol != nil {
			errs = append(errs, validateProtocol(pp.Child("protocol"), *p.Protocol, false)...)
		}
	}
	return errs, nil
}

func validateEndpointAddress(p *field.Path, at discoveryv1.AddressType, addr string) field.ErrorList {
	switch at {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		ip, err := netip.ParseAddr(addr)
		if err != nil || ip.Zone() != "" {
			return field.ErrorList{field.Invalid(p, addr, "must be a valid IP address")}
		}
		if at == discoveryv1.AddressTypeIPv4 && !ip.Is4() {
			return field.ErrorList{field.Invalid(p, addr, "must be an IPv4 address")}
		}
		if at == discoveryv1.AddressTypeIPv6 && (!ip.Is6() || ip.Is4In6()) {
			return field.ErrorList{field.Invalid(p, addr, "must be an IPv6 address")}
		}
	case discoveryv1.AddressTypeFQDN:
		var errs field.ErrorList
		for _, msg := range utilvalidation.IsDNS1123Subdomain(addr) {
			errs = append(errs, field.Invalid(p, addr, msg))
		}
		return errs
	}
	return nil
}

// validateProtocol checks a port protocol; the API server defaults an empty one to TCP, so empty is accepted when
// the field is defaulted.
func validateProtocol(p *field.Path, proto corev1.Protocol, defaulted bool) field.ErrorList {
	if proto == "" {
		if defaulted {
			return nil
		}
		return field.ErrorList{field.Required(p, "")}
	}
	if !supportedProtocols.Has(string(proto)) {
		return field.ErrorList{field.NotSupported(p, string(proto), sets.List(supportedProtocols))}
	}
	return nil
}

// validateSecret: fedgate carries Secrets as listener certificates only, so any type but kubernetes.io/tls is refused
// (naming the field type); a TLS Secret needs tls.crt and tls.key, as the API server requires (stringData counts,
// as the API server merges it into data first). Whether they hold a usable key pair is the compiler's to judge
// (listener ResolvedRefs), as a cluster accepts any bytes there too.
func validateSecret(o *fedgatepb.Object) (field.ErrorList, error) {
	obj, err := resources.Typed(o)
	if err != nil {
		return nil, err
	}
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected type %T", resources.Describe(o.Kind, o.Namespace, o.Name), obj)
	}
	if sec.Namespace == "" {
		sec.Namespace = o.Namespace
	}
	errs := apimachineryvalidation.ValidateObjectMeta(&sec.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	if sec.Type != corev1.SecretTypeTLS {
		return append(errs, field.NotSupported(field.NewPath("type"), sec.Type, []string{string(corev1.SecretTypeTLS)})), nil
	}
	total := 0
	for k, v := range sec.Data {
		total += len(k) + len(v)
	}
	for k, v := range sec.StringData {
		total += len(k) + len(v)
	}
	if total > MaxTLSSecretBytes {
		// Its data is copied into the projection of every cluster serving a listener that names it: a large one
		// would push those projections past what can be stored and sent.
		errs = append(errs, field.TooLong(field.NewPath("data"), "", MaxTLSSecretBytes))
	}
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
		_, inData := sec.Data[k]
		_, inString := sec.StringData[k]
		if !inData && !inString {
			errs = append(errs, field.Required(field.NewPath("data").Key(k), ""))
		}
	}
	return errs, nil
}

// MaxTLSSecretBytes bounds a TLS Secret applied at the hub (its data, keys included): a certificate chain of a few
// certificates and its key take a few KiB.
const MaxTLSSecretBytes = 64 << 10

// validateConfigMap: fedgate carries ConfigMaps as CA bundles of Gateways' client-certificate validation
// (spec.tls.frontend caCertificateRefs) only, so one applied at the hub needs data[ca.crt]. Whether it holds usable
// certificates is the compiler's to judge (listener ResolvedRefs), as a cluster accepts any text there too.
func validateConfigMap(o *fedgatepb.Object) (field.ErrorList, error) {
	obj, err := resources.Typed(o)
	if err != nil {
		return nil, err
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected type %T", resources.Describe(o.Kind, o.Namespace, o.Name), obj)
	}
	if cm.Namespace == "" {
		cm.Namespace = o.Namespace
	}
	errs := apimachineryvalidation.ValidateObjectMeta(&cm.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	if _, ok := cm.Data[resources.CACertKey]; !ok {
		errs = append(errs, field.Required(field.NewPath("data").Key(resources.CACertKey), "fedgate carries ConfigMaps as CA bundles of spec.tls.frontend caCertificateRefs"))
	}
	return errs, nil
}

package compiler

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// resolveClientValidation gives an HTTPS listener its client-certificate validation: the Gateway's spec.tls.frontend
// entry of perPort for the listener's port, else its default. Where a CA ConfigMap comes from follows where the
// Gateway does, as for certificateRefs: a Gateway applied at the hub takes ConfigMaps applied at the hub, a Gateway a
// cluster reported takes that cluster's own (reported with ca.crt alone). A cross-namespace ref needs a ReferenceGrant
// from the Gateway in the ConfigMap's namespace, in the same scope as certificateRefs' (gatewayGranted: a hub
// Gateway's only from the hub).
//
// The ca.crt of every usable ref is served, concatenated in ref order; each unusable ref makes ResolvedRefs False
// (the first one's reason, every one's message). When no ref is usable the listener is not accepted
// (NoValidCACertificate) and so not served: it never falls back to serving without validation.
func (c *compiler) resolveClientValidation(l *listener) {
	gi := l.gi
	if gi.gw.Spec.TLS == nil || gi.gw.Spec.TLS.Frontend == nil {
		return
	}
	fr := gi.gw.Spec.TLS.Frontend
	v, path := fr.Default.Validation, "spec.tls.frontend.default.validation"
	for i := range fr.PerPort {
		if int32(fr.PerPort[i].Port) == l.port {
			// The port's entry overrides the default, also when it sets no validation.
			v, path = fr.PerPort[i].TLS.Validation, fmt.Sprintf("spec.tls.frontend.perPort[%d].tls.validation", i)
			break
		}
	}
	if v == nil {
		return
	}
	mode := spokeconfig.AllowValidOnly
	switch v.Mode {
	case "", gatewayv1.AllowValidOnly:
	case gatewayv1.AllowInsecureFallback:
		mode = spokeconfig.AllowInsecureFallback
	default:
		// The CRD refuses it too; a reported Gateway may predate it.
		l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonUnsupportedValue
		l.acceptedMsg = fmt.Sprintf("%s.mode %q: supported values: %q, %q", path, v.Mode, gatewayv1.AllowValidOnly, gatewayv1.AllowInsecureFallback)
		return
	}
	fail := func(reason gatewayv1.ListenerConditionReason, format string, args ...any) {
		if l.caReason == "" {
			l.caReason = reason
		}
		l.caMsgs = append(l.caMsgs, fmt.Sprintf(format, args...))
	}
	var bundle []byte
	for j, ref := range v.CACertificateRefs {
		field := fmt.Sprintf("%s.caCertificateRefs[%d]", path, j)
		group, kind, ns, name := string(ref.Group), string(ref.Kind), gi.gw.Namespace, string(ref.Name)
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if group != "" || kind != resources.KindConfigMap {
			fail(gatewayv1.ListenerReasonInvalidCACertificateKind, "%s: unsupported kind %q in group %q (want a core ConfigMap)", field, kind, group)
			continue
		}
		if ns != gi.gw.Namespace && !c.gatewayGranted(gi, resources.KindConfigMap, ns, name) {
			fail(gatewayv1.ListenerReasonRefNotPermitted, "%s: ConfigMap %s/%s: no ReferenceGrant in namespace %q allows Gateways from %q to reference it", field, ns, name, ns, gi.gw.Namespace)
			continue
		}
		var cm *corev1.ConfigMap
		where := ""
		if gi.source.Cluster == "" {
			cm = c.hub.configMaps[ns+"/"+name]
			if cm == nil {
				fail(gatewayv1.ListenerReasonInvalidCACertificateRef, "%s: ConfigMap %s/%s not found (a Gateway applied at the hub takes ConfigMaps applied at the hub)", field, ns, name)
				continue
			}
		} else {
			where = " in cluster " + gi.source.Cluster
			cm = c.reports[gi.source.Cluster].configMaps[ns+"/"+name]
			if cm == nil {
				fail(gatewayv1.ListenerReasonInvalidCACertificateRef, "%s: ConfigMap %s/%s not found%s", field, ns, name, where)
				continue
			}
		}
		pem, ok := cm.Data[resources.CACertKey]
		if !ok {
			fail(gatewayv1.ListenerReasonInvalidCACertificateRef, "%s: ConfigMap %s/%s%s has no key %s", field, ns, name, where, resources.CACertKey)
			continue
		}
		if err := c.checkCABundle(cm); err != nil {
			fail(gatewayv1.ListenerReasonInvalidCACertificateRef, "%s: ConfigMap %s/%s%s: %v", field, ns, name, where, err)
			continue
		}
		bundle = append(bundle, pem...)
		if bundle[len(bundle)-1] != '\n' {
			bundle = append(bundle, '\n')
		}
	}
	if len(bundle) == 0 {
		l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonNoValidCACertificate
		l.acceptedMsg = fmt.Sprintf("%s.caCertificateRefs: no CA certificate is usable, so client certificates cannot be verified and the listener is not served", path)
		return
	}
	l.clientValidation = &spokeconfig.ClientValidation{CACertificatesPEM: bundle, Mode: mode}
}

// checkCABundle is resources.CheckCABundle of a ConfigMap's ca.crt, once per ConfigMap and compile: a hub Gateway is
// instantiated in every cluster.
func (c *compiler) checkCABundle(cm *corev1.ConfigMap) error {
	if err, ok := c.caChecks[cm]; ok {
		return err
	}
	err := resources.CheckCABundle([]byte(cm.Data[resources.CACertKey]))
	c.caChecks[cm] = err
	return err
}

// copyClientValidation copies a listener's validation, so that projections share no memory with the graph.
func copyClientValidation(v *spokeconfig.ClientValidation) *spokeconfig.ClientValidation {
	if v == nil {
		return nil
	}
	return &spokeconfig.ClientValidation{CACertificatesPEM: slices.Clone(v.CACertificatesPEM), Mode: v.Mode}
}

package compiler

import (
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// resolveCertificates judges an HTTPS listener's tls.certificateRefs (mode Terminate) in its Gateway instance's
// cluster. Where a Secret comes from follows where the Gateway does: a Gateway applied at the hub takes Secrets applied
// at the hub, whose data the hub holds and checks (resources.CheckTLSSecret); a Gateway a cluster reported takes that
// cluster's own Secrets, which the cluster judged and reported without data (resources.TLSCheckAnnotation), and
// which its spoke reads itself (Certificate.Local). A cross-namespace ref needs a ReferenceGrant from the Gateway in
// the Secret's namespace (gatewayGranted): a hub Gateway's only from the hub, never one a cluster reported, which would
// let a cluster release a hub Secret's key to itself.
//
// Every usable ref is served (l.certs); the first unusable one names ResolvedRefs' reason, and each adds its message.
// Messages never quote Secret data.
func (c *compiler) resolveCertificates(l *listener, index int, tls *gatewayv1.ListenerTLSConfig) {
	gi := l.gi
	fail := func(reason gatewayv1.ListenerConditionReason, format string, args ...any) {
		if l.certReason == "" {
			l.certReason = reason
		}
		l.certMsgs = append(l.certMsgs, fmt.Sprintf(format, args...))
	}
	if len(tls.CertificateRefs) == 0 {
		fail(gatewayv1.ListenerReasonInvalidCertificateRef, "spec.listeners[%d].tls.certificateRefs: Required value: fedgate terminates TLS with certificateRefs only", index)
		return
	}
	for j, ref := range tls.CertificateRefs {
		field := fmt.Sprintf("spec.listeners[%d].tls.certificateRefs[%d]", index, j)
		group, kind, ns := "", resources.KindSecret, gi.gw.Namespace
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		name := string(ref.Name)
		if group != "" || kind != resources.KindSecret {
			fail(gatewayv1.ListenerReasonInvalidCertificateRef, "%s: unsupported kind %q in group %q (want a core Secret)", field, kind, group)
			continue
		}
		if ns != gi.gw.Namespace && !c.gatewayGranted(gi, resources.KindSecret, ns, name) {
			fail(gatewayv1.ListenerReasonRefNotPermitted, "%s: Secret %s/%s: no ReferenceGrant in namespace %q allows Gateways from %q to reference it", field, ns, name, ns, gi.gw.Namespace)
			continue
		}
		if gi.source.Cluster == "" {
			s := c.hub.secrets[ns+"/"+name]
			if s == nil {
				fail(gatewayv1.ListenerReasonInvalidCertificateRef, "%s: Secret %s/%s not found (a Gateway applied at the hub takes Secrets applied at the hub)", field, ns, name)
				continue
			}
			if err := c.checkTLSSecret(s); err != nil {
				fail(gatewayv1.ListenerReasonInvalidCertificateRef, "%s: Secret %s/%s: %v", field, ns, name, err)
				continue
			}
			l.certs = append(l.certs, spokeconfig.Certificate{
				Namespace: ns, Name: name,
				CertPEM: slices.Clone(s.Data[corev1.TLSCertKey]), KeyPEM: slices.Clone(s.Data[corev1.TLSPrivateKeyKey]),
			})
			continue
		}
		s := c.reports[gi.source.Cluster].secrets[ns+"/"+name]
		if s == nil {
			fail(gatewayv1.ListenerReasonInvalidCertificateRef, "%s: Secret %s/%s not found in cluster %s", field, ns, name, gi.source.Cluster)
			continue
		}
		if check := s.Annotations[resources.TLSCheckAnnotation]; check != resources.TLSCheckValid {
			if check == "" {
				check = "not checked by the cluster"
			}
			fail(gatewayv1.ListenerReasonInvalidCertificateRef, "%s: Secret %s/%s in cluster %s: %s", field, ns, name, gi.source.Cluster, check)
			continue
		}
		l.certs = append(l.certs, spokeconfig.Certificate{Namespace: ns, Name: name, Local: true})
	}
}

// gatewayGranted reports whether a ReferenceGrant lets a Gateway instance reference a core object of kind toKind
// (Secret, ConfigMap) in another namespace. A Gateway applied at the hub references objects applied at the hub, whose
// data the hub holds and releases in projections: only ReferenceGrants applied at the hub count, never one a cluster
// reported (a cluster could otherwise authorise its own access to any hub Secret). A Gateway a cluster reported
// references that cluster's own objects: the hub's grants and that cluster's count, the scope backendRefs have there.
func (c *compiler) gatewayGranted(gi *gatewayInstance, toKind, toNamespace, toName string) bool {
	if gi.source.Cluster == "" {
		for _, g := range c.hub.grants[toNamespace] {
			if grantAllows(g, resources.KindGateway, gi.gw.Namespace, "", toKind, toName) {
				return true
			}
		}
		return false
	}
	return c.granted(gi.source.Cluster, resources.KindGateway, gi.gw.Namespace, "", toKind, toNamespace, toName)
}

// checkTLSSecret is resources.CheckTLSSecret, once per hub Secret and compile: a hub Gateway is instantiated in every
// cluster, and parsing a key pair per instance would cost the fleet's size in every compile.
func (c *compiler) checkTLSSecret(s *corev1.Secret) error {
	if err, ok := c.tlsChecks[s]; ok {
		return err
	}
	err := resources.CheckTLSSecret(s)
	c.tlsChecks[s] = err
	return err
}

// portTLS is the TLS of an HTTPS port: one TLSListener per programmed listener on it, by hostname ("*" for none).
// Conflict resolution left at most one listener per port and hostname. The certificates are the listeners' own
// (resolveCertificates copied the Secrets' data), so the graph shares no memory with the inputs.
func portTLS(ls []*listener) *spokeconfig.PortTLS {
	t := &spokeconfig.PortTLS{Listeners: make([]spokeconfig.TLSListener, 0, len(ls))}
	for _, l := range ls {
		t.Listeners = append(t.Listeners, spokeconfig.TLSListener{Hostname: orStar(l.hostname), Certificates: l.certs, ClientValidation: l.clientValidation})
	}
	sort.Slice(t.Listeners, func(i, j int) bool { return t.Listeners[i].Hostname < t.Listeners[j].Hostname })
	return t
}

// copyPortTLS copies a graph port's TLS into a projection, so projections share no memory with the graph.
func copyPortTLS(t *spokeconfig.PortTLS) *spokeconfig.PortTLS {
	if t == nil {
		return nil
	}
	out := &spokeconfig.PortTLS{Listeners: make([]spokeconfig.TLSListener, 0, len(t.Listeners))}
	for _, tl := range t.Listeners {
		n := spokeconfig.TLSListener{Hostname: tl.Hostname, ClientValidation: copyClientValidation(tl.ClientValidation)}
		for _, crt := range tl.Certificates {
			crt.CertPEM, crt.KeyPEM = slices.Clone(crt.CertPEM), slices.Clone(crt.KeyPEM)
			n.Certificates = append(n.Certificates, crt)
		}
		out.Listeners = append(out.Listeners, n)
	}
	return out
}

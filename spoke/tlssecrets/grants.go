package tlssecrets

import (
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
)

// Permitted reports whether a Gateway in namespace from may reference to, an object of the core group ("") and kind
// kind (resources.KindSecret, resources.KindConfigMap), under Gateway API ReferenceGrant semantics: always in its own
// namespace; in another, only when one of grants, in to's namespace, has a from entry of group
// gateway.networking.k8s.io, kind Gateway and namespace from, and a to entry of group "" and kind kind whose name is
// unset or to's name. A spoke reads only the objects a permitted reference names, so that a Gateway cannot make it read
// (and report the existence of) an object in a namespace that did not consent.
func Permitted(from string, to Ref, kind string, grants []*gatewayv1.ReferenceGrant) bool {
	if to.Namespace == from {
		return true
	}
	for _, g := range grants {
		if g == nil || g.Namespace != to.Namespace {
			continue
		}
		fromOK := false
		for _, f := range g.Spec.From {
			if string(f.Group) == gatewayv1.GroupName && string(f.Kind) == resources.KindGateway && string(f.Namespace) == from {
				fromOK = true
				break
			}
		}
		if !fromOK {
			continue
		}
		for _, t := range g.Spec.To {
			if t.Group == "" && string(t.Kind) == kind && (t.Name == nil || *t.Name == "" || string(*t.Name) == to.Name) {
				return true
			}
		}
	}
	return false
}

package compiler

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// statusCache collects ObjectStatus values as the passes run; list() emits them in a deterministic order.
type statusCache struct {
	byRef map[ObjectRef]*ObjectStatus
}

func newStatusCache() *statusCache { return &statusCache{byRef: map[ObjectRef]*ObjectStatus{}} }

// get returns the status entry for ref, creating it with the object's generation.
func (s *statusCache) get(ref ObjectRef, generation int64) *ObjectStatus {
	st, ok := s.byRef[ref]
	if !ok {
		st = &ObjectStatus{Ref: ref, Generation: generation}
		s.byRef[ref] = st
	}
	return st
}

func (s *statusCache) list() []ObjectStatus {
	out := make([]ObjectStatus, 0, len(s.byRef))
	for _, st := range s.byRef {
		if len(st.Conditions) == 0 && len(st.Parents) == 0 && len(st.Listeners) == 0 {
			// A route whose parents all belong to other controllers: fedgate has nothing to say about it.
			continue
		}
		sort.SliceStable(st.Parents, func(i, j int) bool { return parentLess(st.Parents[i], st.Parents[j]) })
		sort.SliceStable(st.Listeners, func(i, j int) bool {
			a, b := st.Listeners[i], st.Listeners[j]
			if a.Cluster != b.Cluster {
				return a.Cluster < b.Cluster
			}
			return a.Name < b.Name
		})
		sort.SliceStable(st.Clusters, func(i, j int) bool { return st.Clusters[i].Cluster < st.Clusters[j].Cluster })
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return refLess(out[i].Ref, out[j].Ref) })
	return out
}

func refLess(a, b ObjectRef) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Cluster < b.Cluster
}

func parentLess(a, b ParentStatus) bool {
	ka, kb := parentKey(a.ParentRef), parentKey(b.ParentRef)
	if ka != kb {
		return ka < kb
	}
	return a.Cluster < b.Cluster
}

// parentKey renders a parentRef with its defaults applied, for sorting and messages.
func parentKey(p gatewayv1.ParentReference) string {
	group, kind, ns, section, port := gatewayv1.GroupName, "Gateway", "", "", ""
	if p.Group != nil {
		group = string(*p.Group)
	}
	if p.Kind != nil {
		kind = string(*p.Kind)
	}
	if p.Namespace != nil {
		ns = string(*p.Namespace)
	}
	if p.SectionName != nil {
		section = string(*p.SectionName)
	}
	if p.Port != nil {
		port = fmt.Sprint(*p.Port)
	}
	return group + "/" + kind + "/" + ns + "/" + string(p.Name) + "/" + section + "/" + port
}

// condition builds a condition. LastTransitionTime stays zero: the hub stamps real times when it writes status, so the
// compiler's output depends on its inputs only.
func condition(typ string, ok bool, reason, message string, generation int64) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: message, ObservedGeneration: generation}
}

package backendlb

import (
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Deep copies, written by hand: the package is too small to justify a code generator in the build, and a test
// (deepcopy_test.go) checks that copies share no memory with their originals.

// DeepCopyInto copies in into out.
func (in *BackendLBPolicy) DeepCopyInto(out *BackendLBPolicy) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Spec.DeepCopyInto(&out.Spec)
	in.Status.DeepCopyInto(&out.Status)
}

// DeepCopy returns a deep copy.
func (in *BackendLBPolicy) DeepCopy() *BackendLBPolicy {
	if in == nil {
		return nil
	}
	out := new(BackendLBPolicy)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *BackendLBPolicy) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies in into out.
func (in *BackendLBPolicyList) DeepCopyInto(out *BackendLBPolicyList) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]BackendLBPolicy, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns a deep copy.
func (in *BackendLBPolicyList) DeepCopy() *BackendLBPolicyList {
	if in == nil {
		return nil
	}
	out := new(BackendLBPolicyList)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *BackendLBPolicyList) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies in into out.
func (in *BackendLBPolicySpec) DeepCopyInto(out *BackendLBPolicySpec) {
	*out = *in
	if in.TargetRefs != nil {
		out.TargetRefs = make([]gatewayv1.LocalPolicyTargetReference, len(in.TargetRefs))
		copy(out.TargetRefs, in.TargetRefs) // plain strings: a value copy is deep
	}
	out.SessionPersistence = in.SessionPersistence.DeepCopy()
}

// DeepCopy returns a deep copy.
func (in *SessionPersistence) DeepCopy() *SessionPersistence {
	if in == nil {
		return nil
	}
	out := new(SessionPersistence)
	out.SessionName = copyPtr(in.SessionName)
	out.AbsoluteTimeout = copyPtr(in.AbsoluteTimeout)
	out.IdleTimeout = copyPtr(in.IdleTimeout)
	out.Type = copyPtr(in.Type)
	if in.CookieConfig != nil {
		out.CookieConfig = &CookieConfig{LifetimeType: copyPtr(in.CookieConfig.LifetimeType)}
	}
	return out
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

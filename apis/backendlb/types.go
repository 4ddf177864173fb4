// Package backendlb defines BackendLBPolicy (gateway.networking.k8s.io/v1alpha2), the Gateway API v1.1 experimental
// policy that configures load balancing — session persistence — for the traffic a Gateway sends to a Service.
//
// Later gateway-api releases dropped the kind (its session persistence moved to XBackendTrafficPolicy), so the
// module fedgate builds against no longer carries a Go type for it; users who followed the v1.1 documentation still
// have these objects, and fedgate accepts them. The type here is fedgate's own rendering of the v1.1 API surface:
// spec.targetRefs and spec.sessionPersistence, with status in the shared PolicyStatus form. Field constraints live in
// the CRD fedgate validates against (hub/validation/crds).
package backendlb

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GroupName is the Gateway API group; the kind was served as v1alpha2 only.
const GroupName = gatewayv1.GroupName

// Kind is the object kind.
const Kind = "BackendLBPolicy"

// SchemeGroupVersion is gateway.networking.k8s.io/v1alpha2.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha2"}

// AddToScheme registers BackendLBPolicy and its list. It registers nothing else of v1alpha2, so a scheme that also
// knows the upstream v1alpha2 kinds is unaffected.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &BackendLBPolicy{}, &BackendLBPolicyList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

// BackendLBPolicy configures load balancing for the backends it targets.
type BackendLBPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BackendLBPolicySpec    `json:"spec"`
	Status gatewayv1.PolicyStatus `json:"status,omitempty"`
}

// BackendLBPolicyList is a list of BackendLBPolicy.
type BackendLBPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackendLBPolicy `json:"items"`
}

// BackendLBPolicySpec is the desired state. There is no override/default split: the policy applies as written.
type BackendLBPolicySpec struct {
	// TargetRefs name the backends (Services) in the policy's namespace; 1 to 16 entries.
	TargetRefs []gatewayv1.LocalPolicyTargetReference `json:"targetRefs"`
	// SessionPersistence pins clients to the endpoint that served them first.
	SessionPersistence *SessionPersistence `json:"sessionPersistence,omitempty"`
}

// SessionPersistence as in Gateway API v1.1 (which, unlike later versions, has idleTimeout).
type SessionPersistence struct {
	// SessionName is the cookie or header name; at most 128 characters.
	SessionName *string `json:"sessionName,omitempty"`
	// AbsoluteTimeout bounds a session's lifetime from its start (a GEP-2257 duration).
	AbsoluteTimeout *gatewayv1.Duration `json:"absoluteTimeout,omitempty"`
	// IdleTimeout ends a session that has seen no request for this long.
	IdleTimeout *gatewayv1.Duration `json:"idleTimeout,omitempty"`
	// Type is Cookie (default) or Header.
	Type *gatewayv1.SessionPersistenceType `json:"type,omitempty"`
	// CookieConfig applies to the Cookie type.
	CookieConfig *CookieConfig `json:"cookieConfig,omitempty"`
}

// CookieConfig configures the session cookie.
type CookieConfig struct {
	// LifetimeType is Session (default: a browser-session cookie) or Permanent (Max-Age from absoluteTimeout, which
	// the CRD then requires).
	LifetimeType *gatewayv1.CookieLifetimeType `json:"lifetimeType,omitempty"`
}

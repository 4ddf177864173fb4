// Package hubv1alpha1 is fedgate's own Kubernetes API (group hub.fedgate.io): ManagedCluster, the hub cluster's
// mirror of each joined cluster and its sync state, so platform teams see fleet membership with kubectl.
//
// +kubebuilder:object:generate=true
// +groupName=hub.fedgate.io
package hubv1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion of this API.
var GroupVersion = schema.GroupVersion{Group: "hub.fedgate.io", Version: "v1alpha1"}

// AddToScheme registers the types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ManagedCluster{}, &ManagedClusterList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// ManagedCluster is one cluster joined to the hub. Its name is the cluster name. Spec is what an admin may change;
// status is written by the hub only.
type ManagedCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ManagedClusterSpec   `json:"spec,omitempty"`
	Status ManagedClusterStatus `json:"status,omitempty"`
}

// ManagedClusterSpec is the desired state of a cluster's membership.
type ManagedClusterSpec struct {
	// EastWestAddress is host:port of the cluster spoke's east-west listener, as given at join.
	EastWestAddress string `json:"eastWestAddress,omitempty"`
	// Labels given at join (also copied to metadata.labels for selection).
	Labels map[string]string `json:"labels,omitempty"`
}

// ManagedClusterStatus is the hub's view of the cluster.
type ManagedClusterStatus struct {
	// JoinedAt is when the cluster joined (hubctl join), or, for a cluster without a join record, when the hub first
	// heard of it.
	JoinedAt *metav1.Time `json:"joinedAt,omitempty"`
	// LastSeen is when the hub last saw the cluster's spoke: while Connected, refreshed every minute or so (so a
	// Connected cluster whose lastSeen is minutes old means the hub itself stopped writing); otherwise when its last
	// Report stream ended, or when the hub found it gone. Unset until the spoke first connects.
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// AgentVersion of the cluster's spoke.
	AgentVersion string `json:"agentVersion,omitempty"`
	// Connected while the spoke has a Report stream open to a live hub replica.
	Connected bool `json:"connected"`
	// GatewayAddresses the cluster's gateway is reachable at, as its spoke reports them (--gateway-address).
	GatewayAddresses []string `json:"gatewayAddresses,omitempty"`
	// SentRevision, AckedRevision, NackedRevision of the cluster's graph.
	SentRevision   int64 `json:"sentRevision,omitempty"`
	AckedRevision  int64 `json:"ackedRevision,omitempty"`
	NackedRevision int64 `json:"nackedRevision,omitempty"`
	// LastNackError is the spoke's error for the last refused graph.
	LastNackError string `json:"lastNackError,omitempty"`
	// Conditions: Joined, Available (connected and serving the latest graph).
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ManagedClusterList is a list of ManagedClusters.
type ManagedClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ManagedCluster `json:"items"`
}

// DeepCopyInto copies the receiver into out.
func (in *ManagedCluster) DeepCopyInto(out *ManagedCluster) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if in.Spec.Labels != nil {
		out.Spec.Labels = make(map[string]string, len(in.Spec.Labels))
		for k, v := range in.Spec.Labels {
			out.Spec.Labels[k] = v
		}
	}
	out.Status = *in.Status.DeepCopy()
}

// DeepCopy returns a deep copy.
func (in *ManagedClusterStatus) DeepCopy() *ManagedClusterStatus {
	if in == nil {
		return nil
	}
	out := new(ManagedClusterStatus)
	*out = *in
	if in.JoinedAt != nil {
		out.JoinedAt = in.JoinedAt.DeepCopy()
	}
	if in.LastSeen != nil {
		out.LastSeen = in.LastSeen.DeepCopy()
	}
	if in.GatewayAddresses != nil {
		out.GatewayAddresses = append([]string(nil), in.GatewayAddresses...)
	}
	if in.Conditions != nil {
		out.Conditions = make([]metav1.Condition, len(in.Conditions))
		for i := range in.Conditions {
			in.Conditions[i].DeepCopyInto(&out.Conditions[i])
		}
	}
	return out
}

// DeepCopy returns a deep copy.
func (in *ManagedCluster) DeepCopy() *ManagedCluster {
	if in == nil {
		return nil
	}
	out := new(ManagedCluster)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *ManagedCluster) DeepCopyObject() runtime.Object { return in.DeepCopy() }

// DeepCopyInto copies the receiver into out.
func (in *ManagedClusterList) DeepCopyInto(out *ManagedClusterList) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]ManagedCluster, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns a deep copy.
func (in *ManagedClusterList) DeepCopy() *ManagedClusterList {
	if in == nil {
		return nil
	}
	out := new(ManagedClusterList)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *ManagedClusterList) DeepCopyObject() runtime.Object { return in.DeepCopy() }

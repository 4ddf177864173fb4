package compiler

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/fedgate/fedgate/apis/resources"
)

// grantTo is a ReferenceGrant in namespace ns letting Gateways of fromNS reference the core object kind/name.
func grantTo(ns, fromNS, kind, name string) *gatewayv1beta1.ReferenceGrant {
	n := gatewayv1.ObjectName(name)
	return &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Name: "grant-" + kind + "-" + name, Namespace: ns},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: gatewayv1.Kind(resources.KindGateway), Namespace: gatewayv1.Namespace(fromNS)}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: gatewayv1.Kind(kind), Name: &n}},
		},
	}
}

// clusterInputs returns the inputs of a cluster, creating them when the case gives none.
func clusterInputs(t *testing.T, in *Inputs, name string) *ClusterInputs {
	t.Helper()
	ci, ok := in.Clusters[name]
	if !ok {
		t.Fatalf("no cluster %s", name)
	}
	if ci == nil {
		ci = &ClusterInputs{}
		in.Clusters[name] = ci
	}
	return ci
}

// listenerConditions returns the conditions of a hub Gateway's listener in a cluster.
func listenerConditions(t *testing.T, out *Output, ns, gw, cluster, listener string) []metav1.Condition {
	t.Helper()
	for _, st := range out.Statuses {
		if st.Ref.Cluster != "" || st.Ref.Kind != resources.KindGateway || st.Ref.Namespace != ns || st.Ref.Name != gw {
			continue
		}
		for _, l := range st.Listeners {
			if l.Cluster == cluster && l.Name == listener {
				return l.Conditions
			}
		}
	}
	t.Fatalf("no status of listener %s of hub Gateway %s/%s in %s", listener, ns, gw, cluster)
	return nil
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// servesCert reports which clusters' projections carry a certificate of Secret ns/name with its key.
func servesCert(out *Output, clusters []string, ns, name string) []string {
	var got []string
	for _, cluster := range clusters {
		sc := Project(out.Graph, cluster)
		found := false
		for _, p := range sc.Ports {
			if p.TLS == nil {
				continue
			}
			for _, l := range p.TLS.Listeners {
				for _, crt := range l.Certificates {
					if crt.Namespace == ns && crt.Name == name && len(crt.KeyPEM) > 0 {
						found = true
					}
				}
			}
		}
		if found {
			got = append(got, cluster)
		}
	}
	return got
}

// TestClusterGrantDoesNotReleaseHubSecret: a Gateway applied at the hub referencing a hub Secret in another namespace
// takes ReferenceGrants applied at the hub only. A grant a cluster reported (which a cluster controls) must not make
// the hub release the Secret's private key into that cluster's projection, nor any other's.
func TestClusterGrantDoesNotReleaseHubSecret(t *testing.T) {
	clusters := []string{"east", "west"}

	in := loadCase(t, "https-hub")
	east := clusterInputs(t, in, "east")
	east.ReferenceGrants = append(east.ReferenceGrants, grantTo("certs", "infra", resources.KindSecret, "private"))
	out := Compile(in)
	c := findCondition(listenerConditions(t, out, "infra", "web", "east", "denied"), string(gatewayv1.ListenerConditionResolvedRefs))
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(gatewayv1.ListenerReasonRefNotPermitted) {
		t.Errorf("east: listener denied ResolvedRefs = %+v, want False/RefNotPermitted", c)
	}
	if got := servesCert(out, clusters, "certs", "private"); len(got) != 0 {
		t.Errorf("a ReferenceGrant reported by east released certs/private to %v", got)
	}

	// The same grant applied at the hub allows it: every cluster serving the hub Gateway's listener gets the key.
	in = loadCase(t, "https-hub")
	in.Hub.ReferenceGrants = append(in.Hub.ReferenceGrants, grantTo("certs", "infra", resources.KindSecret, "private"))
	out = Compile(in)
	c = findCondition(listenerConditions(t, out, "infra", "web", "east", "denied"), string(gatewayv1.ListenerConditionResolvedRefs))
	if c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("east: listener denied ResolvedRefs with a hub grant = %+v, want True", c)
	}
	if got := servesCert(out, clusters, "certs", "private"); len(got) != 1 || got[0] != "east" {
		t.Errorf("with a hub grant certs/private is served in %v, want [east]", got)
	}
}

// TestClusterGrantDoesNotReleaseHubConfigMap: likewise for a hub Gateway's CA ConfigMaps (frontend validation). In
// clientca-hub, port 9443's only CA ConfigMap that could be usable is other/ca-other, which no grant allows: the
// listener is served only when a grant applied at the hub allows it.
func TestClusterGrantDoesNotReleaseHubConfigMap(t *testing.T) {
	served := func(out *Output) bool {
		for _, p := range Project(out.Graph, "east").Ports {
			if p.Port != 9443 || p.TLS == nil {
				continue
			}
			for _, l := range p.TLS.Listeners {
				if l.ClientValidation != nil && len(l.ClientValidation.CACertificatesPEM) > 0 {
					return true
				}
			}
		}
		return false
	}
	accepted := func(out *Output) metav1.ConditionStatus {
		c := findCondition(listenerConditions(t, out, "infra", "web", "east", "none-valid"), string(gatewayv1.ListenerConditionAccepted))
		if c == nil {
			t.Fatal("listener none-valid has no Accepted condition")
		}
		return c.Status
	}

	base := Compile(loadClientCACase(t, "clientca-hub"))
	if served(base) || accepted(base) != metav1.ConditionFalse {
		t.Fatal("clientca-hub: listener none-valid is served without any grant")
	}

	in := loadClientCACase(t, "clientca-hub")
	east := clusterInputs(t, in, "east")
	east.ReferenceGrants = append(east.ReferenceGrants, grantTo("other", "infra", resources.KindConfigMap, "ca-other"))
	withEast := Compile(in)
	if served(withEast) || accepted(withEast) != metav1.ConditionFalse {
		t.Error("a ReferenceGrant reported by east let the hub Gateway validate with the hub's other/ca-other in east")
	}

	in = loadClientCACase(t, "clientca-hub")
	in.Hub.ReferenceGrants = append(in.Hub.ReferenceGrants, grantTo("other", "infra", resources.KindConfigMap, "ca-other"))
	withHub := Compile(in)
	if !served(withHub) || accepted(withHub) != metav1.ConditionTrue {
		t.Error("a ReferenceGrant applied at the hub does not let the hub Gateway validate with other/ca-other")
	}
}

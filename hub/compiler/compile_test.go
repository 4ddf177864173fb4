package compiler

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

func TestAddObject(t *testing.T) {
	var r Resources
	objs := []*fedgatepb.Object{
		{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Namespace: "default", Name: "gw",
			Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"gw","namespace":"default"},"spec":{"gatewayClassName":"fedgate","listeners":[{"name":"http","protocol":"HTTP","port":80}]}}`)},
		{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "ReferenceGrant", Namespace: "b", Name: "g",
			Json: []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"ReferenceGrant","metadata":{"name":"g","namespace":"b"},"spec":{"from":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","namespace":"a"}],"to":[{"group":"","kind":"Service"}]}}`)},
		{ApiVersion: "v1", Kind: "Service", Namespace: "default", Name: "web",
			Json: []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"ports":[{"port":80}]}}`)},
	}
	for _, o := range objs {
		if err := r.AddObject(o); err != nil {
			t.Fatalf("AddObject(%s): %v", o.Kind, err)
		}
	}
	if len(r.Gateways) != 1 || r.Gateways[0].Spec.Listeners[0].Port != 80 {
		t.Errorf("Gateways = %+v, want one with port 80", r.Gateways)
	}
	if len(r.ReferenceGrants) != 1 || r.ReferenceGrants[0].Spec.From[0].Namespace != "a" {
		t.Errorf("ReferenceGrants = %+v, want the v1 grant decoded", r.ReferenceGrants)
	}
	if len(r.Services) != 1 {
		t.Errorf("Services = %d, want 1", len(r.Services))
	}

	for _, bad := range []*fedgatepb.Object{
		nil,
		{ApiVersion: "v1", Kind: "Pod", Namespace: "default", Name: "pod", Json: []byte(`{}`)},
		{ApiVersion: "v1", Kind: "Service", Namespace: "default", Name: "web", Json: []byte(`{"spec":`)},
	} {
		err := r.AddObject(bad)
		if err == nil {
			t.Errorf("AddObject(%v) = nil, want an error", bad)
			continue
		}
		if bad != nil && !strings.Contains(err.Error(), bad.Name) {
			t.Errorf("AddObject error %q does not name the object %q", err, bad.Name)
		}
	}
}

func TestNilInputs(t *testing.T) {
	out := Compile(nil)
	if out.Graph == nil || len(out.Statuses) != 0 {
		t.Fatalf("Compile(nil) = %+v, want an empty graph", out)
	}
	in := &Inputs{Revision: 4, Clusters: map[string]*ClusterInputs{"east": nil}}
	out = Compile(in)
	if out.Graph.Revision != 4 || len(out.Graph.Clusters) != 1 {
		t.Fatalf("graph = %+v, want revision 4 and cluster east", out.Graph)
	}
	for _, g := range []*Graph{nil, out.Graph} {
		p := Project(g, "east")
		if err := p.Validate(); err != nil {
			t.Errorf("Project(%v, east) invalid: %v", g, err)
		}
	}
}

// TestProjectionsShareNoStatusMemory: the spoke's kstatus writer and the hub's status store both hold on to what
// Compile and Project return, so a projection's statuses and ServiceImports must not alias the graph's (or each
// other's): a caller stamping transition times into one must not change another.
func TestProjectionsShareNoStatusMemory(t *testing.T) {
	data, err := os.ReadFile("testdata/statuses-projection.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := loadInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	out := Compile(in)
	before, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []string{"east", "west"} {
		sc := Project(out.Graph, cl)
		if len(sc.Statuses) == 0 || len(sc.ServiceImports) == 0 {
			t.Fatalf("projection for %s has %d statuses and %d imports, want some of each", cl, len(sc.Statuses), len(sc.ServiceImports))
		}
		for i := range sc.Statuses {
			st := &sc.Statuses[i]
			for j := range st.Conditions {
				st.Conditions[j].Message = "scribbled"
			}
			for j := range st.Parents {
				st.Parents[j].Conditions[0].Reason = "Scribbled"
				st.Parents[j].ParentRef.Name = "scribbled"
			}
			for j := range st.Listeners {
				st.Listeners[j].Conditions[0].Reason = "Scribbled"
				if len(st.Listeners[j].SupportedKinds) > 0 { // none on a listener whose protocol is not served
					st.Listeners[j].SupportedKinds[0].Kind = "Scribbled"
				}
			}
		}
		sc.ServiceImports[0].Clusters[0] = "scribbled"
		sc.ServiceImports[0].Ports[0].Port = 1
	}
	after, _ := yaml.Marshal(out)
	if diff := cmp.Diff(string(before), string(after)); diff != "" {
		t.Fatalf("changing projections changed the compile output (-before +after):\n%s", diff)
	}
}

package kube

import (
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/compiler"
)

// A listener the clusters disagree on is summed up honestly: a condition is the clusters' common one only when every
// cluster has it as expected (True; False for Conflicted), else it names each cluster where it is not; addresses come
// only from clusters where the Gateway is programmed.
func TestGatewayStatusSumsUpClusters(t *testing.T) {
	cond := func(typ string, ok bool, reason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg}
	}
	st := &compiler.ObjectStatus{
		Listeners: []compiler.ListenerStatus{
			{Cluster: "east", Name: "http", AttachedRoutes: 2, Conditions: []metav1.Condition{
				cond("Accepted", true, "Accepted", "listener is accepted"),
				cond("Conflicted", false, "NoConflicts", "no conflicts"),
				cond("Programmed", true, "Programmed", "listener is programmed"),
			}},
			{Cluster: "west", Name: "http", AttachedRoutes: 3, Conditions: []metav1.Condition{
				cond("Accepted", true, "Accepted", "listener is accepted"),
				cond("Conflicted", true, "ProtocolConflict", "port 8080 is also HTTPS"),
				cond("Programmed", false, "Invalid", "listener conflicts with another"),
			}},
		},
		Clusters: []compiler.ClusterConditions{
			{Cluster: "east", Conditions: []metav1.Condition{cond("Programmed", true, "Programmed", "")}},
			{Cluster: "west", Conditions: []metav1.Condition{cond("Programmed", false, "Invalid", "")}},
		},
	}
	got := statusFor(resources.KindGateway, st, 7, fleet{gateways: map[string][]string{"east": {"192.0.2.1", "bad_host!"}, "west": {"192.0.2.2"}}})
	b, _ := json.Marshal(got)
	var s struct {
		Listeners []struct {
			Name           string             `json:"name"`
			AttachedRoutes int32              `json:"attachedRoutes"`
			Conditions     []metav1.Condition `json:"conditions"`
		} `json:"listeners"`
		Addresses []struct{ Type, Value string } `json:"addresses"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Listeners) != 1 || s.Listeners[0].AttachedRoutes != 3 {
		t.Fatalf("listeners %s", b)
	}
	want := map[string]struct {
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		"Accepted":   {metav1.ConditionTrue, "Accepted", "listener is accepted in east, west"},
		"Conflicted": {metav1.ConditionTrue, "ProtocolConflict", "cluster west: port 8080 is also HTTPS"},
		"Programmed": {metav1.ConditionFalse, "Invalid", "cluster west: listener conflicts with another"},
	}
	for _, c := range s.Listeners[0].Conditions {
		w := want[c.Type]
		if c.Status != w.status || c.Reason != w.reason || c.Message != w.message || c.ObservedGeneration != 7 {
			t.Errorf("%s: %+v, want %+v", c.Type, c, w)
		}
	}
	if len(s.Addresses) != 1 || s.Addresses[0].Value != "192.0.2.1" || s.Addresses[0].Type != "IPAddress" {
		t.Errorf("addresses %+v: want east's valid one only (west does not serve the Gateway)", s.Addresses)
	}
}

// A route parent's conditions fit the CRD's 8 however many clusters there are (the API server refused the whole
// status of a route in four clusters): up to three, two per cluster; beyond, one condition folds their Programmed.
func TestRouteParentConditionsFitTheCRD(t *testing.T) {
	parents := func(clusters ...string) *compiler.ObjectStatus {
		st := &compiler.ObjectStatus{}
		for _, c := range clusters {
			st.Parents = append(st.Parents, compiler.ParentStatus{Cluster: c, GraphRevision: 10, Conditions: []metav1.Condition{
				{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "accepted"},
				{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", Message: "resolved"},
			}})
		}
		return st
	}
	conds := func(st *compiler.ObjectStatus, acked map[string]int64) []metav1.Condition {
		b, _ := json.Marshal(statusFor(resources.KindHTTPRoute, st, 1, fleet{acked: acked}))
		var s struct {
			Parents []struct {
				Conditions []metav1.Condition `json:"conditions"`
			} `json:"parents"`
		}
		if err := json.Unmarshal(b, &s); err != nil || len(s.Parents) != 1 {
			t.Fatalf("status %s: %v", b, err)
		}
		return s.Parents[0].Conditions
	}
	three := conds(parents("a", "b", "c"), map[string]int64{"a": 10, "b": 10, "c": 10})
	if len(three) != 8 || !meta.IsStatusConditionTrue(three, ClusterConditionType("c", "Programmed")) {
		t.Errorf("three clusters: %d conditions %+v, want 8 with per-cluster ones", len(three), three)
	}
	four := conds(parents("a", "b", "c", "d"), map[string]int64{"a": 10, "b": 10, "c": 10, "d": 9})
	if len(four) > maxParentConditions {
		t.Fatalf("four clusters: %d conditions, the CRD allows %d", len(four), maxParentConditions)
	}
	c := meta.FindStatusCondition(four, FoldedProgrammed)
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "not programmed in 1 of 4 clusters: cluster d has not yet acknowledged graph revision 10") {
		t.Errorf("four clusters, d behind: %+v", c)
	}
}

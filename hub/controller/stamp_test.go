package controller

import (
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/hub/compiler"
)

// stampStatus keeps what did not change (transition times, the graph revision a route stands in) and stamps anew
// what did, so a status is rewritten only when it changes and Programmed is judged against the right graph.
func TestStampStatus(t *testing.T) {
	gw := gatewayv1.ParentReference{Name: "gw"}
	route := func(gen int64, eastAccepted metav1.ConditionStatus) compiler.ObjectStatus {
		return compiler.ObjectStatus{Generation: gen, Parents: []compiler.ParentStatus{
			{Cluster: "east", ParentRef: gw, Conditions: []metav1.Condition{{Type: "Accepted", Status: eastAccepted, Reason: "Accepted"}}},
			{Cluster: "west", ParentRef: gw, Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}},
			{Cluster: "", ParentRef: gatewayv1.ParentReference{Name: "gw2"}, Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "Pending"}}},
		}}
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	enc := func(st compiler.ObjectStatus) []byte { b, _ := json.Marshal(st); return b }
	check := func(what string, st compiler.ObjectStatus, wantRev map[string]int64, wantTime map[string]time.Time) {
		t.Helper()
		for _, p := range st.Parents {
			if p.GraphRevision != wantRev[p.Cluster] {
				t.Errorf("%s: %q graph revision %d, want %d", what, p.Cluster, p.GraphRevision, wantRev[p.Cluster])
			}
			if got := p.Conditions[0].LastTransitionTime.Time; !got.Equal(wantTime[p.Cluster]) {
				t.Errorf("%s: %q transition time %v, want %v", what, p.Cluster, got, wantTime[p.Cluster])
			}
		}
	}

	first := route(1, metav1.ConditionTrue)
	stampStatus(nil, &first, map[string]int64{"east": 10, "west": 10}, t0)
	check("new status", first, map[string]int64{"east": 10, "west": 10}, map[string]time.Time{"east": t0, "west": t0, "": t0})

	// Nothing changed; the clusters' graphs moved on for other reasons: everything kept.
	same := route(1, metav1.ConditionTrue)
	stampStatus(enc(first), &same, map[string]int64{"east": 20, "west": 20}, t0.Add(time.Minute))
	check("unchanged status", same, map[string]int64{"east": 10, "west": 10}, map[string]time.Time{"east": t0, "west": t0, "": t0})
	if string(enc(same)) != string(enc(first)) {
		t.Fatal("an unchanged status encodes differently: every compile would rewrite it")
	}

	// East stops accepting it (east's graph of revision 30 drops it); west's projection failed this compile.
	changed := route(1, metav1.ConditionFalse)
	stampStatus(enc(same), &changed, map[string]int64{"east": 30}, t0.Add(2*time.Minute))
	check("east changed", changed, map[string]int64{"east": 30, "west": 10}, map[string]time.Time{"east": t0.Add(2 * time.Minute), "west": t0, "": t0})

	// A new generation restamps every cluster's graph revision (the route's content may differ), not the times of
	// conditions whose status stayed; a cluster whose graph could not be stored gets 0.
	regen := route(2, metav1.ConditionFalse)
	stampStatus(enc(changed), &regen, map[string]int64{"east": 40}, t0.Add(3*time.Minute))
	check("new generation", regen, map[string]int64{"east": 40, "west": 0}, map[string]time.Time{"east": t0.Add(2 * time.Minute), "west": t0, "": t0})
}

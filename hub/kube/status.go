package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/store"
)

// fleet is what the status of hub-cluster objects depends on besides their compiled status: per cluster, the graph
// revision its spoke acknowledged and the addresses its gateway is reachable at.
type fleet struct {
	acked    map[string]int64
	gateways map[string][]string
}

func fleetOf(clusters []store.ClusterStatus) fleet {
	f := fleet{acked: map[string]int64{}, gateways: map[string][]string{}}
	for _, c := range clusters {
		f.acked[c.Record.Name] = c.Sync.AckedRevision
		f.gateways[c.Record.Name] = c.Record.GatewayAddresses
	}
	return f
}

// writeStatus copies each mirrored object's compiled status into the hub cluster. One object's failed write does not
// keep the others' from being written; the errors are returned together.
func (s *Syncer) writeStatus(ctx context.Context, objs []*unstructured.Unstructured, clusters []store.ClusterStatus) error {
	statuses, err := s.o.Store.Statuses(ctx, 0)
	if err != nil {
		return err
	}
	f := fleetOf(clusters)
	var errs []error
	for _, u := range objs {
		raw := statuses[store.StatusKey("", u.GetKind(), u.GetNamespace(), u.GetName())]
		if len(raw) == 0 {
			continue
		}
		var st compiler.ObjectStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			continue
		}
		want := statusFor(u.GetKind(), &st, u.GetGeneration(), f)
		if want == nil {
			continue
		}
		cur, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status")
		merged := mergeStatus(u.GetKind(), cur, want, s.o.Now())
		if equalJSON(cur, merged) {
			continue
		}
		patch := u.DeepCopy()
		if err := unstructured.SetNestedField(patch.Object, merged, "status"); err != nil {
			return err
		}
		if err := s.c.Status().Update(ctx, patch); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("write status of %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// ClusterConditionType is the condition type, inside a route's parent status, for one cluster: e.g.
// "east.clusters.fedgate.io/Programmed".
func ClusterConditionType(cluster, what string) string {
	return cluster + ".clusters.fedgate.io/" + what
}

// statusFor renders the compiled status of one object as its Kubernetes status (as JSON-compatible maps). Routes get
// one parent entry per parentRef: the aggregate conditions (Accepted, ResolvedRefs: True only when True in every
// cluster, naming each cluster where not) plus, per cluster, <cluster>.clusters.fedgate.io/Accepted and /Programmed
// (see programmed) — or, with more than three clusters, whose conditions would not fit, one FoldedProgrammed. Gateways get their conditions, their listeners summed up over the clusters that instantiate them
// (see gatewayListeners) and the gateway addresses of the clusters where they are programmed (gatewayAddresses).
func statusFor(kind string, st *compiler.ObjectStatus, generation int64, f fleet) map[string]any {
	switch kind {
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		byRef := map[string][]compiler.ParentStatus{}
		var order []string
		for _, p := range st.Parents {
			b, _ := json.Marshal(p.ParentRef)
			k := string(b)
			if _, ok := byRef[k]; !ok {
				order = append(order, k)
			}
			byRef[k] = append(byRef[k], p)
		}
		var parents []any
		for _, k := range order {
			ps := byRef[k]
			agg := aggregate(ps, generation)
			var perCluster, progs []metav1.Condition
			for _, p := range ps {
				if p.Cluster == "" {
					continue
				}
				accepted := meta.FindStatusCondition(p.Conditions, "Accepted")
				acc := metav1.Condition{Type: ClusterConditionType(p.Cluster, "Accepted"), Status: metav1.ConditionUnknown, Reason: "Pending", ObservedGeneration: generation}
				if accepted != nil {
					acc.Status, acc.Reason, acc.Message = accepted.Status, accepted.Reason, accepted.Message
				}
				prog := programmed(p, accepted, f.acked, generation)
				perCluster = append(perCluster, acc, prog)
				progs = append(progs, prog)
			}
			if len(agg)+len(perCluster) <= maxParentConditions {
				agg = append(agg, perCluster...)
			} else {
				agg = append(agg, foldProgrammed(progs, generation))
			}
			var ref map[string]any
			_ = json.Unmarshal([]byte(k), &ref)
			parents = append(parents, map[string]any{
				"parentRef":      ref,
				"controllerName": string(compiler.ControllerName),
				"conditions":     conditionsJSON(agg),
			})
		}
		return map[string]any{"parents": parents}
	case resources.KindGatewayClass:
		return map[string]any{"conditions": conditionsJSON(withGeneration(st.Conditions, generation))}
	case resources.KindGateway:
		return map[string]any{
			"conditions": conditionsJSON(withGeneration(st.Conditions, generation)),
			"listeners":  gatewayListeners(st, generation),
			"addresses":  gatewayAddresses(st, f.gateways),
		}
	}
	return nil
}

func withGeneration(cs []metav1.Condition, generation int64) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(cs))
	for _, c := range cs {
		c.ObservedGeneration = generation
		out = append(out, c)
	}
	return out
}

// gatewayListeners sums up a hub Gateway's listeners over the clusters that instantiate it, one entry per listener:
// attachedRoutes is the largest count among the clusters (a hub route attaches in every cluster; a route a cluster
// reported, in that cluster only); each condition is the clusters' common one when they agree on the expected status
// (True, or False for Conflicted), naming them, and otherwise the first disagreeing cluster's, with every disagreeing
// cluster's message. Per-cluster condition types would not fit: the Gateway CRD allows 8 conditions per listener.
func gatewayListeners(st *compiler.ObjectStatus, generation int64) []any {
	byName := map[string][]compiler.ListenerStatus{}
	var names []string
	for _, l := range st.Listeners {
		if _, ok := byName[l.Name]; !ok {
			names = append(names, l.Name)
		}
		byName[l.Name] = append(byName[l.Name], l)
	}
	out := make([]any, 0, len(names))
	for _, name := range names {
		ls := byName[name]
		var attached int32
		var clusters []string
		for _, l := range ls {
			attached = max(attached, l.AttachedRoutes)
			clusters = append(clusters, l.Cluster)
		}
		var conds []metav1.Condition
		for _, c := range ls[0].Conditions {
			conds = append(conds, summarize(c.Type, ls, clusters, generation))
		}
		kinds := make([]any, 0, len(ls[0].SupportedKinds))
		for _, k := range ls[0].SupportedKinds {
			group := gatewayv1.GroupName // the CRD's default: written out, so that what is read back compares equal
			if k.Group != nil {
				group = string(*k.Group)
			}
			kinds = append(kinds, map[string]any{"group": group, "kind": string(k.Kind)})
		}
		out = append(out, map[string]any{
			"name":           name,
			"supportedKinds": kinds,
			"attachedRoutes": int64(attached),
			"conditions":     conditionsJSON(conds),
		})
	}
	return out
}

// summarize folds one listener condition type over the clusters' instances of the listener.
func summarize(typ string, ls []compiler.ListenerStatus, clusters []string, generation int64) metav1.Condition {
	expected := metav1.ConditionTrue
	if typ == string(gatewayv1.ListenerConditionConflicted) {
		expected = metav1.ConditionFalse
	}
	var first *metav1.Condition
	var off []string
	for _, l := range ls {
		c := meta.FindStatusCondition(l.Conditions, typ)
		if c == nil {
			c = &metav1.Condition{Type: typ, Status: metav1.ConditionUnknown, Reason: "Pending", Message: "not judged yet"}
		}
		if c.Status == expected {
			continue
		}
		if first == nil {
			first = c
		}
		off = append(off, fmt.Sprintf("cluster %s: %s", l.Cluster, c.Message))
	}
	var out metav1.Condition
	if first == nil {
		out = *meta.FindStatusCondition(ls[0].Conditions, typ)
		out.Message += " in " + strings.Join(clusters, ", ")
	} else {
		out = *first
		out.Message = strings.Join(off, "; ")
	}
	out.ObservedGeneration = generation
	return out
}

// maxGatewayAddresses is the Gateway CRD's limit on status.addresses.
const maxGatewayAddresses = 16

// gatewayAddresses lists the addresses of every cluster where the Gateway is programmed (the clusters' spokes report
// them, --gateway-address), in cluster order, each once: an IP is an IPAddress, anything else a Hostname.
func gatewayAddresses(st *compiler.ObjectStatus, byCluster map[string][]string) []any {
	out := []any{}
	seen := map[string]bool{}
	for _, cc := range st.Clusters {
		if !meta.IsStatusConditionTrue(cc.Conditions, string(gatewayv1.GatewayConditionProgrammed)) {
			continue
		}
		for _, a := range byCluster[cc.Cluster] {
			typ := string(gatewayv1.IPAddressType)
			if _, err := netip.ParseAddr(a); err != nil {
				typ = string(gatewayv1.HostnameAddressType)
				if len(validation.IsDNS1123Subdomain(a)) > 0 {
					continue // the hub checks a spoke's addresses as they arrive; never write what the CRD refuses
				}
			}
			if seen[a] || len(out) == maxGatewayAddresses {
				continue
			}
			seen[a] = true
			out = append(out, map[string]any{"type": typ, "value": a})
		}
	}
	return out
}

// maxParentConditions is the route CRDs' limit on a parent's conditions: beyond three clusters the two per cluster
// do not fit beside the aggregate ones, and the API server would refuse the whole status.
const maxParentConditions = 8

// FoldedProgrammed is the condition type that stands for the per-cluster Programmed conditions of a route's parent
// when there are too many clusters for them to fit (see maxParentConditions): True only when the route is
// programmed in every cluster, else the message of each cluster where it is not. Per-cluster acceptance is then in
// the aggregate Accepted's message.
const FoldedProgrammed = "clusters.fedgate.io/Programmed"

func foldProgrammed(progs []metav1.Condition, generation int64) metav1.Condition {
	out := metav1.Condition{Type: FoldedProgrammed, Status: metav1.ConditionTrue, Reason: "Programmed", ObservedGeneration: generation,
		Message: fmt.Sprintf("programmed in all %d clusters", len(progs))}
	var not []string
	for _, p := range progs {
		if p.Status == metav1.ConditionTrue {
			continue
		}
		if len(not) == 0 {
			out.Status, out.Reason = p.Status, p.Reason
		}
		not = append(not, p.Message)
	}
	if len(not) > 0 {
		out.Message = fmt.Sprintf("not programmed in %d of %d clusters: %s", len(not), len(progs), strings.Join(not, "; "))
	}
	return out
}

// programmed is the <cluster>.clusters.fedgate.io/Programmed condition of a route's parent in one cluster: True once
// that cluster's spoke acknowledged a graph at least as new as the one the route stands in as its status says
// (p.GraphRevision); False for good (reason from Accepted) when the cluster does not accept the route, and Pending
// while the spoke has not acknowledged that graph or the graph could not be delivered.
func programmed(p compiler.ParentStatus, accepted *metav1.Condition, acked map[string]int64, generation int64) metav1.Condition {
	c := metav1.Condition{Type: ClusterConditionType(p.Cluster, "Programmed"), Status: metav1.ConditionFalse, ObservedGeneration: generation}
	switch rev := acked[p.Cluster]; {
	case accepted == nil:
		c.Reason, c.Message = "Pending", fmt.Sprintf("cluster %s has not judged the route yet", p.Cluster)
	case accepted.Status != metav1.ConditionTrue:
		c.Reason, c.Message = accepted.Reason, fmt.Sprintf("cluster %s does not accept the route: %s", p.Cluster, accepted.Message)
	case p.GraphRevision == 0:
		c.Reason, c.Message = "Pending", fmt.Sprintf("cluster %s has no config with the route: its projection failed (hubctl get clusters says why)", p.Cluster)
	case rev >= p.GraphRevision:
		// The message names only the route's revision, not the cluster's latest acknowledgement: every config a
		// cluster takes would otherwise rewrite the status of every route it serves.
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Programmed", fmt.Sprintf("cluster %s serves the route (acknowledged graph revision %d or newer)", p.Cluster, p.GraphRevision)
	default:
		c.Reason, c.Message = "Pending", fmt.Sprintf("cluster %s has not yet acknowledged graph revision %d, the first with the route as it is", p.Cluster, p.GraphRevision)
	}
	return c
}

// aggregate folds per-cluster conditions of one parentRef into one: True only when True everywhere; otherwise the
// first cluster's reason and every cluster's message where it is not True.
func aggregate(ps []compiler.ParentStatus, generation int64) []metav1.Condition {
	var out []metav1.Condition
	for _, typ := range []string{"Accepted", "ResolvedRefs"} {
		agg := metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: typ, ObservedGeneration: generation}
		seen := false
		var notTrue []string
		for _, p := range ps {
			c := meta.FindStatusCondition(p.Conditions, typ)
			if c == nil {
				continue
			}
			if !seen {
				agg.Message = c.Message
			}
			seen = true
			if c.Status == metav1.ConditionTrue {
				continue
			}
			if len(notTrue) == 0 {
				agg.Status, agg.Reason = c.Status, c.Reason
			}
			if p.Cluster != "" {
				notTrue = append(notTrue, fmt.Sprintf("cluster %s: %s", p.Cluster, c.Message))
			} else {
				notTrue = append(notTrue, c.Message)
			}
		}
		if len(notTrue) > 0 {
			agg.Message = strings.Join(notTrue, "; ")
		}
		if seen {
			out = append(out, agg)
		}
	}
	return out
}

func conditionsJSON(cs []metav1.Condition) []any {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Type < cs[j].Type })
	out := make([]any, 0, len(cs))
	for _, c := range cs {
		if c.Reason == "" {
			c.Reason = "Unknown"
		}
		out = append(out, map[string]any{
			"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
			"observedGeneration": c.ObservedGeneration,
		})
	}
	return out
}

// mergeStatus keeps other controllers' route parents and each condition's lastTransitionTime unless its status
// changed (for Gateways, each listener's too).
func mergeStatus(kind string, cur any, want map[string]any, now time.Time) map[string]any {
	stampNow := now.UTC().Format(time.RFC3339)
	curMap, _ := cur.(map[string]any)
	stamp := func(old []any, conds []any) []any {
		prev := map[string]map[string]any{}
		for _, o := range old {
			if m, ok := o.(map[string]any); ok {
				prev[fmt.Sprint(m["type"])] = m
			}
		}
		for _, c := range conds {
			m := c.(map[string]any)
			if p, ok := prev[fmt.Sprint(m["type"])]; ok && p["status"] == m["status"] && p["lastTransitionTime"] != nil {
				m["lastTransitionTime"] = p["lastTransitionTime"]
			} else {
				m["lastTransitionTime"] = stampNow
			}
		}
		return conds
	}
	out := map[string]any{}
	for k, v := range curMap {
		out[k] = v
	}
	switch kind {
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		var oldOurs = map[string][]any{}
		var others []any
		if ps, ok := curMap["parents"].([]any); ok {
			for _, p := range ps {
				m, _ := p.(map[string]any)
				if m == nil {
					continue
				}
				if m["controllerName"] != string(compiler.ControllerName) {
					others = append(others, m)
					continue
				}
				b, _ := json.Marshal(m["parentRef"])
				oldOurs[string(b)], _ = m["conditions"].([]any)
			}
		}
		parents := append([]any{}, others...)
		for _, p := range want["parents"].([]any) {
			m := p.(map[string]any)
			b, _ := json.Marshal(m["parentRef"])
			m["conditions"] = stamp(oldOurs[string(b)], m["conditions"].([]any))
			parents = append(parents, m)
		}
		out["parents"] = parents
	default:
		old, _ := curMap["conditions"].([]any)
		out["conditions"] = stamp(old, want["conditions"].([]any))
		if ls, ok := want["listeners"].([]any); ok {
			// A fedgate Gateway's listeners are wholly ours.
			oldByName := map[string][]any{}
			if prev, ok := curMap["listeners"].([]any); ok {
				for _, p := range prev {
					if m, ok := p.(map[string]any); ok {
						oldByName[fmt.Sprint(m["name"])], _ = m["conditions"].([]any)
					}
				}
			}
			for _, l := range ls {
				m := l.(map[string]any)
				m["conditions"] = stamp(oldByName[fmt.Sprint(m["name"])], m["conditions"].([]any))
			}
			out["listeners"] = ls
		}
		if as, ok := want["addresses"].([]any); ok {
			if len(as) == 0 {
				delete(out, "addresses")
			} else {
				out["addresses"] = as
			}
		}
	}
	return out
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

package compiler

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
)

// routeObj is an HTTPRoute or GRPCRoute reduced to what attachment and rule translation need, so that both kinds go
// through one pipeline. GRPCRoute matches are translated into the HTTP path matches gRPC requests carry.
type routeObj struct {
	kind       string
	meta       *metav1.ObjectMeta
	source     Source // Source.Cluster: where reported ("" = hub)
	parentRefs []gatewayv1.ParentReference
	hostnames  []string // lower-cased
	rules      []ruleSpec
}

// ruleSpec is one rule: its matches already in spoke form, the filters and backendRefs still in API form (they
// resolve per cluster).
type ruleSpec struct {
	name        string
	matches     []matchSpec
	filters     []gatewayv1.HTTPRouteFilter
	backendRefs []backendRefSpec
	timeouts    *gatewayv1.HTTPRouteTimeouts
	// index of the rule in the route; with the route's source it scopes the rule's sessions.
	index int
	// sessionPersistence and retry (HTTPRoute only) as written; experimental fields.
	sessionPersistence *gatewayv1.SessionPersistence
	retry              *gatewayv1.HTTPRouteRetry
}

func (r *routeObj) ref() ObjectRef {
	return ObjectRef{Cluster: r.source.Cluster, Kind: r.kind, Namespace: r.meta.Namespace, Name: r.meta.Name}
}

func (r *routeObj) describe() string {
	return resources.Describe(r.kind, r.meta.Namespace, r.meta.Name)
}

// processRoutes attaches every route to its parents in every cluster it applies to.
func (c *compiler) processRoutes() {
	views := []*view{c.hub}
	for _, cl := range c.clusters {
		views = append(views, c.reports[cl])
	}
	for _, v := range views {
		for _, hr := range v.res.HTTPRoutes {
			c.processRoute(fromHTTPRoute(v.cluster, hr))
		}
		for _, gr := range v.res.GRPCRoutes {
			c.processRoute(fromGRPCRoute(v.cluster, gr))
		}
	}
	c.writeGatewayStatuses()
}

// processRoute attaches one route wherever its parentRefs lead. A route applied at the hub looks for its Gateways in
// every cluster and reports one parent status per cluster where it found one; a route reported by a cluster looks
// only there. Rules are compiled once per cluster, lazily, because backend resolution depends on the cluster's
// ReferenceGrants.
func (c *compiler) processRoute(ro *routeObj) {
	gen := ro.meta.Generation
	st := c.status.get(ro.ref(), gen)
	clusters := c.clusters
	if ro.source.Cluster != "" {
		clusters = []string{ro.source.Cluster}
	}
	compiled := map[string]*compiledRoute{}
	seenParents := map[string]bool{}
	for _, pr := range ro.parentRefs {
		if k := parentKey(pr); seenParents[k] {
			continue // a repeated parentRef (the API server refuses them) would only duplicate status
		} else {
			seenParents[k] = true
		}
		group, kind := gatewayv1.GroupName, "Gateway"
		if pr.Group != nil {
			group = string(*pr.Group)
		}
		if pr.Kind != nil {
			kind = string(*pr.Kind)
		}
		switch {
		case group == "" && kind == "Service":
			st.Parents = append(st.Parents, ParentStatus{ControllerName: ControllerName, Cluster: ro.source.Cluster, ParentRef: *pr.DeepCopy(), Conditions: []metav1.Condition{
				condition(string(gatewayv1.RouteConditionAccepted), false, string(gatewayv1.RouteReasonUnsupportedValue),
					fmt.Sprintf("parentRef Service %q: mesh (GAMMA) routes are not supported by fedgate yet", pr.Name), gen),
			}})
			continue
		case group != gatewayv1.GroupName || kind != "Gateway":
			continue // a parent kind fedgate does not serve: another controller's business.
		}
		ns := ro.meta.Namespace
		if pr.Namespace != nil {
			ns = string(*pr.Namespace)
		}
		key := ns + "/" + string(pr.Name)
		found := false
		for _, cl := range clusters {
			gi := c.gatewayIndex[cl][key]
			if gi == nil {
				continue
			}
			found = true
			cr := compiled[cl]
			if cr == nil {
				cr = c.compileRoute(ro, cl)
				compiled[cl] = cr
			}
			accepted := c.attach(ro, pr, gi, cr)
			conds := []metav1.Condition{accepted, cr.resolvedRefs}
			if cr.partiallyInvalid != nil && accepted.Status == metav1.ConditionTrue {
				conds = append(conds, *cr.partiallyInvalid)
			}
			st.Parents = append(st.Parents, ParentStatus{ControllerName: ControllerName, Cluster: cl, ParentRef: *pr.DeepCopy(), Conditions: conds})
		}
		if found {
			continue
		}
		// Not instantiated anywhere: say why, unless the Gateway belongs to another controller (then it is not ours
		// to report on).
		var reason gatewayv1.RouteConditionReason
		var msg string
		switch exists, ours := c.gatewayState(ro.source.Cluster, key); {
		case !exists:
			reason, msg = gatewayv1.RouteReasonNoMatchingParent, fmt.Sprintf("Gateway %q not found in any cluster", key)
		case ours:
			reason, msg = gatewayv1.RouteReasonPending, fmt.Sprintf("Gateway %q is not instantiated in any cluster yet", key)
		default:
			continue
		}
		st.Parents = append(st.Parents, ParentStatus{ControllerName: ControllerName, Cluster: ro.source.Cluster, ParentRef: *pr.DeepCopy(), Conditions: []metav1.Condition{
			condition(string(gatewayv1.RouteConditionAccepted), false, string(reason), msg, gen),
		}})
	}
}

// gatewayState reports whether a Gateway named key is in scope for a route from cluster ("" = hub: every cluster)
// and whether any such Gateway is of a fedgate class.
func (c *compiler) gatewayState(cluster, key string) (exists, ours bool) {
	views := []*view{c.hub}
	if cluster == "" {
		for _, cl := range c.clusters {
			views = append(views, c.reports[cl])
		}
	} else if v, ok := c.reports[cluster]; ok {
		views = append(views, v)
	}
	for _, v := range views {
		for _, gw := range v.res.Gateways {
			if gw.Namespace+"/"+gw.Name != key {
				continue
			}
			exists = true
			class := string(gw.Spec.GatewayClassName)
			if c.hubClass(class) != nil {
				ours = true
			}
			if gc := c.classes[v.cluster][class]; v.cluster != "" && gc != nil {
				ours = true
			}
		}
	}
	return exists, ours
}

// attach binds a route to the listeners of one Gateway instance that its parentRef selects and that admit it, and
// returns the Accepted condition for that (parentRef, cluster).
func (c *compiler) attach(ro *routeObj, pr gatewayv1.ParentReference, gi *gatewayInstance, cr *compiledRoute) metav1.Condition {
	gen := ro.meta.Generation
	reject := func(reason gatewayv1.RouteConditionReason, format string, args ...any) metav1.Condition {
		return condition(string(gatewayv1.RouteConditionAccepted), false, string(reason), fmt.Sprintf(format, args...), gen)
	}
	var selected []*listener
	for _, l := range gi.listeners {
		if pr.SectionName != nil && string(*pr.SectionName) != l.name {
			continue
		}
		if pr.Port != nil && *pr.Port != l.port {
			continue
		}
		selected = append(selected, l)
	}
	if len(selected) == 0 {
		return reject(gatewayv1.RouteReasonNoMatchingParent, "Gateway %s/%s has no listener%s", gi.gw.Namespace, gi.gw.Name, selectorText(pr))
	}
	var programmed []*listener
	for _, l := range selected {
		if l.programmed() {
			programmed = append(programmed, l)
		}
	}
	if len(programmed) == 0 {
		return reject(gatewayv1.RouteReasonNoMatchingParent, "no programmed listener%s on Gateway %s/%s (see the Gateway's listener status)", selectorText(pr), gi.gw.Namespace, gi.gw.Name)
	}
	var allowed []*listener
	for _, l := range programmed {
		if c.routeAllowed(l, ro) {
			allowed = append(allowed, l)
		}
	}
	if len(allowed) == 0 {
		return reject(gatewayv1.RouteReasonNotAllowedByListeners, "listeners of Gateway %s/%s do not allow %s from namespace %q", gi.gw.Namespace, gi.gw.Name, ro.kind, ro.meta.Namespace)
	}
	type binding struct {
		l     *listener
		hosts []string
	}
	var bound []binding
	for _, l := range allowed {
		if hosts := intersectHostnames(ro.hostnames, l.hostname); len(hosts) > 0 {
			bound = append(bound, binding{l, hosts})
		}
	}
	if len(bound) == 0 {
		return reject(gatewayv1.RouteReasonNoMatchingListenerHostname, "no route hostname %v matches a listener hostname of Gateway %s/%s", ro.hostnames, gi.gw.Namespace, gi.gw.Name)
	}
	for _, b := range bound {
		b.l.attached[ro.source] = true
		for _, host := range b.hosts {
			for _, rn := range cr.nodes {
				c.attachments[gi.cluster] = append(c.attachments[gi.cluster], &attachment{
					listener: b.l, hostname: host, created: ro.meta.CreationTimestamp, node: rn,
				})
			}
		}
	}
	return condition(string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted), "route is accepted", gen)
}

func selectorText(pr gatewayv1.ParentReference) string {
	var parts []string
	if pr.SectionName != nil {
		parts = append(parts, fmt.Sprintf(" named %q", *pr.SectionName))
	}
	if pr.Port != nil {
		parts = append(parts, fmt.Sprintf(" on port %d", *pr.Port))
	}
	return strings.Join(parts, " and")
}

// routeAllowed applies a listener's allowedRoutes to a route.
func (c *compiler) routeAllowed(l *listener, ro *routeObj) bool {
	kindOK := false
	for _, k := range l.kinds {
		if string(k.Kind) == ro.kind {
			kindOK = true
		}
	}
	if !kindOK {
		return false
	}
	from := gatewayv1.NamespacesFromSame
	if l.allowed != nil && l.allowed.Namespaces != nil && l.allowed.Namespaces.From != nil {
		from = *l.allowed.Namespaces.From
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return ro.meta.Namespace == l.gi.gw.Namespace
	case gatewayv1.NamespacesFromSelector:
		// The route's namespace as the Gateway instance's cluster reported it: a namespace that cluster did not report
		// (a hub route in a namespace the cluster lacks) has no labels to match.
		if l.allowed.Namespaces.Selector == nil {
			return false
		}
		sel, err := metav1.LabelSelectorAsSelector(l.allowed.Namespaces.Selector)
		if err != nil {
			return false
		}
		ns := c.namespace(l.gi.cluster, ro.meta.Namespace)
		return ns != nil && sel.Matches(labels.Set(ns.Labels))
	default:
		return false // unknown values admit nothing: a selector is meant to narrow access
	}
}

// namespace returns the Namespace cluster reported by that name, nil when it reported none.
func (c *compiler) namespace(cluster, name string) *corev1.Namespace {
	v := c.reports[cluster]
	if v == nil {
		return nil
	}
	i, found := slices.BinarySearchFunc(v.res.Namespaces, name, func(n *corev1.Namespace, name string) int { return strings.Compare(n.Name, name) })
	if !found {
		return nil
	}
	return v.res.Namespaces[i]
}

// intersectHostnames returns the hostnames a route serves on a listener: the route's hostnames that the listener's
// hostname admits (narrowed to the listener's when the route's is a broader wildcard), "*" when neither sets any.
func intersectHostnames(route []string, listener string) []string {
	if listener == "" {
		if len(route) == 0 {
			return []string{"*"}
		}
		return dedupStrings(route)
	}
	if len(route) == 0 {
		return []string{listener}
	}
	var out []string
	for _, h := range route {
		switch {
		case h == listener:
			out = append(out, h)
		case hostMatches(listener, h):
			out = append(out, h)
		case hostMatches(h, listener):
			out = append(out, listener)
		}
	}
	return dedupStrings(out)
}

// hostMatches reports whether pattern (exact or "*.suffix") admits name (exact or wildcard). "*.example.com" admits
// "a.example.com", "a.b.example.com" and "*.a.example.com", but not "example.com" nor itself.
func hostMatches(pattern, name string) bool {
	if !strings.HasPrefix(pattern, "*.") {
		return false
	}
	suffix := pattern[1:] // ".example.com"
	if strings.HasPrefix(name, "*.") {
		return len(name) > len(pattern) && strings.HasSuffix(name[1:], suffix)
	}
	return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
}

func dedupStrings(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	kept := out[:0]
	for i, s := range out {
		if i == 0 || s != out[i-1] {
			kept = append(kept, s)
		}
	}
	return kept
}

package compiler

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// gatewayInstance is one Gateway in one cluster. A Gateway applied at the hub has one instance per cluster.
type gatewayInstance struct {
	cluster   string
	gw        *gatewayv1.Gateway
	source    Source // Source.Cluster: where the object came from ("" = hub)
	listeners []*listener
}

// listener is one listener of a gateway instance, with its status as the passes work it out.
type listener struct {
	gi       *gatewayInstance
	name     string
	port     int32
	protocol gatewayv1.ProtocolType
	hostname string // "" when the listener sets none
	allowed  *gatewayv1.AllowedRoutes
	kinds    []gatewayv1.RouteGroupKind // supported kinds after allowedRoutes.kinds

	accepted       bool
	acceptedReason gatewayv1.ListenerConditionReason
	acceptedMsg    string
	invalidKinds   []string
	conflictReason gatewayv1.ListenerConditionReason // "" = no conflict
	conflictMsg    string
	// HTTPS: the usable certificates of tls.certificateRefs, in their order, and why the others are not usable
	// (certReason "" = every ref resolved).
	certs      []spokeconfig.Certificate
	certReason gatewayv1.ListenerConditionReason
	certMsgs   []string
	// HTTPS with client-certificate validation (the Gateway's spec.tls.frontend for this port): the CA bundle and
	// mode served (nil: no validation), and why refs of caCertificateRefs are not usable (caReason "" = all resolved).
	clientValidation *spokeconfig.ClientValidation
	caReason         gatewayv1.ListenerConditionReason
	caMsgs           []string
	// attached route objects (distinct), for attachedRoutes.
	attached map[Source]bool
}

// programmed: the listener opens its port and routes may attach to it. An HTTPS listener needs a certificate to serve.
func (l *listener) programmed() bool {
	return l.accepted && l.conflictReason == "" && (l.protocol != gatewayv1.HTTPSProtocolType || len(l.certs) > 0)
}

func (l *listener) source() Source {
	s := l.gi.source
	s.Section = l.name
	return s
}

// routeKinds fedgate serves on HTTP listeners, in supportedKinds order. A function, not a variable, so that no output
// shares a pointer with another output or with package state.
func routeKinds() []gatewayv1.RouteGroupKind {
	return []gatewayv1.RouteGroupKind{
		{Group: ptr(gatewayv1.Group(gatewayv1.GroupName)), Kind: resources.KindHTTPRoute},
		{Group: ptr(gatewayv1.Group(gatewayv1.GroupName)), Kind: resources.KindGRPCRoute},
	}
}

func ptr[T any](v T) *T { return &v }

// processClasses records our GatewayClasses per cluster and gives each its status.
func (c *compiler) processClasses() {
	for _, cl := range c.clusters {
		c.classes[cl] = map[string]*gatewayv1.GatewayClass{}
	}
	record := func(v *view, gc *gatewayv1.GatewayClass) {
		if gc.Spec.ControllerName != ControllerName {
			return // another controller's class: not ours to judge or write status for.
		}
		st := c.status.get(ObjectRef{Cluster: v.cluster, Kind: resources.KindGatewayClass, Name: gc.Name}, gc.Generation)
		st.Conditions = []metav1.Condition{
			condition(string(gatewayv1.GatewayClassConditionStatusAccepted), true, string(gatewayv1.GatewayClassReasonAccepted),
				"GatewayClass is served by fedgate", gc.Generation),
			condition(string(gatewayv1.GatewayClassConditionStatusSupportedVersion), true,
				string(gatewayv1.GatewayClassReasonSupportedVersion), "Gateway API v1.6.3", gc.Generation),
		}
	}
	for _, gc := range c.hub.res.GatewayClasses {
		record(c.hub, gc)
	}
	for _, cl := range c.clusters {
		for _, gc := range c.reports[cl].res.GatewayClasses {
			record(c.reports[cl], gc)
		}
	}
	// Scope: hub classes everywhere, then each cluster's own (which shadow a hub class of the same name there).
	for _, cl := range c.clusters {
		for _, v := range c.viewsFor(cl) {
			for _, gc := range v.res.GatewayClasses {
				if gc.Spec.ControllerName == ControllerName {
					c.classes[cl][gc.Name] = gc
				} else {
					delete(c.classes[cl], gc.Name)
				}
			}
		}
	}
}

// processGateways instantiates our Gateways in their clusters, validates listeners and resolves listener conflicts.
func (c *compiler) processGateways() {
	for _, cl := range c.clusters {
		index := map[string]*gatewayInstance{}
		// Hub Gateways first, so that a cluster's own Gateway of the same namespace/name shadows the hub's there.
		for _, v := range c.viewsFor(cl) {
			for _, gw := range v.res.Gateways {
				if _, ok := c.classes[cl][string(gw.Spec.GatewayClassName)]; !ok {
					continue
				}
				index[gw.Namespace+"/"+gw.Name] = c.newGatewayInstance(cl, v.cluster, gw)
			}
		}
		var list []*gatewayInstance
		for _, gi := range index {
			list = append(list, gi)
		}
		// Conflict resolution order: the oldest Gateway claims a port/hostname first, then by namespace/name.
		sort.Slice(list, func(i, j int) bool { return gatewayOlder(list[i], list[j]) })
		resolveConflicts(list)
		c.gateways[cl] = list
		c.gatewayIndex[cl] = index
	}
}

// hubClass returns the hub-applied GatewayClass of that name when it is ours.
func (c *compiler) hubClass(name string) *gatewayv1.GatewayClass {
	for _, gc := range c.hub.res.GatewayClasses {
		if gc.Name == name && gc.Spec.ControllerName == ControllerName {
			return gc
		}
	}
	return nil
}

func gatewayOlder(a, b *gatewayInstance) bool {
	ta, tb := a.gw.CreationTimestamp, b.gw.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	if a.gw.Namespace != b.gw.Namespace {
		return a.gw.Namespace < b.gw.Namespace
	}
	return a.gw.Name < b.gw.Name
}

func (c *compiler) newGatewayInstance(cluster, sourceCluster string, gw *gatewayv1.Gateway) *gatewayInstance {
	gi := &gatewayInstance{
		cluster: cluster,
		gw:      gw,
		source:  Source{Cluster: sourceCluster, Kind: resources.KindGateway, Namespace: gw.Namespace, Name: gw.Name},
	}
	seen := map[string]bool{}
	for i := range gw.Spec.Listeners {
		ls := &gw.Spec.Listeners[i]
		l := &listener{
			gi:       gi,
			name:     string(ls.Name),
			port:     ls.Port,
			protocol: ls.Protocol,
			allowed:  ls.AllowedRoutes,
			accepted: true,
			attached: map[Source]bool{},
		}
		if ls.Hostname != nil {
			l.hostname = strings.ToLower(string(*ls.Hostname))
		}
		switch {
		case seen[l.name]:
			l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonUnsupportedValue
			l.acceptedMsg = fmt.Sprintf("spec.listeners[%d].name %q: duplicate listener name", i, l.name)
		case l.port < 1 || l.port > 65535:
			l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonPortUnavailable
			l.acceptedMsg = fmt.Sprintf("spec.listeners[%d].port %d: out of range 1-65535", i, l.port)
		case l.protocol != gatewayv1.HTTPProtocolType && l.protocol != gatewayv1.HTTPSProtocolType:
			// TLS (passthrough, TLSRoute), TCP and UDP are not served.
			l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonUnsupportedProtocol
			l.acceptedMsg = fmt.Sprintf("spec.listeners[%d].protocol %q: fedgate serves HTTP and HTTPS listeners", i, l.protocol)
		case l.protocol == gatewayv1.HTTPSProtocolType && ls.TLS == nil:
			l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonUnsupportedValue
			l.acceptedMsg = fmt.Sprintf("spec.listeners[%d].tls: Required value: an HTTPS listener terminates TLS with its certificateRefs", i)
		case l.protocol == gatewayv1.HTTPSProtocolType && ls.TLS.Mode != nil && *ls.TLS.Mode != gatewayv1.TLSModeTerminate:
			// The CRD refuses it too ("tls mode must be Terminate for protocol HTTPS"); a reported Gateway may predate it.
			l.accepted, l.acceptedReason = false, gatewayv1.ListenerReasonUnsupportedValue
			l.acceptedMsg = fmt.Sprintf("spec.listeners[%d].tls.mode %q: tls mode must be Terminate for protocol HTTPS", i, *ls.TLS.Mode)
		case l.protocol == gatewayv1.HTTPSProtocolType:
			c.resolveCertificates(l, i, ls.TLS)
			c.resolveClientValidation(l)
		}
		seen[l.name] = true
		l.kinds, l.invalidKinds = supportedKinds(ls.AllowedRoutes)
		if l.acceptedReason == gatewayv1.ListenerReasonUnsupportedProtocol {
			l.kinds = nil // no route kind is served on a protocol fedgate does not serve
		}
		gi.listeners = append(gi.listeners, l)
	}
	return gi
}

// supportedKinds intersects allowedRoutes.kinds with the kinds fedgate serves; no kinds means all of them.
func supportedKinds(ar *gatewayv1.AllowedRoutes) (ok []gatewayv1.RouteGroupKind, invalid []string) {
	if ar == nil || len(ar.Kinds) == 0 {
		return routeKinds(), nil
	}
	for _, k := range ar.Kinds {
		group := gatewayv1.GroupName
		if k.Group != nil {
			group = string(*k.Group)
		}
		found := false
		for _, rk := range routeKinds() {
			if group == string(*rk.Group) && k.Kind == rk.Kind {
				ok, found = append(ok, rk), true
				break
			}
		}
		if !found {
			invalid = append(invalid, group+"/"+string(k.Kind))
		}
	}
	return ok, invalid
}

// resolveConflicts marks listeners that cannot share a port. All Gateway instances of a cluster share the spoke's
// sockets, so conflicts are judged across Gateways, not only within one: the first listener (oldest Gateway, then
// listener order) to claim a port fixes its protocol, and the first to claim a port/hostname pair owns it.
func resolveConflicts(list []*gatewayInstance) {
	protocols := map[int32]*listener{}
	hostnames := map[string]*listener{}
	for _, gi := range list {
		for _, l := range gi.listeners {
			if !l.accepted {
				continue
			}
			if first, ok := protocols[l.port]; ok && first.protocol != l.protocol {
				l.conflictReason = gatewayv1.ListenerReasonProtocolConflict
				l.conflictMsg = fmt.Sprintf("port %d is already served as %s by listener %s", l.port, first.protocol, describeListener(first))
				continue
			}
			protocols[l.port] = l
			key := fmt.Sprintf("%d/%s", l.port, l.hostname)
			if first, ok := hostnames[key]; ok {
				l.conflictReason = gatewayv1.ListenerReasonHostnameConflict
				l.conflictMsg = fmt.Sprintf("port %d hostname %q is already served by listener %s", l.port, orStar(l.hostname), describeListener(first))
				continue
			}
			hostnames[key] = l
		}
	}
}

func describeListener(l *listener) string {
	return fmt.Sprintf("%s/%s/%s", l.gi.gw.Namespace, l.gi.gw.Name, l.name)
}

func orStar(h string) string {
	if h == "" {
		return "*"
	}
	return h
}

// writeGatewayStatuses runs after routes attached, so attachedRoutes is known.
func (c *compiler) writeGatewayStatuses() {
	for _, cl := range c.clusters {
		for _, gi := range c.gateways[cl] {
			gen := gi.gw.Generation
			ref := ObjectRef{Cluster: gi.source.Cluster, Kind: resources.KindGateway, Namespace: gi.gw.Namespace, Name: gi.gw.Name}
			st := c.status.get(ref, gen)
			anyAccepted, anyProgrammed := false, false
			var invalid []string
			for _, l := range gi.listeners {
				anyAccepted = anyAccepted || l.accepted
				anyProgrammed = anyProgrammed || l.programmed()
				if !l.accepted {
					invalid = append(invalid, l.name)
				}
				st.Listeners = append(st.Listeners, l.status(gen))
			}
			var conds []metav1.Condition
			switch {
			case anyAccepted && len(invalid) > 0:
				// The spec's reason for a Gateway accepted with some of its listeners not.
				what := "listener " + invalid[0] + " is"
				if len(invalid) > 1 {
					what = "listeners " + strings.Join(invalid, ", ") + " are"
				}
				conds = append(conds, condition(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonListenersNotValid),
					"Gateway is accepted; "+what+" not valid", gen))
			case anyAccepted:
				conds = append(conds, condition(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonAccepted), "Gateway is accepted", gen))
			default:
				conds = append(conds, condition(string(gatewayv1.GatewayConditionAccepted), false, string(gatewayv1.GatewayReasonListenersNotValid), "no listener is valid", gen))
			}
			if anyProgrammed {
				conds = append(conds, condition(string(gatewayv1.GatewayConditionProgrammed), true, string(gatewayv1.GatewayReasonProgrammed), "Gateway is programmed", gen))
			} else {
				conds = append(conds, condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonInvalid), "no listener is programmed", gen))
			}
			st.Clusters = append(st.Clusters, ClusterConditions{Cluster: cl, Conditions: conds})
		}
	}
	// A hub Gateway of a fedgate class with no instance (no cluster has joined yet, or every cluster's own class of
	// that name shadows it) still gets status, so that `hubctl get` does not show it as ignored.
	for _, gw := range c.hub.res.Gateways {
		gc := c.hubClass(string(gw.Spec.GatewayClassName))
		ref := ObjectRef{Kind: resources.KindGateway, Namespace: gw.Namespace, Name: gw.Name}
		if gc == nil || c.status.byRef[ref] != nil {
			continue
		}
		st := c.status.get(ref, gw.Generation)
		st.Conditions = []metav1.Condition{
			condition(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonAccepted), "Gateway is accepted", gw.Generation),
			condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonPending), "no cluster serves this Gateway yet", gw.Generation),
		}
	}
	// Sum up per-cluster conditions: True only when every instance says True; otherwise the first False, naming its
	// cluster. Clusters are visited in name order, so the result is deterministic.
	for _, st := range c.status.byRef {
		if st.Ref.Kind != resources.KindGateway || len(st.Clusters) == 0 {
			continue
		}
		sort.Slice(st.Clusters, func(i, j int) bool { return st.Clusters[i].Cluster < st.Clusters[j].Cluster })
		var names []string
		for _, cc := range st.Clusters {
			names = append(names, cc.Cluster)
		}
		summary := append([]metav1.Condition(nil), st.Clusters[0].Conditions...)
		for i := range summary {
			summary[i].Message += " in " + strings.Join(names, ", ")
			for _, cc := range st.Clusters {
				if cd := cc.Conditions[i]; cd.Status != metav1.ConditionTrue {
					summary[i] = cd
					summary[i].Message = "cluster " + cc.Cluster + ": " + cd.Message
					break
				}
			}
		}
		st.Conditions = summary
		if st.Ref.Cluster != "" {
			// A cluster-reported Gateway lives in one cluster: the summary says it all.
			st.Clusters = nil
		}
	}
}

func (l *listener) status(gen int64) ListenerStatus {
	ls := ListenerStatus{Cluster: l.gi.cluster, Name: l.name, AttachedRoutes: int32(len(l.attached)), SupportedKinds: l.kinds}
	if ls.SupportedKinds == nil {
		ls.SupportedKinds = []gatewayv1.RouteGroupKind{}
	}
	if l.accepted {
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionAccepted), true, string(gatewayv1.ListenerReasonAccepted), "listener is accepted", gen))
	} else {
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionAccepted), false, string(l.acceptedReason), l.acceptedMsg, gen))
	}
	refMsgs := append(append([]string(nil), l.certMsgs...), l.caMsgs...)
	switch {
	case len(l.invalidKinds) > 0:
		msg := "allowedRoutes.kinds: unsupported kinds " + strings.Join(l.invalidKinds, ", ")
		if len(refMsgs) > 0 {
			msg += "; " + strings.Join(refMsgs, "; ")
		}
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionResolvedRefs), false, string(gatewayv1.ListenerReasonInvalidRouteKinds), msg, gen))
	case l.certReason != "":
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionResolvedRefs), false, string(l.certReason), strings.Join(refMsgs, "; "), gen))
	case l.caReason != "":
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionResolvedRefs), false, string(l.caReason), strings.Join(refMsgs, "; "), gen))
	default:
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "references are resolved", gen))
	}
	if l.conflictReason != "" {
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionConflicted), true, string(l.conflictReason), l.conflictMsg, gen))
	} else {
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "no conflicts", gen))
	}
	switch {
	case l.programmed():
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionProgrammed), true, string(gatewayv1.ListenerReasonProgrammed), "listener is programmed", gen))
	case l.accepted && l.conflictReason == "":
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "no certificate of tls.certificateRefs is usable", gen))
	default:
		ls.Conditions = append(ls.Conditions, condition(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "listener is not accepted or conflicts with another", gen))
	}
	return ls
}

// protocolOf maps a Gateway listener protocol to a spoke port protocol.
func protocolOf(p gatewayv1.ProtocolType) spokeconfig.Protocol {
	if p == gatewayv1.HTTPSProtocolType {
		return spokeconfig.ProtocolHTTPS
	}
	return spokeconfig.ProtocolHTTP
}

package compiler

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// BackendTLSPolicy: TLS from fedgate to a Service's endpoints, originated by the spoke that owns the endpoint
// (spokeconfig.Backend.TLS).
//
// Targets: Services (group "" — or "core", as for the other backend policies — kind Service) in the policy's
// namespace, optionally one port by name (sectionName). A policy naming a port applies to that port; one naming the
// whole Service applies to its other ports. A Service counts when any cluster reports it (fedgate federates Services
// by namespace/name).
//
// Scope: one rule for every policy, wherever it was applied. Every BackendTLSPolicy — applied at the hub or reported
// by any cluster — competes for the Service ports it targets, and the winner's settings are the backend's TLS in the
// graph, hence in every cluster's projection. A request is then encrypted to the backend the same way whichever
// cluster it entered and whichever cluster's endpoint serves it: a Service of one namespace/name is one federated
// Service (MCS namespace sameness), and letting it speak TLS in one cluster and cleartext in another would make the
// outcome depend on where a request landed. A cluster's policy therefore applies to that Service in every cluster.
// What stays scoped is what the policy references: a hub policy's caCertificateRefs resolve to ConfigMaps applied at
// the hub, a cluster's to the ConfigMaps that cluster reported, never another cluster's.
//
// Conflicts: two policies targeting the same (Service, sectionName) conflict; the older wins, then the lower
// namespace/name (then, for determinism only, the hub's before a cluster's, then by cluster name). The loser applies
// nothing (Accepted=False, Conflicted), even for its other targets.
//
// CA certificates: wellKnownCACertificates System → the spoke's system roots; caCertificateRefs → the ca.crt of
// each ConfigMap, concatenated in order. A ref to another kind is ResolvedRefs=False InvalidKind; a missing
// ConfigMap or one without a valid ca.crt is ResolvedRefs=False InvalidCACertificateRef; when no ref is valid the
// policy is also Accepted=False NoValidCACertificate. A policy with any invalid ref keeps its precedence and fails
// closed: the route backendRefs to the Service ports it wins become invalid backends (their share answers 500), so
// traffic is never sent in cleartext, nor verified against fewer anchors than the author listed.

// tlsTarget is one (Service, sectionName) a BackendTLSPolicy targets.
type tlsTarget struct {
	svc     string // "namespace/name"
	section string // a Service port name; "" for the whole Service
}

// tlsPolicyObj is one BackendTLSPolicy, parsed.
type tlsPolicyObj struct {
	ref     ObjectRef
	meta    *metav1.ObjectMeta
	targets []tlsTarget
	tls     *spokeconfig.BackendTLS
	// refProblem is the ResolvedRefs=False condition when a caCertificateRef is invalid (the policy fails closed);
	// noValidCA when none is valid.
	refProblem *metav1.Condition
	noValidCA  bool
	// conflictedBy is the policy that took one of its targets.
	conflictedBy *tlsPolicyObj
	// status of the policy, completed by backendTLSStatuses.
	conds []metav1.Condition
}

// backendTLSResult is processBackendTLSPolicies' outcome.
type backendTLSResult struct {
	// policies: those that resolved their targets, in precedence order.
	policies []*tlsPolicyObj
	// winners[target]: the policy that applies.
	winners map[tlsTarget]*tlsPolicyObj
	// uses["ns/name"]: the route instances whose backendRefs reached the Service, with the port name used.
	uses map[string][]tlsUse
}

// tlsUse is one route instance (its source and the cluster it is instantiated in) using a Service port.
type tlsUse struct {
	route   ObjectRef
	cluster string
	port    string
}

// processBackendTLSPolicies parses every BackendTLSPolicy, writes the status of those that cannot take part and
// resolves conflicts among the others. The rest of their status (ancestors) waits for the routes.
func (c *compiler) processBackendTLSPolicies() {
	r := &backendTLSResult{winners: map[tlsTarget]*tlsPolicyObj{}, uses: map[string][]tlsUse{}}
	c.backendTLS = r
	for _, v := range append([]*view{c.hub}, c.clusterViews()...) {
		for _, p := range v.res.BackendTLSPolicies {
			if po := c.parseBackendTLSPolicy(v, p); po != nil {
				r.policies = append(r.policies, po)
			}
		}
	}
	sort.SliceStable(r.policies, func(i, j int) bool { return tlsPolicyLess(r.policies[i], r.policies[j]) })
	for _, p := range r.policies {
		for _, t := range p.targets {
			if w := r.winners[t]; w != nil {
				p.conflictedBy = w
				break
			}
		}
		if p.conflictedBy != nil {
			continue
		}
		for _, t := range p.targets {
			r.winners[t] = p
		}
	}
}

func tlsPolicyLess(a, b *tlsPolicyObj) bool {
	ta, tb := a.meta.CreationTimestamp, b.meta.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	if a.ref.Namespace != b.ref.Namespace {
		return a.ref.Namespace < b.ref.Namespace
	}
	if a.ref.Name != b.ref.Name {
		return a.ref.Name < b.ref.Name
	}
	return a.ref.Cluster < b.ref.Cluster // "" (the hub) first
}

// parseBackendTLSPolicy returns the policy when it takes part in conflict resolution, or writes its status
// (Invalid, TargetNotFound) and returns nil.
func (c *compiler) parseBackendTLSPolicy(v *view, p *gatewayv1.BackendTLSPolicy) *tlsPolicyObj {
	ref := ObjectRef{Cluster: v.cluster, Kind: resources.KindBackendTLSPolicy, Namespace: p.Namespace, Name: p.Name}
	gen := p.Generation
	po := &tlsPolicyObj{ref: ref, meta: &p.ObjectMeta}
	fail := func(reason gatewayv1.PolicyConditionReason, msg string) *tlsPolicyObj {
		st := c.status.get(ref, gen)
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.PolicyConditionAccepted), false, string(reason), msg, gen))
		return nil
	}
	val := p.Spec.Validation
	var problems []string
	bt := &spokeconfig.BackendTLS{Hostname: string(val.Hostname)}
	if bt.Hostname == "" || strings.Contains(bt.Hostname, "*") {
		problems = append(problems, fmt.Sprintf("spec.validation.hostname %q: must be a hostname without wildcards", bt.Hostname))
	}
	wk := ""
	if val.WellKnownCACertificates != nil {
		wk = string(*val.WellKnownCACertificates)
	}
	switch {
	case wk != "" && len(val.CACertificateRefs) > 0:
		problems = append(problems, "spec.validation: must not contain both caCertificateRefs and wellKnownCACertificates")
	case wk == "" && len(val.CACertificateRefs) == 0:
		problems = append(problems, "spec.validation: must specify either caCertificateRefs or wellKnownCACertificates")
	case wk == string(gatewayv1.WellKnownCACertificatesSystem):
		bt.WellKnownSystem = true
	case wk != "":
		problems = append(problems, fmt.Sprintf("spec.validation.wellKnownCACertificates %q: fedgate supports System only", wk))
	}
	for i, san := range val.SubjectAltNames {
		s := spokeconfig.SubjectAltName{Type: string(san.Type)}
		switch san.Type {
		case gatewayv1.HostnameSubjectAltNameType:
			s.Value = string(san.Hostname)
		case gatewayv1.URISubjectAltNameType:
			s.Value = string(san.URI)
		}
		if s.Value == "" {
			problems = append(problems, fmt.Sprintf("spec.validation.subjectAltNames[%d]: want type Hostname with a hostname or type URI with a uri", i))
			continue
		}
		bt.SubjectAltNames = append(bt.SubjectAltNames, s)
	}
	if len(problems) > 0 {
		return fail(gatewayv1.PolicyReasonInvalid, strings.Join(problems, "; "))
	}

	// Targets.
	var missing, unsupported []string
	seen := map[tlsTarget]bool{}
	for i, tr := range p.Spec.TargetRefs {
		group, kind := string(tr.Group), string(tr.Kind)
		if !((group == "" || group == "core") && strings.EqualFold(kind, resources.KindService)) {
			unsupported = append(unsupported, fmt.Sprintf("targetRefs[%d]: %s/%s %q is not a Service", i, group, kind, tr.Name))
			continue
		}
		t := tlsTarget{svc: p.Namespace + "/" + string(tr.Name)}
		if tr.SectionName != nil {
			t.section = string(*tr.SectionName)
		}
		exists, hasPort := false, t.section == ""
		for _, cl := range c.clusters {
			svc := c.reports[cl].services[t.svc]
			if svc == nil {
				continue
			}
			exists = true
			for _, sp := range svc.Spec.Ports {
				hasPort = hasPort || sp.Name == t.section
			}
		}
		switch {
		case !exists:
			missing = append(missing, fmt.Sprintf("Service %s not found in any cluster", t.svc))
		case !hasPort:
			missing = append(missing, fmt.Sprintf("Service %s has no port named %q in any cluster", t.svc, t.section))
		case !seen[t]:
			seen[t] = true
			po.targets = append(po.targets, t)
		}
	}
	if len(po.targets) == 0 {
		switch {
		case len(p.Spec.TargetRefs) == 0:
			return fail(gatewayv1.PolicyReasonTargetNotFound, "targetRefs: Required value")
		case len(missing) == 0:
			return fail(gatewayv1.PolicyReasonInvalid, strings.Join(unsupported, "; "))
		default:
			return fail(gatewayv1.PolicyReasonTargetNotFound, strings.Join(append(missing, unsupported...), "; "))
		}
	}
	sort.Slice(po.targets, func(i, j int) bool {
		a, b := po.targets[i], po.targets[j]
		if a.svc != b.svc {
			return a.svc < b.svc
		}
		return a.section < b.section
	})

	// CA certificates, from the policy's own scope.
	var kindProblems, refProblems []string
	var pem []byte
	valid := 0
	for i, cr := range val.CACertificateRefs {
		if string(cr.Group) != "" || string(cr.Kind) != resources.KindConfigMap {
			kindProblems = append(kindProblems, fmt.Sprintf("caCertificateRefs[%d]: %s %q (group %q) is not a ConfigMap", i, cr.Kind, cr.Name, cr.Group))
			continue
		}
		key := p.Namespace + "/" + string(cr.Name)
		cm := v.configMaps[key]
		where := "applied at the hub"
		if v.cluster != "" {
			where = "reported by cluster " + v.cluster
		}
		if cm == nil {
			refProblems = append(refProblems, fmt.Sprintf("caCertificateRefs[%d]: ConfigMap %s not found among the ConfigMaps %s", i, key, where))
			continue
		}
		if err := c.checkCABundle(cm); err != nil {
			refProblems = append(refProblems, fmt.Sprintf("caCertificateRefs[%d]: ConfigMap %s: %v", i, key, err))
			continue
		}
		valid++
		b := []byte(cm.Data[resources.CACertKey])
		pem = append(pem, b...)
		if len(b) > 0 && !bytes.HasSuffix(b, []byte("\n")) {
			pem = append(pem, '\n')
		}
	}
	if len(kindProblems)+len(refProblems) > 0 {
		reason := gatewayv1.BackendTLSPolicyReasonInvalidCACertificateRef
		if len(refProblems) == 0 {
			reason = gatewayv1.BackendTLSPolicyReasonInvalidKind
		}
		cond := condition(string(gatewayv1.BackendTLSPolicyConditionResolvedRefs), false, string(reason),
			strings.Join(append(kindProblems, refProblems...), "; ")+"; connections to the Service fail (500) until it is fixed", gen)
		po.refProblem, po.noValidCA = &cond, valid == 0
	} else if len(val.CACertificateRefs) > 0 {
		bt.CACertificatesPEM = pem
	}
	po.tls = bt
	return po
}

// tlsFor returns the policy that applies to port portName of Service svcKey: one naming the port, else one naming
// the whole Service.
func (c *compiler) tlsFor(svcKey, portName string) *tlsPolicyObj {
	if c.backendTLS == nil {
		return nil
	}
	if portName != "" {
		if p := c.backendTLS.winners[tlsTarget{svc: svcKey, section: portName}]; p != nil {
			return p
		}
	}
	return c.backendTLS.winners[tlsTarget{svc: svcKey}]
}

// servicePortName is the name of a Service port: the first cluster (in cluster order) of clusters whose Service has
// the port names it.
func (c *compiler) servicePortName(ns, name string, port int32, clusters []string) string {
	for _, cl := range clusters {
		svc := c.reports[cl].services[ns+"/"+name]
		if svc == nil {
			continue
		}
		if sp := servicePort(svc, port); sp != nil {
			return sp.Name
		}
	}
	return ""
}

// checkBackendTLS records that a route instance's backendRef reached a Service port, and reports whether a
// BackendTLSPolicy with an invalid CA ref applies there (the backendRef must then fail closed).
func (c *compiler) checkBackendTLS(ro *routeObj, cluster, ns, name, portName string) *tlsPolicyObj {
	if c.backendTLS == nil {
		return nil
	}
	key := ns + "/" + name
	c.backendTLS.uses[key] = append(c.backendTLS.uses[key], tlsUse{route: ro.ref(), cluster: cluster, port: portName})
	if p := c.tlsFor(key, portName); p != nil && p.refProblem != nil {
		return p
	}
	return nil
}

// backendTLSFor is the Backend.TLS of a Service port (nil: cleartext); a copy, so backends share no memory.
func (c *compiler) backendTLSFor(svcKey, portName string) *spokeconfig.BackendTLS {
	p := c.tlsFor(svcKey, portName)
	if p == nil || p.refProblem != nil {
		return nil
	}
	out := *p.tls
	out.CACertificatesPEM = bytes.Clone(p.tls.CACertificatesPEM)
	out.SubjectAltNames = append([]spokeconfig.SubjectAltName(nil), p.tls.SubjectAltNames...)
	return &out
}

// backendTLSStatuses writes the status of every policy that took part: its conditions, and one ancestor entry per
// Gateway whose attached routes use a Service port it targets.
func (c *compiler) backendTLSStatuses() {
	if c.backendTLS == nil {
		return
	}
	// Route instances attached to each Gateway (by the Gateway's source).
	type routeInCluster struct {
		route   ObjectRef
		cluster string
	}
	gateways := map[routeInCluster]map[Source]bool{}
	for _, cl := range c.clusters {
		for _, a := range c.attachments[cl] {
			if a.listener == nil || a.listener.gi == nil {
				continue
			}
			s := a.node.Source
			k := routeInCluster{route: ObjectRef{Cluster: s.Cluster, Kind: s.Kind, Namespace: s.Namespace, Name: s.Name}, cluster: cl}
			if gateways[k] == nil {
				gateways[k] = map[Source]bool{}
			}
			gs := a.listener.gi.source
			gs.Section = ""
			gateways[k][gs] = true
		}
	}
	for _, p := range c.backendTLS.policies {
		gen := p.meta.Generation
		var conds []metav1.Condition
		switch {
		case p.conflictedBy != nil:
			conds = append(conds, condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.PolicyReasonConflicted),
				fmt.Sprintf("%s targets the same Service port and takes precedence (older, or same age and lower namespace/name)",
					describeRef(p.conflictedBy.ref)), gen))
		case p.noValidCA:
			conds = append(conds, condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.BackendTLSPolicyReasonNoValidCACertificate),
				"no caCertificateRef is valid", gen))
		default:
			conds = append(conds, condition(string(gatewayv1.PolicyConditionAccepted), true, string(gatewayv1.PolicyReasonAccepted),
				"policy is accepted for "+describeTLSTargets(p.targets), gen))
		}
		if p.refProblem != nil {
			conds = append(conds, *p.refProblem)
		} else {
			conds = append(conds, condition(string(gatewayv1.BackendTLSPolicyConditionResolvedRefs), true, string(gatewayv1.BackendTLSPolicyReasonResolvedRefs),
				"all references resolved", gen))
		}
		st := c.status.get(p.ref, gen)
		st.Conditions = append(st.Conditions, conds...)
		ancestors := map[Source]bool{}
		for _, t := range p.targets {
			for _, u := range c.backendTLS.uses[t.svc] {
				if t.section != "" && u.port != t.section {
					continue
				}
				for g := range gateways[routeInCluster{route: u.route, cluster: u.cluster}] {
					ancestors[g] = true
				}
			}
		}
		list := make([]Source, 0, len(ancestors))
		for g := range ancestors {
			list = append(list, g)
		}
		sort.Slice(list, func(i, j int) bool {
			a, b := list[i], list[j]
			if a.Cluster != b.Cluster {
				return a.Cluster < b.Cluster
			}
			if a.Namespace != b.Namespace {
				return a.Namespace < b.Namespace
			}
			return a.Name < b.Name
		})
		for _, g := range list {
			group := gatewayv1.Group(gatewayv1.GroupName)
			kind := gatewayv1.Kind(resources.KindGateway)
			ns := gatewayv1.Namespace(g.Namespace)
			st.Ancestors = append(st.Ancestors, PolicyAncestorStatus{
				Cluster:        g.Cluster,
				AncestorRef:    gatewayv1.ParentReference{Group: &group, Kind: &kind, Namespace: &ns, Name: gatewayv1.ObjectName(g.Name)},
				ControllerName: ControllerName,
				Conditions:     append([]metav1.Condition(nil), conds...),
			})
		}
	}
}

func describeTLSTargets(ts []tlsTarget) string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = "Service " + t.svc
		if t.section != "" {
			out[i] += " port " + t.section
		}
	}
	return strings.Join(out, ", ")
}

package compiler

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"golang.org/x/net/http/httpguts"

	"github.com/fedgate/fedgate/apis/backendlb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Backend policies: XBackendTrafficPolicy (session persistence and a retry budget) and v1.1's BackendLBPolicy
// (session persistence) target Services. Both feed the same internal form, spokeconfig.Backend's SessionPersistence
// and RetryBudget, so the spoke has one session mechanism whatever the user wrote.
//
// Scope of a policy: one applied at the hub applies in every cluster; one reported by a cluster applies in that
// cluster's projection only. Conflicts: two policies that set the same thing (session persistence, or a retry budget)
// for the same Service conflict; the oldest wins, then the lower namespace/name (Gateway API policy precedence), and
// the loser is not applied at all (Accepted=False, reason Conflicted). A route rule's own sessionPersistence is not a
// conflict: it is more specific and simply wins for that rule (the spoke uses the rule's policy when it has one).

// policySlot is a feature a policy sets; policies conflict per (Service, slot).
type policySlot int

const (
	slotSession policySlot = iota
	slotRetry
)

// backendPolicyObj is one policy of either kind, parsed.
type backendPolicyObj struct {
	ref     ObjectRef
	meta    *metav1.ObjectMeta
	targets []string // "namespace/name" of the Services it applies to (found in some cluster)
	session *spokeconfig.SessionPersistence
	retry   *spokeconfig.RetryBudget
}

func (p *backendPolicyObj) sets(slot policySlot) bool {
	if slot == slotSession {
		return p.session != nil
	}
	return p.retry != nil
}

// servicePolicy is what applies to one Service in one scope: the winners of its slots.
type servicePolicy struct {
	session, retry *backendPolicyObj
}

// policyResult is processPolicies' outcome, read by buildBackend.
type policyResult struct {
	// hub: winners among hub policies only, by "namespace/name" of the Service: what every cluster gets unless its own
	// policies change the outcome.
	hub map[string]*servicePolicy
	// clusters[cluster]: winners among hub policies and the cluster's own.
	clusters map[string]map[string]*servicePolicy
}

// outcome of one policy in one scope: nil when accepted, else the policy that beat it.
type outcome struct {
	loser  bool
	winner *backendPolicyObj
}

// processPolicies parses every backend policy, writes its status and records the winners per Service.
func (c *compiler) processPolicies() {
	c.policies = &policyResult{hub: map[string]*servicePolicy{}, clusters: map[string]map[string]*servicePolicy{}}
	var hubPolicies []*backendPolicyObj
	byCluster := map[string][]*backendPolicyObj{}
	for _, v := range append([]*view{c.hub}, c.clusterViews()...) {
		for _, p := range v.res.XBackendTrafficPolicies {
			if po := c.parseXBTP(v.cluster, p); po != nil {
				if v.cluster == "" {
					hubPolicies = append(hubPolicies, po)
				} else {
					byCluster[v.cluster] = append(byCluster[v.cluster], po)
				}
			}
		}
		for _, p := range v.res.BackendLBPolicies {
			if po := c.parseBackendLBPolicy(v.cluster, p); po != nil {
				if v.cluster == "" {
					hubPolicies = append(hubPolicies, po)
				} else {
					byCluster[v.cluster] = append(byCluster[v.cluster], po)
				}
			}
		}
	}
	hubWins, hubOutcomes := resolvePolicies(hubPolicies)
	c.policies.hub = hubWins
	// Per cluster: hub policies compete with the cluster's own there.
	perCluster := map[string]map[*backendPolicyObj]outcome{}
	for _, cl := range c.clusters {
		wins, outs := resolvePolicies(append(append([]*backendPolicyObj(nil), hubPolicies...), byCluster[cl]...))
		c.policies.clusters[cl] = wins
		perCluster[cl] = outs
	}
	for _, p := range hubPolicies {
		st := c.status.get(p.ref, p.meta.Generation)
		var lostIn []string
		var winner *backendPolicyObj
		for _, cl := range c.clusters {
			o := perCluster[cl][p]
			if o.loser == hubOutcomes[p].loser {
				continue
			}
			st.Clusters = append(st.Clusters, ClusterConditions{Cluster: cl, Conditions: []metav1.Condition{policyCondition(p, o)}})
			if o.loser {
				lostIn, winner = append(lostIn, cl), o.winner
			}
		}
		switch o := hubOutcomes[p]; {
		case o.loser:
			st.Conditions = append(st.Conditions, policyCondition(p, o))
		case len(lostIn) > 0:
			st.Conditions = append(st.Conditions, condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.PolicyReasonConflicted),
				fmt.Sprintf("not applied in cluster(s) %s: %s takes precedence there (older, or same age and lower namespace/name)",
					strings.Join(lostIn, ", "), describeRef(winner.ref)), p.meta.Generation))
		default:
			st.Conditions = append(st.Conditions, policyCondition(p, o))
		}
	}
	for _, cl := range c.clusters {
		for _, p := range byCluster[cl] {
			st := c.status.get(p.ref, p.meta.Generation)
			st.Conditions = append(st.Conditions, policyCondition(p, perCluster[cl][p]))
		}
	}
}

func (c *compiler) clusterViews() []*view {
	out := make([]*view, 0, len(c.clusters))
	for _, cl := range c.clusters {
		out = append(out, c.reports[cl])
	}
	return out
}

func policyCondition(p *backendPolicyObj, o outcome) metav1.Condition {
	if o.loser {
		return condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.PolicyReasonConflicted),
			fmt.Sprintf("%s targets the same Service and takes precedence (older, or same age and lower namespace/name)", describeRef(o.winner.ref)),
			p.meta.Generation)
	}
	return condition(string(gatewayv1.PolicyConditionAccepted), true, string(gatewayv1.PolicyReasonAccepted),
		"policy is accepted for Service(s) "+strings.Join(p.targets, ", "), p.meta.Generation)
}

func describeRef(r ObjectRef) string {
	d := resources.Describe(r.Kind, r.Namespace, r.Name)
	if r.Cluster != "" {
		d += " (cluster " + r.Cluster + ")"
	}
	return d
}

// resolvePolicies hands each (Service, slot) to the first policy in precedence order that sets it. A policy that
// finds any of its slots taken applies nothing (a half-applied policy would surprise its author more than a
// Conflicted one).
func resolvePolicies(ps []*backendPolicyObj) (map[string]*servicePolicy, map[*backendPolicyObj]outcome) {
	sorted := append([]*backendPolicyObj(nil), ps...)
	sort.SliceStable(sorted, func(i, j int) bool { return policyLess(sorted[i], sorted[j]) })
	wins := map[string]*servicePolicy{}
	outs := make(map[*backendPolicyObj]outcome, len(sorted))
	for _, p := range sorted {
		var beaten *backendPolicyObj
		for _, svc := range p.targets {
			sp := wins[svc]
			if sp == nil {
				continue
			}
			if p.sets(slotSession) && sp.session != nil {
				beaten = sp.session
			} else if p.sets(slotRetry) && sp.retry != nil {
				beaten = sp.retry
			}
			if beaten != nil {
				break
			}
		}
		if beaten != nil {
			outs[p] = outcome{loser: true, winner: beaten}
			continue
		}
		outs[p] = outcome{}
		for _, svc := range p.targets {
			sp := wins[svc]
			if sp == nil {
				sp = &servicePolicy{}
				wins[svc] = sp
			}
			if p.sets(slotSession) {
				sp.session = p
			}
			if p.sets(slotRetry) {
				sp.retry = p
			}
		}
	}
	return wins, outs
}

// policyLess is Gateway API conflict precedence: older first, then namespace/name; then (for determinism only) hub
// before cluster-reported, then kind.
func policyLess(a, b *backendPolicyObj) bool {
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
	if a.ref.Cluster != b.ref.Cluster {
		return a.ref.Cluster < b.ref.Cluster
	}
	return a.ref.Kind < b.ref.Kind
}

// resolveTargets turns targetRefs into the Services they name. A Service counts when any cluster reports it, because
// fedgate federates Services by namespace/name. Group "core" is read as the core group and the kind "Service" is
// matched without regard to case: Gateway API v1.1's own BackendLBPolicy announcement writes `group: core`,
// `kind: service`, and users apply it as published. ServiceImport names the same federated Service.
// It returns the found Services and a condition when the policy cannot be accepted.
func (c *compiler) resolveTargets(ref ObjectRef, gen int64, refs []gatewayv1.LocalPolicyTargetReference) ([]string, *metav1.Condition) {
	var found, missing, unsupported []string
	seen := map[string]bool{}
	for i, tr := range refs {
		group, kind := string(tr.Group), string(tr.Kind)
		switch {
		case (group == "" || group == "core") && strings.EqualFold(kind, resources.KindService):
		case group == mcsv1a1.GroupName && kind == kindServiceImport:
		default:
			unsupported = append(unsupported, fmt.Sprintf("targetRefs[%d]: %s/%s %q is not a Service or ServiceImport", i, group, kind, tr.Name))
			continue
		}
		key := ref.Namespace + "/" + string(tr.Name)
		exists := false
		for _, cl := range c.clusters {
			exists = exists || c.reports[cl].services[key] != nil
		}
		if !exists {
			missing = append(missing, key)
			continue
		}
		if !seen[key] {
			seen[key] = true
			found = append(found, key)
		}
	}
	sort.Strings(found)
	if len(found) > 0 {
		return found, nil
	}
	var cond metav1.Condition
	if len(unsupported) > 0 && len(missing) == 0 {
		cond = condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.PolicyReasonInvalid), strings.Join(unsupported, "; "), gen)
	} else {
		msg := fmt.Sprintf("Service(s) %s not found in any cluster", strings.Join(missing, ", "))
		if len(refs) == 0 {
			msg = "targetRefs: Required value"
		}
		cond = condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.PolicyReasonTargetNotFound), msg, gen)
	}
	return nil, &cond
}

func (c *compiler) parseXBTP(cluster string, p *gatewayxv1a1.XBackendTrafficPolicy) *backendPolicyObj {
	ref := ObjectRef{Cluster: cluster, Kind: resources.KindXBackendTrafficPolicy, Namespace: p.Namespace, Name: p.Name}
	po := &backendPolicyObj{ref: ref, meta: &p.ObjectMeta}
	var problems []string
	if sp := p.Spec.SessionPersistence; sp != nil {
		var lifetime *gatewayv1.CookieLifetimeType
		if sp.CookieConfig != nil {
			lifetime = sp.CookieConfig.LifetimeType
		}
		s, probs := sessionPersistence("spec.sessionPersistence", sp.SessionName, sp.AbsoluteTimeout, nil, sp.Type, lifetime)
		po.session, problems = s, append(problems, probs...)
	}
	if rc := p.Spec.RetryConstraint; rc != nil {
		rb, probs := retryBudget(rc)
		po.retry, problems = rb, append(problems, probs...)
	}
	return c.finishPolicy(po, p.Spec.TargetRefs, problems)
}

func (c *compiler) parseBackendLBPolicy(cluster string, p *backendlb.BackendLBPolicy) *backendPolicyObj {
	ref := ObjectRef{Cluster: cluster, Kind: resources.KindBackendLBPolicy, Namespace: p.Namespace, Name: p.Name}
	po := &backendPolicyObj{ref: ref, meta: &p.ObjectMeta}
	var problems []string
	if sp := p.Spec.SessionPersistence; sp != nil {
		var lifetime *gatewayv1.CookieLifetimeType
		if sp.CookieConfig != nil {
			lifetime = sp.CookieConfig.LifetimeType
		}
		po.session, problems = sessionPersistence("spec.sessionPersistence", sp.SessionName, sp.AbsoluteTimeout, sp.IdleTimeout, sp.Type, lifetime)
	}
	return c.finishPolicy(po, p.Spec.TargetRefs, problems)
}

// finishPolicy writes the status of a policy that cannot take part (invalid, no target, nothing set) and returns nil
// for it; otherwise the policy with its targets, whose status processPolicies writes once conflicts are known.
func (c *compiler) finishPolicy(po *backendPolicyObj, refs []gatewayv1.LocalPolicyTargetReference, problems []string) *backendPolicyObj {
	gen := po.meta.Generation
	if len(problems) > 0 {
		st := c.status.get(po.ref, gen)
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.PolicyConditionAccepted), false, string(gatewayv1.PolicyReasonInvalid),
			strings.Join(problems, "; "), gen))
		return nil
	}
	targets, cond := c.resolveTargets(po.ref, gen, refs)
	if cond != nil {
		st := c.status.get(po.ref, gen)
		st.Conditions = append(st.Conditions, *cond)
		return nil
	}
	po.targets = targets
	if po.session == nil && po.retry == nil {
		st := c.status.get(po.ref, gen)
		st.Conditions = append(st.Conditions, condition(string(gatewayv1.PolicyConditionAccepted), true, string(gatewayv1.PolicyReasonAccepted),
			"policy is accepted but sets nothing fedgate applies (no sessionPersistence or retryConstraint)", gen))
		return nil
	}
	return po
}

// sessionPersistence converts any of the three API forms into the spoke's, without Scope and Source (the caller
// knows what the session is bound to). Durations become milliseconds; type defaults to Cookie and the cookie lifetime
// to Session. A missing sessionName gets a name derived later from the scope (see withScope).
func sessionPersistence(field string, name *string, abs, idle *gatewayv1.Duration, typ *gatewayv1.SessionPersistenceType,
	lifetime *gatewayv1.CookieLifetimeType) (*spokeconfig.SessionPersistence, []string) {
	sp := &spokeconfig.SessionPersistence{Type: string(gatewayv1.CookieBasedSessionPersistence), CookieLifetime: string(gatewayv1.SessionCookieLifetimeType)}
	var problems []string
	if typ != nil && *typ != "" {
		sp.Type = string(*typ)
	}
	switch gatewayv1.SessionPersistenceType(sp.Type) {
	case gatewayv1.CookieBasedSessionPersistence, gatewayv1.HeaderBasedSessionPersistence:
	default:
		problems = append(problems, fmt.Sprintf("%s.type %q: must be Cookie or Header", field, sp.Type))
	}
	if lifetime != nil && *lifetime != "" {
		sp.CookieLifetime = string(*lifetime)
	}
	switch gatewayv1.CookieLifetimeType(sp.CookieLifetime) {
	case gatewayv1.SessionCookieLifetimeType, gatewayv1.PermanentCookieLifetimeType:
	default:
		problems = append(problems, fmt.Sprintf("%s.cookieConfig.lifetimeType %q: must be Session or Permanent", field, sp.CookieLifetime))
	}
	if name != nil {
		sp.SessionName = *name
	}
	switch {
	case len(sp.SessionName) > 128:
		problems = append(problems, fmt.Sprintf("%s.sessionName: longer than 128 characters", field))
	case sp.SessionName == "":
	case sp.Type == string(gatewayv1.HeaderBasedSessionPersistence) && !httpguts.ValidHeaderFieldName(sp.SessionName):
		problems = append(problems, fmt.Sprintf("%s.sessionName %q: not a valid header name", field, sp.SessionName))
	case sp.Type != string(gatewayv1.HeaderBasedSessionPersistence) && !validCookieName(sp.SessionName):
		problems = append(problems, fmt.Sprintf("%s.sessionName %q: not a valid cookie name", field, sp.SessionName))
	}
	var err error
	if sp.AbsoluteTimeoutMs, err = durationMs(abs); err != nil {
		problems = append(problems, fmt.Sprintf("%s.absoluteTimeout: %v", field, err))
	}
	if sp.IdleTimeoutMs, err = durationMs(idle); err != nil {
		problems = append(problems, fmt.Sprintf("%s.idleTimeout: %v", field, err))
	}
	if sp.CookieLifetime == string(gatewayv1.PermanentCookieLifetimeType) && sp.AbsoluteTimeoutMs == 0 {
		problems = append(problems, fmt.Sprintf("%s: absoluteTimeout must be specified when cookie lifetimeType is Permanent", field))
	}
	if sp.Type == string(gatewayv1.HeaderBasedSessionPersistence) {
		sp.CookieLifetime = "" // meaningless for headers; kept out so the spoke's config says what applies
	}
	return sp, problems
}

// withScope returns a copy of sp bound to scope and source. A policy without a sessionName gets one derived from the
// scope, so two sticky rules on one host never overwrite each other's token, and every cluster derives the same name.
func withScope(sp *spokeconfig.SessionPersistence, scope string, source ObjectRef) *spokeconfig.SessionPersistence {
	out := *sp
	out.Scope = scope
	out.Source = spokeconfig.ObjectRef{Cluster: source.Cluster, Kind: source.Kind, Namespace: source.Namespace, Name: source.Name}
	if out.SessionName == "" {
		h := fnv.New32a()
		_, _ = h.Write([]byte(scope))
		out.SessionName = fmt.Sprintf("fedgate-session-%08x", h.Sum32())
	}
	return &out
}

// backendScope and ruleScope name what a session is bound to. They depend only on the objects, never on the cluster
// compiling them, so a token minted in one cluster is honoured in every other.
func backendScope(id string) string { return "backend/" + id }

func ruleScope(src Source, ruleIndex int) string {
	s := fmt.Sprintf("rule/%s/%s/%s/%d", src.Kind, src.Namespace, src.Name, ruleIndex)
	if src.Cluster != "" {
		s += "@" + src.Cluster
	}
	return s
}

// validCookieName: an RFC 6265 token, the same test the spoke applies.
func validCookieName(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", ch) >= 0 {
			return false
		}
	}
	return s != ""
}

// Retry budget defaults, as the XBackendTrafficPolicy CRD defaults them (objects reported by clusters whose API
// server lacks the defaults still get them).
const (
	defaultBudgetPercent    = 20
	defaultBudgetIntervalMs = 10_000
)

func retryBudget(rc *gatewayxv1a1.RetryConstraint) (*spokeconfig.RetryBudget, []string) {
	rb := &spokeconfig.RetryBudget{Percent: defaultBudgetPercent, IntervalMs: defaultBudgetIntervalMs}
	var problems []string
	if b := rc.Budget; b != nil {
		if b.Percent != nil {
			rb.Percent = *b.Percent
		}
		if b.Interval != nil {
			ms, err := durationMs(b.Interval)
			switch {
			case err != nil:
				problems = append(problems, "spec.retryConstraint.budget.interval: "+err.Error())
			case ms > 0:
				rb.IntervalMs = ms
			}
		}
	}
	if rb.Percent < 0 || rb.Percent > 100 {
		problems = append(problems, fmt.Sprintf("spec.retryConstraint.budget.percent %d: must be between 0 and 100", rb.Percent))
	}
	if mr := rc.MinRetryRate; mr != nil && mr.Count != nil && *mr.Count > 0 {
		intervalMs := int64(1000)
		if mr.Interval != nil {
			ms, err := durationMs(mr.Interval)
			if err != nil {
				problems = append(problems, "spec.retryConstraint.minRetryRate.interval: "+err.Error())
			} else if ms > 0 {
				intervalMs = ms
			}
		}
		// The spoke counts a per-second floor; round up so a small rate (1 per 10s) still allows a retry.
		rb.MinRetriesPerSecond = int((int64(*mr.Count)*1000 + intervalMs - 1) / intervalMs)
	}
	return rb, problems
}

// applyPolicies sets a backend's policy fields: the hub-wide winners on the backend itself, and a ClusterPolicies
// entry for every cluster where that cluster's own policies change the outcome.
func (c *compiler) applyPolicies(bn *BackendNode, svcKey string) {
	if c.policies == nil {
		return
	}
	build := func(sp *servicePolicy) (*spokeconfig.SessionPersistence, *spokeconfig.RetryBudget) {
		if sp == nil {
			return nil, nil
		}
		var s *spokeconfig.SessionPersistence
		var r *spokeconfig.RetryBudget
		if sp.session != nil {
			s = withScope(sp.session.session, backendScope(bn.ID), sp.session.ref)
		}
		if sp.retry != nil {
			rb := *sp.retry.retry
			r = &rb
		}
		return s, r
	}
	hub := c.policies.hub[svcKey]
	bn.SessionPersistence, bn.RetryBudget = build(hub)
	for _, cl := range c.clusters {
		sp := c.policies.clusters[cl][svcKey]
		if samePolicy(hub, sp) {
			continue
		}
		s, r := build(sp)
		bn.ClusterPolicies = append(bn.ClusterPolicies, ClusterBackendPolicy{Cluster: cl, SessionPersistence: s, RetryBudget: r})
	}
}

func samePolicy(a, b *servicePolicy) bool {
	if a == nil || b == nil {
		return (a == nil || (a.session == nil && a.retry == nil)) && (b == nil || (b.session == nil && b.retry == nil))
	}
	return a.session == b.session && a.retry == b.retry
}

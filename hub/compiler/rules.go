package compiler

import (
	"fmt"
	"net/textproto"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// matchSpec is one match of a rule in spoke form. A match the spoke could not evaluate (an invalid regular
// expression) carries problem instead and is dropped, so that the spoke never NACKs a whole config for one route.
type matchSpec struct {
	index   int
	match   spokeconfig.Match
	problem string
}

// compiledRoute is a route's rules resolved in one cluster: the flattened route nodes and the conditions every parent
// in that cluster shares.
type compiledRoute struct {
	nodes            []RouteNode
	resolvedRefs     metav1.Condition
	partiallyInvalid *metav1.Condition
}

func fromHTTPRoute(cluster string, hr *gatewayv1.HTTPRoute) *routeObj {
	ro := &routeObj{
		kind:       resources.KindHTTPRoute,
		meta:       &hr.ObjectMeta,
		source:     Source{Cluster: cluster, Kind: resources.KindHTTPRoute, Namespace: hr.Namespace, Name: hr.Name},
		parentRefs: hr.Spec.ParentRefs,
		hostnames:  lowerHostnames(hr.Spec.Hostnames),
	}
	for i, r := range hr.Spec.Rules {
		rs := ruleSpec{filters: r.Filters, timeouts: r.Timeouts, index: i, sessionPersistence: r.SessionPersistence, retry: r.Retry}
		if r.Name != nil {
			rs.name = string(*r.Name)
		}
		for i, m := range r.Matches {
			rs.matches = append(rs.matches, httpMatch(i, m))
		}
		if len(r.Matches) == 0 {
			rs.matches = []matchSpec{{match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"}}}
		}
		for _, br := range r.BackendRefs {
			rs.backendRefs = append(rs.backendRefs, backendRefSpec{ref: br.BackendObjectReference, weight: br.Weight, filters: len(br.Filters)})
		}
		ro.rules = append(ro.rules, rs)
	}
	return ro
}

func lowerHostnames(hs []gatewayv1.Hostname) []string {
	var out []string
	for _, h := range hs {
		if h != "" {
			out = append(out, strings.ToLower(string(h)))
		}
	}
	return out
}

func httpMatch(index int, m gatewayv1.HTTPRouteMatch) matchSpec {
	ms := matchSpec{index: index, match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"}}
	if m.Path != nil {
		if m.Path.Type != nil {
			ms.match.PathType = spokeconfig.PathMatchType(*m.Path.Type)
		}
		if m.Path.Value != nil {
			ms.match.Path = *m.Path.Value
		}
	}
	switch ms.match.PathType {
	case spokeconfig.PathExact, spokeconfig.PathPrefix:
		if !strings.HasPrefix(ms.match.Path, "/") {
			ms.problem = fmt.Sprintf("matches[%d].path.value %q: must start with /", index, ms.match.Path)
		}
	case spokeconfig.PathRegularExpression:
		if _, err := regexp.Compile(ms.match.Path); err != nil {
			ms.problem = fmt.Sprintf("matches[%d].path.value: %v", index, err)
		}
	default:
		ms.problem = fmt.Sprintf("matches[%d].path.type %q: unsupported", index, ms.match.PathType)
	}
	if m.Method != nil {
		ms.match.Method = string(*m.Method)
	}
	seen := map[string]bool{}
	for i, h := range m.Headers {
		name := textproto.CanonicalMIMEHeaderKey(string(h.Name))
		if seen[name] {
			continue // only the first entry of a repeated header name counts
		}
		seen[name] = true
		sm, problem := stringMatch(name, (*string)(h.Type), h.Value)
		if problem != "" && ms.problem == "" {
			ms.problem = fmt.Sprintf("matches[%d].headers[%d]: %s", index, i, problem)
		}
		ms.match.Headers = append(ms.match.Headers, sm)
	}
	seen = map[string]bool{}
	for i, q := range m.QueryParams {
		name := string(q.Name) // query parameter names are case-sensitive
		if seen[name] {
			continue
		}
		seen[name] = true
		sm, problem := stringMatch(name, (*string)(q.Type), q.Value)
		if problem != "" && ms.problem == "" {
			ms.problem = fmt.Sprintf("matches[%d].queryParams[%d]: %s", index, i, problem)
		}
		ms.match.QueryParams = append(ms.match.QueryParams, sm)
	}
	return ms
}

func stringMatch(name string, typ *string, value string) (spokeconfig.StringMatch, string) {
	sm := spokeconfig.StringMatch{Name: name, Type: spokeconfig.MatchExact, Value: value}
	if typ != nil {
		sm.Type = spokeconfig.StringMatchType(*typ)
	}
	switch sm.Type {
	case spokeconfig.MatchExact:
	case spokeconfig.MatchRegularExpression:
		if _, err := regexp.Compile(value); err != nil {
			return sm, err.Error()
		}
	default:
		return sm, fmt.Sprintf("type %q: unsupported", sm.Type)
	}
	return sm, ""
}

// compileRoute resolves a route's rules in one cluster: filters into actions, backendRefs into backends (which depend
// on the cluster through ReferenceGrants), and records the ResolvedRefs / PartiallyInvalid conditions.
func (c *compiler) compileRoute(ro *routeObj, cluster string) *compiledRoute {
	gen := ro.meta.Generation
	cr := &compiledRoute{}
	var refProblem *backendProblem
	var partial []string
	for ri := range ro.rules {
		rule := &ro.rules[ri]
		action, problems, refp := c.ruleAction(ro, rule, cluster)
		for _, p := range problems {
			partial = append(partial, fmt.Sprintf("rules[%d]: %s", ri, p))
		}
		if refProblem == nil && refp != nil {
			p := *refp
			p.message = fmt.Sprintf("rules[%d].%s", ri, p.message)
			refProblem = &p
		}
		for _, ms := range rule.matches {
			if ms.problem != "" {
				partial = append(partial, fmt.Sprintf("rules[%d].%s (match dropped)", ri, ms.problem))
				continue
			}
			src := ro.source
			src.Section = rule.name
			cr.nodes = append(cr.nodes, RouteNode{Source: src, RuleIndex: ri, MatchIndex: ms.index, Match: ms.match, Action: action})
		}
	}
	if refProblem != nil {
		cr.resolvedRefs = condition(string(gatewayv1.RouteConditionResolvedRefs), false, string(refProblem.reason), refProblem.message, gen)
	} else {
		cr.resolvedRefs = condition(string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "all references are resolved", gen)
	}
	if len(partial) > 0 {
		pc := condition(string(gatewayv1.RouteConditionPartiallyInvalid), true, string(gatewayv1.RouteReasonUnsupportedValue), strings.Join(partial, "; "), gen)
		cr.partiallyInvalid = &pc
	}
	return cr
}

// ruleAction turns a rule's filters, backendRefs and timeouts into the spoke's action. Filters fedgate cannot apply
// make the rule answer 500 rather than serve traffic without them; problems says why (for PartiallyInvalid).
func (c *compiler) ruleAction(ro *routeObj, rule *ruleSpec, cluster string) (spokeconfig.Action, []string, *backendProblem) {
	var a spokeconfig.Action
	var problems []string
	var refProblem *backendProblem
	fail := false
	seen := map[gatewayv1.HTTPRouteFilterType]bool{}
	for fi, f := range rule.filters {
		if seen[f.Type] && f.Type != gatewayv1.HTTPRouteFilterExtensionRef {
			problems = append(problems, fmt.Sprintf("filters[%d]: %s appears more than once", fi, f.Type))
			fail = true
			continue
		}
		seen[f.Type] = true
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			a.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			a.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect == nil {
				problems, fail = append(problems, fmt.Sprintf("filters[%d].requestRedirect: required", fi)), true
				continue
			}
			a.Redirect = redirect(f.RequestRedirect)
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite == nil {
				problems, fail = append(problems, fmt.Sprintf("filters[%d].urlRewrite: required", fi)), true
				continue
			}
			a.Rewrite = &spokeconfig.Rewrite{Path: pathRewrite(f.URLRewrite.Path)}
			if f.URLRewrite.Hostname != nil {
				a.Rewrite.Hostname = string(*f.URLRewrite.Hostname)
			}
		case gatewayv1.HTTPRouteFilterExtensionRef:
			// fedgate knows no extension kinds, so the reference cannot resolve. The filter must not be skipped: the
			// rule answers 500.
			name := ""
			if f.ExtensionRef != nil {
				name = fmt.Sprintf(" %s/%s %q", f.ExtensionRef.Group, f.ExtensionRef.Kind, f.ExtensionRef.Name)
			}
			fail = true
			if refProblem == nil {
				refProblem = &backendProblem{reason: gatewayv1.RouteReasonInvalidKind,
					message: fmt.Sprintf("filters[%d]: ExtensionRef%s cannot be resolved: fedgate supports no extension filters; the rule answers 500", fi, name)}
			}
		default:
			problems, fail = append(problems, fmt.Sprintf("filters[%d]: filter type %q is not supported by fedgate yet; the rule answers 500", fi, f.Type)), true
		}
	}
	if usesPrefixRewrite(a) {
		// ReplacePrefixMatch rewrites the matched prefix, so every match of the rule must be a PathPrefix (the API
		// server's CEL rule); otherwise the spoke would not know what to replace.
		for _, ms := range rule.matches {
			if ms.match.PathType != spokeconfig.PathPrefix {
				problems, fail = append(problems, "ReplacePrefixMatch needs every match of the rule to be a PathPrefix"), true
				break
			}
		}
	}
	if a.Redirect != nil && a.Rewrite != nil {
		problems, fail = append(problems, "RequestRedirect and URLRewrite cannot be combined"), true
	}
	if rule.timeouts != nil {
		var err error
		if a.RequestTimeoutMs, err = durationMs(rule.timeouts.Request); err != nil {
			problems, fail = append(problems, "timeouts.request: "+err.Error()), true
		}
		if a.BackendRequestTimeoutMs, err = durationMs(rule.timeouts.BackendRequest); err != nil {
			problems, fail = append(problems, "timeouts.backendRequest: "+err.Error()), true
		}
	}
	if rule.retry != nil {
		rt, rp := ruleRetry(rule.retry)
		a.Retry = rt
		if len(rp) > 0 {
			problems, fail = append(problems, rp...), true
		}
	}
	if sp := rule.sessionPersistence; sp != nil {
		var lifetime *gatewayv1.CookieLifetimeType
		if sp.CookieConfig != nil {
			lifetime = sp.CookieConfig.LifetimeType
		}
		s, sprobs := sessionPersistence("sessionPersistence", sp.SessionName, sp.AbsoluteTimeout, nil, sp.Type, lifetime)
		if len(sprobs) > 0 {
			// Serving the rule without the stickiness its author asked for would break sessions silently; 500 says
			// plainly that the rule is not being served as written.
			problems, fail = append(problems, sprobs...), true
		} else {
			a.SessionPersistence = withScope(s, ruleScope(ro.source, rule.index), ro.ref())
		}
	}
	if a.Redirect == nil {
		var total int64
		for bi, br := range rule.backendRefs {
			// Values the API server would refuse or fedgate cannot honour make this share answer 500; they are not
			// reference problems, so they go to PartiallyInvalid rather than ResolvedRefs.
			if br.weight != nil && *br.weight < 0 {
				problems = append(problems, fmt.Sprintf("backendRefs[%d].weight %d: must not be negative", bi, *br.weight))
				a.Backends = append(a.Backends, spokeconfig.WeightedBackend{Invalid: true, Reason: "negative weight"})
				continue
			}
			if br.filters > 0 {
				problems = append(problems, fmt.Sprintf("backendRefs[%d].filters: per-backend filters are not supported by fedgate yet; this backend answers 500", bi))
				a.Backends = append(a.Backends, spokeconfig.WeightedBackend{Weight: weightOf(br), Invalid: true, Reason: "backendRef filters are not supported"})
				total += int64(weightOf(br))
				continue
			}
			wb, p := c.resolveBackend(ro, cluster, br)
			if p != nil && refProblem == nil {
				p.message = fmt.Sprintf("backendRefs[%d]: %s", bi, p.message)
				refProblem = p
			}
			total += int64(wb.Weight)
			a.Backends = append(a.Backends, wb)
		}
		if len(rule.backendRefs) == 0 || total == 0 {
			// Nothing to forward to (or every weight is 0): the spec answers 500.
			fail = true
		}
	} else if len(rule.backendRefs) > 0 {
		problems = append(problems, "backendRefs are ignored beside a RequestRedirect filter")
	}
	if fail {
		// Keep nothing that could forward or redirect: the rule's answer is the error.
		a = spokeconfig.Action{DirectResponse: &spokeconfig.DirectResponse{Status: 500}}
	}
	return a, problems, refProblem
}

// defaultRetryAttempts is how often a rule with a retry stanza but no attempts retries: the field's value is left to
// the implementation, and one retry recovers from a single bad endpoint without multiplying load during an outage.
const defaultRetryAttempts = 1

// ruleRetry converts an HTTPRoute rule's retry stanza.
func ruleRetry(r *gatewayv1.HTTPRouteRetry) (*spokeconfig.Retry, []string) {
	rt := &spokeconfig.Retry{Attempts: defaultRetryAttempts}
	var problems []string
	for i, code := range r.Codes {
		if code < 400 || code > 599 {
			problems = append(problems, fmt.Sprintf("retry.codes[%d] %d: must be a 4xx or 5xx status", i, code))
			continue
		}
		rt.Codes = append(rt.Codes, int(code))
	}
	if r.Attempts != nil {
		if *r.Attempts < 0 {
			problems = append(problems, fmt.Sprintf("retry.attempts %d: must not be negative", *r.Attempts))
		}
		rt.Attempts = *r.Attempts
	}
	var err error
	if rt.BackoffMs, err = durationMs(r.Backoff); err != nil {
		problems = append(problems, "retry.backoff: "+err.Error())
	}
	return rt, problems
}

func usesPrefixRewrite(a spokeconfig.Action) bool {
	return (a.Redirect != nil && a.Redirect.Path != nil && a.Redirect.Path.ReplacePrefixMatch != nil) ||
		(a.Rewrite != nil && a.Rewrite.Path != nil && a.Rewrite.Path.ReplacePrefixMatch != nil)
}

func weightOf(br backendRefSpec) int32 {
	if br.weight == nil {
		return 1
	}
	return *br.weight
}

func headerModifier(f *gatewayv1.HTTPHeaderFilter) *spokeconfig.HeaderModifier {
	if f == nil {
		return nil
	}
	hm := &spokeconfig.HeaderModifier{}
	for _, h := range f.Set {
		hm.Set = append(hm.Set, spokeconfig.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		hm.Add = append(hm.Add, spokeconfig.Header{Name: string(h.Name), Value: h.Value})
	}
	hm.Remove = append(hm.Remove, f.Remove...)
	return hm
}

func redirect(f *gatewayv1.HTTPRequestRedirectFilter) *spokeconfig.Redirect {
	r := &spokeconfig.Redirect{StatusCode: 302, Path: pathRewrite(f.Path)}
	if f.Scheme != nil {
		r.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		r.Hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		r.Port = *f.Port
	}
	if f.StatusCode != nil {
		r.StatusCode = *f.StatusCode
	}
	return r
}

func pathRewrite(p *gatewayv1.HTTPPathModifier) *spokeconfig.PathRewrite {
	if p == nil {
		return nil
	}
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath != nil {
			return &spokeconfig.PathRewrite{ReplaceFullPath: ptr(*p.ReplaceFullPath)}
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch != nil {
			return &spokeconfig.PathRewrite{ReplacePrefixMatch: ptr(*p.ReplacePrefixMatch)}
		}
	}
	return nil
}

// durationMs parses a Gateway API duration (GEP-2257: a subset of Go's syntax) into milliseconds; nil and "0s" → 0.
func durationMs(d *gatewayv1.Duration) (int64, error) {
	if d == nil {
		return 0, nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil {
		return 0, fmt.Errorf("%q: %w", *d, err)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q: must not be negative", *d)
	}
	ms := v.Milliseconds()
	if ms == 0 && v > 0 {
		ms = 1 // never turn a tiny timeout into "no timeout"
	}
	return ms, nil
}

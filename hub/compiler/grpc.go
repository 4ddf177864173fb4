package compiler

import (
	"fmt"
	"regexp"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// fromGRPCRoute reduces a GRPCRoute to the shared route form. A gRPC call is an HTTP/2 POST to /{service}/{method},
// so method matches become path matches the spoke already evaluates:
//
//	service and method (Exact) → Exact "/svc/Method"
//	service only (Exact)       → PathPrefix "/svc" (element-wise, so "/svc/Anything" and not "/svcX/...")
//	method only (Exact)        → RegularExpression "/[^/]+/Method"
//	RegularExpression          → RegularExpression "/(svc)/(method)" with "[^/]+" for an unset part
//
// With the HTTP precedence order this keeps the GRPCRoute order that matters in practice: a full method match beats a
// service match, which beats a regular expression.
func fromGRPCRoute(cluster string, gr *gatewayv1.GRPCRoute) *routeObj {
	ro := &routeObj{
		kind:       resources.KindGRPCRoute,
		meta:       &gr.ObjectMeta,
		source:     Source{Cluster: cluster, Kind: resources.KindGRPCRoute, Namespace: gr.Namespace, Name: gr.Name},
		parentRefs: gr.Spec.ParentRefs,
		hostnames:  lowerHostnames(gr.Spec.Hostnames),
	}
	for i, r := range gr.Spec.Rules {
		rs := ruleSpec{index: i, sessionPersistence: r.SessionPersistence}
		if r.Name != nil {
			rs.name = string(*r.Name)
		}
		for i, m := range r.Matches {
			rs.matches = append(rs.matches, grpcMatch(i, m))
		}
		if len(r.Matches) == 0 {
			rs.matches = []matchSpec{{match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"}}}
		}
		for _, f := range r.Filters {
			rs.filters = append(rs.filters, httpFilter(f))
		}
		for _, br := range r.BackendRefs {
			rs.backendRefs = append(rs.backendRefs, backendRefSpec{ref: br.BackendObjectReference, weight: br.Weight, filters: len(br.Filters)})
		}
		ro.rules = append(ro.rules, rs)
	}
	return ro
}

// httpFilter maps a GRPCRoute filter onto the HTTPRoute filter with the same meaning.
func httpFilter(f gatewayv1.GRPCRouteFilter) gatewayv1.HTTPRouteFilter {
	return gatewayv1.HTTPRouteFilter{
		Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
}

func grpcMatch(index int, m gatewayv1.GRPCRouteMatch) matchSpec {
	ms := matchSpec{index: index, match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"}}
	if mm := m.Method; mm != nil {
		svc, method := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		regex := mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression
		switch {
		case svc == "" && method == "":
			// Match any method: keep PathPrefix "/".
		case regex:
			ms.match = spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "/(" + orAny(svc) + ")/(" + orAny(method) + ")"}
		case method == "":
			ms.match = spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/" + svc}
		case svc == "":
			ms.match = spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "/[^/]+/" + regexp.QuoteMeta(method)}
		default:
			ms.match = spokeconfig.Match{PathType: spokeconfig.PathExact, Path: "/" + svc + "/" + method}
		}
		if ms.match.PathType == spokeconfig.PathRegularExpression {
			if _, err := regexp.Compile(ms.match.Path); err != nil {
				ms.problem = fmt.Sprintf("matches[%d].method: %v", index, err)
			}
		}
	}
	headers := make([]gatewayv1.HTTPHeaderMatch, 0, len(m.Headers))
	for _, h := range m.Headers {
		headers = append(headers, gatewayv1.HTTPHeaderMatch{Type: (*gatewayv1.HeaderMatchType)(h.Type), Name: gatewayv1.HTTPHeaderName(h.Name), Value: h.Value})
	}
	hm := httpMatch(index, gatewayv1.HTTPRouteMatch{Headers: headers})
	ms.match.Headers = hm.match.Headers
	if ms.problem == "" && hm.problem != "" {
		ms.problem = hm.problem
	}
	return ms
}

func orAny(s string) string {
	if s == "" {
		return "[^/]+"
	}
	return s
}

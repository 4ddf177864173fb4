package compiler

import (
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// attachment is one route node bound to one listener under one hostname, waiting to be sorted into its virtual host.
type attachment struct {
	listener *listener
	hostname string
	// created is the route's creationTimestamp, the first tie-breaker after the match itself.
	created metav1.Time
	node    RouteNode
}

// sortByPrecedence orders the routes of one virtual host as the Gateway API asks (hostnames are already equal within
// a virtual host):
//
//  1. an Exact path before a PathPrefix, longer prefixes first; regular expressions after every prefix (their order
//     is implementation-specific: fedgate puts longer expressions first);
//  2. a match with a method before one without;
//  3. more header matches first, then more query parameter matches;
//  4. ties: the oldest route (creationTimestamp), then "{namespace}/{name}", then where it came from (hub first, then
//     cluster name) and kind, then rule index, then match index.
//
// The order is total, so shuffled inputs sort the same.
func sortByPrecedence(as []*attachment) {
	sort.SliceStable(as, func(i, j int) bool { return precedes(as[i], as[j]) })
}

func precedes(a, b *attachment) bool {
	if c := compareMatch(a.node.Match, b.node.Match); c != 0 {
		return c < 0
	}
	if !a.created.Equal(&b.created) {
		return a.created.Before(&b.created)
	}
	sa, sb := a.node.Source, b.node.Source
	if sa.Namespace != sb.Namespace {
		return sa.Namespace < sb.Namespace
	}
	if sa.Name != sb.Name {
		return sa.Name < sb.Name
	}
	if sa.Cluster != sb.Cluster {
		return sa.Cluster < sb.Cluster
	}
	if sa.Kind != sb.Kind {
		return sa.Kind < sb.Kind
	}
	if a.node.RuleIndex != b.node.RuleIndex {
		return a.node.RuleIndex < b.node.RuleIndex
	}
	return a.node.MatchIndex < b.node.MatchIndex
}

// compareMatch returns <0 when a takes precedence over b, >0 when b does, 0 when the spec leaves them tied.
func compareMatch(a, b spokeconfig.Match) int {
	if ra, rb := pathRank(a.PathType), pathRank(b.PathType); ra != rb {
		return ra - rb
	}
	if len(a.Path) != len(b.Path) {
		return len(b.Path) - len(a.Path)
	}
	if (a.Method != "") != (b.Method != "") {
		if a.Method != "" {
			return -1
		}
		return 1
	}
	if len(a.Headers) != len(b.Headers) {
		return len(b.Headers) - len(a.Headers)
	}
	return len(b.QueryParams) - len(a.QueryParams)
}

func pathRank(t spokeconfig.PathMatchType) int {
	switch t {
	case spokeconfig.PathExact:
		return 0
	case spokeconfig.PathPrefix:
		return 1
	case spokeconfig.PathRegularExpression:
		return 2
	default:
		return 3
	}
}

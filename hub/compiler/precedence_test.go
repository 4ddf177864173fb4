package compiler

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

func TestSortByPrecedence(t *testing.T) {
	old := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	young := metav1.NewTime(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	prefix := func(p string) spokeconfig.Match { return spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: p} }
	hdr := func(n int) []spokeconfig.StringMatch {
		var out []spokeconfig.StringMatch
		for i := 0; i < n; i++ {
			out = append(out, spokeconfig.StringMatch{Name: fmt.Sprintf("H%d", i), Value: "v"})
		}
		return out
	}
	type entry struct {
		id      string
		match   spokeconfig.Match
		created metav1.Time
		ns      string
		name    string
		cluster string
		rule    int
		matchIx int
	}
	tests := []struct {
		name string
		// want is the expected order; the test shuffles it before sorting.
		want []entry
	}{
		{
			name: "path kinds: exact, longest prefix, regex",
			want: []entry{
				{id: "exact", match: spokeconfig.Match{PathType: spokeconfig.PathExact, Path: "/a"}},
				{id: "long", match: prefix("/a/b/c")},
				{id: "mid", match: prefix("/a/b")},
				{id: "root", match: prefix("/")},
				{id: "regex-long", match: spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "/a/.*/x"}},
				{id: "regex", match: spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "/.*"}},
			},
		},
		{
			name: "method, then headers, then query params",
			want: []entry{
				{id: "method", match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/", Method: "GET"}},
				{id: "h2", match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/", Headers: hdr(2)}},
				{id: "h1q2", match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/", Headers: hdr(1), QueryParams: hdr(2)}},
				{id: "h1", match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/", Headers: hdr(1)}},
				{id: "q1", match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/", QueryParams: hdr(1)}},
				{id: "plain", match: prefix("/")},
			},
		},
		{
			name: "longer prefix beats more headers",
			want: []entry{
				{id: "long", match: prefix("/api")},
				{id: "headers", match: spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/", Headers: hdr(3), Method: "POST"}},
			},
		},
		{
			name: "ties: oldest, namespace/name, cluster, rule, match",
			want: []entry{
				{id: "old", match: prefix("/"), created: old, ns: "z", name: "z"},
				{id: "a/a", match: prefix("/"), created: young, ns: "a", name: "a"},
				{id: "a/b hub", match: prefix("/"), created: young, ns: "a", name: "b"},
				{id: "a/b east r0m0", match: prefix("/"), created: young, ns: "a", name: "b", cluster: "east"},
				{id: "a/b east r0m1", match: prefix("/"), created: young, ns: "a", name: "b", cluster: "east", matchIx: 1},
				{id: "a/b east r1m0", match: prefix("/"), created: young, ns: "a", name: "b", cluster: "east", rule: 1},
				{id: "b/a", match: prefix("/"), created: young, ns: "b", name: "a"},
			},
		},
	}
	rng := rand.New(rand.NewSource(1))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for _, e := range tt.want {
				want = append(want, e.id)
			}
			for round := 0; round < 20; round++ {
				as := make([]*attachment, len(tt.want))
				for i, e := range tt.want {
					as[i] = &attachment{created: e.created, node: RouteNode{
						Source:    Source{Cluster: e.cluster, Kind: "HTTPRoute", Namespace: e.ns, Name: e.name, Section: e.id},
						RuleIndex: e.rule, MatchIndex: e.matchIx, Match: e.match,
					}}
				}
				rng.Shuffle(len(as), func(i, j int) { as[i], as[j] = as[j], as[i] })
				sortByPrecedence(as)
				var got []string
				for _, a := range as {
					got = append(got, a.node.Source.Section)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("round %d: order mismatch (-want +got):\n%s", round, diff)
				}
			}
		})
	}
}

func TestIntersectHostnames(t *testing.T) {
	tests := []struct {
		route    []string
		listener string
		want     []string
	}{
		{nil, "", []string{"*"}},
		{nil, "*.example.com", []string{"*.example.com"}},
		{[]string{"a.example.com"}, "", []string{"a.example.com"}},
		{[]string{"example.com"}, "*.example.com", nil},
		{[]string{"a.b.example.com"}, "*.example.com", []string{"a.b.example.com"}},
		{[]string{"*.example.com"}, "foo.example.com", []string{"foo.example.com"}},
		{[]string{"*.example.com"}, "*.example.com", []string{"*.example.com"}},
		{[]string{"*.a.example.com"}, "*.example.com", []string{"*.a.example.com"}},
		{[]string{"*.example.com"}, "*.a.example.com", []string{"*.a.example.com"}},
		{[]string{"*.example.com"}, "example.com", nil},
		{[]string{"foo.example.com", "*.example.com"}, "foo.example.com", []string{"foo.example.com"}},
		{[]string{"other.org"}, "foo.example.com", nil},
	}
	for _, tt := range tests {
		got := intersectHostnames(tt.route, tt.listener)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("intersect(%v, %q) (-want +got):\n%s", tt.route, tt.listener, diff)
		}
	}
}

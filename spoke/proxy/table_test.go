package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

func rt(name string, m spokeconfig.Match) spokeconfig.Route {
	return spokeconfig.Route{
		Source: spokeconfig.ObjectRef{Kind: "HTTPRoute", Namespace: "ns", Name: name},
		Match:  m,
		Action: spokeconfig.Action{DirectResponse: &spokeconfig.DirectResponse{Status: 200, Body: name}},
	}
}

func matcherConfig() *spokeconfig.SpokeConfig {
	return &spokeconfig.SpokeConfig{
		Cluster: "c1",
		Ports: []spokeconfig.Port{{
			Port: 80, Protocol: spokeconfig.ProtocolHTTP,
			VirtualHosts: []spokeconfig.VirtualHost{
				{Hostname: "*", Routes: []spokeconfig.Route{rt("catchall", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"})}},
				{Hostname: "*.example.com", Routes: []spokeconfig.Route{rt("wild", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"})}},
				{Hostname: "*.api.example.com", Routes: []spokeconfig.Route{rt("wild-api", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/"})}},
				{Hostname: "exact.example.com", Routes: []spokeconfig.Route{
					rt("exact-path", spokeconfig.Match{PathType: spokeconfig.PathExact, Path: "/exact"}),
					rt("regex", spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "/re/[0-9]+"}),
					rt("header", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/h", Headers: []spokeconfig.StringMatch{{Name: "x-version", Value: "v2"}}}),
					rt("header-re", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/h", Headers: []spokeconfig.StringMatch{{Name: "X-Version", Type: spokeconfig.MatchRegularExpression, Value: "v[3-9]"}}}),
					rt("query", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/q", QueryParams: []spokeconfig.StringMatch{{Name: "env", Value: "canary"}}}),
					rt("method", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/m", Method: "POST"}),
					rt("prefix", spokeconfig.Match{PathType: spokeconfig.PathPrefix, Path: "/abc/"}),
				}},
			},
		}},
	}
}

func TestRouteMatching(t *testing.T) {
	tbl, err := Build(matcherConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pt := tbl.ports[80]
	cases := []struct {
		name, host, method, target string
		header                     http.Header
		want                       string // route name, "" for 404
	}{
		{"exact host exact path", "exact.example.com", "GET", "/exact", nil, "exact-path"},
		{"host is case-insensitive with port", "EXACT.example.com:8080", "GET", "/exact", nil, "exact-path"},
		{"exact path is exact", "exact.example.com", "GET", "/exact/", nil, ""},
		{"exact vhost shadows wildcard", "exact.example.com", "GET", "/nothing", nil, ""},
		{"regex full match", "exact.example.com", "GET", "/re/123", nil, "regex"},
		{"regex anchored", "exact.example.com", "GET", "/re/123/x", nil, ""},
		{"header exact, name case-insensitive", "exact.example.com", "GET", "/h", http.Header{"X-Version": {"v2"}}, "header"},
		{"header regex", "exact.example.com", "GET", "/h/x", http.Header{"X-Version": {"v7"}}, "header-re"},
		{"header mismatch", "exact.example.com", "GET", "/h", http.Header{"X-Version": {"v1"}}, ""},
		{"header missing", "exact.example.com", "GET", "/h", nil, ""},
		{"query", "exact.example.com", "GET", "/q?a=1&env=canary", nil, "query"},
		{"query escaped", "exact.example.com", "GET", "/q?en%76=can%61ry", nil, "query"},
		{"query mismatch", "exact.example.com", "GET", "/q?env=prod", nil, ""},
		{"method", "exact.example.com", "POST", "/m", nil, "method"},
		{"method mismatch", "exact.example.com", "GET", "/m", nil, ""},
		{"prefix element", "exact.example.com", "GET", "/abc", nil, "prefix"},
		{"prefix slash", "exact.example.com", "GET", "/abc/", nil, "prefix"},
		{"prefix deeper", "exact.example.com", "GET", "/abc/def", nil, "prefix"},
		{"prefix not partial element", "exact.example.com", "GET", "/abcd", nil, ""},
		{"longest wildcard", "x.api.example.com", "GET", "/", nil, "wild-api"},
		{"wildcard deeper name", "a.b.example.com", "GET", "/", nil, "wild"},
		{"wildcard does not match apex", "example.com", "GET", "/", nil, "catchall"},
		{"wildcard apex of longer", "api.example.com", "GET", "/", nil, "wild"},
		{"catch-all", "other.org", "GET", "/anything", nil, "catchall"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest(tc.method, "http://"+tc.host+tc.target, nil)
			if tc.header != nil {
				r.Header = tc.header
			}
			req := request{host: normaliseHost(tc.host), path: r.URL.Path, method: tc.method, header: r.Header, rawQuery: r.URL.RawQuery}
			got := ""
			if vh := pt.lookupVhost(req.host); vh != nil {
				if m := vh.match(&req); m != nil {
					got = m.source.Name
				}
			}
			if got != tc.want {
				t.Errorf("matched %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNoVhostIs404(t *testing.T) {
	cfg := matcherConfig()
	cfg.Ports[0].VirtualHosts = cfg.Ports[0].VirtualHosts[1:] // drop the catch-all
	tbl, err := Build(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if vh := tbl.ports[80].lookupVhost("other.org"); vh != nil {
		t.Fatalf("got vhost %q, want none", vh.hostname)
	}
}

func TestBuildErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*spokeconfig.SpokeConfig)
		want   string
	}{
		{"bad path regex", func(c *spokeconfig.SpokeConfig) {
			c.Ports[0].VirtualHosts[0].Routes[0].Match = spokeconfig.Match{PathType: spokeconfig.PathRegularExpression, Path: "/(["}
		}, "match.path: invalid regular expression"},
		{"bad header regex", func(c *spokeconfig.SpokeConfig) {
			c.Ports[0].VirtualHosts[0].Routes[0].Match.Headers = []spokeconfig.StringMatch{{Name: "X", Type: spokeconfig.MatchRegularExpression, Value: "("}}
		}, `match.headers[0] "X": invalid regular expression`},
		{"header value injection", func(c *spokeconfig.SpokeConfig) {
			c.Ports[0].VirtualHosts[0].Routes[0].Action.RequestHeaders = &spokeconfig.HeaderModifier{Set: []spokeconfig.Header{{Name: "X", Value: "a\r\nY: b"}}}
		}, "action.requestHeaders"},
		{"prefix rewrite without prefix match", func(c *spokeconfig.SpokeConfig) {
			s := "/x"
			c.Ports[0].VirtualHosts[0].Routes[0].Match = spokeconfig.Match{PathType: spokeconfig.PathExact, Path: "/a"}
			c.Ports[0].VirtualHosts[0].Routes[0].Action.Rewrite = &spokeconfig.Rewrite{Path: &spokeconfig.PathRewrite{ReplacePrefixMatch: &s}}
		}, "replacePrefixMatch requires a PathPrefix match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := matcherConfig()
			tc.mutate(cfg)
			_, err := Build(cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "HTTPRoute ns/catchall") {
				t.Errorf("err = %v, want it to name the route", err)
			}
		})
	}
}

func TestScheduleExactOverCycle(t *testing.T) {
	cases := []struct {
		name    string
		weights []int32
		want    []int
	}{
		{"90/10", []int32{90, 10}, []int{90, 10}},
		{"weight 0 gets nothing", []int32{1, 0, 3}, []int{25, 0, 75}},
		{"large weights scaled", []int32{1000000, 1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSchedule(tc.weights)
			got := make([]int, len(tc.weights))
			run := 0
			for i := 0; i < 100; i++ {
				k := s.next()
				got[k]++
				// Smooth WRR interleaves: the 10% side never waits more than ~10 picks in a row.
				if k == 0 {
					run++
				} else {
					run = 0
				}
				if tc.want != nil && tc.weights[0] == 90 && run > 10 {
					t.Fatalf("backend 0 picked %d times in a row", run)
				}
			}
			if tc.want == nil {
				if got[1] == 0 && len(s.seq) <= 100 {
					t.Fatalf("non-zero weight starved: %v", got)
				}
				if len(s.seq) > maxCycle+len(tc.weights) {
					t.Fatalf("cycle %d exceeds bound", len(s.seq))
				}
				return
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("picks = %v, want %v", got, tc.want)
				}
			}
		})
	}
	if newSchedule([]int32{0, 0}).next() != -1 {
		t.Fatal("all-zero weights must pick nothing")
	}
}

func TestRewritePath(t *testing.T) {
	s := func(v string) *string { return &v }
	cases := []struct {
		path, prefix string
		pr           *spokeconfig.PathRewrite
		want         string
	}{
		{"/foo/bar", "/foo", &spokeconfig.PathRewrite{ReplacePrefixMatch: s("/baz")}, "/baz/bar"},
		{"/foo", "/foo", &spokeconfig.PathRewrite{ReplacePrefixMatch: s("/baz")}, "/baz"},
		{"/foo/bar", "/foo", &spokeconfig.PathRewrite{ReplacePrefixMatch: s("/")}, "/bar"},
		{"/foo", "/foo", &spokeconfig.PathRewrite{ReplacePrefixMatch: s("")}, "/"},
		{"/a", "", &spokeconfig.PathRewrite{ReplacePrefixMatch: s("/x")}, "/x/a"},
		{"/a/b", "/a", &spokeconfig.PathRewrite{ReplaceFullPath: s("/full")}, "/full"},
		{"/a/b", "/a", nil, "/a/b"},
	}
	for _, tc := range cases {
		if got := rewritePath(tc.path, tc.prefix, tc.pr); got != tc.want {
			t.Errorf("rewritePath(%q, %q) = %q, want %q", tc.path, tc.prefix, got, tc.want)
		}
	}
}

func benchTable(tb testing.TB) (*portTable, *http.Request) {
	cfg := matcherConfig()
	cfg.Backends = []spokeconfig.Backend{{ID: "ns/svc:80", Namespace: "ns", Name: "svc", Port: 80, Endpoints: []spokeconfig.Endpoint{
		{Cluster: "c1", Address: "10.0.0.1:8080", Ready: true}, {Cluster: "c1", Address: "10.0.0.2:8080", Ready: true},
	}}}
	vh := &cfg.Ports[0].VirtualHosts[3]
	last := &vh.Routes[len(vh.Routes)-1]
	last.Action = spokeconfig.Action{Backends: []spokeconfig.WeightedBackend{{BackendID: "ns/svc:80", Weight: 90}, {BackendID: "ns/svc:80", Weight: 10}}}
	tbl, err := Build(cfg, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	r, _ := http.NewRequest("GET", "http://Exact.Example.com/abc/def?x=1", nil)
	r.Header.Set("X-Version", "v1")
	return tbl.ports[80], r
}

// routeAndPick is the per-request routing work of serveGateway, minus I/O.
func routeAndPick(pt *portTable, r *http.Request) *endpoint {
	req := request{host: normaliseHost(r.Host), path: r.URL.Path, method: r.Method, header: r.Header, rawQuery: r.URL.RawQuery}
	vh := pt.lookupVhost(req.host)
	m := vh.match(&req)
	_, ep, _ := m.action.pick(benchNow, nil)
	return ep
}

// benchNow is a fixed clock reading: routing takes the time from its caller.
var benchNow = time.Now().UnixNano()

func TestRouteMatchDoesNotAllocate(t *testing.T) {
	pt, r := benchTable(t)
	r.Host = "exact.example.com" // lower-case: normalisation must not allocate either
	if n := testing.AllocsPerRun(1000, func() {
		if routeAndPick(pt, r) == nil {
			t.Fatal("no endpoint")
		}
	}); n != 0 {
		t.Fatalf("routing allocates %v times per request", n)
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	pt, r := benchTable(b)
	r.Host = "exact.example.com"
	b.ReportAllocs()
	for b.Loop() {
		if routeAndPick(pt, r) == nil {
			b.Fatal("no endpoint")
		}
	}
}

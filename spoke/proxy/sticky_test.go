package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// fakeClock is the injected Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var testSessionKeys = []spokeconfig.SessionKey{{ID: 2, Secret: []byte("0123456789abcdef0123456789abcdef")}}

func stickyRoute(sp *spokeconfig.SessionPersistence, wbs ...spokeconfig.WeightedBackend) spokeconfig.Route {
	r := forwardRoute("sticky", "/app", wbs...)
	r.Action.SessionPersistence = sp
	return r
}

// twoClusters is an east spoke serving a gateway port and a west spoke reachable over east-west, both on loopback.
type twoClusters struct {
	east, west     *Server
	ewEast, ewWest net.Listener
	clock          *fakeClock
	port           int32
	eastEPs        []string // endpoints of backend A (cluster east)
	westEPs        []string // endpoints of backend B (cluster west)
	names          map[string]string
}

func newTwoClusters(t *testing.T) *twoClusters {
	tc := &twoClusters{clock: newFakeClock(), port: freePort(t), names: map[string]string{}}
	for _, n := range []string{"e1", "e2"} {
		srv := echoBackend(t, n)
		tc.eastEPs = append(tc.eastEPs, addrOf(srv))
		tc.names[addrOf(srv)] = n
	}
	for _, n := range []string{"w1", "w2"} {
		srv := echoBackend(t, n)
		tc.westEPs = append(tc.westEPs, addrOf(srv))
		tc.names[addrOf(srv)] = n
	}
	mk := func(cluster string) *Server {
		s := New(Options{Cluster: cluster, DrainTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler), Now: tc.clock.Now, DisableHealthChecks: true})
		t.Cleanup(func() { s.Close() })
		return s
	}
	tc.east, tc.west = mk("east"), mk("west")
	tc.ewEast, _ = net.Listen("tcp", "127.0.0.1:0")
	tc.ewWest, _ = net.Listen("tcp", "127.0.0.1:0")
	go tc.east.ServeEastWest(tc.ewEast)
	go tc.west.ServeEastWest(tc.ewWest)
	return tc
}

func (tc *twoClusters) backends() []spokeconfig.Backend {
	var a, b []spokeconfig.Endpoint
	for _, e := range tc.eastEPs {
		a = append(a, spokeconfig.Endpoint{Cluster: "east", Address: e, Ready: true})
	}
	for _, e := range tc.westEPs {
		b = append(b, spokeconfig.Endpoint{Cluster: "west", Address: e, Ready: true})
	}
	return []spokeconfig.Backend{{ID: "ns/a:80", Endpoints: a}, {ID: "ns/b:80", Endpoints: b}}
}

// apply gives both spokes a config with route rt on east's gateway port.
func (tc *twoClusters) apply(t *testing.T, rev int64, rt spokeconfig.Route, backends []spokeconfig.Backend) {
	t.Helper()
	if err := tc.east.Apply(&spokeconfig.SpokeConfig{Cluster: "east", Revision: rev, Ports: []spokeconfig.Port{port(tc.port, rt)},
		Backends: backends, SessionKeys: testSessionKeys,
		Clusters: []spokeconfig.Cluster{{Name: "west", EastWestAddress: tc.ewWest.Addr().String()}}}); err != nil {
		t.Fatal(err)
	}
	if err := tc.west.Apply(&spokeconfig.SpokeConfig{Cluster: "west", Revision: rev, Backends: backends, SessionKeys: testSessionKeys,
		Clusters: []spokeconfig.Cluster{{Name: "east", EastWestAddress: tc.ewEast.Addr().String()}}}); err != nil {
		t.Fatal(err)
	}
}

func weights(a, b int32) []spokeconfig.WeightedBackend {
	return []spokeconfig.WeightedBackend{{BackendID: "ns/a:80", Weight: a}, {BackendID: "ns/b:80", Weight: b}}
}

// sessionClient carries one session's token the way a browser (cookie) or an API client (header) would.
type sessionClient struct {
	c      *http.Client
	url    string
	sp     *spokeconfig.SessionPersistence
	token  string
	cookie string // the whole Set-Cookie line last received
}

// do sends one request with the current token and returns the endpoint name that answered; it fails the test on any
// non-200 or on a response without a token.
func (sc *sessionClient) do(t *testing.T) string {
	req, _ := http.NewRequest("GET", sc.url, nil)
	if sc.token != "" {
		if sc.sp.Type == "Header" {
			req.Header.Set(sc.sp.SessionName, sc.token)
		} else {
			req.AddCookie(&http.Cookie{Name: sc.sp.SessionName, Value: sc.token})
		}
	}
	resp, err := sc.c.Do(req)
	if err != nil {
		t.Error(err)
		return ""
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d %q", resp.StatusCode, body)
		return ""
	}
	tok := ""
	if sc.sp.Type == "Header" {
		tok = resp.Header.Get(sc.sp.SessionName)
	} else {
		for _, c := range resp.Cookies() {
			if c.Name == sc.sp.SessionName {
				tok = c.Value
			}
		}
		sc.cookie = resp.Header.Get("Set-Cookie")
	}
	if tok == "" {
		t.Errorf("response without a session token: %v", resp.Header)
	}
	sc.token = tok
	name, _, _ := strings.Cut(string(body), ":")
	return name
}

func TestStickySessionsSurviveWeightChange(t *testing.T) {
	for _, typ := range []string{"Cookie", "Header"} {
		t.Run(typ, func(t *testing.T) {
			tc := newTwoClusters(t)
			sp := &spokeconfig.SessionPersistence{Type: typ, SessionName: "fg-session", Scope: "ns/r/0"}
			tc.apply(t, 1, stickyRoute(sp, weights(90, 10)...), tc.backends())
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			defer client.CloseIdleConnections()
			url := fmt.Sprintf("http://127.0.0.1:%d/app/x", tc.port)

			const sessions, perPhase, workers = 1000, 10, 8
			clients := make([]*sessionClient, sessions)
			first := make([]string, sessions)
			moved := make([]int, sessions)
			for i := range clients {
				clients[i] = &sessionClient{c: client, url: url, sp: sp}
			}
			// run makes perPhase requests on every session, spread over workers.
			run := func() {
				var wg sync.WaitGroup
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < sessions; i += workers {
							for k := 0; k < perPhase; k++ {
								got := clients[i].do(t)
								if first[i] == "" {
									first[i] = got
								} else if got != first[i] {
									moved[i]++
								}
							}
						}
					}()
				}
				wg.Wait()
			}
			run()
			share := func(names []string) (west int) {
				for _, n := range names {
					if strings.HasPrefix(n, "w") {
						west++
					}
				}
				return west
			}
			if w := share(first); w != 100 {
				t.Errorf("at 90/10, %d of 1000 new sessions went west, want 100", w)
			}
			tc.apply(t, 2, stickyRoute(sp, weights(10, 90)...), tc.backends())
			run()
			for i, m := range moved {
				if m != 0 {
					t.Fatalf("session %d (first on %s) moved %d times across the weight change", i, first[i], m)
				}
			}
			// New sessions follow the new weights.
			fresh := make([]string, sessions)
			for i := range fresh {
				sc := &sessionClient{c: client, url: url, sp: sp}
				fresh[i] = sc.do(t)
			}
			west := share(fresh)
			t.Logf("%s sessions: 20 requests each, none moved; new sessions after 90/10 → 10/90: %.1f%% west", typ, float64(west)/10)
			if west < 870 || west > 930 {
				t.Errorf("after 10/90, %d of 1000 new sessions went west, want 900 ± 30", west)
			}
			if typ == "Cookie" {
				c := clients[0].cookie
				if !strings.Contains(c, "; Path=/app; HttpOnly; SameSite=Lax") || strings.Contains(c, "Secure") || strings.Contains(c, "Max-Age") {
					t.Errorf("Set-Cookie = %q", c)
				}
			}
		})
	}
}

func TestStickyExpiryAndForgery(t *testing.T) {
	tc := newTwoClusters(t)
	sp := &spokeconfig.SessionPersistence{SessionName: "fg", Scope: "ns/r/0", IdleTimeoutMs: 60_000, AbsoluteTimeoutMs: 600_000, CookieLifetime: "Permanent"}
	tc.apply(t, 1, stickyRoute(sp, weights(1, 1)...), tc.backends())
	client := &http.Client{}
	url := fmt.Sprintf("http://127.0.0.1:%d/app", tc.port)

	// pinned reports whether a request carrying tok lands on want; it also returns the new token.
	pinnedTo := func(tok string) (string, string) {
		sc := &sessionClient{c: client, url: url, sp: sp, token: tok}
		got := sc.do(t)
		return got, sc.token
	}
	sc := &sessionClient{c: client, url: url, sp: sp}
	home := sc.do(t)
	if !strings.Contains(sc.cookie, "Max-Age=600") {
		t.Errorf("permanent cookie without Max-Age = absolute timeout: %q", sc.cookie)
	}

	t.Run("idle timeout renewed by use", func(t *testing.T) {
		tok := sc.token
		for i := 0; i < 5; i++ {
			tc.clock.Advance(50 * time.Second) // each step within the idle timeout, 250 s in total
			var got string
			got, tok = pinnedTo(tok)
			if got != home {
				t.Fatalf("step %d: session moved from %s to %s while renewed within its idle timeout", i, home, got)
			}
		}
		sc.token = tok
	})
	t.Run("idle timeout expires", func(t *testing.T) {
		tc.clock.Advance(61 * time.Second)
		moved := 0
		for i := 0; i < 20; i++ {
			got, tok := pinnedTo(sc.token)
			if tok == sc.token || tok == "" {
				t.Fatal("expired token not replaced by a new one")
			}
			if got != home {
				moved++
			}
		}
		// A fresh pick is by weight over four endpoints: 20 expired requests all landing on home is ~1e-12.
		if moved == 0 {
			t.Fatal("expired token still routed to its endpoint")
		}
	})
	t.Run("absolute timeout", func(t *testing.T) {
		s := &sessionClient{c: client, url: url, sp: sp}
		first := s.do(t)
		for i := 0; i < 11; i++ { // 11 × 55 s = 605 s > 600 s, each hop within the idle timeout
			tc.clock.Advance(55 * time.Second)
			if i < 10 {
				if got := s.do(t); got != first {
					t.Fatalf("moved at %d", i)
				}
				if i == 9 && !strings.Contains(s.cookie, "Max-Age=50") {
					t.Errorf("Max-Age does not count down the absolute lifetime: %q", s.cookie)
				}
			}
		}
		got, tok := pinnedTo(s.token)
		if tok == s.token {
			t.Fatal("token past its absolute timeout not replaced")
		}
		_ = got
	})
	t.Run("tampered, forged, foreign scope", func(t *testing.T) {
		// Tokens that name west's w2 endpoint, with backend B at weight 0: a fresh pick never goes west, so any request
		// that reaches w2 was steered there by its token.
		target := "w2"
		tc.apply(t, 2, stickyRoute(sp, weights(1, 0)...), tc.backends())
		forged := map[string]string{
			"garbage":  "not-a-token",
			"tampered": tamper(t, sc.token),
		}
		// A well-formed token for w2 signed with a key the spokes do not have.
		other := New(Options{Cluster: "east", Logger: slog.New(slog.DiscardHandler), Now: tc.clock.Now, DisableHealthChecks: true})
		defer other.Close()
		cfg := &spokeconfig.SpokeConfig{Cluster: "east", Backends: tc.backends(), SessionKeys: []spokeconfig.SessionKey{{ID: 2, Secret: []byte("another-secret-another-secret!!")}},
			Ports:    []spokeconfig.Port{port(freePort(t), stickyRoute(sp, weights(1, 1)...))},
			Clusters: []spokeconfig.Cluster{{Name: "west", EastWestAddress: tc.ewWest.Addr().String()}}}
		if err := other.Apply(cfg); err != nil {
			t.Fatal(err)
		}
		st := other.Table().ports[cfg.Ports[0].Port].catchAll.routes[0].action.sticky
		forged["wrong key"] = issueFor(t, st, tc.westEPs[1], tc.clock.Now())
		// A genuine key but another scope (a token minted for a different rule).
		st2 := tc.east.Table().ports[tc.port].catchAll.routes[0].action.sticky
		saved := st2.scope
		foreign := *st2
		foreign.scope = saved + 1
		forged["foreign scope"] = issueFor(t, &foreign, tc.westEPs[1], tc.clock.Now())
		// Control: the same construction with the real key and scope does pin to w2, although its weight is now 0.
		if got, _ := pinnedTo(issueFor(t, st2, tc.westEPs[1], tc.clock.Now())); got != target {
			t.Fatalf("control token for w2 landed on %s", got)
		}
		for name, tok := range forged {
			hits := 0
			for i := 0; i < 12; i++ {
				got, nt := pinnedTo(tok)
				if nt == "" || nt == tok {
					t.Fatalf("%s: no fresh token issued", name)
				}
				if got == target {
					hits++
				}
			}
			if hits != 0 {
				t.Errorf("%s token steered every request to %s", name, target)
			}
		}
	})
}

func issueFor(t *testing.T, st *sticky, addr string, now time.Time) string {
	t.Helper()
	h := http.Header{}
	st.stamp(h, &endpoint{cluster: "west", addr: addr}, now, now, false)
	for _, c := range (&http.Response{Header: h}).Cookies() {
		return c.Value
	}
	t.Fatal("no cookie stamped")
	return ""
}

// tamper flips one character in the middle of a token (still valid base64url).
func tamper(t *testing.T, tok string) string {
	if len(tok) < 10 {
		t.Fatalf("token %q too short", tok)
	}
	b := []byte(tok)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

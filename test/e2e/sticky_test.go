package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// releaseNotesPolicy is the BackendLBPolicy example of the Gateway API v1.1 release notes, verbatim but for names:
// namespace foo-ns → default, Service foo → color (the canary's first backendRef, whose backend-level policy makes
// the whole rule sticky). Its `group: core` / `kind: service` spelling is kept as published.
const releaseNotesPolicy = `apiVersion: gateway.networking.k8s.io/v1alpha2
kind: BackendLBPolicy
metadata:
  name: lb-policy
  namespace: default
spec:
  targetRefs:
  - group: core
    kind: service
    name: color
  sessionPersistence:
    sessionName: foo-session
    absoluteTimeout: 1h
    idleTimeout: 30m
    type: Cookie
    cookieConfig:
      lifetimeType: Session
`

// session is one client's cookie session: the backend that served its first request and its latest token.
type session struct {
	first  string // "cluster/name" of the first answer
	cookie *http.Cookie
	moved  int // requests answered by another backend
	errs   int
}

// stickyGet sends one request with the session's cookie (if any) and returns who answered and the renewed cookie.
func stickyGet(c *http.Client, url string, cookie *http.Cookie) (string, *http.Cookie, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", nil, err
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	body.Write(buf[:n])
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var cluster, name string
	for _, kv := range strings.Fields(body.String()) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "cluster":
			cluster = v
		case "name":
			name = v
		}
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == "foo-session" {
			cookie = &http.Cookie{Name: ck.Name, Value: ck.Value}
		}
	}
	return cluster + "/" + name, cookie, nil
}

// eachSession runs fn for every session on a few workers.
func eachSession(sessions []*session, workers int, fn func(*session)) {
	var wg sync.WaitGroup
	jobs := make(chan *session)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				fn(s)
			}
		}()
	}
	for _, s := range sessions {
		jobs <- s
	}
	close(jobs)
	wg.Wait()
}

// TestStickySessionsAcrossWeightChange: through the real hub and two spokes, the v1.1 release notes' BackendLBPolicy
// applied with hubctl makes cookie sessions stick to their first endpoint (in either cluster) while the weights move
// from 90/10 to 10/90; new sessions follow the new weights.
func TestStickySessionsAcrossWeightChange(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	const (
		nSessions   = 1000
		perSession  = 20
		newSessions = 1000
		tolerance   = 3.0
	)
	w := startWorld(t)
	c := newClient()
	url := w.east.gatewayURL("/")

	mustHubctl(t, w.hub.addr, canaryRoute(90, 10), "apply", "-f", "-")
	out := mustHubctl(t, w.hub.addr, releaseNotesPolicy, "apply", "-f", "-")
	t.Logf("hubctl apply: %s", strings.TrimSpace(out))
	// Served from both clusters, with session cookies: the policy, the keys and both backends reached east.
	if _, ok := eventually(20*time.Second, func() bool {
		who, ck, err := stickyGet(c, url, nil)
		s := split(c, url, "", 40, 4)
		return err == nil && ck != nil && who != "" && s["east"] > 0 && s["west"] > 0 && errorsIn(s) == 0
	}); !ok {
		_, ck, err := stickyGet(c, url, nil)
		t.Fatalf("east never served sticky sessions from both clusters (cookie %v, err %v): %v", ck, err, split(c, url, "", 20, 1))
	}
	if got := mustHubctl(t, w.hub.addr, "", "get", "backendlbpolicies"); !strings.Contains(got, "lb-policy") {
		t.Fatalf("hubctl get backendlbpolicies does not list lb-policy:\n%s", got)
	}

	// 1,000 sessions start under 90/10 and make half their requests.
	sessions := make([]*session, nSessions)
	for i := range sessions {
		sessions[i] = &session{}
	}
	var mu sync.Mutex
	request := func(s *session) {
		who, ck, err := stickyGet(c, url, s.cookie)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			s.errs++
		case s.first == "":
			s.first, s.cookie = who, ck
		default:
			if who != s.first {
				s.moved++
			}
			if ck != nil {
				s.cookie = ck
			}
		}
	}
	eachSession(sessions, 8, func(s *session) {
		for i := 0; i < perSession/2; i++ {
			request(s)
		}
	})
	firstWest := 0
	for _, s := range sessions {
		if s.cookie == nil {
			t.Fatalf("a session got no cookie (first answer %q, %d errors)", s.first, s.errs)
		}
		if strings.HasPrefix(s.first, "west/") {
			firstWest++
		}
	}
	if p := 100 * float64(firstWest) / nSessions; p < 10-tolerance || p > 10+tolerance {
		t.Fatalf("under 90/10, %.1f%% of sessions started in west (want 10±%.0f)", p, tolerance)
	}

	// The weights flip at the hub; wait until cookie-less traffic follows them.
	mustHubctl(t, w.hub.addr, canaryRoute(10, 90), "apply", "-f", "-")
	took, ok := eventually(5*time.Second, func() bool {
		s := split(c, url, "", 100, 4)
		return errorsIn(s) == 0 && share(s, "west", 100) >= 80
	})
	if !ok {
		t.Fatalf("new traffic did not follow 10/90 within 5 s: %v", split(c, url, "", 100, 4))
	}
	t.Logf("10/90 reached east after %v", took)

	// The same sessions finish their requests: none moves.
	eachSession(sessions, 8, func(s *session) {
		for i := 0; i < perSession/2; i++ {
			request(s)
		}
	})
	moved, errs := 0, 0
	for _, s := range sessions {
		moved += s.moved
		errs += s.errs
	}
	if moved != 0 || errs != 0 {
		t.Fatalf("%d of %d session requests left their first endpoint, %d errors", moved, nSessions*(perSession-1), errs)
	}

	// New sessions follow the new weights.
	fresh := make([]*session, newSessions)
	for i := range fresh {
		fresh[i] = &session{}
	}
	eachSession(fresh, 8, request)
	newWest := 0
	for _, s := range fresh {
		if s.errs > 0 || s.cookie == nil {
			t.Fatalf("a new session failed: %d errors, cookie %v", s.errs, s.cookie)
		}
		if strings.HasPrefix(s.first, "west/") {
			newWest++
		}
	}
	p := 100 * float64(newWest) / newSessions
	if p < 90-tolerance || p > 90+tolerance {
		t.Fatalf("under 10/90, %.1f%% of new sessions started in west (want 90±%.0f)", p, tolerance)
	}
	t.Logf("%d sessions × %d requests: 0 moved across 90/10 → 10/90 (%d started in west); new sessions: %.1f%% west",
		nSessions, perSession, firstWest, p)
}

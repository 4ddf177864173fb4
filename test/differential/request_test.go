package differential

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
)

// lanes is how many cases run at once; each lane has its own nginx server block, fedgate port and recording
// backends, and runs its cases one after another, so a backend's events belong to the lane's current case.
const lanes = 8

// malformedStatuses are nginx's answers to a request it refuses as malformed or ambiguous (400, 411 Length Required,
// 413 too large, 414 URI too long, 431, 501 unknown transfer coding, 505 version).
var malformedStatuses = map[int]bool{400: true, 411: true, 413: true, 414: true, 431: true, 501: true, 505: true}

// nginxStricter lists the cases where nginx forwards nothing (or less) and fedgate may still forward, because nginx
// refuses for a reason of its own, not because the bytes are malformed or ambiguous. Keep it small; every entry says
// why. Everything else nginx refuses, fedgate must refuse too.
var nginxStricter = map[string]string{
	// nginx reads each header line into one large_client_header_buffers buffer (8 KiB by default) and answers 400
	// for a longer line; fedgate's documented limit is 60 KiB for the whole head (Envoy's default). A size policy.
	"limit/header-value-16k": "nginx large_client_header_buffers 8k per line vs fedgate MaxRequestHeaderBytes 60 KiB",
	// nginx's request-line parser takes only upper-case letters, '_' and '-' in a method and answers 400 otherwise;
	// RFC 9110 §9.1 makes a method any case-sensitive token, so these are well-formed extension methods.
	"method/lowercase-get":    "nginx accepts only [A-Z_-] in methods; RFC 9110 method = token",
	"method/mixed-case-get":   "nginx accepts only [A-Z_-] in methods; RFC 9110 method = token",
	"method/token-with-digit": "nginx accepts only [A-Z_-] in methods; RFC 9110 method = token",
	"method/token-with-bang":  "nginx accepts only [A-Z_-] in methods; RFC 9110 method = token",
	// nginx answers TRACE with 405 by policy (it never implements TRACE); the request is well-formed.
	"method/trace": "nginx refuses TRACE (405) by policy",
	// nginx refuses a Host with a ".." label (it would be a path traversal in `root $host`); ".." is a valid
	// reg-name (RFC 3986 §3.2.2), and fedgate uses the Host only to pick a virtual host.
	"host/dot-dot": "nginx rejects '..' in Host for its own $host-in-path use; valid reg-name",
	// nginx normalises the path and refuses dot-segments that climb above the root; RFC 3986 §5.2.4 removes them
	// (the result is /b). Path normalisation is a routing concern, not HTTP/1.1 framing.
	"version/dot-segments": "nginx refuses dot-segments above the root after normalising; RFC 3986 resolves them",
	// nginx skips only SP before a field value, so a leading HTAB stays in the value ("\tchunked" → 501, "\t 5" → 400);
	// RFC 9110 §5.5 makes SP and HTAB both optional whitespace around a value.
	"te/leading-tab": "nginx does not strip HTAB as OWS before a value; RFC 9110 §5.5 does",
	"cl/ows-around":  "nginx does not strip HTAB as OWS around a value; RFC 9110 §5.5 does",
}

// result is one case's outcome on both sides.
type result struct {
	c        reqCase
	nginx    outcome
	fedgate  outcome
	failures []string
}

// fedgateForwarded counts what fedgate forwarded: every request head that reached the backend, except that a head
// whose body the client never completed (and fedgate then aborted) does not count for partial cases.
func (r *result) fedgateForwarded() int {
	if r.c.partial {
		return r.fedgate.seen.complete()
	}
	return r.fedgate.seen.heads()
}

func (r *result) nginxForwarded() int {
	if r.c.partial {
		return r.nginx.seen.complete()
	}
	return r.nginx.seen.heads()
}

// judge applies the invariants to one case.
func (r *result) judge() {
	c, ng, fg := r.c, r.nginx, r.fedgate
	fail := func(format string, args ...any) { r.failures = append(r.failures, fmt.Sprintf(format, args...)) }
	fwd, nfwd := r.fedgateForwarded(), r.nginxForwarded()
	_, allowed := nginxStricter[c.name]

	// 1. Never forward what nginx refused as malformed or ambiguous.
	nginxRefused := malformedStatuses[ng.firstFinal()] && nfwd == 0
	if nginxRefused && fwd > 0 && !allowed {
		fail("nginx refused the request (%d) and forwarded nothing, but fedgate forwarded %d request(s)", ng.firstFinal(), fwd)
	} else if fwd > nfwd && !allowed {
		// 2a. Never more than nginx forwarded.
		fail("fedgate forwarded %d request(s), nginx only %d", fwd, nfwd)
	}
	// 2b. Never more than the client completed.
	if fwd > c.wantMax {
		fail("fedgate forwarded %d request(s); at most %d may be forwarded for these bytes", fwd, c.wantMax)
	}
	// 3. Everything forwarded is strictly valid HTTP/1.1 with one framing and a body that matches it.
	for _, e := range fg.seen.bad() {
		fail("fedgate sent the backend something invalid: %s", e)
	}
	for _, q := range fg.seen.requests() {
		for _, f := range c.forbid {
			if strings.Contains(string(q.head), f) {
				fail("fedgate forwarded %q, which the client sent with invalid syntax", f)
			}
		}
	}
	if c.check != nil && len(fg.seen.requests()) > 0 {
		if s := c.check(fg.seen.requests()); s != "" {
			fail("fedgate %s", s)
		}
	}
	// 4. A refusal is an error status, not silence (unless the client stalled or left).
	if fg.seen.complete() == 0 && !c.noReply && fg.firstFinal() < 400 {
		if fg.firstFinal() == 0 {
			fail("fedgate forwarded nothing and sent no status (silence or a reset)")
		} else {
			fail("fedgate forwarded nothing but answered %d", fg.firstFinal())
		}
	}
	// 5. What fedgate sends its client is a sequence of well-formed responses.
	if len(fg.rest) > 0 {
		fail("fedgate sent its client bytes that are not an HTTP/1.1 response: %s", quote(fg.rest, 200))
	}
	if c.checkClient != nil {
		if s := c.checkClient(fg); s != "" {
			fail("fedgate %s", s)
		}
	}
}

func (r *result) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "case %s (%s), wantMax %d", r.c.name, r.c.cat, r.c.wantMax)
	if reason, ok := nginxStricter[r.c.name]; ok {
		fmt.Fprintf(&b, " [nginx-stricter allow-list: %s]", reason)
	}
	fmt.Fprintf(&b, "\n  client sent: %s", quote([]byte(r.c.raw), 600))
	fmt.Fprintf(&b, "\n  nginx:   %s", r.nginx.describe())
	fmt.Fprintf(&b, "\n  fedgate: %s", r.fedgate.describe())
	return b.String()
}

// requestEnv is nginx and fedgate in front of `lanes` pairs of recording backends.
type requestEnv struct {
	nginx, fedgate []side
}

func newRequestEnv(t *testing.T) *requestEnv {
	var ups []upstream
	var fgBackends []*recorder
	env := &requestEnv{}
	// Every backend listens before any proxy address is picked, so no backend can take a picked port.
	var nrecs []*recorder
	for i := range lanes {
		nrecs = append(nrecs, newRecorder(t, fmt.Sprintf("nginx-backend-%d", i), nil))
		fgBackends = append(fgBackends, newRecorder(t, fmt.Sprintf("fedgate-backend-%d", i), nil))
	}
	for i, nrec := range nrecs {
		u := upstream{name: fmt.Sprintf("lane%d", i), listen: freeAddr(t), backend: nrec.addr()}
		ups = append(ups, u)
		env.nginx = append(env.nginx, side{name: "nginx", addr: u.listen, rec: nrec})
	}
	startNginx(t, ups)
	var addrs []string
	for _, r := range fgBackends {
		addrs = append(addrs, r.addr())
	}
	for i, a := range startFedgate(t, addrs) {
		env.fedgate = append(env.fedgate, side{name: "fedgate", addr: a, rec: fgBackends[i]})
	}
	return env
}

// runCase sends the case's bytes to both proxies at once (each on its own lane backend).
func (env *requestEnv) runCase(lane int, c reqCase) *result {
	o := sendOpts{closeWrite: c.closeWrite, pauseAt: c.pauseAt, pause: c.pause}
	r := &result{c: c}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.nginx = env.nginx[lane].run([]byte(c.raw), o) }()
	go func() { defer wg.Done(); r.fedgate = env.fedgate[lane].run([]byte(c.raw), o) }()
	wg.Wait()
	r.judge()
	return r
}

// TestRequestCorpus sends every corpus case to nginx and fedgate and checks fedgate's behaviour. Each case is a
// subtest (run one with -run 'TestRequestCorpus/cl/plus-sign'); the cases themselves run on a pool of lanes.
func TestRequestCorpus(t *testing.T) {
	cases := corpus()
	if len(cases) < 200 {
		t.Fatalf("the corpus has %d cases, want at least 200", len(cases))
	}
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		names[c.name] = true
	}
	env := newRequestEnv(t)

	// The harness itself must work: a plain GET is forwarded once by both, and answered 200 by the backend.
	base := env.runCase(0, reqCase{name: "harness/plain-get", raw: getReq("/"), wantMax: 1})
	if base.nginx.seen.complete() != 1 || base.fedgate.seen.complete() != 1 ||
		base.nginx.firstFinal() != 200 || base.fedgate.firstFinal() != 200 || len(base.failures) > 0 {
		t.Fatalf("harness check failed: a plain GET must reach both backends once and come back 200\n%s\n%s",
			base.report(), strings.Join(base.failures, "\n"))
	}

	// Subtests register first (so -run filters them), wait as parallel subtests, and receive their results from the
	// pool, which starts once every subtest is registered.
	var selected []reqCase
	resultsCh := map[string]chan *result{}
	for _, c := range cases {
		ch := make(chan *result, 1)
		resultsCh[c.name] = ch
		t.Run(c.name, func(t *testing.T) {
			selected = append(selected, c)
			t.Parallel()
			r := <-ch
			t.Logf("nginx %v forwarded %d | fedgate %v forwarded %d, heads %d (wantMax %d)", statuses(r.nginx.resps),
				r.nginxForwarded(), statuses(r.fedgate.resps), r.fedgateForwarded(), r.fedgate.seen.heads(), r.c.wantMax)
			if len(r.failures) > 0 {
				t.Errorf("%s\n  FAILED:\n  - %s", r.report(), strings.Join(r.failures, "\n  - "))
			}
		})
	}
	var mu sync.Mutex
	var results []*result
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		summarise(t, results)
	})
	go func() {
		pool(context.Background(), lanes, len(selected), func(lane, j int) {
			r := env.runCase(lane, selected[j])
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
			resultsCh[selected[j].name] <- r
		})
	}()
}

// summarise logs one line: how many cases, how both sides treated them, how many failed.
func summarise(t *testing.T, results []*result) {
	var refusedBoth, forwardedBoth, fedgateStricter, nginxStricterN, allowed, failing int
	cats := map[string]int{}
	var failed []string
	for _, r := range results {
		cats[r.c.cat]++
		f, n := r.fedgateForwarded(), r.nginxForwarded()
		switch {
		case f == 0 && n == 0:
			refusedBoth++
		case f > 0 && n > 0:
			forwardedBoth++
		case f == 0:
			fedgateStricter++
		default:
			nginxStricterN++
			if _, ok := nginxStricter[r.c.name]; ok {
				allowed++
			}
		}
		if len(r.failures) > 0 {
			failing++
			failed = append(failed, r.c.name)
		}
	}
	var cs []string
	for k, v := range cats {
		cs = append(cs, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(cs)
	sort.Strings(failed)
	t.Logf("differential summary: %d cases (%s); refused by both %d, forwarded by both %d, fedgate stricter %d, "+
		"nginx stricter %d (allow-listed %d); failing %d", len(results), strings.Join(cs, ", "), refusedBoth,
		forwardedBoth, fedgateStricter, nginxStricterN, allowed, failing)
	if len(failed) > 0 {
		t.Logf("failing cases: %s", strings.Join(failed, " "))
	}
}

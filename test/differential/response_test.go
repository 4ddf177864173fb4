package differential

// Response-side cases: a scripted backend answers the first request (/first) with misbehaving bytes and every later
// request with a distinct, valid "second" response. A first client asks for /first; once it is done, a second client
// asks the same proxy for /second. Whatever the first response did, the second client must get its own response —
// never bytes the backend left behind on a pooled upstream connection — and an invalid response head must be
// answered 502 without its bad field reaching the client. nginx gets the same script for comparison (logged).

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// leftover is a complete response hidden after another: a proxy that reuses the connection would hand it to the next
// client.
const leftover = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"

const secondResponse = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"

type respCase struct {
	name string
	// method of the first request (GET when empty); extra are extra request field lines.
	method string
	extra  []string
	// script is what the backend answers /first with; closeAfter closes the connection after it.
	script     string
	closeAfter bool
	// want502: the response is invalid and fedgate must answer 502.
	want502 bool
	// firstBody, when checkBody, is the body the first client must get when fedgate relays the response.
	firstBody string
	checkBody bool
	// broken: the response's body is invalid after a valid head, so the first client must get 502 or a response that
	// visibly did not complete (truncated), never a complete one.
	broken bool
	// mustNotReach: bytes of the script that must never reach a client.
	mustNotReach []string
}

func respCases() []respCase {
	hdr := func(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }
	relay := func(name, script, body string) respCase {
		return respCase{name: name, script: script, firstBody: body, checkBody: true}
	}
	bad := func(name, script string) respCase {
		return respCase{name: name, script: script, want502: true}
	}
	either := func(name, script string, mustNot ...string) respCase {
		return respCase{name: name, script: script, mustNotReach: mustNot}
	}
	many := make([]string, 0, 201)
	many = append(many, "HTTP/1.1 200 OK")
	for i := range 200 {
		many = append(many, fmt.Sprintf("X-R%d: v", i))
	}
	many = append(many, "Content-Length: 5")
	cs := []respCase{
		relay("extra-response-after-cl-body", hdr("HTTP/1.1 200 OK", "Content-Length: 5")+"first"+leftover, "first"),
		relay("extra-garbage-after-cl-body", hdr("HTTP/1.1 200 OK", "Content-Length: 5")+"firstgarbage\r\n\r\n", "first"),
		relay("204-with-content-length-and-body", hdr("HTTP/1.1 204 No Content", fmt.Sprintf("Content-Length: %d", len(leftover)))+leftover, ""),
		relay("204-followed-by-bytes", hdr("HTTP/1.1 204 No Content")+leftover, ""),
		relay("304-with-body", hdr("HTTP/1.1 304 Not Modified", `ETag: "a"`)+leftover, ""),
		relay("304-with-content-length-and-body", hdr("HTTP/1.1 304 Not Modified", fmt.Sprintf("Content-Length: %d", len(leftover)))+leftover, ""),
		either("cl-and-te", hdr("HTTP/1.1 200 OK", "Content-Length: 3", "Transfer-Encoding: chunked")+"5\r\nfirst\r\n0\r\n\r\n"+leftover),
		either("te-and-cl", hdr("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: 3")+"5\r\nfirst\r\n0\r\n\r\n"+leftover),
		bad("two-different-content-lengths", hdr("HTTP/1.1 200 OK", "Content-Length: 5", fmt.Sprintf("Content-Length: %d", 5+len(leftover)))+"first"+leftover),
		bad("content-length-list-differs", hdr("HTTP/1.1 200 OK", fmt.Sprintf("Content-Length: 5, %d", 5+len(leftover)))+"first"+leftover),
		relay("two-same-content-lengths", hdr("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 5")+"first", "first"),
		bad("content-length-negative", hdr("HTTP/1.1 200 OK", "Content-Length: -1")+"first"+leftover),
		bad("content-length-plus", hdr("HTTP/1.1 200 OK", "Content-Length: +5")+"first"+leftover),
		bad("content-length-hex", hdr("HTTP/1.1 200 OK", "Content-Length: 0x5")+"first"+leftover),
		bad("content-length-overflow", hdr("HTTP/1.1 200 OK", "Content-Length: 99999999999999999999")+"first"+leftover),
		either("space-before-colon", hdr("HTTP/1.1 200 OK", "X-Bad : 1", "Content-Length: 5")+"first", "X-Bad :"),
		either("content-length-space-before-colon", hdr("HTTP/1.1 200 OK", "Content-Length : 5")+"first"+leftover, "Content-Length :", "SMUGGLED"),
		either("transfer-encoding-space-before-colon", hdr("HTTP/1.1 200 OK", "Transfer-Encoding : chunked", "Content-Length: 14")+"5\r\nfirst\r\n0\r\n\r\n"+leftover,
			"Transfer-Encoding :"),
		bad("endless-1xx", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 50)+hdr("HTTP/1.1 200 OK", "Content-Length: 5")+"first"),
		relay("a-few-1xx", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 2)+hdr("HTTP/1.1 103 Early Hints", "Link: </a>; rel=preload")+
			hdr("HTTP/1.1 200 OK", "Content-Length: 5")+"first", "first"),
		bad("1xx-with-content-length", hdr("HTTP/1.1 100 Continue", "Content-Length: 8")+"SMUGGLED"+hdr("HTTP/1.1 200 OK", "Content-Length: 5")+"first"),
		bad("unsolicited-101", hdr("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: websocket")+leftover),
		bad("huge-header-1mib", hdr("HTTP/1.1 200 OK", "X-Huge: "+strings.Repeat("a", 1<<20), "Content-Length: 5")+"first"),
		bad("200-header-fields", hdr(many...)+"first"),
		either("bare-lf", "HTTP/1.1 200 OK\nContent-Length: 5\n\nfirst"),
		either("bare-lf-one-line", "HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\r\n\r\nfirst"),
		bad("status-letters", hdr("HTTP/1.1 2OO OK", "Content-Length: 5")+"first"),
		bad("status-two-digits", hdr("HTTP/1.1 99 Low", "Content-Length: 5")+"first"),
		bad("status-four-digits", hdr("HTTP/1.1 1000 Big", "Content-Length: 5")+"first"),
		bad("status-line-wrong-protocol", hdr("HTTX/1.1 200 OK", "Content-Length: 5")+"first"),
		bad("status-line-http2", hdr("HTTP/2.0 200 OK", "Content-Length: 5")+"first"),
		bad("status-line-garbage", "garbage\r\n\r\n"),
		bad("status-line-double-space", hdr("HTTP/1.1  200 OK", "Content-Length: 5")+"first"),
		either("reason-with-bare-cr", hdr("HTTP/1.1 200 OK\rX-Injected: 1", "Content-Length: 5")+"first", "X-Injected"),
		either("nul-in-value", hdr("HTTP/1.1 200 OK", "X-Nul: a\x00b", "Content-Length: 5")+"first", "a\x00b"),
		either("bare-cr-in-value", hdr("HTTP/1.1 200 OK", "X-Cr: a\rb", "Content-Length: 5")+"first", "a\rb"),
		either("obs-fold", hdr("HTTP/1.1 200 OK", "X-Fold: a", " b", "Content-Length: 5")+"first", "\r\n b"),
		either("name-with-space", hdr("HTTP/1.1 200 OK", "X Bad: 1", "Content-Length: 5")+"first", "X Bad"),
		relay("http10-without-keep-alive", hdr("HTTP/1.0 200 OK", "Content-Length: 5")+"first"+leftover, "first"),
		relay("connection-close-then-bytes", hdr("HTTP/1.1 200 OK", "Connection: close", "Content-Length: 5")+"first"+leftover, "first"),
		relay("chunked-then-bytes", hdr("HTTP/1.1 200 OK", "Transfer-Encoding: chunked")+"5\r\nfirst\r\n0\r\n\r\n"+leftover, "first"),
		{name: "close-delimited", script: hdr("HTTP/1.1 200 OK") + "first", closeAfter: true, firstBody: "first", checkBody: true},
		{name: "te-gzip-until-close", script: hdr("HTTP/1.1 200 OK", "Transfer-Encoding: gzip") + "first", closeAfter: true},
		{name: "bad-chunk-size", script: hdr("HTTP/1.1 200 OK", "Transfer-Encoding: chunked") + "zz\r\nfirst\r\n0\r\n\r\n", broken: true},
		{name: "chunk-data-too-long", script: hdr("HTTP/1.1 200 OK", "Transfer-Encoding: chunked") + "3\r\nfirst\r\n0\r\n\r\n" + leftover, broken: true},
		{name: "body-shorter-than-cl-then-close", script: hdr("HTTP/1.1 200 OK", "Content-Length: 100") + "first", closeAfter: true, broken: true},
		{name: "head-with-body", method: "HEAD", script: hdr("HTTP/1.1 200 OK", fmt.Sprintf("Content-Length: %d", len(leftover))) + leftover,
			checkBody: true},
	}
	for i := range cs {
		if cs[i].name == "304-with-body" || cs[i].name == "304-with-content-length-and-body" {
			cs[i].extra = []string{`If-None-Match: "a"`}
		}
		if !cs[i].broken && !cs[i].closeAfter {
			// Every script that leaves the leftover behind: it must never reach a client.
			if strings.Contains(cs[i].script, "SMUGGLED") {
				cs[i].mustNotReach = append(cs[i].mustNotReach, "SMUGGLED")
			}
		}
	}
	return cs
}

// scripted answers /first with the script and everything else with the second response.
func (c respCase) responder(r *request) ([]byte, bool) {
	if r.target == "/first" {
		return []byte(c.script), c.closeAfter
	}
	return []byte(secondResponse), false
}

// respOutcome is what one proxy did with one response case.
type respOutcome struct {
	first, second outcome
	reused        bool // the second request reached the backend on the first one's connection
}

func (o respOutcome) describe() string {
	return fmt.Sprintf("first client: %s\n    second client: %s\n    upstream connection reused for the second request: %v",
		o.first.describe(), o.second.describe(), o.reused)
}

func runResp(s side, c respCase) respOutcome {
	method := c.method
	if method == "" {
		method = "GET"
	}
	first := msg("", append([]string{method + " /first HTTP/1.1", host}, c.extra...)...)
	var o respOutcome
	o.first = s.run([]byte(first), sendOpts{})
	// Give the proxy time to return the upstream connection to its pool.
	time.Sleep(50 * time.Millisecond)
	o.second = s.run([]byte(getReq("/second")), sendOpts{})
	firstConn := map[int]bool{}
	for _, e := range o.first.seen.events {
		firstConn[e.conn] = true
	}
	for _, e := range o.second.seen.events {
		if firstConn[e.conn] {
			o.reused = true
		}
	}
	return o
}

func judgeResp(c respCase, o respOutcome) []string {
	var fails []string
	fail := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }
	// The second client gets its own response, complete and alone.
	sec := o.second
	if f := sec.finals(); len(f) != 1 || f[0] != 200 || len(sec.resps) == 0 || string(sec.resps[len(sec.resps)-1].body) != "second" || len(sec.rest) > 0 {
		fail("the second client did not get exactly its own 200 \"second\" (statuses %v, received %s)", statuses(sec.resps), quote(sec.got, 200))
	}
	for _, s := range c.mustNotReach {
		if strings.Contains(string(o.first.got), s) || strings.Contains(string(sec.got), s) {
			fail("%q from the backend's invalid response reached a client", s)
		}
	}
	first := o.first
	f := first.finals()
	switch {
	case c.want502:
		if len(f) == 0 || f[0] != 502 {
			fail("the response is invalid and must be answered 502; the first client got %v", statuses(first.resps))
		}
	case c.broken:
		if len(f) == 0 {
			break // the connection was cut before a head: visibly incomplete
		}
		if f[0] != 502 && !first.resps[len(first.resps)-1].truncated {
			fail("the response body was invalid, but the first client got a complete %d response", f[0])
		}
	default:
		if len(f) == 0 {
			fail("the first client got no response")
		} else if f[0] != 502 && c.checkBody {
			last := first.resps[len(first.resps)-1]
			if string(last.body) != c.firstBody || last.truncated {
				fail("the first client got body %q (truncated %v), want %q", clip(string(last.body), 80), last.truncated, c.firstBody)
			}
		}
	}
	if len(f) > 1 {
		fail("the first client got %d final responses to one request", len(f))
	}
	if len(first.rest) > 0 {
		fail("the first client got bytes that are not an HTTP/1.1 response: %s", quote(first.rest, 200))
	}
	return fails
}

// TestResponseCases runs every response case through nginx and fedgate, each case with its own scripted backends.
func TestResponseCases(t *testing.T) {
	cases := respCases()
	var ups []upstream
	var nsides, fsides []side
	var fbackends []string
	// Every backend listens before any proxy address is picked, so no backend can take a picked port.
	for _, c := range cases {
		nsides = append(nsides, side{name: "nginx", rec: newRecorder(t, "nginx-"+c.name, c.responder)})
		fsides = append(fsides, side{name: "fedgate", rec: newRecorder(t, "fedgate-"+c.name, c.responder)})
		fbackends = append(fbackends, fsides[len(fsides)-1].rec.addr())
	}
	for i := range cases {
		nsides[i].addr = freeAddr(t)
		ups = append(ups, upstream{name: fmt.Sprintf("resp%d", i), listen: nsides[i].addr, backend: nsides[i].rec.addr()})
	}
	startNginx(t, ups)
	for i, a := range startFedgate(t, fbackends) {
		fsides[i].addr = a
	}
	type pair struct{ nginx, fedgate respOutcome }
	results := make([]pair, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(2)
		go func() { defer wg.Done(); results[i].nginx = runResp(nsides[i], c) }()
		go func() { defer wg.Done(); results[i].fedgate = runResp(fsides[i], c) }()
	}
	wg.Wait()
	var failing, nginxSecondOK int
	for i, c := range cases {
		r := results[i]
		if f := r.nginx.second.finals(); len(f) == 1 && f[0] == 200 && string(lastBody(r.nginx.second)) == "second" {
			nginxSecondOK++
		}
		fails := judgeResp(c, r.fedgate)
		if len(fails) > 0 {
			failing++
		}
		t.Run(c.name, func(t *testing.T) {
			t.Logf("nginx first %v second %v (reused %v) | fedgate first %v second %v (reused %v)",
				statuses(r.nginx.first.resps), statuses(r.nginx.second.resps), r.nginx.reused,
				statuses(r.fedgate.first.resps), statuses(r.fedgate.second.resps), r.fedgate.reused)
			if len(fails) > 0 {
				t.Errorf("response case %s\n  backend answered /first with: %s\n  nginx:   %s\n  fedgate: %s\n  FAILED:\n  - %s",
					c.name, quote([]byte(c.script), 400), r.nginx.describe(), r.fedgate.describe(), strings.Join(fails, "\n  - "))
			}
		})
	}
	t.Logf("response summary: %d cases; nginx gave the second client its own response in %d; fedgate failing %d",
		len(cases), nginxSecondOK, failing)
}

func lastBody(o outcome) []byte {
	if len(o.resps) == 0 {
		return nil
	}
	return o.resps[len(o.resps)-1].body
}

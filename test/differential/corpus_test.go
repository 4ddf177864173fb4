package differential

// The request corpus: raw HTTP/1.1 byte strings, each with a name, a category and wantMax, the most requests a
// correct gateway may forward for those bytes. wantMax is 0 where RFC 9112 says a server MUST reject (invalid
// Content-Length, a transfer coding list not ending in chunked, a missing, repeated or invalid Host, whitespace before
// a colon), where it says a recipient SHOULD NOT autocorrect an invalid request-line (§3: such lines are crafted to
// slip past filters), where a number cannot be represented, and where fedgate's documented limits refuse; otherwise
// it is the number of requests the bytes hold under the most lenient reading the RFC still allows (bare LF, obs-fold
// replaced by SP, whitespace-delimited request-line words). Leniency is not a failure by itself: what fedgate forwards
// must still be strictly valid, and the nginx comparison catches forwarding what nginx refused.

import (
	"fmt"
	"strings"
	"time"
)

type reqCase struct {
	name string
	cat  string
	raw  string
	// wantMax: the most requests fedgate may forward.
	wantMax int
	// partial: the client never completes its last request (stalls, or closes mid-message). A head that fedgate
	// streamed to the backend and then aborted by closing the upstream connection does not count as forwarded.
	partial bool
	// noReply: the client stalls or leaves mid-message, so no answer is required.
	noReply bool
	// closeWrite half-closes the client connection after the bytes.
	closeWrite bool
	// pauseAt/pause split the write (the second part after pause).
	pauseAt int
	pause   time.Duration
	// forbid: substrings that must not appear in any request head fedgate forwards.
	forbid []string
	// check: an extra check of fedgate's forwarded requests ("" when fine).
	check func(reqs []*request) string
	// checkClient: an extra check of what fedgate's client received ("" when fine).
	checkClient func(o outcome) string
}

const host = "Host: example.com"

// msg builds a head from lines (CRLF-terminated, then the blank line) followed by body.
func msg(body string, lines ...string) string {
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

// getReq is a valid GET to path.
func getReq(path string) string { return msg("", "GET "+path+" HTTP/1.1", host) }

// post is a POST head with Host and the given extra lines, then body.
func post(body string, lines ...string) string {
	return msg(body, append([]string{"POST / HTTP/1.1", host}, lines...)...)
}

// smuggled is the request an attacker hides in a body.
var smuggled = getReq("/smuggled")

// noSmuggled fails when a forwarded request targets /smuggled.
func noSmuggled(reqs []*request) string {
	for _, r := range reqs {
		if strings.HasPrefix(r.target, "/smuggled") {
			return "forwarded a request to " + r.target + " that the client hid inside another request's body"
		}
	}
	return ""
}

// bodyIs checks the body of every forwarded request.
func bodyIs(want string) func([]*request) string {
	return func(reqs []*request) string {
		for _, r := range reqs {
			if string(r.body) != want {
				return fmt.Sprintf("forwarded body %q, the client's body is %q", clip(string(r.body), 80), want)
			}
		}
		return ""
	}
}

// hostIs checks the Host of every forwarded request.
func hostIs(want string) func([]*request) string {
	return func(reqs []*request) string {
		for _, r := range reqs {
			if h := r.get("Host"); len(h) != 1 || h[0] != want {
				return fmt.Sprintf("forwarded Host %q, want %q", h, want)
			}
		}
		return ""
	}
}

// targetIs checks the request-target of every forwarded request.
func targetIs(want string) func([]*request) string {
	return func(reqs []*request) string {
		for _, r := range reqs {
			if r.target != want {
				return fmt.Sprintf("forwarded request-target %q, want %q", r.target, want)
			}
		}
		return ""
	}
}

// noFieldNamed fails when a forwarded request has a field of that name (case-insensitive).
func noFieldNamed(name string) func([]*request) string {
	return func(reqs []*request) string {
		for _, r := range reqs {
			if v := r.get(name); len(v) > 0 {
				return fmt.Sprintf("forwarded a %s field %q", name, v)
			}
		}
		return ""
	}
}

func all(checks ...func([]*request) string) func([]*request) string {
	return func(reqs []*request) string {
		for _, c := range checks {
			if s := c(reqs); s != "" {
				return s
			}
		}
		return ""
	}
}

func corpus() []reqCase {
	var cs []reqCase
	for _, f := range []func() []reqCase{
		framingCL, framingTE, headerSyntax, hosts, versions, methods, chunkedSyntax, pipelining, smuggling, expect, limits,
	} {
		cs = append(cs, f()...)
	}
	return cs
}

func framingCL() []reqCase {
	c := func(name, raw string, wantMax int) reqCase {
		return reqCase{name: "cl/" + name, cat: "framing-cl", raw: raw, wantMax: wantMax}
	}
	cs := []reqCase{
		c("valid", post("hello", "Content-Length: 5"), 1),
		c("zero", post("", "Content-Length: 0"), 1),
		c("get-with-body", msg("hello", "GET / HTTP/1.1", host, "Content-Length: 5"), 1),
		c("http10-post", msg("hello", "POST / HTTP/1.0", host, "Content-Length: 5"), 1),
		c("uppercase-name", post("hello", "CONTENT-LENGTH: 5"), 1),
		c("lowercase-name", post("hello", "content-length: 5"), 1),
		c("leading-zeros", post("hello", "Content-Length: 005"), 1),
		c("many-leading-zeros", post("hello", "Content-Length: "+strings.Repeat("0", 40)+"5"), 1),
		c("ows-around", post("hello", "Content-Length: \t 5 \t"), 1),
		c("no-space", post("hello", "Content-Length:5"), 1),
		c("duplicate-same", post("hello", "Content-Length: 5", "Content-Length: 5"), 1),
		c("duplicate-differ", post("hello!", "Content-Length: 5", "Content-Length: 6"), 0),
		c("duplicate-differ-reversed", post("hello!", "Content-Length: 6", "Content-Length: 5"), 0),
		c("comma-same", post("hello", "Content-Length: 5, 5"), 1),
		c("comma-same-no-space", post("hello", "Content-Length: 5,5"), 1),
		c("comma-differ", post("hello!", "Content-Length: 5, 6"), 0),
		c("comma-three", post("hello", "Content-Length: 5,5,5"), 1),
		c("comma-empty-element", post("hello", "Content-Length: 5,,5"), 1),
		c("comma-trailing", post("hello", "Content-Length: 5,"), 1),
		c("plus-sign", post("hello", "Content-Length: +5"), 0),
		c("minus-sign", post("hello", "Content-Length: -5"), 0),
		c("negative-one", post("hello", "Content-Length: -1"), 0),
		c("minus-zero", post("", "Content-Length: -0"), 0),
		c("space-inside", post("hello", "Content-Length: 5 5"), 0),
		c("hex", post("hello", "Content-Length: 0x5"), 0),
		c("decimal-point", post("hello", "Content-Length: 5.0"), 0),
		c("exponent", post("hello", "Content-Length: 5e0"), 0),
		c("alpha", post("hello", "Content-Length: abc"), 0),
		c("empty", post("hello", "Content-Length: "), 0),
		c("fullwidth-digit", post("hello", "Content-Length: \xef\xbc\x95"), 0),
		c("nul-after", post("hello", "Content-Length: 5\x00"), 0),
		c("vtab-before", post("hello", "Content-Length: \x0b5"), 0),
		c("obs-fold-value", post("hello", "Content-Length:", " 5"), 1),
		c("overflow-20-digits", post("hello", "Content-Length: 99999999999999999999"), 0),
		c("int64-overflow", post("hello", "Content-Length: 9223372036854775808"), 0),
		c("uint64-wrap", post("hello", "Content-Length: 18446744073709551621"), 0),
	}
	// Lengths the client never sends in full: a streaming proxy may forward the head and abort.
	for _, p := range []struct{ name, v string }{{"int64-max", "9223372036854775807"}, {"ten-gigabytes", "10737418240"}} {
		x := c(p.name, post("hello", "Content-Length: "+p.v), 1)
		x.partial, x.noReply = true, true
		cs = append(cs, x)
	}
	for i := range cs {
		if cs[i].wantMax == 1 && !cs[i].partial && strings.HasPrefix(cs[i].raw, "POST") && strings.HasSuffix(cs[i].raw, "hello") {
			cs[i].check = bodyIs("hello")
		}
	}
	return cs
}

func framingTE() []reqCase {
	body := "5\r\nhello\r\n0\r\n\r\n"
	c := func(name, te string, wantMax int) reqCase {
		return reqCase{name: "te/" + name, cat: "framing-te", raw: post(body, "Transfer-Encoding: "+te), wantMax: wantMax}
	}
	cs := []reqCase{
		c("chunked", "chunked", 1),
		c("uppercase", "CHUNKED", 1),
		c("mixed-case", "ChUnKeD", 1),
		c("leading-space", "  chunked", 1),
		c("trailing-space", "chunked  ", 1),
		c("leading-tab", "\tchunked", 1),
		c("chunked-chunked", "chunked, chunked", 1),
		c("gzip", "gzip", 0),
		c("gzip-chunked", "gzip, chunked", 1),
		c("chunked-gzip", "chunked, gzip", 0),
		c("identity", "identity", 0),
		c("identity-chunked", "identity, chunked", 1),
		c("chunked-identity", "chunked, identity", 0),
		c("chunked-param", "chunked;x", 0),
		c("chunked-param-value", "chunked; q=1", 1),
		c("xchunked", "xchunked", 0),
		c("chunkedx", "chunkedx", 0),
		c("chunk", "chunk", 0),
		c("quoted", `"chunked"`, 0),
		c("empty-element-first", ", chunked", 1),
		c("vertical-tab", "\x0bchunked", 0),
		c("form-feed", "\x0cchunked", 0),
		c("nul-after", "chunked\x00", 0),
		c("kelvin-sign", "chun\xe2\x84\xaaed", 0),
		c("non-ascii-e", "chunk\xc4\x9bd", 0),
		c("empty", "", 0),
	}
	cs = append(cs,
		reqCase{name: "te/obs-fold", cat: "framing-te", raw: post(body, "Transfer-Encoding:", " chunked"), wantMax: 1},
		reqCase{name: "te/obs-fold-tab", cat: "framing-te", raw: post(body, "Transfer-Encoding: gzip", "\t,chunked"), wantMax: 1},
		reqCase{name: "te/two-lines-chunked", cat: "framing-te", raw: post(body, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), wantMax: 1},
		reqCase{name: "te/two-lines-gzip-then-chunked", cat: "framing-te", raw: post(body, "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"), wantMax: 1},
		reqCase{name: "te/two-lines-chunked-then-gzip", cat: "framing-te", raw: post(body, "Transfer-Encoding: chunked", "Transfer-Encoding: gzip"), wantMax: 0},
		reqCase{name: "te/lowercase-name", cat: "framing-te", raw: post(body, "transfer-encoding: chunked"), wantMax: 1},
		reqCase{name: "te/in-http10", cat: "framing-te", raw: msg(body, "POST / HTTP/1.0", host, "Transfer-Encoding: chunked"), wantMax: 1},
		reqCase{name: "te/in-http10-with-cl", cat: "framing-te", raw: msg(body, "POST / HTTP/1.0", host, "Content-Length: 15", "Transfer-Encoding: chunked"), wantMax: 1},
		reqCase{name: "te/cl-then-te", cat: "framing-te", raw: post("0\r\n\r\n", "Content-Length: 5", "Transfer-Encoding: chunked"), wantMax: 1},
		reqCase{name: "te/te-then-cl", cat: "framing-te", raw: post("0\r\n\r\n", "Transfer-Encoding: chunked", "Content-Length: 5"), wantMax: 1},
		reqCase{name: "te/cl-zero-and-te", cat: "framing-te", raw: post(body, "Content-Length: 0", "Transfer-Encoding: chunked"), wantMax: 1},
		reqCase{name: "te/get-chunked", cat: "framing-te", raw: msg(body, "GET / HTTP/1.1", host, "Transfer-Encoding: chunked"), wantMax: 1},
	)
	for i := range cs {
		cs[i].check = bodyIs("hello")
		switch cs[i].name {
		case "te/cl-then-te", "te/te-then-cl":
			cs[i].check = bodyIs("")
		}
	}
	return cs
}

func headerSyntax() []reqCase {
	c := func(name string, wantMax int, lines ...string) reqCase {
		return reqCase{name: "hdr/" + name, cat: "header-syntax", raw: msg("", append([]string{"GET / HTTP/1.1", host}, lines...)...), wantMax: wantMax}
	}
	cs := []reqCase{
		c("space-before-colon", 0, "X-Foo : bar"),
		c("tab-before-colon", 0, "X-Foo\t: bar"),
		c("empty-name", 1, ": bar"),
		c("name-with-space", 1, "X Foo: bar"),
		c("no-colon", 1, "X-Foo bar"),
		c("name-only", 1, "X-Foo"),
		c("double-colon", 1, "X-Foo:: bar"),
		c("nul-in-name", 1, "X-F\x00oo: bar"),
		c("del-in-name", 1, "X-F\x7foo: bar"),
		c("utf8-name", 1, "X-F\xc3\xa4o: bar"),
		c("nul-in-value", 1, "X-Foo: a\x00b"),
		c("bare-cr-in-value", 1, "X-Foo: a\rb"),
		c("bare-cr-injects-field", 1, "X-Foo: a\rX-Injected: 1"),
		c("vtab-in-value", 1, "X-Foo: a\x0bb"),
		c("formfeed-in-value", 1, "X-Foo: a\x0cb"),
		c("escape-in-value", 1, "X-Foo: a\x1b[31mb"),
		c("del-in-value", 1, "X-Foo: a\x7fb"),
		c("obs-text-value", 1, "X-Foo: caf\xe9"),
		c("utf8-value", 1, "X-Foo: caf\xc3\xa9"),
		c("obs-fold", 1, "X-Foo: a", " b"),
		c("obs-fold-tab", 1, "X-Foo: a", "\tb"),
		c("obs-fold-empty-first", 1, "X-Foo:", " b"),
		c("underscore-name", 1, "X_Foo: bar"),
		c("underscore-content-length", 1, "Content_Length: 5"),
		c("connection-lists-host", 1, "Connection: Host"),
		c("connection-lists-content-length", 1, "Connection: Content-Length", "Content-Length: 0"),
		c("connection-lists-x-forwarded-for", 1, "Connection: X-Forwarded-For", "X-Forwarded-For: 1.2.3.4"),
		c("empty-value", 1, "X-Foo:"),
		c("value-only-spaces", 1, "X-Foo:    "),
	}
	// Names with each delimiter that is not a tchar (RFC 9110 §5.6.2).
	for _, d := range []struct{ name, ch string }{
		{"lparen", "("}, {"rparen", ")"}, {"lt", "<"}, {"gt", ">"}, {"at", "@"}, {"comma", ","}, {"semicolon", ";"},
		{"backslash", `\`}, {"dquote", `"`}, {"slash", "/"}, {"lbracket", "["}, {"rbracket", "]"}, {"question", "?"},
		{"equals", "="}, {"lbrace", "{"}, {"rbrace", "}"},
	} {
		cs = append(cs, c("name-with-"+d.name, 1, "X-F"+d.ch+"oo: bar"))
	}
	for i := range cs {
		// The invalid name or line must never reach the backend verbatim.
		switch cs[i].name {
		case "hdr/space-before-colon":
			cs[i].forbid = []string{"X-Foo :"}
		case "hdr/tab-before-colon":
			cs[i].forbid = []string{"X-Foo\t:"}
		case "hdr/name-with-space":
			cs[i].forbid = []string{"X Foo"}
		case "hdr/bare-cr-injects-field":
			cs[i].check = noFieldNamed("X-Injected")
		case "hdr/connection-lists-host":
			cs[i].check = hostIs("example.com")
		}
	}
	cs = append(cs,
		reqCase{name: "hdr/whitespace-before-first-field", cat: "header-syntax", raw: msg("", "GET / HTTP/1.1", " X-Foo: bar", host), wantMax: 1,
			check: noFieldNamed("X-Foo")},
		reqCase{name: "hdr/whitespace-line-before-host", cat: "header-syntax", raw: msg("", "GET / HTTP/1.1", " Host: evil.example", host), wantMax: 1,
			check: hostIs("example.com")},
		reqCase{name: "hdr/obs-fold-host", cat: "header-syntax", raw: msg("", "GET / HTTP/1.1", "Host: example.com", " evil.example"), wantMax: 1},
		reqCase{name: "hdr/bare-lf-everywhere", cat: "header-syntax", raw: "GET / HTTP/1.1\n" + host + "\nX-Foo: bar\n\n", wantMax: 1},
		reqCase{name: "hdr/bare-lf-one-field", cat: "header-syntax", raw: "GET / HTTP/1.1\r\n" + host + "\nX-Foo: bar\r\n\r\n", wantMax: 1},
		reqCase{name: "hdr/bare-lf-final", cat: "header-syntax", raw: "GET / HTTP/1.1\r\n" + host + "\r\n\n", wantMax: 1},
		reqCase{name: "hdr/bare-lf-injects-field", cat: "header-syntax", raw: msg("", "GET / HTTP/1.1", host, "X-Foo: a\nX-Injected: 1"), wantMax: 1},
		reqCase{name: "hdr/bare-cr-line-ending", cat: "header-syntax", raw: "GET / HTTP/1.1\r" + host + "\r\n\r\n", wantMax: 1},
		reqCase{name: "hdr/cr-cr-lf", cat: "header-syntax", raw: "GET / HTTP/1.1\r\r\n" + host + "\r\n\r\n", wantMax: 1},
		reqCase{name: "hdr/lf-cr-lf", cat: "header-syntax", raw: "GET / HTTP/1.1\r\n" + host + "\n\r\n", wantMax: 1},
	)
	return cs
}

func hosts() []reqCase {
	c := func(name string, wantMax int, lines ...string) reqCase {
		return reqCase{name: "host/" + name, cat: "host", raw: msg("", append([]string{"GET / HTTP/1.1"}, lines...)...), wantMax: wantMax}
	}
	cs := []reqCase{
		c("missing-http11", 0),
		c("two-same", 0, host, host),
		c("two-different", 0, "Host: a.example", "Host: b.example"),
		c("empty", 1, "Host:"),
		c("list", 0, "Host: a.example, b.example"),
		c("userinfo", 0, "Host: a@b.example"),
		c("userinfo-with-port", 0, "Host: a.example:80@b.example"),
		c("port-alpha", 0, "Host: a.example:abc"),
		c("port-negative", 0, "Host: a.example:-1"),
		c("port-double-colon", 0, "Host: a.example::80"),
		c("port-empty", 1, "Host: a.example:"),
		c("port-huge", 1, "Host: a.example:99999999999"),
		c("ipv4", 1, "Host: 127.0.0.1:8080"),
		c("ipv6", 1, "Host: [::1]"),
		c("ipv6-port", 1, "Host: [::1]:8080"),
		c("ipv6-unbracketed", 0, "Host: ::1"),
		c("ipv6-unclosed", 0, "Host: [::1"),
		c("ipv6-bad-chars", 0, "Host: [::g]"),
		c("ipv6-trailing-garbage", 0, "Host: [::1]x"),
		c("space-inside", 0, "Host: a b.example"),
		c("slash", 0, "Host: a.example/evil"),
		c("backslash", 0, `Host: a.example\evil`),
		c("question-mark", 0, "Host: a.example?x"),
		c("hash", 0, "Host: a.example#x"),
		c("percent-encoded", 1, "Host: a%2eexample"),
		c("underscore", 1, "Host: a_b.example"),
		c("trailing-dot", 1, "Host: example.com."),
		c("dot-dot", 1, "Host: .."),
		c("utf8", 0, "Host: b\xc3\xbccher.example"),
		c("control-char", 0, "Host: a\x01b.example"),
		c("lowercase-name", 1, "host: example.com"),
		c("uppercase-name", 1, "HOST: example.com"),
	}
	for i := range cs {
		switch cs[i].name {
		case "host/ipv6-port":
			cs[i].check = hostIs("[::1]:8080")
		case "host/lowercase-name", "host/uppercase-name":
			cs[i].check = hostIs("example.com")
		}
	}
	cs = append(cs,
		reqCase{name: "host/missing-http10", cat: "host", raw: msg("", "GET / HTTP/1.0"), wantMax: 1},
		reqCase{name: "host/absolute-form-disagrees", cat: "host", raw: msg("", "GET http://a.example/p HTTP/1.1", "Host: b.example"), wantMax: 1,
			check: all(hostIs("a.example"), targetIs("/p"))},
		reqCase{name: "host/absolute-form-agrees", cat: "host", raw: msg("", "GET http://a.example/p HTTP/1.1", "Host: a.example"), wantMax: 1,
			check: all(hostIs("a.example"), targetIs("/p"))},
		reqCase{name: "host/absolute-form-no-host-field", cat: "host", raw: msg("", "GET http://a.example/p HTTP/1.1"), wantMax: 0},
		reqCase{name: "host/absolute-form-https", cat: "host", raw: msg("", "GET https://a.example/p HTTP/1.1", "Host: a.example"), wantMax: 1},
		reqCase{name: "host/absolute-form-userinfo", cat: "host", raw: msg("", "GET http://u@a.example/p HTTP/1.1", "Host: a.example"), wantMax: 1,
			forbid: []string{"u@"}},
		reqCase{name: "host/absolute-form-ftp", cat: "host", raw: msg("", "GET ftp://a.example/p HTTP/1.1", "Host: a.example"), wantMax: 1},
		reqCase{name: "host/absolute-form-empty-authority", cat: "host", raw: msg("", "GET http:///p HTTP/1.1", "Host: a.example"), wantMax: 0},
		reqCase{name: "host/absolute-form-bad-host", cat: "host", raw: msg("", "GET http://a b/p HTTP/1.1", "Host: a.example"), wantMax: 0},
		reqCase{name: "host/double-slash-path", cat: "host", raw: msg("", "GET //a.example/p HTTP/1.1", "Host: b.example"), wantMax: 1,
			check: all(hostIs("b.example"), targetIs("//a.example/p"))},
	)
	return cs
}

func versions() []reqCase {
	c := func(name, line string, wantMax int) reqCase {
		return reqCase{name: "version/" + name, cat: "version", raw: msg("", line, host), wantMax: wantMax}
	}
	cs := []reqCase{
		c("http11", "GET / HTTP/1.1", 1),
		c("http10", "GET / HTTP/1.0", 1),
		c("http20", "GET / HTTP/2.0", 1),
		c("http2", "GET / HTTP/2", 0),
		c("http30", "GET / HTTP/3.0", 1),
		c("http19", "GET / HTTP/1.9", 1),
		c("http12", "GET / HTTP/1.2", 1),
		c("http01-leading-zero", "GET / HTTP/01.1", 0),
		c("http1-no-minor", "GET / HTTP/1", 0),
		c("http1-dot", "GET / HTTP/1.", 0),
		c("http-slash-only", "GET / HTTP/", 0),
		c("http-letters", "GET / HTTP/a.b", 0),
		c("http-three-parts", "GET / HTTP/1.1.1", 0),
		c("http-suffix", "GET / HTTP/1.1x", 0),
		c("lowercase-http", "GET / http/1.1", 0),
		c("mixed-case-http", "GET / Http/1.1", 0),
		c("missing-version-with-headers", "GET /", 0),
		c("double-space-after-method", "GET  / HTTP/1.1", 1),
		c("double-space-before-version", "GET /  HTTP/1.1", 1),
		c("trailing-space", "GET / HTTP/1.1 ", 1),
		c("tabs", "GET\t/\tHTTP/1.1", 1),
		c("leading-space", " GET / HTTP/1.1", 1),
		c("space-in-path", "GET /a b HTTP/1.1", 0),
		c("nul-in-path", "GET /a\x00b HTTP/1.1", 0),
		c("utf8-path", "GET /caf\xc3\xa9 HTTP/1.1", 1),
		c("fragment", "GET /a#b HTTP/1.1", 1),
		c("bad-percent", "GET /%zz HTTP/1.1", 1),
		c("raw-brackets-in-query", "GET /?a=<b>&c=\"d\" HTTP/1.1", 1),
		c("backslash-path", `GET /a\b HTTP/1.1`, 1),
		c("dot-segments", "GET /a/../../b HTTP/1.1", 1),
		c("empty-target", "GET  HTTP/1.1", 0),
		c("relative-target", "GET a/b HTTP/1.1", 0),
		c("bare-cr-after-version", "GET / HTTP/1.1\r", 1),
	}
	cs = append(cs,
		// No blank line follows, so a server that reads the whole head before judging it may wait for more.
		reqCase{name: "version/http09", cat: "version", raw: "GET /\r\n", wantMax: 0, partial: true, noReply: true},
		reqCase{name: "version/leading-crlf", cat: "version", raw: "\r\n" + getReq("/"), wantMax: 1},
		reqCase{name: "version/leading-crlf-x3", cat: "version", raw: "\r\n\r\n\r\n" + getReq("/"), wantMax: 1},
		reqCase{name: "version/leading-bare-lf", cat: "version", raw: "\n" + getReq("/"), wantMax: 1},
	)
	return cs
}

func methods() []reqCase {
	c := func(name, line string, wantMax int, extra ...string) reqCase {
		return reqCase{name: "method/" + name, cat: "method", raw: msg("", append([]string{line, host}, extra...)...), wantMax: wantMax}
	}
	return []reqCase{
		c("connect-authority", "CONNECT a.example:443 HTTP/1.1", 1),
		c("connect-origin-form", "CONNECT / HTTP/1.1", 0),
		c("options-star", "OPTIONS * HTTP/1.1", 1),
		c("get-star", "GET * HTTP/1.1", 0),
		c("options-origin", "OPTIONS / HTTP/1.1", 1),
		c("head", "HEAD / HTTP/1.1", 1),
		c("lowercase-get", "get / HTTP/1.1", 1),
		c("mixed-case-get", "Get / HTTP/1.1", 1),
		c("unknown-token", "FROBNICATE / HTTP/1.1", 1),
		c("token-with-hyphen", "M-SEARCH / HTTP/1.1", 1),
		c("token-with-digit", "GET2 / HTTP/1.1", 1),
		c("token-with-bang", "GET! / HTTP/1.1", 1),
		c("propfind", "PROPFIND / HTTP/1.1", 1),
		c("trace", "TRACE / HTTP/1.1", 1),
		c("delete", "DELETE / HTTP/1.1", 1),
		c("patch-no-body", "PATCH / HTTP/1.1", 1),
		c("post-no-body", "POST / HTTP/1.1", 1),
		c("non-token-paren", "GE(T / HTTP/1.1", 0),
		c("non-token-utf8", "G\xc3\x89T / HTTP/1.1", 0),
		c("empty-method", " / HTTP/1.1", 0),
		c("long-method", strings.Repeat("A", 200)+" / HTTP/1.1", 1),
	}
}

func chunkedSyntax() []reqCase {
	c := func(name, body string, wantMax int) reqCase {
		return reqCase{name: "chunk/" + name, cat: "chunked", raw: post(body, "Transfer-Encoding: chunked"), wantMax: wantMax}
	}
	cs := []reqCase{
		c("two-chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 1),
		c("uppercase-hex", "A\r\n0123456789\r\n0\r\n\r\n", 1),
		c("lowercase-hex", "a\r\n0123456789\r\n0\r\n\r\n", 1),
		c("leading-zeros", "0005\r\nhello\r\n0\r\n\r\n", 1),
		c("many-leading-zeros", strings.Repeat("0", 30)+"5\r\nhello\r\n0\r\n\r\n", 1),
		c("bad-hex", "5g\r\nhello\r\n0\r\n\r\n", 0),
		c("not-hex", "zz\r\nhello\r\n0\r\n\r\n", 0),
		c("empty-size", "\r\nhello\r\n0\r\n\r\n", 0),
		c("plus-size", "+5\r\nhello\r\n0\r\n\r\n", 0),
		c("minus-size", "-5\r\nhello\r\n0\r\n\r\n", 0),
		c("0x-size", "0x5\r\nhello\r\n0\r\n\r\n", 0),
		c("space-before-size", " 5\r\nhello\r\n0\r\n\r\n", 0),
		c("space-after-size", "5 \r\nhello\r\n0\r\n\r\n", 1),
		c("overflow-17-digits", "10000000000000005\r\nhello\r\n0\r\n\r\n", 0),
		c("overflow-huge", "FFFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", 0),
		c("size-2pow63", "8000000000000000\r\nhello\r\n0\r\n\r\n", 0),
		c("data-longer-than-size", "3\r\nhello\r\n0\r\n\r\n", 0),
		c("data-not-followed-by-crlf", "5\r\nhelloXX0\r\n\r\n", 0),
		c("data-followed-by-lf", "5\r\nhello\n0\r\n\r\n", 1),
		c("lf-only-everywhere", "5\nhello\n0\n\n", 1),
		c("lf-after-size", "5\nhello\r\n0\r\n\r\n", 1),
		c("cr-only-after-size", "5\rhello\r\n0\r\n\r\n", 0),
		c("extension", "5;foo=bar\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-no-value", "5;foo\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-quoted", "5;foo=\"b a r\"\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-bws", "5 ; foo = bar\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-nul", "5;foo=b\x00r\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-ctl", "5;\x01\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-space-in-value", "5;foo=b r\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-empty", "5;\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-no-name", "5;=bar\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-bare-lf", "5;\nhello\r\n0\r\n\r\n", 0),
		c("extension-unterminated-quote", "5;foo=\"bar\r\nhello\r\n0\r\n\r\n", 1),
		c("extension-long", "5;"+strings.Repeat("x", 10000)+"\r\nhello\r\n0\r\n\r\n", 1),
		c("size-line-long", strings.Repeat("0", 10000)+"5\r\nhello\r\n0\r\n\r\n", 1),
		c("trailer", "5\r\nhello\r\n0\r\nX-Trailer: v\r\n\r\n", 1),
		c("trailer-content-length", "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n", 1),
		c("trailer-transfer-encoding", "5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
		c("trailer-host", "5\r\nhello\r\n0\r\nHost: evil.example\r\n\r\n", 1),
		c("trailer-space-before-colon", "5\r\nhello\r\n0\r\nX-T : v\r\n\r\n", 1),
		c("trailer-obs-fold", "5\r\nhello\r\n0\r\nX-T: v\r\n w\r\n\r\n", 1),
		c("trailer-nul", "5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n", 1),
		c("trailer-not-a-field", "5\r\nhello\r\n0\r\nhello\r\n\r\n", 1),
		c("zero-chunk-with-data", "0\r\nhello\r\n\r\n", 1),
		c("zero-extension", "5\r\nhello\r\n0;x=y\r\n\r\n", 1),
	}
	for i := range cs {
		if cs[i].wantMax == 1 {
			switch cs[i].name {
			case "chunk/two-chunks":
				cs[i].check = bodyIs("hello world")
			case "chunk/uppercase-hex", "chunk/lowercase-hex":
				cs[i].check = bodyIs("0123456789")
			default:
				cs[i].check = bodyIs("hello")
			}
		}
		switch cs[i].name {
		case "chunk/trailer-content-length":
			cs[i].check = all(bodyIs("hello"), func(reqs []*request) string {
				for _, r := range reqs {
					if v := r.get("Content-Length"); len(v) > 0 && v[0] != "5" {
						return fmt.Sprintf("trailer Content-Length %q merged into the forwarded head", v)
					}
				}
				return ""
			})
		case "chunk/trailer-host":
			cs[i].check = all(bodyIs("hello"), hostIs("example.com"))
		}
	}
	// Bodies the client never finishes.
	for _, p := range []struct{ name, body string }{
		{"no-last-chunk", "5\r\nhello\r\n"},
		{"last-chunk-without-final-crlf", "5\r\nhello\r\n0\r\n"},
		{"trailer-without-final-crlf", "5\r\nhello\r\n0\r\nX-T: v\r\n"},
		{"huge-chunk-short-data", "FFFFFFF\r\nabc"},
		{"data-shorter-than-size", "7\r\nhello"},
	} {
		x := c(p.name, p.body, 1)
		x.partial, x.noReply = true, true
		cs = append(cs, x)
	}
	return cs
}

func pipelining() []reqCase {
	c := func(name, raw string, wantMax int) reqCase {
		return reqCase{name: "pipe/" + name, cat: "pipelining", raw: raw, wantMax: wantMax}
	}
	cs := []reqCase{
		c("two-gets", getReq("/1")+getReq("/2"), 2),
		c("three-gets", getReq("/1")+getReq("/2")+getReq("/3"), 3),
		c("fifty-gets", strings.Repeat(getReq("/n"), 50), 50),
		c("post-cl-then-get", post("hello", "Content-Length: 5")+getReq("/2"), 2),
		c("post-chunked-then-get", post("5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked")+getReq("/2"), 2),
		c("get-post-chunked-get", getReq("/1")+post("5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked")+getReq("/3"), 3),
		c("post-cl-post-chunked-get", post("hello", "Content-Length: 5")+post("5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked")+getReq("/3"), 3),
		c("head-then-get", msg("", "HEAD / HTTP/1.1", host)+getReq("/2"), 2),
		c("http10-then-get", msg("", "GET / HTTP/1.0", host)+getReq("/2"), 1),
		c("http10-keepalive-then-get", msg("", "GET / HTTP/1.0", host, "Connection: keep-alive")+getReq("/2"), 2),
		c("connection-close-then-get", msg("", "GET / HTTP/1.1", host, "Connection: close")+getReq("/2"), 1),
		c("second-invalid-cl", getReq("/1")+post("hello", "Content-Length: abc"), 1),
		c("second-missing-host", getReq("/1")+msg("", "GET /2 HTTP/1.1"), 1),
		c("second-garbage", getReq("/1")+"garbage\r\n\r\n", 1),
		c("second-binary", getReq("/1")+"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 1),
		c("cl-zero-then-get", msg("", "GET / HTTP/1.1", host, "Content-Length: 0")+getReq("/2"), 2),
		c("get-body-holds-request", msg(smuggled, "GET / HTTP/1.1", host, fmt.Sprintf("Content-Length: %d", len(smuggled))), 1),
		c("chunked-body-holds-request", post(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled), "Transfer-Encoding: chunked"), 1),
	}
	// The same bytes in two writes: the proxy must stream or buffer, and frame, the same way.
	for _, p := range []struct {
		name, raw string
		split     string // the write pauses just before this
		want      int
	}{
		{"cl-body-in-two-writes", post("hello", "Content-Length: 5"), "llo", 1},
		{"chunks-in-two-writes", post("2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), "3\r\nllo", 1},
		{"split-inside-chunk-size-line", post("5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), "\nhello", 1},
		{"split-inside-head", getReq("/1"), "ost: example", 1},
		{"second-request-after-pause", getReq("/1") + getReq("/2"), "GET /2", 2},
	} {
		x := c(p.name, p.raw, p.want)
		x.pauseAt, x.pause = strings.LastIndex(p.raw, p.split), 150*time.Millisecond
		if strings.HasPrefix(p.raw, "POST") {
			x.check = bodyIs("hello")
		}
		cs = append(cs, x)
	}
	x := c("second-incomplete", getReq("/1")+"GET /2 HTT", 1)
	x.partial = true
	cs = append(cs, x)
	for i := range cs {
		switch cs[i].name {
		case "pipe/get-body-holds-request", "pipe/chunked-body-holds-request":
			cs[i].check = all(noSmuggled, bodyIs(smuggled))
		}
	}
	return cs
}

// teObfuscations are Transfer-Encoding lines crafted so that two parsers may disagree on whether the request is
// chunked.
var teObfuscations = []struct{ name, lines string }{
	{"plain", "Transfer-Encoding: chunked"},
	{"space-before-colon", "Transfer-Encoding : chunked"},
	{"tab-before-colon", "Transfer-Encoding\t: chunked"},
	{"xchunked", "Transfer-Encoding: xchunked"},
	{"chunked-then-cow", "Transfer-Encoding: chunked\r\nTransfer-Encoding: cow"},
	{"cow-then-chunked", "Transfer-Encoding: cow\r\nTransfer-Encoding: chunked"},
	{"leading-space-line", " Transfer-Encoding: chunked"},
	{"obs-fold", "Transfer-Encoding:\r\n chunked"},
	{"bare-lf-injected", "X-Foo: bar\nTransfer-Encoding: chunked"},
	{"bare-cr-injected", "X-Foo: bar\rTransfer-Encoding: chunked"},
	{"vertical-tab", "Transfer-Encoding:\x0bchunked"},
	{"nul-suffix", "Transfer-Encoding: chunked\x00"},
	{"quoted", `Transfer-Encoding: "chunked"`},
	{"kelvin", "Transfer-Encoding: chun\xe2\x84\xaaed"},
	{"underscore-name", "Transfer_Encoding: chunked"},
	{"comma-identity", "Transfer-Encoding: chunked, identity"},
}

func smuggling() []reqCase {
	var cs []reqCase
	for _, o := range teObfuscations {
		// CL.TE: the Content-Length covers the smuggled request; a chunked reading ends the body at "0".
		clte := "0\r\n\r\n" + smuggled
		// Whitespace before the colon is a MUST-reject (RFC 9112 §5.1); the other shapes may be read leniently.
		wantMax := 1
		if strings.Contains(o.name, "before-colon") {
			wantMax = 0
		}
		cs = append(cs, reqCase{
			name: "smuggle/cl.te-" + o.name, cat: "smuggling", wantMax: wantMax,
			raw:   post(clte, fmt.Sprintf("Content-Length: %d", len(clte)), o.lines),
			check: noSmuggled,
		})
		// TE.CL: a chunked reading covers the smuggled request; the Content-Length ends the body after the size line.
		chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
		sizeLine := fmt.Sprintf("%x\r\n", len(smuggled))
		cs = append(cs, reqCase{
			name: "smuggle/te.cl-" + o.name, cat: "smuggling", wantMax: wantMax,
			raw:   post(chunk, o.lines, fmt.Sprintf("Content-Length: %d", len(sizeLine))),
			check: noSmuggled,
		})
	}
	c := func(name, raw string, wantMax int) reqCase {
		return reqCase{name: "smuggle/" + name, cat: "smuggling", raw: raw, wantMax: wantMax, check: noSmuggled}
	}
	cs = append(cs,
		c("cl.cl", post(smuggled, "Content-Length: 0", fmt.Sprintf("Content-Length: %d", len(smuggled))), 0),
		c("cl.cl-reversed", post(smuggled, fmt.Sprintf("Content-Length: %d", len(smuggled)), "Content-Length: 0"), 0),
		c("cl-comma-list", post(smuggled, fmt.Sprintf("Content-Length: 0, %d", len(smuggled))), 0),
		c("cl-space-before-colon", post(smuggled, fmt.Sprintf("Content-Length : %d", len(smuggled))), 0),
		c("cl-space-before-colon-40", post("", "Content-Length : 40")+smuggled, 0),
		c("cl-tab-before-colon", post(smuggled, fmt.Sprintf("Content-Length\t: %d", len(smuggled))), 0),
		c("cl-obs-fold", post(smuggled, "Content-Length: 0", fmt.Sprintf(" %d", len(smuggled))), 0),
		c("cl-bare-lf-injected", post(smuggled, fmt.Sprintf("X-Foo: bar\nContent-Length: %d", len(smuggled))), 1),
		c("cl-underscore", post(smuggled, fmt.Sprintf("Content_Length: %d", len(smuggled))), 2),
		c("http10-te", msg(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled), "POST / HTTP/1.0", host, "Transfer-Encoding: chunked"), 1),
		c("chunk-ext-bare-lf", post("2;\nxx\r\n45\r\n0\r\n\r\n"+smuggled+"\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 1),
		c("chunk-size-bare-lf", post("2\nxx\r\n0\r\n\r\n"+smuggled, "Transfer-Encoding: chunked"), 2),
		c("chunk-data-bare-lf-terminator", post("2\r\nxx\n0\r\n\r\n"+smuggled, "Transfer-Encoding: chunked"), 2),
		c("chunk-overflow-wraps-to-small", post("10000000000000002\r\nxx\r\n0\r\n\r\n"+smuggled, "Transfer-Encoding: chunked"), 0),
		c("trailer-smuggles-request", post("0\r\n"+smuggled, "Transfer-Encoding: chunked"), 1),
		c("expect-then-smuggle", post("0\r\n\r\n"+smuggled, "Expect: 100-continue", fmt.Sprintf("Content-Length: %d", 5+len(smuggled)), "Transfer-Encoding: chunked"), 1),
	)
	for i := range cs {
		switch cs[i].name {
		case "smuggle/cl-space-before-colon", "smuggle/cl-space-before-colon-40":
			cs[i].forbid = []string{"Content-Length :"}
			cs[i].check = noSmuggled
		case "smuggle/cl-tab-before-colon":
			cs[i].forbid = []string{"Content-Length\t:"}
		case "smuggle/chunk-size-bare-lf", "smuggle/chunk-data-bare-lf-terminator":
			// A lenient reading makes the hidden request a second, pipelined one; forwarding it then is consistent.
			cs[i].check = nil
		case "smuggle/cl-underscore", "smuggle/te.cl-underscore-name":
			// Content_Length / Transfer_Encoding are not framing fields, so the hidden request is a second, pipelined
			// one. But the lookalike must not reach the backend: servers that map '_' to '-' (CGI, PHP-FPM, WSGI)
			// would read it as framing; nginx drops such names and Envoy rejects them by default.
			cs[i].wantMax, cs[i].check = 2, nil
		}
		if strings.Contains(cs[i].raw, "_Encoding") || strings.Contains(cs[i].raw, "_Length") {
			cs[i].forbid = append(cs[i].forbid, "Transfer_Encoding", "Content_Length")
		}
	}
	return cs
}

func expect() []reqCase {
	c := func(name, raw string, wantMax int) reqCase {
		return reqCase{name: "expect/" + name, cat: "expect", raw: raw, wantMax: wantMax}
	}
	cs := []reqCase{
		c("100-continue-cl", post("hello", "Expect: 100-continue", "Content-Length: 5"), 1),
		c("100-continue-chunked", post("5\r\nhello\r\n0\r\n\r\n", "Expect: 100-continue", "Transfer-Encoding: chunked"), 1),
		c("100-continue-no-body", msg("", "GET / HTTP/1.1", host, "Expect: 100-continue"), 1),
		c("100-continue-uppercase", post("hello", "Expect: 100-CONTINUE", "Content-Length: 5"), 1),
		c("unknown-expectation", post("hello", "Expect: 200-ok", "Content-Length: 5"), 1),
		c("two-expect-fields", post("hello", "Expect: 100-continue", "Expect: 100-continue", "Content-Length: 5"), 1),
		c("100-continue-with-params", post("hello", "Expect: 100-continue; foo=bar", "Content-Length: 5"), 1),
		c("100-continue-http10", msg("hello", "POST / HTTP/1.0", host, "Expect: 100-continue", "Content-Length: 5"), 1),
	}
	// Waiting for 100 Continue before sending the body, as a client should.
	wait := c("100-continue-body-after-pause", post("hello", "Expect: 100-continue", "Content-Length: 5"), 1)
	wait.pauseAt, wait.pause = len(wait.raw)-5, 150*time.Millisecond
	cs = append(cs, wait)
	// A client that never sends the body it announced.
	never := c("100-continue-body-never-sent", post("", "Expect: 100-continue", "Content-Length: 5"), 1)
	never.partial, never.noReply = true, true
	cs = append(cs, never)
	for i := range cs {
		if strings.HasPrefix(cs[i].raw, "POST") && !cs[i].partial {
			cs[i].check = bodyIs("hello")
		}
	}
	for i := range cs {
		if cs[i].name != "expect/100-continue-http10" {
			continue
		}
		// RFC 9110 §10.1.1: a server MUST NOT send 100 Continue to an HTTP/1.0 client.
		cs[i].checkClient = func(o outcome) string {
			for _, r := range o.resps {
				if r.status == 100 {
					return "sent 100 Continue to an HTTP/1.0 client"
				}
			}
			return ""
		}
	}
	return cs
}

func limits() []reqCase {
	c := func(name, raw string, wantMax int) reqCase {
		return reqCase{name: "limit/" + name, cat: "limits", raw: raw, wantMax: wantMax}
	}
	many := func(n int) []string {
		var ls []string
		for i := range n {
			ls = append(ls, fmt.Sprintf("X-H%d: v", i))
		}
		return ls
	}
	cs := []reqCase{
		c("request-line-7k", getReq("/"+strings.Repeat("a", 7000)), 1),
		c("request-line-10k", getReq("/"+strings.Repeat("a", 10000)), 0),
		c("request-line-64k", getReq("/"+strings.Repeat("a", 64<<10)), 0),
		c("query-10k", getReq("/?q="+strings.Repeat("a", 10000)), 0),
		c("header-name-4k", msg("", "GET / HTTP/1.1", host, "X-"+strings.Repeat("n", 4096)+": v"), 1),
		c("header-value-6k", msg("", "GET / HTTP/1.1", host, "X-Long: "+strings.Repeat("v", 6000)), 1),
		c("header-value-16k", msg("", "GET / HTTP/1.1", host, "X-Long: "+strings.Repeat("v", 16<<10)), 1),
		c("header-value-70k", msg("", "GET / HTTP/1.1", host, "X-Long: "+strings.Repeat("v", 70<<10)), 0),
		c("headers-20x4k", msg("", append([]string{"GET / HTTP/1.1", host}, repeatLines("X-Big%d: "+strings.Repeat("v", 4000), 20)...)...), 0),
		c("headers-99-plus-host", msg("", append([]string{"GET / HTTP/1.1", host}, many(99)...)...), 1),
		c("headers-101", msg("", append([]string{"GET / HTTP/1.1", host}, many(100)...)...), 1),
		c("headers-1000", msg("", append([]string{"GET / HTTP/1.1", host}, many(1000)...)...), 1),
		c("cookie-many", msg("", "GET / HTTP/1.1", host, "Cookie: "+strings.Repeat("a=b; ", 1000)+"c=d"), 1),
	}
	// A body shorter than declared, then the client half-closes.
	short := c("body-shorter-than-cl-then-close", post("hel", "Content-Length: 5"), 1)
	short.partial, short.noReply, short.closeWrite = true, true, true
	cs = append(cs, short)
	shortChunk := c("chunked-body-cut-then-close", post("5\r\nhel", "Transfer-Encoding: chunked"), 1)
	shortChunk.partial, shortChunk.noReply, shortChunk.closeWrite = true, true, true
	cs = append(cs, shortChunk)
	stall := c("body-shorter-than-cl-then-stall", post("hel", "Content-Length: 5"), 1)
	stall.partial, stall.noReply = true, true
	cs = append(cs, stall)
	headCut := c("head-cut-then-close", "GET / HTTP/1.1\r\nHost: exa", 0)
	headCut.partial, headCut.noReply, headCut.closeWrite = true, true, true
	cs = append(cs, headCut)
	return cs
}

func repeatLines(format string, n int) []string {
	var ls []string
	for i := range n {
		ls = append(ls, fmt.Sprintf(format, i))
	}
	return ls
}

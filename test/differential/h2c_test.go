package differential

// h2c → HTTP/1.1 downgrade cases: raw HTTP/2 frames (prior knowledge, written with the x/net Framer and hpack, so
// nothing normalises them) sent to fedgate's gateway port, whose backend is an HTTP/1.1 recording backend. A
// malformed request (RFC 9113 §8.1.1, §8.2, §8.3) must not be forwarded; whatever is forwarded must be strictly
// valid HTTP/1.1 with exactly one framing field that matches the body.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type h2Case struct {
	name   string
	fields [][2]string // in order, pseudo-header fields included
	data   []string    // DATA frame payloads; the last ends the stream (none: HEADERS ends it)
	// trailers, when set, end the stream after the DATA frames.
	trailers [][2]string
	// valid: must be forwarded (once) and answered 200. malformed: must not be forwarded, and the client must get
	// RST_STREAM, GOAWAY or an error status. Neither: fedgate may refuse or forward.
	valid, malformed bool
	// streamed: the fault is only visible after the head (a body longer or shorter than content-length), so a head
	// that was forwarded and then aborted (the upstream connection closed mid-body) is acceptable.
	streamed bool
	wantBody string // when forwarded, the body must be this
	forbid   []string
	check    func(reqs []*request) string
}

func base(method, path string, extra ...string) [][2]string {
	f := [][2]string{{":method", method}, {":scheme", "http"}, {":path", path}, {":authority", "example.com"}}
	for i := 0; i+1 < len(extra); i += 2 {
		f = append(f, [2]string{extra[i], extra[i+1]})
	}
	return f
}

func h2Cases() []h2Case {
	mal := func(name string, fields [][2]string, data ...string) h2Case {
		return h2Case{name: name, fields: fields, data: data, malformed: true}
	}
	post := func(extra ...string) [][2]string { return base("POST", "/", extra...) }
	cs := []h2Case{
		{name: "valid-get", fields: base("GET", "/"), valid: true},
		{name: "valid-post-content-length", fields: post("content-length", "5"), data: []string{"hello"}, valid: true, wantBody: "hello"},
		{name: "valid-post-no-content-length", fields: post(), data: []string{"hello"}, valid: true, wantBody: "hello"},
		{name: "valid-post-two-data-frames", fields: post("content-length", "10"), data: []string{"hello", "world"}, valid: true, wantBody: "helloworld"},
		{name: "valid-post-empty", fields: post("content-length", "0"), valid: true, wantBody: ""},
		{name: "valid-te-trailers", fields: base("GET", "/", "te", "trailers"), valid: true},
		{name: "valid-cookie-split", fields: base("GET", "/", "cookie", "a=b", "cookie", "c=d"), valid: true},
		{name: "valid-query", fields: base("GET", "/p?q=1&r=2"), valid: true, check: targetIs("/p?q=1&r=2")},
		{name: "trailer-content-length", fields: post("content-length", "5"), data: []string{"hello"},
			trailers: [][2]string{{"content-length", "50"}}, wantBody: "hello"},
		{name: "host-field-differs-from-authority", fields: base("GET", "/", "host", "evil.example"), check: hostIs("example.com")},
		{name: "host-field-without-authority", fields: [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"host", "example.com"}},
			check: hostIs("example.com")},
		{name: "content-length-two-fields-same", fields: post("content-length", "5", "content-length", "5"), data: []string{"hello"}, wantBody: "hello"},
		{name: "content-length-list-same", fields: post("content-length", "5, 5"), data: []string{"hello"}, wantBody: "hello"},

		// content-length against DATA (RFC 9113 §8.1.1).
		{name: "content-length-5-data-10", fields: post("content-length", "5"), data: []string{"helloworld"}, malformed: true, streamed: true},
		{name: "content-length-5-data-5-then-5", fields: post("content-length", "5"), data: []string{"hello", "world"}, malformed: true, streamed: true},
		{name: "content-length-10-data-5", fields: post("content-length", "10"), data: []string{"hello"}, malformed: true, streamed: true},
		{name: "content-length-0-data-5", fields: post("content-length", "0"), data: []string{"hello"}, malformed: true, streamed: true},
		{name: "content-length-5-no-data", fields: post("content-length", "5"), malformed: true, streamed: true},
		mal("content-length-two-fields-differ", post("content-length", "5", "content-length", "6"), "hello"),
		mal("content-length-list-differs", post("content-length", "5, 6"), "hello"),
		mal("content-length-plus", post("content-length", "+5"), "hello"),
		mal("content-length-negative", post("content-length", "-1"), "hello"),
		mal("content-length-alpha", post("content-length", "five"), "hello"),
		mal("content-length-hex", post("content-length", "0x5"), "hello"),

		// Pseudo-header fields (RFC 9113 §8.3).
		mal("missing-path", [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "example.com"}}),
		mal("missing-method", [][2]string{{":scheme", "http"}, {":path", "/"}, {":authority", "example.com"}}),
		mal("missing-scheme", [][2]string{{":method", "GET"}, {":path", "/"}, {":authority", "example.com"}}),
		mal("path-not-starting-with-slash", base("GET", "foo")),
		mal("path-empty", base("GET", "")),
		mal("path-asterisk-for-get", base("GET", "*")),
		// Not the absolute-path production, but percent-encoding it on the way down is a valid (if lenient) reading.
		{name: "path-with-space", fields: base("GET", "/a b")},
		mal("path-with-crlf", base("GET", "/a\r\nX-Injected: 1")),
		mal("duplicate-method", append(base("GET", "/"), [2]string{":method", "POST"})),
		mal("duplicate-path", append(base("GET", "/"), [2]string{":path", "/other"})),
		mal("pseudo-after-regular", [][2]string{{":method", "GET"}, {":scheme", "http"}, {"x-a", "1"}, {":path", "/"}, {":authority", "example.com"}}),
		mal("unknown-pseudo", append(base("GET", "/"), [2]string{":foo", "bar"})),
		mal("response-pseudo-in-request", append(base("GET", "/"), [2]string{":status", "200"})),
		mal("method-with-space", base("GE T", "/")),
		mal("method-empty", base("", "/")),
		mal("authority-with-userinfo", [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "u@example.com"}}),
		mal("authority-with-crlf", [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "example.com\r\nX-Injected: 1"}}),
		mal("authority-with-space", [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "exa mple.com"}}),
		mal("trailer-with-pseudo", post(), "hello"),

		// Connection-specific fields (RFC 9113 §8.2.2).
		mal("connection", base("GET", "/", "connection", "keep-alive")),
		mal("keep-alive", base("GET", "/", "keep-alive", "timeout=5")),
		mal("proxy-connection", base("GET", "/", "proxy-connection", "keep-alive")),
		mal("transfer-encoding-chunked", post("transfer-encoding", "chunked"), "5\r\nhello\r\n0\r\n\r\n"),
		mal("upgrade", base("GET", "/", "upgrade", "websocket")),
		mal("te-gzip", base("GET", "/", "te", "gzip")),
		mal("te-trailers-and-gzip", base("GET", "/", "te", "trailers, gzip")),

		// Field names and values (RFC 9113 §8.2.1).
		mal("uppercase-name", base("GET", "/", "X-Upper", "1")),
		mal("uppercase-host-name", base("GET", "/", "Host", "example.com")),
		mal("name-with-colon", base("GET", "/", "x:y", "1")),
		mal("name-with-space", base("GET", "/", "x y", "1")),
		mal("name-empty", base("GET", "/", "", "1")),
		mal("name-with-nul", base("GET", "/", "x\x00y", "1")),
		mal("name-non-token", base("GET", "/", "x(y)", "1")),
		mal("value-with-crlf", base("GET", "/", "x-a", "a\r\nX-Injected: 1")),
		mal("value-with-lf", base("GET", "/", "x-a", "a\nX-Injected: 1")),
		mal("value-with-cr", base("GET", "/", "x-a", "a\rX-Injected: 1")),
		mal("value-with-nul", base("GET", "/", "x-a", "a\x00b")),
		mal("value-leading-space", base("GET", "/", "x-a", " a")),
		mal("value-trailing-tab", base("GET", "/", "x-a", "a\t")),
		mal("connect", [][2]string{{":method", "CONNECT"}, {":authority", "example.com:443"}}),
	}
	for i := range cs {
		switch cs[i].name {
		case "trailer-with-pseudo":
			cs[i].trailers = [][2]string{{":path", "/other"}}
		}
		cs[i].forbid = append(cs[i].forbid, "X-Injected", "x-injected")
	}
	return cs
}

// h2Outcome is what the h2c client saw.
type h2Outcome struct {
	status int
	body   []byte
	rst    http2.ErrCode
	gotRST bool
	goAway bool
	err    error
}

func (o h2Outcome) String() string {
	s := fmt.Sprintf("status %d body %q", o.status, clip(string(o.body), 80))
	if o.gotRST {
		s += fmt.Sprintf(", RST_STREAM %v", o.rst)
	}
	if o.goAway {
		s += ", GOAWAY"
	}
	if o.err != nil {
		s += fmt.Sprintf(", error %v", o.err)
	}
	return s
}

// h2exchange sends one request on stream 1 of a new prior-knowledge h2c connection and reads until the stream ends,
// is reset, the connection goes away, or nothing arrives for readIdle.
func h2exchange(addr string, c h2Case) h2Outcome {
	var o h2Outcome
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		o.err = err
		return o
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		o.err = err
		return o
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	encode := func(fields [][2]string) []byte {
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range fields {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return buf.Bytes()
	}
	endOnHeaders := len(c.data) == 0 && c.trailers == nil
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encode(c.fields), EndHeaders: true, EndStream: endOnHeaders})
	for i, d := range c.data {
		// Each DATA frame goes separately, after the server had time to act on what came before: a request whose
		// head is already wrong is then forwarded (or not) deterministically, not depending on which frame wins.
		time.Sleep(50 * time.Millisecond)
		fr.WriteData(1, i == len(c.data)-1 && c.trailers == nil, []byte(d))
	}
	if c.trailers != nil {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encode(c.trailers), EndHeaders: true, EndStream: true})
	}
	start := time.Now()
	for {
		dl := time.Now().Add(readIdle)
		if o.status == 0 && !o.gotRST {
			dl = time.Now().Add(firstByte)
		}
		if end := start.Add(readMax); dl.After(end) {
			dl = end
		}
		conn.SetReadDeadline(dl)
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				o.err = err
			}
			return o
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				if s := f.PseudoValue("status"); s != "" && o.status < 200 {
					fmt.Sscan(s, &o.status)
				}
				if f.StreamEnded() {
					return o
				}
			}
		case *http2.DataFrame:
			if f.StreamID == 1 {
				o.body = append(o.body, f.Data()...)
				if f.StreamEnded() {
					return o
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				o.gotRST, o.rst = true, f.ErrCode
				return o
			}
		case *http2.GoAwayFrame:
			o.goAway = true
			return o
		}
	}
}

func judgeH2(c h2Case, o h2Outcome, s seen) []string {
	var fails []string
	fail := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }
	for _, e := range s.bad() {
		fail("fedgate sent the HTTP/1.1 backend something invalid: %s", e)
	}
	reqs := s.requests()
	for _, q := range reqs {
		for _, f := range c.forbid {
			if strings.Contains(string(q.head), f) {
				fail("fedgate forwarded %q", f)
			}
		}
	}
	switch {
	case c.malformed:
		if n := s.complete(); n > 0 {
			fail("the request is malformed (RFC 9113 §8.1.1: an intermediary must not forward it), but %d complete request(s) reached the backend", n)
		} else if n := s.heads(); n > 0 && !c.streamed {
			fail("the request is malformed in its header section, but its head reached the backend (then was aborted)")
		}
		if !o.gotRST && !o.goAway && o.status < 400 {
			fail("a malformed request must be answered with RST_STREAM, GOAWAY or an error status; the client got %s", o)
		}
	case c.valid:
		if s.complete() != 1 || o.status != 200 {
			fail("a valid request must be forwarded once and answered 200; forwarded %d, client got %s", s.complete(), o)
		}
	}
	for _, q := range reqs {
		if s.complete() > 0 && c.wantBody != "" && string(q.body) != c.wantBody {
			fail("forwarded body %q, the client sent %q", clip(string(q.body), 80), c.wantBody)
		}
	}
	if c.check != nil && s.complete() > 0 {
		if msg := c.check(reqs); msg != "" {
			fail("fedgate %s", msg)
		}
	}
	return fails
}

// TestH2CDowngrade sends every h2c case to fedgate's gateway port and checks what reaches the HTTP/1.1 backend.
func TestH2CDowngrade(t *testing.T) {
	const h2lanes = 4
	var recs []*recorder
	var addrs []string
	for i := range h2lanes {
		r := newRecorder(t, fmt.Sprintf("h2c-backend-%d", i), nil)
		recs = append(recs, r)
		addrs = append(addrs, r.addr())
	}
	fg := startFedgate(t, addrs)
	cases := h2Cases()
	type res struct {
		o    h2Outcome
		s    seen
		fail []string
	}
	results := make([]res, len(cases))
	pool(context.Background(), h2lanes, len(cases), func(lane, j int) {
		epoch := recs[lane].begin()
		o := h2exchange(fg[lane], cases[j])
		s := recs[lane].collect(epoch, settle)
		results[j] = res{o: o, s: s, fail: judgeH2(cases[j], o, s)}
	})
	failing := 0
	for i, c := range cases {
		r := results[i]
		if len(r.fail) > 0 {
			failing++
		}
		t.Run(c.name, func(t *testing.T) {
			t.Logf("client got %s; backend: %d complete, %d heads", r.o, r.s.complete(), r.s.heads())
			if len(r.fail) > 0 {
				t.Errorf("h2c case %s\n  fields: %q\n  data: %q trailers: %q\n  client got: %s\n  backend saw: %s\n  FAILED:\n  - %s",
					c.name, c.fields, c.data, c.trailers, r.o, r.s, strings.Join(r.fail, "\n  - "))
			}
		})
	}
	t.Logf("h2c summary: %d cases; failing %d", len(cases), failing)
}

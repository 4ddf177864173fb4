package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

var testLimits = Limits{MaxLine: 8192, MaxBytes: 60 << 10, MaxFields: 100}

func readReq(raw string) (*http.Request, error) {
	return NewReader(bufio.NewReaderSize(strings.NewReader(raw), 4096)).ReadRequest(context.Background(), testLimits, BodyOptions{})
}

// TestReadRequestRefusals: every request RFC 9110/9112 calls invalid or ambiguous is refused with the status nginx
// or the RFC gives, never repaired.
func TestReadRequestRefusals(t *testing.T) {
	long := strings.Repeat("a", 9000)
	cases := []struct {
		name, raw string
		status    int
	}{
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\nabcd", 400},
		{"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400},
		{"non-token name", "GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nfoo\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"bare LF in field", "GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400},
		{"missing host 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"host userinfo", "GET / HTTP/1.1\r\nHost: a.example:80@b.example\r\n\r\n", 400},
		{"host bad port", "GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400},
		{"host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 400},
		{"host slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"host empty", "GET / HTTP/1.1\r\nHost: \r\n\r\n", 400},
		{"host bad ipv6", "GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", 400},
		{"absolute-form userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two content-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"content-length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400},
		{"content-length sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400},
		{"content-length hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx", 400},
		{"content-length overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"te and cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400},
		{"te gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"te chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501},
		{"te two lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"te vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", 400},
		{"te in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"version 2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"version 1.9", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505},
		{"version lowercase", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"http/0.9", "GET /\r\n\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
		{"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"authority-form GET", "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"method not token", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"control in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bad percent", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"request line too long", "GET /" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"head too big", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: "+long+"\r\n", 8) + "\r\n", 431},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: 1\r\n", 100) + "\r\n", 431},
		{"many leading empty lines", strings.Repeat("\r\n", 5) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readReq(c.raw)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want refusal %d", err, c.status)
			}
			if e.Status != c.status {
				t.Fatalf("status %d (%s), want %d", e.Status, e.Reason, c.status)
			}
		})
	}
}

func TestReadRequestAccepts(t *testing.T) {
	req, err := readReq("POST http://Example.com:8080/a%2Fb?x=1 HTTP/1.1\r\nhost: other\r\ncontent-length: 3\r\nx-multi: 1\r\nX-Multi: 2\r\nconnection: close\r\n\r\nabc")
	if err != nil {
		t.Fatal(err)
	}
	if req.Host != "Example.com:8080" || req.URL.Path != "/a/b" || req.URL.RawPath != "/a%2Fb" || req.URL.RawQuery != "x=1" {
		t.Fatalf("host %q path %q raw %q query %q", req.Host, req.URL.Path, req.URL.RawPath, req.URL.RawQuery)
	}
	if !req.Close || req.ContentLength != 3 {
		t.Fatalf("close %v length %d", req.Close, req.ContentLength)
	}
	if got := req.Header["X-Multi"]; len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Fatalf("X-Multi %q", got)
	}
	for _, k := range []string{"Content-Length", "Host", "Transfer-Encoding"} {
		if _, ok := req.Header[k]; ok {
			t.Fatalf("framing field %s left in the header map", k)
		}
	}
	b, err := io.ReadAll(req.Body)
	if err != nil || string(b) != "abc" || !req.Body.(Body).Complete() {
		t.Fatalf("body %q %v", b, err)
	}

	if _, err := readReq("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatalf("empty lines before the request line: %v", err)
	}
	req, err = readReq("GET / HTTP/1.0\r\n\r\n")
	if err != nil || !req.Close || req.Host != "" {
		t.Fatalf("HTTP/1.0 without Host: %v close=%v", err, req.Close)
	}
	req, err = readReq("GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: [::1]:80\r\n\r\n")
	if err != nil || req.Close {
		t.Fatalf("HTTP/1.0 keep-alive: %v", err)
	}
}

func TestCleanPath(t *testing.T) {
	for raw, want := range map[string]string{
		"/a/b":            "/a/b",
		"/a/./b":          "/a/b",
		"/a/../b":         "/b",
		"/a/%2e%2e/b":     "/b",
		"/a/%2E/b/.":      "/a/b/",
		"/a/b/..":         "/a/",
		"/a%2Fb":          "/a%2Fb",
		"/%7euser/%41":    "/~user/A",
		"/a/b%20c/../d":   "/a/d",
		"/api/x/../../ok": "/ok",
	} {
		clean, _, ok := CleanPath(raw)
		if !ok || clean != want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", raw, clean, ok, want)
		}
	}
	for _, raw := range []string{"/..", "/a/../../b", "/%2e%2e/x", "/api/..%2fadmin", "/a/%2e%2e%2fb", "/%zz", "/a%2"} {
		if clean, _, ok := CleanPath(raw); ok {
			t.Errorf("CleanPath(%q) = %q, accepted", raw, clean)
		}
	}
}

func TestChunked(t *testing.T) {
	ok := []struct{ name, body, want string }{
		{"plain", "3\r\nabc\r\n0\r\n\r\n", "abc"},
		{"ext", "3;a=b\r\nabc\r\n0\r\n\r\n", "abc"},
		{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"trailers", "1\r\nx\r\n0\r\nX-T: 1\r\n\r\n", "x"},
	}
	for _, c := range ok {
		req, err := readReq("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + c.body)
		if err != nil {
			t.Fatal(c.name, err)
		}
		b, err := io.ReadAll(req.Body)
		if err != nil || string(b) != c.want || !req.Body.(Body).Complete() {
			t.Fatalf("%s: %q %v", c.name, b, err)
		}
	}
	bad := []struct{ name, body string }{
		{"no hex", "\r\nabc\r\n0\r\n\r\n"},
		{"sign", "+3\r\nabc\r\n0\r\n\r\n"},
		{"space before size", " 3\r\nabc\r\n0\r\n\r\n"},
		{"bare LF size", "3\nabc\r\n0\r\n\r\n"},
		{"missing CRLF after data", "3\r\nabcX\r\n0\r\n\r\n"},
		{"LF after data", "3\r\nabc\n0\r\n\r\n"},
		{"overflow", "ffffffffffffffffff\r\n"},
		{"bad ext", "3;\x00\r\nabc\r\n0\r\n\r\n"},
		{"junk after size", "3x\r\nabc\r\n0\r\n\r\n"},
		{"short", "5\r\nabc"},
		{"bad trailer", "0\r\nX T: 1\r\n\r\n"},
		{"folded trailer", "0\r\nX: 1\r\n 2\r\n\r\n"},
	}
	for _, c := range bad {
		req, err := readReq("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + c.body)
		if err != nil {
			t.Fatal(c.name, err)
		}
		_, err = io.ReadAll(req.Body)
		var be *BodyError
		if !errors.As(err, &be) {
			t.Fatalf("%s: err %v, want a BodyError", c.name, err)
		}
		if req.Body.(Body).Complete() {
			t.Fatalf("%s: complete after an error", c.name)
		}
	}
}

func readResp(raw, method string) (*http.Response, error) {
	return NewReader(bufio.NewReaderSize(strings.NewReader(raw), 4096)).ReadResponse(testLimits, method, BodyOptions{})
}

func TestReadResponse(t *testing.T) {
	bad := map[string]string{
		"space before colon":    "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx",
		"cl and te":             "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"two cl":                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"te gzip":               "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"bad status":            "HTTP/1.1 2000 OK\r\n\r\n",
		"version":               "HTTP/2.0 200 OK\r\n\r\n",
		"bare LF":               "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
		"1xx with length":       "HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\n",
		"obs-fold":              "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"head too big":          "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: "+strings.Repeat("b", 1000)+"\r\n", 70) + "\r\n",
		"control in reason":     "HTTP/1.1 200 O\x01K\r\n\r\n",
		"missing status digits": "HTTP/1.1 2 OK\r\n\r\n",
	}
	for name, raw := range bad {
		_, err := readResp(raw, "GET")
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusBadGateway {
			t.Errorf("%s: err %v, want a 502 refusal", name, err)
		}
	}
	resp, err := readResp("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", "GET")
	if err != nil || resp.Body != http.NoBody || !resp.Close {
		t.Fatalf("204 with a declared body: must have no body and not be reused: %v %+v", err, resp)
	}
	resp, err = readResp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD")
	if err != nil || resp.Body != http.NoBody || resp.Close || resp.Header.Get("Content-Length") != "5" {
		t.Fatalf("HEAD: %v %+v", err, resp)
	}
	resp, err = readResp("HTTP/1.0 200 OK\r\n\r\nuntil close", "GET")
	if err != nil || !resp.Close {
		t.Fatalf("no length: %v", err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "until close" {
		t.Fatalf("until-close body %q", b)
	}
	resp, err = readResp("HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\n\r\n", "GET")
	if err != nil || resp.Close || resp.ContentLength != -1 {
		t.Fatalf("chunked: %v", err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "hi" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("chunked body %q trailer %v", b, resp.Trailer)
	}
	if _, ok := resp.Header["Transfer-Encoding"]; ok {
		t.Fatal("Transfer-Encoding left in the header")
	}
}

// FuzzReadRequest: whatever the bytes, the reader never panics, and what it accepts is unambiguous — one framing, a
// valid Host, header fields a strict peer would read the same way.
func FuzzReadRequest(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	f.Add("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	f.Add("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := readReq(raw)
		if err != nil {
			return
		}
		if req.ProtoMinor == 1 && !ValidHost(req.Host) {
			t.Fatalf("accepted Host %q", req.Host)
		}
		for k, vs := range req.Header {
			if !ValidFieldName(k) {
				t.Fatalf("accepted field name %q", k)
			}
			for _, v := range vs {
				if !ValidFieldValue(v) {
					t.Fatalf("accepted field value %q", v)
				}
			}
		}
		io.Copy(io.Discard, req.Body)
	})
}

package h1

import (
	"bytes"
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// ReadRequest reads one request head and returns the request, carrying ctx, with a body reader bound to its framing. A refused
// request is an *Error carrying the status to answer; any other error is the connection's (EOF, timeout, reset).
//
// The returned request has no Content-Length, Transfer-Encoding or Host field in its Header: ContentLength (-1 for
// chunked), Host and Close say what they said, and whoever forwards the request writes its own framing.
func (r *Reader) ReadRequest(ctx context.Context, lim Limits, body BodyOptions) (*http.Request, error) {
	startEnd, err := r.readHead(lim, errLineTooLong, checkRequestLine)
	if err != nil {
		return nil, err
	}
	s := string(r.buf) // the one allocation every string below points into
	// checkRequestLine vouched for the shape: method SP target SP HTTP/1.d.
	method, rest, _ := strings.Cut(s[:startEnd], " ")
	target, version, _ := strings.Cut(rest, " ")
	minor := int(version[7] - '0')
	var fr framing
	h, err := r.header(s, &fr)
	if err != nil {
		return nil, err
	}
	// One allocation for the request with its context (the zero template stays on the stack).
	req := (&http.Request{}).WithContext(ctx)
	req.Method, req.Proto, req.ProtoMajor, req.ProtoMinor = method, version, 1, minor
	req.Header, req.RequestURI = h, target
	if method == http.MethodConnect {
		return nil, fail(http.StatusMethodNotAllowed, "CONNECT is not supported")
	}
	// Host (RFC 9112 §3.2): exactly one in HTTP/1.1, valid wherever it appears; an absolute-form target overrides it.
	if fr.hostCount > 1 {
		return nil, fail(http.StatusBadRequest, "more than one Host")
	}
	if minor == 1 && fr.hostCount == 0 {
		return nil, fail(http.StatusBadRequest, "missing Host")
	}
	if fr.hostCount == 1 && !ValidHost(fr.host) {
		return nil, fail(http.StatusBadRequest, "invalid Host")
	}
	req.Host = fr.host
	u := &url.URL{}
	switch {
	case target[0] == '/':
	case hasPrefixFold(target, "http://") || hasPrefixFold(target, "https://"):
		rest := target[strings.IndexByte(target, ':')+3:]
		authority := rest
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			authority, target = rest[:i], rest[i:]
		} else {
			target = ""
		}
		if !ValidHost(authority) {
			return nil, fail(http.StatusBadRequest, "invalid authority in request target")
		}
		req.Host = authority
		if target == "" || target[0] == '?' {
			target = "/" + target
		}
	default:
		return nil, fail(http.StatusBadRequest, "unsupported request target form")
	}
	path, query, _ := strings.Cut(target, "?")
	if strings.IndexByte(path, '#') >= 0 || strings.IndexByte(query, '#') >= 0 {
		return nil, fail(http.StatusBadRequest, "fragment in request target")
	}
	u.RawQuery = query
	clean, decoded, ok := CleanPath(path)
	if !ok {
		return nil, fail(http.StatusBadRequest, "invalid path (percent-encoding, or dot-segments above the root)")
	}
	u.Path = decoded
	if clean != decoded {
		u.RawPath = clean
	}
	req.URL = u

	// Framing (RFC 9112 §6): refuse every ambiguity instead of choosing an interpretation.
	switch {
	case fr.teCount > 0 && minor == 0:
		return nil, fail(http.StatusBadRequest, "Transfer-Encoding in an HTTP/1.0 request")
	case fr.teCount > 0 && fr.clCount > 0:
		return nil, fail(http.StatusBadRequest, "both Content-Length and Transfer-Encoding")
	}
	if fr.chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		req.Body = r.newChunked(lim, body)
	} else if fr.contentLength > 0 {
		req.ContentLength = fr.contentLength
		req.Body = r.newFixed(fr.contentLength, body)
	} else {
		req.Body = http.NoBody
	}
	if minor == 0 {
		req.Close = !connectionHas(fr.connection, "keep-alive")
	} else {
		req.Close = connectionHas(fr.connection, "close")
	}
	return req, nil
}

// checkRequestLine accepts exactly `token SP target SP HTTP/1.0|1.1`, the target of visible ASCII.
func checkRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return fail(http.StatusBadRequest, "malformed request line")
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return fail(http.StatusBadRequest, "malformed request line")
	}
	sp2 += sp1 + 1
	for _, c := range line[:sp1] {
		if !isTchar(c) {
			return fail(http.StatusBadRequest, "invalid method")
		}
	}
	for _, c := range line[sp1+1 : sp2] {
		if c <= ' ' || c >= 0x7f {
			return fail(http.StatusBadRequest, "invalid character in request target")
		}
	}
	major, minor, ok := parseVersion(string(line[sp2+1:]))
	if !ok {
		return fail(http.StatusBadRequest, "malformed HTTP version")
	}
	if major != 1 || minor > 1 {
		return fail(http.StatusHTTPVersionNotSupported, "unsupported HTTP version")
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFoldASCII(s[:len(prefix)], prefix)
}

// ValidHost reports whether h is `host [ ":" port ]` with host an IP literal in brackets, an IPv4 address or a
// reg-name of letters, digits and "-._~" (no userinfo, no percent-encoding, no sub-delims), and port 1 to 5 digits up
// to 65535.
func ValidHost(h string) bool {
	if h == "" {
		return false
	}
	host, port := h, ""
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		host, port = h[1:end], h[end+1:]
		if !validIPv6(host) {
			return false
		}
		if port != "" {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
			return validPort(port)
		}
		return true
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if !validPort(port) {
			return false
		}
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// validIPv6: an IPv6 address without a zone identifier.
func validIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6() && a.Zone() == ""
}

// CleanPath normalises the raw (percent-encoded) path of a request target the way a backend that resolves it would,
// so the proxy routes, rewrites and forwards the path the backend will serve: percent-encoded unreserved characters
// are decoded ("%2e" is "."), and dot-segments are removed (RFC 3986 §5.2.4). It returns the cleaned raw path and its
// decoding, and ok=false for a path that climbs above the root, has invalid percent-encoding, or whose decoding still
// has a "." or ".." segment (built with encoded slashes, "..%2f"), which backends disagree about.
func CleanPath(raw string) (clean, decoded string, ok bool) {
	if strings.IndexByte(raw, '%') < 0 && !strings.Contains(raw, "/.") {
		return raw, raw, true
	}
	p := raw
	if strings.IndexByte(p, '%') >= 0 {
		var b strings.Builder
		for i := 0; i < len(p); i++ {
			c := p[i]
			if c != '%' {
				b.WriteByte(c)
				continue
			}
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", "", false
			}
			if d := unhex(p[i+1])<<4 | unhex(p[i+2]); isUnreserved(d) {
				b.WriteByte(d)
			} else {
				b.WriteString(p[i : i+3])
			}
			i += 2
		}
		p = b.String()
	}
	if strings.Contains(p, "/.") {
		var climbed bool
		if p, climbed = removeDotSegments(p); climbed {
			return "", "", false
		}
	}
	decoded, err := url.PathUnescape(p)
	if err != nil || hasDotSegment(decoded) {
		return "", "", false
	}
	return p, decoded, true
}

// removeDotSegments resolves "." and ".." segments of an absolute path; climbed reports a ".." above the root.
func removeDotSegments(p string) (out string, climbed bool) {
	segs := strings.Split(p[1:], "/")
	kept := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				kept = append(kept, "")
			}
		case "..":
			if len(kept) == 0 {
				return "", true
			}
			kept = kept[:len(kept)-1]
			if last {
				kept = append(kept, "")
			}
		default:
			kept = append(kept, s)
		}
	}
	return "/" + strings.Join(kept, "/"), false
}

func hasDotSegment(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

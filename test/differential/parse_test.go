package differential

// A deliberately small and strict HTTP/1.1 request parser (RFC 9112), used only to judge what a proxy forwarded. It
// accepts the one shape a well-behaved proxy emits: CRLF line endings, token methods and field names, no whitespace
// before a colon, no obs-fold, field values without CTLs, exactly one Host, and at most one framing header (one
// Content-Length made of digits, or one Transfer-Encoding: chunked) with a body that matches it. Anything else is a
// violation, described in words so a failing case says what the proxy did wrong.

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errIncomplete means the bytes so far are a valid prefix of a request: wait for more.
var errIncomplete = errors.New("incomplete")

const (
	maxHeadBytes      = 1 << 20
	maxChunkLineBytes = 4096
	maxBodyBytes      = 64 << 20
)

// field is one header (or trailer) field as received.
type field struct{ name, value string }

// request is one request a recording backend parsed.
type request struct {
	method, target, version string
	fields                  []field
	framing                 string // "none", "length" or "chunked"
	length                  int64  // declared Content-Length
	body                    []byte // the decoded body
	trailers                []field
	head                    []byte // the raw head, up to and including the blank line
	raw                     []byte // every byte of the request as received
	expect100               bool
}

// get returns the values of the fields named name (case-insensitive).
func (r *request) get(name string) []string {
	var vs []string
	for _, f := range r.fields {
		if asciiEqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

// validFieldValue: field-vchar, SP, HTAB and obs-text only (no CTL, no DEL).
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\t' {
			continue
		}
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// asciiEqualFold compares ignoring ASCII case only: strings.EqualFold would also equate the Kelvin sign (U+212A)
// with "k", which is exactly the kind of leniency a smuggler looks for.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// validHost checks a Host field value: uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2). Empty is valid
// (RFC 9112 §3.2: a target without authority is sent with an empty Host).
func validHost(h string) bool {
	if h == "" {
		return true
	}
	host, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		lit := h[1:end]
		rest := h[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return false
			}
			port = rest[1:]
			if port != "" && !isDigits(port) {
				return false
			}
		}
		if lit == "" {
			return false
		}
		for i := 0; i < len(lit); i++ {
			c := lit[i]
			if !(isHex(c) || c == ':' || c == '.' || c == 'v' || c == 'V') {
				return false
			}
		}
		return true
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if port != "" && !isDigits(port) {
			return false
		}
	}
	// reg-name = *( unreserved / pct-encoded / sub-delims ); IPv4 addresses are a subset.
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=", c) >= 0:
		case c == '%':
			if i+2 >= len(host) || !isHex(host[i+1]) || !isHex(host[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

// validTarget checks a forwarded request-target (RFC 9112 §3.2): origin-form, asterisk-form for OPTIONS,
// authority-form for CONNECT, or absolute-form; visible ASCII only and never a fragment.
func validTarget(method, target string) string {
	if target == "" {
		return "empty request-target"
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= 0x20 || c >= 0x7f {
			return fmt.Sprintf("request-target has byte %#02x", c)
		}
	}
	if strings.IndexByte(target, '#') >= 0 {
		return "request-target has a fragment ('#')"
	}
	switch {
	case target[0] == '/':
		return ""
	case target == "*":
		if method != "OPTIONS" {
			return "asterisk-form request-target with method " + method
		}
		return ""
	case method == "CONNECT":
		if !validHost(target) || !strings.Contains(target, ":") {
			return "CONNECT target is not authority-form"
		}
		return ""
	case strings.HasPrefix(strings.ToLower(target), "http://"), strings.HasPrefix(strings.ToLower(target), "https://"):
		return ""
	}
	return "request-target is not origin-form, absolute-form, authority-form or asterisk-form"
}

// headLines splits a head into lines, requiring CRLF endings and no bare CR. It returns the lines (without the blank
// line) and the head's length including the blank line.
func headLines(b []byte) ([]string, int, error) {
	var lines []string
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			if len(b) > maxHeadBytes {
				return nil, 0, fmt.Errorf("head larger than %d bytes", maxHeadBytes)
			}
			if k := bytes.IndexByte(b[i:], '\r'); k >= 0 && k+1 < len(b[i:]) {
				return nil, 0, fmt.Errorf("bare CR in head line %d", len(lines)+1)
			}
			return nil, 0, errIncomplete
		}
		line := b[i : i+j]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return nil, 0, fmt.Errorf("bare LF line ending in head line %d", len(lines)+1)
		}
		line = line[:len(line)-1]
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, 0, fmt.Errorf("bare CR in head line %d", len(lines)+1)
		}
		i += j + 1
		if len(line) == 0 {
			if len(lines) == 0 {
				return nil, 0, errors.New("empty line before the request line")
			}
			return lines, i, nil
		}
		lines = append(lines, string(line))
	}
}

// parseFields parses field lines strictly.
func parseFields(lines []string) ([]field, error) {
	var fs []field
	for n, l := range lines {
		if l[0] == ' ' || l[0] == '\t' {
			return nil, fmt.Errorf("field line %d starts with whitespace (obs-fold): %q", n+1, clip(l, 80))
		}
		colon := strings.IndexByte(l, ':')
		if colon < 0 {
			return nil, fmt.Errorf("field line %d has no colon: %q", n+1, clip(l, 80))
		}
		name := l[:colon]
		if !isToken(name) {
			return nil, fmt.Errorf("field name %q is not a token", clip(name, 80))
		}
		value := strings.Trim(l[colon+1:], " \t")
		if !validFieldValue(value) {
			return nil, fmt.Errorf("field %s has a control character in its value: %q", name, clip(value, 80))
		}
		fs = append(fs, field{name, value})
	}
	return fs, nil
}

// parseRequest parses one request from the start of b. It returns the request and its length, errIncomplete when b
// is a valid prefix, or a violation. A request whose head is complete but whose body is not is returned with
// errIncomplete too, so the caller can tell an aborted body from an aborted head.
func parseRequest(b []byte) (*request, int, error) {
	lines, headLen, err := headLines(b)
	if err != nil {
		if errors.Is(err, errIncomplete) {
			if v := prefixViolation(b); v != nil {
				return nil, 0, v
			}
		}
		return nil, 0, err
	}
	r := &request{head: b[:headLen]}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 {
		return nil, 0, fmt.Errorf("request line is not method SP target SP version: %q", clip(lines[0], 120))
	}
	r.method, r.target, r.version = parts[0], parts[1], parts[2]
	if !isToken(r.method) {
		return nil, 0, fmt.Errorf("method %q is not a token", r.method)
	}
	if v := validTarget(r.method, r.target); v != "" {
		return nil, 0, fmt.Errorf("%s: %q", v, clip(r.target, 120))
	}
	if r.version != "HTTP/1.1" && r.version != "HTTP/1.0" {
		return nil, 0, fmt.Errorf("version %q", r.version)
	}
	if r.fields, err = parseFields(lines[1:]); err != nil {
		return nil, 0, err
	}
	hosts := r.get("Host")
	switch {
	case len(hosts) > 1:
		return nil, 0, fmt.Errorf("%d Host fields %q", len(hosts), hosts)
	case len(hosts) == 0 && r.version == "HTTP/1.1":
		return nil, 0, errors.New("HTTP/1.1 request without Host")
	case len(hosts) == 1 && !validHost(hosts[0]):
		return nil, 0, fmt.Errorf("invalid Host %q", hosts[0])
	}
	cls, tes := r.get("Content-Length"), r.get("Transfer-Encoding")
	switch {
	case len(cls) > 0 && len(tes) > 0:
		return nil, 0, fmt.Errorf("both Content-Length %q and Transfer-Encoding %q", cls, tes)
	case len(cls) > 1:
		return nil, 0, fmt.Errorf("%d Content-Length fields %q", len(cls), cls)
	case len(tes) > 1:
		return nil, 0, fmt.Errorf("%d Transfer-Encoding fields %q", len(tes), tes)
	case len(cls) == 1:
		if !isDigits(cls[0]) || len(cls[0]) > 18 {
			return nil, 0, fmt.Errorf("Content-Length %q is not 1*DIGIT", cls[0])
		}
		r.framing = "length"
		r.length, _ = strconv.ParseInt(cls[0], 10, 64)
	case len(tes) == 1:
		if !asciiEqualFold(tes[0], "chunked") {
			return nil, 0, fmt.Errorf("Transfer-Encoding %q is not exactly chunked", tes[0])
		}
		if r.version == "HTTP/1.0" {
			return nil, 0, errors.New("Transfer-Encoding in an HTTP/1.0 request")
		}
		r.framing = "chunked"
	default:
		r.framing = "none"
	}
	for _, e := range r.get("Expect") {
		if asciiEqualFold(e, "100-continue") {
			r.expect100 = true
		}
	}
	body := b[headLen:]
	switch r.framing {
	case "none":
		r.raw = b[:headLen]
		return r, headLen, nil
	case "length":
		if r.length > maxBodyBytes {
			return r, 0, errIncomplete
		}
		if int64(len(body)) < r.length {
			return r, 0, errIncomplete
		}
		r.body = body[:r.length]
		n := headLen + int(r.length)
		r.raw = b[:n]
		return r, n, nil
	}
	data, trailers, n, err := parseChunked(body)
	if err != nil {
		return r, 0, err
	}
	r.body, r.trailers = data, trailers
	r.raw = b[:headLen+n]
	return r, headLen + n, nil
}

// prefixViolation looks for violations in an incomplete head that no further bytes could cure, so that a proxy
// which sends a malformed head and then waits is caught at once rather than as stuck bytes.
func prefixViolation(b []byte) error {
	if len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		return errors.New("empty line before the request line")
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return fmt.Errorf("NUL byte in head at offset %d", i)
	}
	return nil
}

// parseChunked decodes a chunked body strictly: hex sizes without signs, spaces or prefixes; extensions of tokens;
// CRLF after every size line and every chunk; trailer fields with the same rules as header fields.
func parseChunked(b []byte) (data []byte, trailers []field, n int, err error) {
	i := 0
	for {
		j := bytes.Index(b[i:], []byte("\r\n"))
		if j < 0 {
			if k := bytes.IndexByte(b[i:], '\n'); k >= 0 {
				return nil, nil, 0, fmt.Errorf("bare LF after chunk size line %q", clip(string(b[i:i+k]), 60))
			}
			if len(b)-i > maxChunkLineBytes {
				return nil, nil, 0, errors.New("chunk size line too long")
			}
			return nil, nil, 0, errIncomplete
		}
		line := string(b[i : i+j])
		if strings.ContainsAny(line, "\n\r") {
			return nil, nil, 0, fmt.Errorf("bare CR or LF in chunk size line %q", clip(line, 60))
		}
		size, ext, _ := strings.Cut(line, ";")
		if size == "" || len(size) > 16 {
			return nil, nil, 0, fmt.Errorf("chunk size %q", clip(size, 60))
		}
		for k := 0; k < len(size); k++ {
			if !isHex(size[k]) {
				return nil, nil, 0, fmt.Errorf("chunk size %q is not hex", clip(size, 60))
			}
		}
		if strings.Contains(line, ";") {
			for _, e := range strings.Split(ext, ";") {
				name, val, hasVal := strings.Cut(e, "=")
				if !isToken(name) || hasVal && !isToken(val) && !validQuoted(val) {
					return nil, nil, 0, fmt.Errorf("chunk extension %q", clip(ext, 60))
				}
			}
		}
		sz, perr := strconv.ParseUint(size, 16, 63)
		if perr != nil {
			return nil, nil, 0, fmt.Errorf("chunk size %q: %v", size, perr)
		}
		i += j + 2
		if sz == 0 {
			// Trailer section, then the final CRLF.
			for {
				k := bytes.IndexByte(b[i:], '\n')
				if k < 0 {
					return nil, nil, 0, errIncomplete
				}
				tl := b[i : i+k]
				if len(tl) == 0 || tl[len(tl)-1] != '\r' {
					return nil, nil, 0, errors.New("bare LF in trailer section")
				}
				tl = tl[:len(tl)-1]
				i += k + 1
				if len(tl) == 0 {
					return data, trailers, i, nil
				}
				if bytes.IndexByte(tl, '\r') >= 0 {
					return nil, nil, 0, errors.New("bare CR in trailer section")
				}
				fs, ferr := parseFields([]string{string(tl)})
				if ferr != nil {
					return nil, nil, 0, fmt.Errorf("trailer: %v", ferr)
				}
				trailers = append(trailers, fs...)
			}
		}
		if uint64(len(data))+sz > maxBodyBytes {
			return nil, nil, 0, errIncomplete
		}
		if uint64(len(b)-i) < sz+2 {
			return nil, nil, 0, errIncomplete
		}
		data = append(data, b[i:i+int(sz)]...)
		i += int(sz)
		if b[i] != '\r' || b[i+1] != '\n' {
			return nil, nil, 0, fmt.Errorf("chunk data not followed by CRLF (got %q)", b[i:i+2])
		}
		i += 2
	}
}

func validQuoted(s string) bool {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if c == '\\' {
			i++
			continue
		}
		if c == '"' || c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// response is one HTTP/1.x response a client received.
type response struct {
	status int
	head   string
	body   []byte
	// truncated: the connection ended before the declared body did.
	truncated bool
}

// parseResponses splits what a client received into responses. It is lenient on line endings (it judges statuses,
// not syntax) and returns the unparseable rest, if any. firstIsHead says the first request was HEAD, so the first final
// response has no body; later, a response whose declared body is immediately followed by another status line is
// taken to answer a pipelined HEAD.
func parseResponses(b []byte, firstIsHead bool) (rs []response, rest []byte) {
	for len(b) > 0 {
		if !bytes.HasPrefix(b, []byte("HTTP/1.")) {
			return rs, b
		}
		end, sep := bytes.Index(b, []byte("\r\n\r\n")), 4
		if lf := bytes.Index(b, []byte("\n\n")); lf >= 0 && (end < 0 || lf < end) {
			end, sep = lf, 2
		}
		if end < 0 {
			return rs, b
		}
		head := string(b[:end])
		statusLine, _, _ := strings.Cut(head, "\n")
		f := strings.Fields(statusLine)
		if len(f) < 2 || len(f[1]) != 3 {
			return rs, b
		}
		code, err := strconv.Atoi(f[1])
		if err != nil {
			return rs, b
		}
		r := response{status: code, head: head}
		b = b[end+sep:]
		cl, chunked := int64(-1), false
		for _, l := range strings.Split(head, "\n")[1:] {
			name, v, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "content-length":
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					cl = n
				}
			case "transfer-encoding":
				chunked = strings.EqualFold(v, "chunked")
			}
		}
		switch {
		case code < 200 || code == 204 || code == 304:
		case firstIsHead && len(finals(rs)) == 0:
		case bytes.HasPrefix(b, []byte("HTTP/1.")) && cl != 0:
			// A HEAD response: its length describes a body that is not sent.
		case chunked:
			data, _, n, err := parseChunkedLenient(b)
			r.body = data
			if err != nil {
				r.truncated = true
				b = nil
			} else {
				b = b[n:]
			}
		case cl >= 0:
			if int64(len(b)) < cl {
				r.body, r.truncated, b = b, true, nil
			} else {
				r.body, b = b[:cl], b[cl:]
			}
		default:
			r.body, b = b, nil
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// parseChunkedLenient decodes a chunked response body, accepting bare LF.
func parseChunkedLenient(b []byte) ([]byte, []field, int, error) {
	var data []byte
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return data, nil, 0, errIncomplete
		}
		line := strings.TrimRight(string(b[i:i+j]), "\r")
		size, _, _ := strings.Cut(line, ";")
		sz, err := strconv.ParseUint(strings.TrimSpace(size), 16, 63)
		if err != nil {
			return data, nil, 0, err
		}
		i += j + 1
		if sz == 0 {
			for {
				k := bytes.IndexByte(b[i:], '\n')
				if k < 0 {
					return data, nil, 0, errIncomplete
				}
				l := strings.TrimRight(string(b[i:i+k]), "\r")
				i += k + 1
				if l == "" {
					return data, nil, i, nil
				}
			}
		}
		if uint64(len(b)-i) < sz {
			return append(data, b[i:]...), nil, 0, errIncomplete
		}
		data = append(data, b[i:i+int(sz)]...)
		i += int(sz)
		if bytes.HasPrefix(b[i:], []byte("\r\n")) {
			i += 2
		} else if bytes.HasPrefix(b[i:], []byte("\n")) {
			i++
		}
	}
}

// finals returns the final (non-1xx) status codes.
func finals(rs []response) []int {
	var out []int
	for _, r := range rs {
		if r.status >= 200 {
			out = append(out, r.status)
		}
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("...(%d bytes)", len(s))
}

// quote prints bytes for a failure message, shortened in the middle when long.
func quote(b []byte, n int) string {
	if len(b) <= n {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:n*3/4])) + fmt.Sprintf(" ...(%d bytes)... ", len(b)-n) + strconv.Quote(string(b[len(b)-n/4:]))
}

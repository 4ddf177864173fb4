// Package h1 reads HTTP/1.1 messages strictly (RFC 9110, RFC 9112), for a proxy that must never be more lenient than
// the backends behind it: a request or response whose framing or syntax is in any way ambiguous is refused, not
// repaired. It reads message heads into one buffer per connection, validates every byte, and returns net/http types
// whose strings all point into a single allocation, plus body readers that enforce chunked syntax and the declared
// length exactly.
//
// What it refuses, and with which status (the caller answers and closes the connection):
//   - request line longer than Limits.MaxLine → 414; head larger than Limits.MaxBytes or more than Limits.MaxFields
//     header fields → 431;
//   - anything not exactly `method SP request-target SP HTTP/d.d CRLF`, a bare CR or LF, obs-fold, whitespace before
//     a colon, a field name that is not a token, a field value with a control character → 400;
//   - versions other than HTTP/1.0 and HTTP/1.1 → 505;
//   - HTTP/1.1 without exactly one valid Host, a Host with userinfo, a bad port or characters outside a reg-name or
//     IP literal → 400;
//   - more than one Content-Length (even equal ones), a Content-Length that is not 1*DIGIT, Content-Length together
//     with Transfer-Encoding, Transfer-Encoding in HTTP/1.0 → 400; a transfer coding other than exactly "chunked" → 501;
//   - CONNECT → 405; asterisk-form, authority-form and other non-origin, non-absolute targets → 400.
//
// It must not know about routing or upstreams.
package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strconv"
)

// Limits bound what a peer may send in a message head.
type Limits struct {
	MaxLine   int // the start line (request line or status line)
	MaxBytes  int // the whole head, start line included
	MaxFields int // header (or trailer) fields
}

// Error is a message the reader refused. For requests, Status is the response to send before closing.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return "http/1.1: " + e.Reason }

func fail(status int, reason string) *Error { return &Error{Status: status, Reason: reason} }

var (
	errLineTooLong = fail(http.StatusRequestURITooLong, "request line too long")
	errHeadTooBig  = fail(http.StatusRequestHeaderFieldsTooLarge, "header fields too large")
	errTooMany     = fail(http.StatusRequestHeaderFieldsTooLarge, "too many header fields")
	errBareCRLF    = fail(http.StatusBadRequest, "line not terminated by CRLF, or a bare CR")
	errObsFold     = fail(http.StatusBadRequest, "obsolete line folding")
	errFieldName   = fail(http.StatusBadRequest, "invalid header field name")
	errFieldValue  = fail(http.StatusBadRequest, "invalid header field value")
)

// maxBlankLines is how many empty lines may precede a request line.
const maxBlankLines = 4

// Reader reads message heads from one connection. Its buffers are reused from message to message; nothing it
// returns refers to them.
type Reader struct {
	br     *bufio.Reader
	buf    []byte
	fields []field
}

// field is one header line inside Reader.buf: name [n0,n1), value [v0,v1).
type field struct{ n0, n1, v0, v1 int }

// NewReader returns a Reader on br.
func NewReader(br *bufio.Reader) *Reader {
	return &Reader{br: br, buf: make([]byte, 0, 1024), fields: make([]field, 0, 32)}
}

// Reset points r at another buffered reader (pooled connections).
func (r *Reader) Reset(br *bufio.Reader) { r.br = br }

// readHead reads the start line and header fields up to the empty line into r.buf, validating as it goes, and
// returns the end offset of the start line. Field names are canonicalised in place. lineErr is returned when the start
// line exceeds lim.MaxLine; checkStart, if set, judges the start line as soon as it is read, so a client that sent an
// invalid one is answered at once rather than when its head times out. Empty lines before a request line are skipped
// (RFC 9112 §2.2: clients have sent a stray CRLF after a body); they count towards lim.MaxBytes.
func (r *Reader) readHead(lim Limits, lineErr *Error, checkStart func([]byte) error) (startEnd int, err error) {
	r.buf = r.buf[:0]
	r.fields = r.fields[:0]
	start := true
	blank := 0
	for {
		lineStart := len(r.buf)
		for {
			chunk, err := r.br.ReadSlice('\n')
			if len(r.buf)+len(chunk) > lim.MaxBytes {
				return 0, errHeadTooBig
			}
			if start && len(r.buf)+len(chunk) > lim.MaxLine+2 {
				return 0, lineErr
			}
			r.buf = append(r.buf, chunk...)
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				if err == io.EOF && len(r.buf) > 0 {
					err = io.ErrUnexpectedEOF
				}
				return 0, err
			}
		}
		line := r.buf[lineStart:]
		n := len(line)
		if n < 2 || line[n-2] != '\r' {
			return 0, errBareCRLF
		}
		content := line[:n-2]
		if start {
			if len(content) == 0 && checkStart != nil {
				// Not forwarded, so skipping it is no leniency a backend could disagree with.
				r.buf = r.buf[:lineStart]
				if blank++; blank > maxBlankLines {
					return 0, fail(http.StatusBadRequest, "empty lines before the request line")
				}
				continue
			}
			for _, c := range content {
				if c == '\r' {
					return 0, errBareCRLF
				}
			}
			if checkStart != nil {
				if err := checkStart(content); err != nil {
					return 0, err
				}
			}
			startEnd = lineStart + len(content)
			start = false
			continue
		}
		if len(content) == 0 {
			return startEnd, nil
		}
		if content[0] == ' ' || content[0] == '\t' {
			return 0, errObsFold
		}
		if len(r.fields) >= lim.MaxFields {
			return 0, errTooMany
		}
		f, err := parseField(r.buf, lineStart, lineStart+len(content))
		if err != nil {
			return 0, err
		}
		r.fields = append(r.fields, f)
	}
}

// parseField validates buf[s:e] as `token ":" OWS field-value OWS`, canonicalises the name in place and returns the
// field's offsets.
func parseField(buf []byte, s, e int) (field, error) {
	i := s
	upper := true
	for ; i < e; i++ {
		c := buf[i]
		if c == ':' {
			break
		}
		if !isTchar(c) {
			return field{}, errFieldName
		}
		// Canonical form, as net/http keys its header maps: upper case after a hyphen and at the start.
		if upper && 'a' <= c && c <= 'z' {
			buf[i] = c - ('a' - 'A')
		} else if !upper && 'A' <= c && c <= 'Z' {
			buf[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	if i == s || i == e {
		return field{}, errFieldName
	}
	f := field{n0: s, n1: i}
	v0, v1 := i+1, e
	for v0 < v1 && (buf[v0] == ' ' || buf[v0] == '\t') {
		v0++
	}
	for v1 > v0 && (buf[v1-1] == ' ' || buf[v1-1] == '\t') {
		v1--
	}
	for _, c := range buf[v0:v1] {
		if !isFieldVchar(c) {
			return field{}, errFieldValue
		}
	}
	f.v0, f.v1 = v0, v1
	return f, nil
}

// isTchar: RFC 9110 §5.6.2 token characters.
func isTchar(c byte) bool { return c < 0x80 && tchar[c] }

var tchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isFieldVchar: field-vchar / SP / HTAB (RFC 9110 §5.5): visible ASCII, obs-text, space and tab; never CTLs or DEL.
func isFieldVchar(c byte) bool { return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f) }

// ValidFieldValue reports whether v is a field value this package would accept (no CR, LF, NUL or other controls).
func ValidFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if !isFieldVchar(v[i]) {
			return false
		}
	}
	return true
}

// ValidFieldName reports whether k is a token.
func ValidFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTchar(k[i]) {
			return false
		}
	}
	return true
}

// header builds the header map from the parsed fields; every string points into s (the head as one string).
// Framing fields are taken out and reported, never left in the map: the caller writes its own framing.
type framing struct {
	contentLength int64 // -1: none
	clValue       string
	chunked       bool
	clCount       int
	teCount       int
	teValue       string
	hostCount     int
	host          string
	connection    []string
}

func (r *Reader) header(s string, fr *framing) (http.Header, error) {
	h := make(http.Header, len(r.fields))
	vals := make([]string, len(r.fields))
	fr.contentLength = -1
	for i, f := range r.fields {
		name, value := s[f.n0:f.n1], s[f.v0:f.v1]
		switch name {
		case "Content-Length":
			fr.clCount++
			if fr.clCount > 1 {
				return nil, fail(http.StatusBadRequest, "more than one Content-Length")
			}
			n, ok := parseContentLength(value)
			if !ok {
				return nil, fail(http.StatusBadRequest, "invalid Content-Length")
			}
			fr.contentLength, fr.clValue = n, value
			continue
		case "Transfer-Encoding":
			fr.teCount++
			fr.teValue = value
			continue
		case "Host":
			fr.hostCount++
			fr.host = value
			continue
		case "Connection":
			fr.connection = append(fr.connection, value)
		}
		vals[i] = value
		if prior, ok := h[name]; ok {
			h[name] = append(prior, value)
		} else {
			h[name] = vals[i : i+1 : i+1]
		}
	}
	if fr.teCount > 0 {
		if fr.teCount > 1 || !equalFoldASCII(fr.teValue, "chunked") {
			return nil, fail(http.StatusNotImplemented, "unsupported transfer coding")
		}
		fr.chunked = true
	}
	return h, nil
}

// parseContentLength accepts 1*DIGIT that fits an int64.
func parseContentLength(v string) (int64, bool) {
	if v == "" {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

func equalFoldASCII(a, b string) bool {
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

// connectionHas reports whether a Connection field lists token tok.
func connectionHas(vs []string, tok string) bool {
	for _, v := range vs {
		for v != "" {
			var t string
			t, v = cutComma(v)
			if equalFoldASCII(t, tok) {
				return true
			}
		}
	}
	return false
}

func cutComma(v string) (tok, rest string) {
	i := 0
	for i < len(v) && v[i] != ',' {
		i++
	}
	tok, rest = v[:i], ""
	if i < len(v) {
		rest = v[i+1:]
	}
	for tok != "" && (tok[0] == ' ' || tok[0] == '\t') {
		tok = tok[1:]
	}
	for tok != "" && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
		tok = tok[:len(tok)-1]
	}
	return tok, rest
}

// parseVersion reads "HTTP/d.d".
func parseVersion(v string) (major, minor int, ok bool) {
	if len(v) != 8 || v[:5] != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

// IsClientFault reports whether err is a refusal of what the peer sent (as opposed to an I/O failure).
func IsClientFault(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

package h1

import (
	"net/http"
)

var (
	errStatusLine   = fail(http.StatusBadGateway, "malformed status line")
	errRespLineLong = fail(http.StatusBadGateway, "status line too long")
)

// ReadResponse reads one response head to a request with the given method and binds its body. An *Error means the
// backend's response is invalid (answer 502 and close that connection); resp.Close reports that the connection must
// not carry another exchange — because the backend said so, or because the framing (no length, a 204 that declared a
// body) leaves it unclear where the next response would begin.
//
// Content-Length stays in the returned Header (with the one value that was validated), so whoever relays the response
// keeps its length; Transfer-Encoding does not.
func (r *Reader) ReadResponse(lim Limits, method string, opts BodyOptions) (*http.Response, error) {
	startEnd, err := r.readHead(lim, errRespLineLong, nil)
	if err != nil {
		if e, ok := err.(*Error); ok && e.Status != http.StatusBadGateway {
			return nil, fail(http.StatusBadGateway, "response "+e.Reason)
		}
		return nil, err
	}
	s := string(r.buf)
	line := s[:startEnd]
	// status-line = HTTP-version SP status-code SP [ reason-phrase ]; a missing SP before an empty reason is tolerated.
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return nil, errStatusLine
	}
	major, minor, ok := parseVersion(line[:8])
	if !ok || major != 1 || minor > 1 {
		return nil, errStatusLine
	}
	code := 0
	for i := 9; i < 12; i++ {
		c := line[i]
		if c < '0' || c > '9' {
			return nil, errStatusLine
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || code > 599 {
		return nil, errStatusLine
	}
	for i := 12; i < len(line); i++ {
		if !isFieldVchar(line[i]) {
			return nil, errStatusLine
		}
	}
	var fr framing
	h, err := r.header(s, &fr)
	if err != nil {
		return nil, fail(http.StatusBadGateway, "response "+err.(*Error).Reason)
	}
	if fr.hostCount > 0 {
		h["Host"] = []string{fr.host} // meaningless in a response, but not framing: relayed like any field
	}
	resp := &http.Response{
		Status:     line[9:],
		StatusCode: code,
		Proto:      line[:8],
		ProtoMajor: 1,
		ProtoMinor: minor,
		Header:     h,
		Body:       http.NoBody,
	}
	if minor == 0 {
		resp.Close = !connectionHas(fr.connection, "keep-alive")
	} else {
		resp.Close = connectionHas(fr.connection, "close")
	}
	if fr.teCount > 0 && fr.clCount > 0 {
		return nil, fail(http.StatusBadGateway, "response with both Content-Length and Transfer-Encoding")
	}
	if fr.teCount > 0 && minor == 0 {
		return nil, fail(http.StatusBadGateway, "Transfer-Encoding in an HTTP/1.0 response")
	}
	switch {
	case code < 200:
		if fr.teCount > 0 || fr.clCount > 0 {
			return nil, fail(http.StatusBadGateway, "informational response with a body")
		}
		return resp, nil
	case code == http.StatusNoContent || code == http.StatusNotModified || method == http.MethodHead:
		// No body, whatever the fields say (RFC 9112 §6.3). A 204 that declares one, or any of these with a
		// transfer coding, may be followed by bytes that would otherwise be read as the next response.
		if fr.chunked || (code == http.StatusNoContent && fr.contentLength > 0) {
			resp.Close = true
		}
		if fr.clCount > 0 && code != http.StatusNoContent {
			h["Content-Length"] = []string{fr.clValue}
		}
		resp.ContentLength = 0
		if method == http.MethodHead {
			resp.ContentLength = fr.contentLength
		}
		return resp, nil
	case fr.chunked:
		resp.ContentLength = -1
		resp.TransferEncoding = []string{"chunked"}
		cb := r.newChunked(lim, opts)
		cb.trailer = &resp.Trailer
		resp.Body = cb
	case fr.clCount > 0:
		resp.ContentLength = fr.contentLength
		h["Content-Length"] = []string{fr.clValue}
		if fr.contentLength > 0 {
			resp.Body = r.newFixed(fr.contentLength, opts)
		}
	default:
		resp.ContentLength = -1
		resp.Close = true
		resp.Body = &untilClose{body: body{br: r.br, opts: opts}}
	}
	return resp, nil
}

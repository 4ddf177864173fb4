package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// BodyOptions bind a body reader to its connection.
type BodyOptions struct {
	// Deadline, if set, is called with now+IdleTimeout before every read that has to wait for the network, so a peer
	// that stalls mid-body is cut off (nginx's client_body_timeout, Envoy's stream idle timeout).
	Deadline    func(time.Time) error
	IdleTimeout time.Duration
}

// BodyError is a body the peer framed wrongly or did not finish: a short body, bad chunk syntax, or a stall past the
// idle timeout (Timeout). It is the peer's fault, never the other side's.
type BodyError struct {
	Err     error
	Timeout bool
}

func (e *BodyError) Error() string { return "http/1.1 body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

var (
	errBodyClosed  = errors.New("body closed")
	errChunkSyntax = errors.New("malformed chunked encoding")
)

// body is the shared part of the fixed-length and chunked readers. Its mutex makes Close wait for a Read in progress
// (a transport may still be reading in another goroutine), so the connection's reader is never used by two at once.
type body struct {
	mu     sync.Mutex
	br     *bufio.Reader
	opts   BodyOptions
	closed bool
	err    error // sticky
	done   bool  // read to its end
}

// fill arms the idle deadline before a read of the peer's bytes. It re-arms every time, also when bytes are buffered:
// a read that finds part of a chunk's framing buffered (its CRLF, half a size line) may still block for the rest, and a
// deadline left from an earlier read would then cut a healthy stream short.
func (b *body) fill() {
	if b.opts.Deadline != nil {
		b.opts.Deadline(time.Now().Add(b.opts.IdleTimeout))
	}
}

func (b *body) fault(err error) error {
	var te interface{ Timeout() bool }
	timeout := errors.As(err, &te) && te.Timeout()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	b.err = &BodyError{Err: err, Timeout: timeout}
	return b.err
}

// readable returns what a Read must return at once instead of reading: the body was closed, failed or ended. The
// caller holds b.mu.
func (b *body) readable() error {
	switch {
	case b.closed:
		return errBodyClosed
	case b.err != nil:
		return b.err
	case b.done:
		return io.EOF
	}
	return nil
}

// Close stops further reads; it does not read the rest (the server decides whether to drain or close).
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// Complete reports whether the body was read to its end without error (the connection may then carry another
// message).
func (b *body) Complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done && b.err == nil
}

// Body is what ReadRequest and ReadResponse return as the message body (when there is one).
type Body interface {
	io.ReadCloser
	Complete() bool
	// Available is how many body bytes (data, not framing) the next Read returns without waiting for the peer.
	Available() int
}

// Available implements Body.
func (b *fixedBody) Available() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.readable() != nil {
		return 0
	}
	return int(min(b.remaining, int64(b.br.Buffered())))
}

// Available implements Body.
func (b *untilClose) Available() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.readable() != nil {
		return 0
	}
	return b.br.Buffered()
}

// Available implements Body: the buffered rest of the current chunk. At a chunk's end the next chunk's size line
// must be parsed first, which may wait, so nothing counts as available there.
func (b *chunkedBody) Available() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.readable() != nil {
		return 0
	}
	return int(min(b.left, int64(b.br.Buffered())))
}

type fixedBody struct {
	body
	remaining int64
}

func (r *Reader) newFixed(n int64, opts BodyOptions) *fixedBody {
	return &fixedBody{body: body{br: r.br, opts: opts}, remaining: n}
}

func (b *fixedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.readable(); err != nil {
		return 0, err
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	b.fill()
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.done = true
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	if err != nil {
		return n, b.fault(err)
	}
	return n, nil
}

// untilClose is a response body delimited by the connection's end (no Content-Length, no chunking).
type untilClose struct{ body }

func (b *untilClose) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.readable(); err != nil {
		return 0, err
	}
	b.fill()
	n, err := b.br.Read(p)
	if err == io.EOF {
		b.done = true
		return n, io.EOF
	}
	if err != nil {
		return n, b.fault(err)
	}
	return n, nil
}

// chunkedBody decodes RFC 9112 §7.1 strictly: hex sizes without signs or whitespace, extensions without control
// characters, CRLF exactly where it belongs, trailer fields validated like header fields and bounded like them.
type chunkedBody struct {
	body
	lim          Limits
	left         int64 // bytes left in the current chunk
	needCRLF     bool  // after a chunk's data
	trailer      *http.Header
	maxChunkLine int
}

const maxChunkLine = 4096

func (r *Reader) newChunked(lim Limits, opts BodyOptions) *chunkedBody {
	return &chunkedBody{body: body{br: r.br, opts: opts}, lim: lim}
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.readable(); err != nil {
		return 0, err
	}
	for b.left == 0 {
		if b.needCRLF {
			if err := b.crlf(); err != nil {
				return 0, err
			}
			b.needCRLF = false
		}
		size, err := b.sizeLine()
		if err != nil {
			return 0, err
		}
		if size == 0 {
			if err := b.trailers(); err != nil {
				return 0, err
			}
			b.done = true
			return 0, io.EOF
		}
		b.left = size
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	b.fill()
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.needCRLF = true
	}
	if err != nil && !(err == io.EOF && n > 0 && b.left == 0) {
		return n, b.fault(err)
	}
	return n, nil
}

func (b *chunkedBody) crlf() error {
	b.fill()
	c1, err := b.br.ReadByte()
	if err != nil {
		return b.fault(err)
	}
	b.fill()
	c2, err := b.br.ReadByte()
	if err != nil {
		return b.fault(err)
	}
	if c1 != '\r' || c2 != '\n' {
		return b.fault(errChunkSyntax)
	}
	return nil
}

// line reads one CRLF-terminated line of at most maxChunkLine bytes and returns it without the CRLF.
func (b *chunkedBody) line() ([]byte, error) {
	b.fill()
	line, err := b.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return nil, b.fault(errChunkSyntax)
	}
	if err != nil {
		return nil, b.fault(err)
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, b.fault(errChunkSyntax)
	}
	return line[:n-2], nil
}

func (b *chunkedBody) sizeLine() (int64, error) {
	line, err := b.line()
	if err != nil {
		return 0, err
	}
	var size int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, b.fault(errChunkSyntax) // more than 2^60: no honest peer sends that
		}
		size = size<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, b.fault(errChunkSyntax)
	}
	if rest := line[i:]; len(rest) > 0 {
		// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): extensions are ignored but must be
		// well-formed enough that no peer could read the line differently.
		j := 0
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t') {
			j++
		}
		if j == len(rest) || rest[j] != ';' {
			return 0, b.fault(errChunkSyntax)
		}
		for _, c := range rest[j:] {
			if c != '\t' && (c < 0x20 || c == 0x7f) {
				return 0, b.fault(errChunkSyntax)
			}
		}
	}
	return size, nil
}

func (b *chunkedBody) trailers() error {
	var buf []byte
	var fields []field
	for {
		line, err := b.line()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' || len(fields) >= b.lim.MaxFields || len(buf)+len(line) > b.lim.MaxBytes {
			return b.fault(errChunkSyntax)
		}
		s := len(buf)
		buf = append(buf, line...)
		f, err := parseField(buf, s, len(buf))
		if err != nil {
			return b.fault(err)
		}
		fields = append(fields, f)
	}
	if b.trailer == nil || len(fields) == 0 {
		return nil
	}
	s := string(buf)
	t := make(http.Header, len(fields))
	for _, f := range fields {
		name := s[f.n0:f.n1]
		switch name {
		case "Content-Length", "Transfer-Encoding", "Host", "Trailer", "Connection", "Te", "Keep-Alive", "Upgrade":
			continue // framing and routing fields have no meaning in a trailer (RFC 9110 §6.5.1)
		}
		t[name] = append(t[name], s[f.v0:f.v1])
	}
	*b.trailer = t
	return nil
}

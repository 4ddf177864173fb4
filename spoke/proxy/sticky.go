package proxy

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/health"
	"github.com/fedgate/fedgate/spoke/session"
)

// sticky is a route's session persistence, resolved at build time: the token codec (shared by the table), the scope
// hash, the cookie attributes, and every endpoint a token may name, so a request with a token costs one MAC check and
// one map lookup.
type sticky struct {
	header bool   // Header type: token in a request/response header; else a cookie
	name   string // cookie name, or canonical header name
	scope  uint32
	policy session.Policy
	// permanent cookies carry Max-Age (the session's remaining absolute lifetime).
	permanent bool
	// attrs follow "name=value" in Set-Cookie: Path, HttpOnly, SameSite.
	attrs string
	codec *session.Codec
	// pins: every ready or draining endpoint of every valid backendRef of the rule, whatever its weight. A pinned
	// session survives its backend's weight dropping to 0 and its endpoint draining.
	pins map[health.Key]pin
}

type pin struct {
	b  *backend
	ep *endpoint
}

func buildSticky(field string, sp *spokeconfig.SessionPersistence, r *route, a *action, codec *session.Codec) (*sticky, error) {
	st := &sticky{
		scope:     session.Scope(sp.Scope),
		policy:    session.Policy{AbsoluteTimeout: time.Duration(sp.AbsoluteTimeoutMs) * time.Millisecond, IdleTimeout: time.Duration(sp.IdleTimeoutMs) * time.Millisecond},
		permanent: sp.CookieLifetime == "Permanent",
		codec:     codec,
		pins:      map[health.Key]pin{},
	}
	if codec == nil {
		return nil, fmt.Errorf("%s: the config has no sessionKeys to sign session tokens with", field)
	}
	if sp.SessionName == "" {
		return nil, fmt.Errorf("%s.sessionName: empty", field)
	}
	if sp.AbsoluteTimeoutMs < 0 || sp.IdleTimeoutMs < 0 {
		return nil, fmt.Errorf("%s: negative timeout", field)
	}
	switch sp.CookieLifetime {
	case "", "Session", "Permanent":
	default:
		return nil, fmt.Errorf("%s.cookieLifetime: unknown lifetime %q", field, sp.CookieLifetime)
	}
	switch sp.Type {
	case "", "Cookie":
		if !validCookieName(sp.SessionName) {
			return nil, fmt.Errorf("%s.sessionName: %q is not a valid cookie name", field, sp.SessionName)
		}
		st.name = sp.SessionName
	case "Header":
		if !httpguts.ValidHeaderFieldName(sp.SessionName) {
			return nil, fmt.Errorf("%s.sessionName: %q is not a valid header name", field, sp.SessionName)
		}
		st.header = true
		st.name = textproto.CanonicalMIMEHeaderKey(sp.SessionName)
	default:
		return nil, fmt.Errorf("%s.type: unknown type %q", field, sp.Type)
	}
	// Per the Gateway API, the cookie is scoped to the path the route matches: its PathPrefix (or Exact path), "/"
	// otherwise, so two sticky rules on different prefixes keep separate sessions.
	path := "/"
	switch r.pathType {
	case spokeconfig.PathPrefix:
		if r.path != "" {
			path = r.path
		}
	case spokeconfig.PathExact:
		path = r.path
	}
	if !httpguts.ValidHeaderFieldValue(path) || strings.ContainsAny(path, ";") {
		return nil, fmt.Errorf("%s: route path %q cannot be a cookie Path", field, path)
	}
	st.attrs = "; Path=" + path + "; HttpOnly; SameSite=Lax"
	for _, wb := range a.backends {
		if wb.backend == nil {
			continue
		}
		for k, ep := range wb.backend.serving {
			if _, dup := st.pins[k]; !dup {
				st.pins[k] = pin{b: wb.backend, ep: ep}
			}
		}
	}
	return st, nil
}

// validCookieName: an RFC 6265 token.
func validCookieName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return s != ""
}

// token returns the session token the client sent, if any.
func (st *sticky) token(r *http.Request) string {
	if st.header {
		if vs := r.Header[st.name]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	c, err := r.Cookie(st.name)
	if err != nil {
		return ""
	}
	return c.Value
}

// lookup returns the endpoint a valid token pins, if it may serve now. A token that is forged, tampered with,
// expired, scoped to another rule, or names an endpoint that is gone or unavailable reads as "no session": the
// caller makes a fresh pick and issues a new token, never an error.
func (st *sticky) lookup(r *http.Request, now time.Time) (pin, time.Time, bool) {
	tok := st.token(r)
	if tok == "" {
		return pin{}, time.Time{}, false
	}
	v, err := st.codec.Verify(tok, st.scope, st.policy, now)
	if err != nil {
		return pin{}, time.Time{}, false
	}
	p, ok := st.pins[health.Key{Cluster: v.Target.Cluster, Address: v.Target.Endpoint}]
	if !ok || !p.ep.state.Available(now.UnixNano()) {
		return pin{}, time.Time{}, false
	}
	return p, v.Started, true
}

// stamp puts a token for ep (session started at started, renewed now) on the response: every response of a sticky
// route carries one, so a rolling idle timeout is renewed by each request.
func (st *sticky) stamp(h http.Header, ep *endpoint, started, now time.Time, secure bool) {
	tok, err := st.codec.Issue(session.Target{Cluster: ep.cluster, Endpoint: ep.addr}, st.scope, started, now)
	if err != nil {
		return
	}
	if st.header {
		h[st.name] = []string{tok}
		return
	}
	var b strings.Builder
	b.Grow(len(st.name) + 1 + len(tok) + len(st.attrs) + 24)
	b.WriteString(st.name)
	b.WriteByte('=')
	b.WriteString(tok)
	b.WriteString(st.attrs)
	if secure {
		b.WriteString("; Secure")
	}
	if st.permanent {
		// Max-Age counts down the session's absolute lifetime (or one idle period when there is none), computed per
		// response rather than once, so the browser forgets the cookie when the proxy would reject it.
		var left time.Duration
		switch {
		case st.policy.AbsoluteTimeout > 0:
			left = st.policy.AbsoluteTimeout - now.Sub(started)
		case st.policy.IdleTimeout > 0:
			left = st.policy.IdleTimeout
		}
		if left > 0 {
			b.WriteString("; Max-Age=")
			b.WriteString(strconv.FormatInt(int64(left/time.Second), 10))
		}
	}
	h["Set-Cookie"] = append(h["Set-Cookie"], b.String())
}

package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/health"
	"github.com/fedgate/fedgate/spoke/session"
)

// Table is the immutable lookup structure built from one SpokeConfig. Requests read it through an atomic pointer and
// never write to it; the only mutable state reachable from it is atomic counters (schedule positions) and the endpoint
// registry entries, which deliberately live outside the table's lifetime.
type Table struct {
	Revision int64
	cluster  string
	// ports by configured port number (before Options.PortOffset).
	ports map[int32]*portTable
	// backends by ID, for east-west requests and diagnostics.
	backends map[string]*backend
	// remotes by cluster name.
	remotes map[string]*remoteCluster
	// members: the clusters whose spokes may call this one's east-west listener; nil accepts any authenticated peer.
	members map[string]bool
	// revoked: serials (lowercase hex) of revoked member certificates, refused on the east-west listener.
	revoked map[string]bool
	// backendSP are the backend-level session persistence policies by backend ID (build time only).
	backendSP map[string]*spokeconfig.SessionPersistence
	// codec verifies and issues session tokens with the config's SessionKeys; built once per table so no request
	// rebuilds HMAC state. Nil when the config has no keys.
	codec *session.Codec
}

// portTable is the vhost lookup for one listening port.
type portTable struct {
	port     int32
	bindAddr string
	proto    spokeconfig.Protocol
	exact    map[string]*vhost
	// wildcards sorted longest suffix first so the first hit is the most specific.
	wildcards []wildcardHost
	catchAll  *vhost
	// tls terminates an HTTPS port (nil for HTTP): its listeners and their parsed certificates.
	tls *tlsPort
	// byListener are, on an HTTPS port, the virtual hosts of each TLS listener (spokeconfig.VirtualHost.Listener): a
	// request is served by those of the listener its connection selected alone. exact, wildcards and catchAll are
	// then unused (empty).
	byListener map[*tlsListener]*hostIndex
	// pending: the per-listener indexes by normalised listener hostname, until build links them to tls.
	pending map[string]*hostIndex
}

// hostIndex is the vhost lookup of one HTTPS listener: exact, longest wildcard, then catch-all.
type hostIndex struct {
	exact     map[string]*vhost
	wildcards []wildcardHost // longest suffix first
	catchAll  *vhost
}

func (x *hostIndex) lookup(host string) *vhost {
	if vh, ok := x.exact[host]; ok {
		return vh
	}
	for i := range x.wildcards {
		w := &x.wildcards[i]
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return w.vh
		}
	}
	return x.catchAll
}

// normaliseListener is a listener or vhost hostname as the lookups key it: lower case, no trailing dot, "*" for none.
func normaliseListener(h string) string {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" {
		return "*"
	}
	return h
}

type wildcardHost struct {
	suffix string // ".example.com" for "*.example.com"
	vh     *vhost
}

type vhost struct {
	hostname string
	listener string // spokeconfig.VirtualHost.Listener
	routes   []*route
}

type route struct {
	source     spokeconfig.ObjectRef
	ruleIndex  int
	matchIndex int

	pathType spokeconfig.PathMatchType
	path     string // Exact value, or PathPrefix without trailing slash ("" for "/")
	pathRE   *regexp.Regexp
	method   string
	headers  []valueMatcher
	query    []valueMatcher

	action *action
}

// valueMatcher matches one header or query parameter against its first value.
type valueMatcher struct {
	name  string // canonical MIME name for headers; verbatim for query parameters
	value string
	re    *regexp.Regexp // nil: exact
}

func (m *valueMatcher) matches(v string, ok bool) bool {
	if !ok {
		return false
	}
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.value
}

// action is what a matched route does. Exactly one of direct, redirect or backends applies, in that order.
type action struct {
	direct   *spokeconfig.DirectResponse
	redirect *spokeconfig.Redirect
	// prefix is the PathPrefix of the match, used by ReplacePrefixMatch (rewrite and redirect).
	prefix      string
	reqHeaders  *headerMod
	respHeaders *headerMod
	rewriteHost string
	rewritePath *spokeconfig.PathRewrite

	sched    *schedule
	backends []*weightedBackend

	requestTimeout time.Duration
	backendTimeout time.Duration

	// sticky is the session persistence of the rule (or of its backends); nil: no stickiness.
	sticky *sticky
	// retry is the rule's retry policy; nil: only the built-in retry of idempotent requests on connection failure.
	retry *retryPolicy
}

// weightedBackend is one backendRef; backend is nil when the ref is invalid (its share answers 500).
type weightedBackend struct {
	backend *backend
	weight  int32
	reason  string
}

// retryPolicy is an HTTPRoute rule's retry, resolved.
type retryPolicy struct {
	codes    []int
	attempts int
	backoff  time.Duration
}

func (p *retryPolicy) retriesStatus(code int) bool {
	for _, c := range p.codes {
		if c == code {
			return true
		}
	}
	return false
}

// headerMod is a HeaderModifier with names canonicalised once at build time.
type headerMod struct {
	set    []spokeconfig.Header
	add    []spokeconfig.Header
	remove []string
}

func (m *headerMod) apply(h http.Header) {
	for _, n := range m.remove {
		delete(h, n)
	}
	for _, kv := range m.set {
		h[kv.Name] = []string{kv.Value}
	}
	for _, kv := range m.add {
		h[kv.Name] = append(h[kv.Name], kv.Value)
	}
}

func newHeaderMod(field string, m *spokeconfig.HeaderModifier) (*headerMod, error) {
	if m == nil || (len(m.Set) == 0 && len(m.Add) == 0 && len(m.Remove) == 0) {
		return nil, nil
	}
	// Values are written to the wire verbatim by the HTTP/1.1 paths, so anything that could split a header is refused.
	for i, h := range append(append([]spokeconfig.Header(nil), m.Set...), m.Add...) {
		if !httpguts.ValidHeaderFieldName(h.Name) || !httpguts.ValidHeaderFieldValue(h.Value) {
			return nil, fmt.Errorf("%s: header %d %q: invalid name or value", field, i, h.Name)
		}
	}
	for _, n := range m.Remove {
		if !httpguts.ValidHeaderFieldName(n) {
			return nil, fmt.Errorf("%s.remove: invalid header name %q", field, n)
		}
	}
	out := &headerMod{}
	for _, h := range m.Set {
		out.set = append(out.set, spokeconfig.Header{Name: textproto.CanonicalMIMEHeaderKey(h.Name), Value: h.Value})
	}
	for _, h := range m.Add {
		out.add = append(out.add, spokeconfig.Header{Name: textproto.CanonicalMIMEHeaderKey(h.Name), Value: h.Value})
	}
	for _, n := range m.Remove {
		out.remove = append(out.remove, textproto.CanonicalMIMEHeaderKey(n))
	}
	return out, nil
}

// Build compiles cfg into a Table. It is pure: the same config gives an equivalent table, and nothing outside the
// returned value is touched. Endpoint state (in-flight counts, later health) is fresh; a Server reuses its registry
// so that state survives table swaps.
func Build(cfg *spokeconfig.SpokeConfig, opts Options) (*Table, error) {
	return build(cfg, opts, health.NewRegistry())
}

func build(cfg *spokeconfig.SpokeConfig, opts Options, reg *health.Registry) (*Table, error) {
	if cfg == nil {
		return nil, errors.New("spoke config is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cluster := opts.Cluster
	if cluster == "" {
		cluster = cfg.Cluster
	}
	t := &Table{
		Revision: cfg.Revision,
		cluster:  cluster,
		ports:    make(map[int32]*portTable, len(cfg.Ports)),
		backends: make(map[string]*backend, len(cfg.Backends)),
		remotes:  make(map[string]*remoteCluster, len(cfg.Clusters)),
	}
	for _, c := range cfg.Clusters {
		t.remotes[c.Name] = &remoteCluster{name: c.Name, addr: c.EastWestAddress, state: reg.Cluster(c.Name)}
	}
	if len(cfg.Members) > 0 {
		t.members = make(map[string]bool, len(cfg.Members))
		for _, m := range cfg.Members {
			t.members[m] = true
		}
	}
	if len(cfg.RevokedSerials) > 0 {
		t.revoked = make(map[string]bool, len(cfg.RevokedSerials))
		for _, sn := range cfg.RevokedSerials {
			t.revoked[sn] = true
		}
	}
	var errs []error
	if n := len(cfg.SessionKeys); n > 0 {
		for i, k := range cfg.SessionKeys {
			if len(k.Secret) < 16 {
				errs = append(errs, fmt.Errorf("sessionKeys[%d] (id %d): secret is %d bytes, want at least 16", i, k.ID, len(k.Secret)))
			}
		}
		// The first key signs; the second (the hub keeps one previous key) still verifies.
		ring := session.Keyring{Current: session.Key{ID: cfg.SessionKeys[0].ID, Secret: cfg.SessionKeys[0].Secret}}
		if n > 1 {
			ring.Previous = &session.Key{ID: cfg.SessionKeys[1].ID, Secret: cfg.SessionKeys[1].Secret}
		}
		t.codec = session.NewCodec(ring)
	}
	t.backendSP = map[string]*spokeconfig.SessionPersistence{}
	btls := newBackendTLSBuilder()
	for i := range cfg.Backends {
		b := &cfg.Backends[i]
		nb := newBackend(b, cluster, t.remotes, reg)
		nb.tls = btls.get(b.TLS)
		nb.check, nb.probe = health.ResolveCheck(opts.HealthCheck, b.HealthCheck, b.AppProtocol)
		if nb.tls != nil && nb.check.Type != health.CheckTCP {
			// The active checker speaks cleartext HTTP and gRPC only: to a TLS backend those probes would fail and mark
			// healthy endpoints down. Until it can originate TLS, such endpoints are probed with a TCP connect, and
			// handshake or certificate failures reach outlier detection through the requests instead.
			nb.check.Type = health.CheckTCP
		}
		t.backends[b.ID] = nb
		if b.SessionPersistence != nil {
			t.backendSP[b.ID] = b.SessionPersistence
		}
	}
	certs := newCertLoader(opts)
	for i := range cfg.Ports {
		p := &cfg.Ports[i]
		pt, err := buildPort(p, t)
		if err == nil && p.Protocol == spokeconfig.ProtocolHTTPS {
			pt.tls = buildTLS(p, opts, certs)
			pt.linkListeners()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ports[%d] (port %d): %w", i, p.Port, err))
			continue
		}
		t.ports[p.Port] = pt
	}
	t.backendSP = nil
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

func buildPort(p *spokeconfig.Port, t *Table) (*portTable, error) {
	pt := &portTable{port: p.Port, bindAddr: p.BindAddress, proto: p.Protocol, exact: map[string]*vhost{}}
	if p.Protocol != "" && p.Protocol != spokeconfig.ProtocolHTTP && p.Protocol != spokeconfig.ProtocolHTTPS {
		return nil, fmt.Errorf("protocol %q is not supported yet", p.Protocol)
	}
	var errs []error
	https := p.Protocol == spokeconfig.ProtocolHTTPS
	if https {
		pt.pending = map[string]*hostIndex{}
	}
	port := &hostIndex{exact: pt.exact} // the lookup of an HTTP port
	for i := range p.VirtualHosts {
		v := &p.VirtualHosts[i]
		vh := &vhost{hostname: v.Hostname, listener: v.Listener}
		for j := range v.Routes {
			r, err := buildRoute(&v.Routes[j], t)
			if err != nil {
				errs = append(errs, fmt.Errorf("virtualHosts[%d] %q routes[%d] (%s %s/%s rule %d match %d): %w",
					i, v.Hostname, j, v.Routes[j].Source.Kind, v.Routes[j].Source.Namespace, v.Routes[j].Source.Name,
					v.Routes[j].RuleIndex, v.Routes[j].MatchIndex, err))
				continue
			}
			vh.routes = append(vh.routes, r)
		}
		x := port
		if https {
			// A vhost without a listener is shared by every listener; linkListeners resolves the keys once the port's
			// listeners are built.
			key := ""
			if v.Listener != "" {
				key = normaliseListener(v.Listener)
			}
			if x = pt.pending[key]; x == nil {
				x = &hostIndex{exact: map[string]*vhost{}}
				pt.pending[key] = x
			}
		}
		host := strings.ToLower(strings.TrimSuffix(v.Hostname, "."))
		switch {
		case host == "*" || host == "":
			if x.catchAll != nil {
				errs = append(errs, fmt.Errorf("virtualHosts[%d]: duplicate catch-all host", i))
			}
			x.catchAll = vh
		case strings.HasPrefix(host, "*."):
			x.wildcards = append(x.wildcards, wildcardHost{suffix: host[1:], vh: vh})
		case strings.Contains(host, "*"):
			errs = append(errs, fmt.Errorf("virtualHosts[%d]: hostname %q: a wildcard must be the whole first label", i, v.Hostname))
		default:
			if x.exact[host] != nil {
				errs = append(errs, fmt.Errorf("virtualHosts[%d]: duplicate hostname %q", i, v.Hostname))
			}
			x.exact[host] = vh
		}
	}
	pt.wildcards, pt.catchAll = port.wildcards, port.catchAll
	sort.SliceStable(pt.wildcards, func(a, b int) bool { return len(pt.wildcards[a].suffix) > len(pt.wildcards[b].suffix) })
	return pt, errors.Join(errs...)
}

// linkListeners gives each TLS listener of an HTTPS port its virtual hosts: those naming its hostname as their
// listener, then those naming none (a config that does not say; the hub always does), which every listener shares as
// before the field existed, behind its own entries. Virtual hosts of a listener the port does not have are
// unreachable.
func (pt *portTable) linkListeners() {
	pending := pt.pending
	pt.pending = nil
	pt.byListener = map[*tlsListener]*hostIndex{}
	shared := pending[""]
	link := func(l *tlsListener) {
		own := pending[normaliseListener(l.hostname)]
		switch {
		case shared == nil && own == nil:
			return
		case shared == nil:
			pt.byListener[l] = own
			return
		case own == nil:
			pt.byListener[l] = shared
			return
		}
		x := &hostIndex{exact: make(map[string]*vhost, len(own.exact)+len(shared.exact)), catchAll: own.catchAll}
		for h, vh := range shared.exact {
			x.exact[h] = vh
		}
		for h, vh := range own.exact {
			x.exact[h] = vh
		}
		if x.catchAll == nil {
			x.catchAll = shared.catchAll
		}
		x.wildcards = append(x.wildcards, own.wildcards...)
		for _, w := range shared.wildcards {
			dup := false
			for _, o := range own.wildcards {
				dup = dup || o.suffix == w.suffix
			}
			if !dup {
				x.wildcards = append(x.wildcards, w)
			}
		}
		pt.byListener[l] = x
	}
	for _, l := range pt.tls.exact {
		link(l)
	}
	for i := range pt.tls.wildcards {
		link(pt.tls.wildcards[i].l)
	}
	if pt.tls.catchAll != nil {
		link(pt.tls.catchAll)
	}
	for _, x := range pt.byListener {
		sort.SliceStable(x.wildcards, func(a, b int) bool { return len(x.wildcards[a].suffix) > len(x.wildcards[b].suffix) })
	}
}

// fullMatch compiles re so that it must match the whole input, as Envoy and most Gateway API implementations do.
func fullMatch(field, re string) (*regexp.Regexp, error) {
	c, err := regexp.Compile("^(?:" + re + ")$")
	if err != nil {
		return nil, fmt.Errorf("%s: invalid regular expression %q: %w", field, re, err)
	}
	return c, nil
}

func buildRoute(in *spokeconfig.Route, t *Table) (*route, error) {
	r := &route{source: in.Source, ruleIndex: in.RuleIndex, matchIndex: in.MatchIndex, pathType: in.Match.PathType}
	m := &in.Match
	switch m.PathType {
	case "":
	case spokeconfig.PathExact:
		r.path = m.Path
	case spokeconfig.PathPrefix:
		if !strings.HasPrefix(m.Path, "/") {
			return nil, fmt.Errorf("match.path: PathPrefix %q must start with /", m.Path)
		}
		r.path = strings.TrimRight(m.Path, "/")
	case spokeconfig.PathRegularExpression:
		re, err := fullMatch("match.path", m.Path)
		if err != nil {
			return nil, err
		}
		r.pathRE = re
	default:
		return nil, fmt.Errorf("match.pathType: unknown type %q", m.PathType)
	}
	r.method = m.Method
	for i, h := range m.Headers {
		vm, err := buildValueMatcher(fmt.Sprintf("match.headers[%d] %q", i, h.Name), h)
		if err != nil {
			return nil, err
		}
		vm.name = textproto.CanonicalMIMEHeaderKey(h.Name)
		r.headers = append(r.headers, vm)
	}
	for i, q := range m.QueryParams {
		vm, err := buildValueMatcher(fmt.Sprintf("match.queryParams[%d] %q", i, q.Name), q)
		if err != nil {
			return nil, err
		}
		r.query = append(r.query, vm)
	}
	a, err := buildAction(&in.Action, r, t)
	if err != nil {
		return nil, err
	}
	r.action = a
	return r, nil
}

func buildValueMatcher(field string, sm spokeconfig.StringMatch) (valueMatcher, error) {
	vm := valueMatcher{name: sm.Name, value: sm.Value}
	switch sm.Type {
	case "", spokeconfig.MatchExact:
	case spokeconfig.MatchRegularExpression:
		re, err := fullMatch(field, sm.Value)
		if err != nil {
			return vm, err
		}
		vm.re = re
	default:
		return vm, fmt.Errorf("%s: unknown match type %q", field, sm.Type)
	}
	return vm, nil
}

func buildAction(in *spokeconfig.Action, r *route, t *Table) (*action, error) {
	backends := t.backends
	a := &action{
		direct:         in.DirectResponse,
		redirect:       in.Redirect,
		requestTimeout: time.Duration(in.RequestTimeoutMs) * time.Millisecond,
		backendTimeout: time.Duration(in.BackendRequestTimeoutMs) * time.Millisecond,
	}
	if r.pathType == spokeconfig.PathPrefix {
		a.prefix = r.path
	}
	if in.Rewrite != nil {
		a.rewriteHost = in.Rewrite.Hostname
		a.rewritePath = in.Rewrite.Path
	}
	var err error
	if a.reqHeaders, err = newHeaderMod("action.requestHeaders", in.RequestHeaders); err != nil {
		return nil, err
	}
	if a.respHeaders, err = newHeaderMod("action.responseHeaders", in.ResponseHeaders); err != nil {
		return nil, err
	}
	if a.rewriteHost != "" && !httpguts.ValidHostHeader(a.rewriteHost) {
		return nil, fmt.Errorf("action.rewrite.hostname: invalid host %q", a.rewriteHost)
	}
	if err := checkPathRewrite("action.rewrite.path", a.rewritePath, r.pathType); err != nil {
		return nil, err
	}
	if rd := in.Redirect; rd != nil {
		if err := checkPathRewrite("action.redirect.path", rd.Path, r.pathType); err != nil {
			return nil, err
		}
		switch rd.Scheme {
		case "", "http", "https":
		default:
			return nil, fmt.Errorf("action.redirect.scheme: %q is not http or https", rd.Scheme)
		}
		if rd.StatusCode != 0 && (rd.StatusCode < 300 || rd.StatusCode > 399) {
			return nil, fmt.Errorf("action.redirect.statusCode: %d is not a redirect status", rd.StatusCode)
		}
	}
	if d := in.DirectResponse; d != nil && (d.Status < 100 || d.Status > 599) {
		return nil, fmt.Errorf("action.directResponse.status: %d out of range", d.Status)
	}
	if a.direct != nil || a.redirect != nil {
		return a, nil
	}
	weights := make([]int32, len(in.Backends))
	for i, wb := range in.Backends {
		w := &weightedBackend{reason: wb.Reason, weight: max(wb.Weight, 0)}
		if !wb.Invalid {
			b := backends[wb.BackendID]
			if b == nil {
				return nil, fmt.Errorf("action.backends[%d]: unknown backend %q", i, wb.BackendID)
			}
			w.backend = b
		}
		a.backends = append(a.backends, w)
		weights[i] = wb.Weight
	}
	a.sched = newSchedule(weights)
	if rt := in.Retry; rt != nil {
		if rt.Attempts < 0 {
			return nil, fmt.Errorf("action.retry.attempts: %d is negative", rt.Attempts)
		}
		for i, c := range rt.Codes {
			if c < 400 || c > 599 {
				return nil, fmt.Errorf("action.retry.codes[%d]: %d is not a 4xx or 5xx status", i, c)
			}
		}
		a.retry = &retryPolicy{codes: rt.Codes, attempts: rt.Attempts, backoff: time.Duration(rt.BackoffMs) * time.Millisecond}
	}
	sp, field := in.SessionPersistence, "action.sessionPersistence"
	if sp == nil {
		// A backend-level policy (XBackendTrafficPolicy / BackendLBPolicy) applies when the rule has none; with several
		// backends carrying different policies, the first backendRef's wins for the whole rule.
		for i, wb := range a.backends {
			if wb.backend != nil && in.Backends[i].BackendID != "" {
				if bsp := t.backendSP[in.Backends[i].BackendID]; bsp != nil {
					sp, field = bsp, fmt.Sprintf("backends[%q].sessionPersistence", in.Backends[i].BackendID)
					break
				}
			}
		}
	}
	if sp != nil {
		st, err := buildSticky(field, sp, r, a, t.codec)
		if err != nil {
			return nil, err
		}
		a.sticky = st
	}
	return a, nil
}

func checkPathRewrite(field string, p *spokeconfig.PathRewrite, pt spokeconfig.PathMatchType) error {
	if p == nil {
		return nil
	}
	if (p.ReplaceFullPath == nil) == (p.ReplacePrefixMatch == nil) {
		return fmt.Errorf("%s: exactly one of replaceFullPath and replacePrefixMatch must be set", field)
	}
	if p.ReplacePrefixMatch != nil && pt != spokeconfig.PathPrefix {
		return fmt.Errorf("%s: replacePrefixMatch requires a PathPrefix match, not %q", field, pt)
	}
	return nil
}

// request is the view of a request the matchers need, shared by every listener kind.
type request struct {
	host     string // lower-case, without port
	path     string
	method   string
	header   http.Header
	rawQuery string
}

// lookupVhost selects exactly one virtual host: exact, then longest wildcard, then catch-all. On an HTTPS port only
// the virtual hosts of the listener host selects are candidates (the request's connection selected the same one by
// SNI, else it was answered 421 before): the routes of another listener never serve it.
func (p *portTable) lookupVhost(host string) *vhost {
	if p.tls != nil {
		l := p.tls.lookup(host)
		if l == nil {
			return nil
		}
		x := p.byListener[l]
		if x == nil {
			return nil
		}
		return x.lookup(host)
	}
	if vh, ok := p.exact[host]; ok {
		return vh
	}
	for i := range p.wildcards {
		w := &p.wildcards[i]
		// The suffix starts with '.', so a match implies at least one more label: "*.a.b" never matches "a.b".
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return w.vh
		}
	}
	return p.catchAll
}

// match returns the first route of vh whose match holds.
func (vh *vhost) match(r *request) *route {
	for _, rt := range vh.routes {
		if rt.matches(r) {
			return rt
		}
	}
	return nil
}

func (rt *route) matches(r *request) bool {
	switch rt.pathType {
	case spokeconfig.PathExact:
		if r.path != rt.path {
			return false
		}
	case spokeconfig.PathPrefix:
		if !prefixMatch(r.path, rt.path) {
			return false
		}
	case spokeconfig.PathRegularExpression:
		if !rt.pathRE.MatchString(r.path) {
			return false
		}
	}
	if rt.method != "" && rt.method != r.method {
		return false
	}
	for i := range rt.headers {
		m := &rt.headers[i]
		v, ok := headerValue(r.header, m.name)
		if !m.matches(v, ok) {
			return false
		}
	}
	for i := range rt.query {
		m := &rt.query[i]
		v, ok := queryValue(r.rawQuery, m.name)
		if !m.matches(v, ok) {
			return false
		}
	}
	return true
}

// prefixMatch is the element-wise PathPrefix test; prefix has no trailing slash ("" is "/").
func prefixMatch(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

func headerValue(h http.Header, canonical string) (string, bool) {
	if vs := h[canonical]; len(vs) > 0 {
		return vs[0], true
	}
	return "", false
}

// queryValue returns the first value of name in a raw query without allocating unless the value is escaped.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			if strings.IndexByte(k, '%') < 0 && strings.IndexByte(k, '+') < 0 {
				continue
			}
			uk, err := url.QueryUnescape(k)
			if err != nil || uk != name {
				continue
			}
		}
		if strings.IndexByte(v, '%') >= 0 || strings.IndexByte(v, '+') >= 0 {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				return "", false
			}
			return uv, true
		}
		return v, true
	}
	return "", false
}

// normaliseHost lower-cases host and strips the port and a trailing dot, allocating only when it must lower-case.
func normaliseHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	} else if strings.HasPrefix(host, "[") {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// wellKnownPort reports whether port is the default for scheme (and so is omitted from a Location header).
func wellKnownPort(scheme string, port int) bool {
	return (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
}

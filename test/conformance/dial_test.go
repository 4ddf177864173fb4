package conformance

// The addresses the suite and the spoke see — pod IPs in EndpointSlices, the Gateway address in status.addresses —
// exist only in the API objects: nothing listens there. addrMap is the one place they are turned into loopback
// listeners: the spoke's proxy dials local endpoints (requests and active health checks) through it, and the suite's
// HTTP round tripper, gRPC client and WebSocket dialer dial Gateways through it. It refuses every address it does not
// map, loopback included, and counts the refusals, so no packet of the harness leaves 127.0.0.0/8 and a dial the
// harness did not foresee shows up as a refusal instead of going somewhere.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	xwebsocket "golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	confgrpc "sigs.k8s.io/gateway-api/conformance/utils/grpc"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	"sigs.k8s.io/gateway-api/conformance/utils/tlog"
)

// addrMap maps host:port pairs (pod IP:container port) and whole hosts (a Gateway address: every port p, to
// listenHost:p+offset, where the spoke binds its gateway ports) onto loopback addresses.
type addrMap struct {
	mu    sync.RWMutex
	exact map[string]string
	hosts map[string]hostTarget

	refused      atomic.Int64
	refusedMu    sync.Mutex
	refusedAddrs map[string]int
	d            net.Dialer
}

type hostTarget struct {
	host   string
	offset int
}

func newAddrMap() *addrMap {
	return &addrMap{exact: map[string]string{}, hosts: map[string]hostTarget{}, refusedAddrs: map[string]int{},
		d: net.Dialer{Timeout: 5 * time.Second}}
}

func (m *addrMap) set(from, to string) {
	m.mu.Lock()
	m.exact[from] = to
	m.mu.Unlock()
}

func (m *addrMap) remove(from string) {
	m.mu.Lock()
	delete(m.exact, from)
	m.mu.Unlock()
}

func (m *addrMap) setHost(host, toHost string, offset int) {
	m.mu.Lock()
	m.hosts[host] = hostTarget{host: toHost, offset: offset}
	m.mu.Unlock()
}

// lookup returns where addr is reached, or "" when it is not mapped.
func (m *addrMap) lookup(addr string) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if to, ok := m.exact[addr]; ok {
		return to
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	ht, ok := m.hosts[host]
	if !ok {
		return ""
	}
	p, err := strconv.Atoi(port)
	if err != nil || p+ht.offset > 65535 {
		return ""
	}
	return net.JoinHostPort(ht.host, strconv.Itoa(p+ht.offset))
}

func (m *addrMap) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if to := m.lookup(addr); to != "" {
		return m.d.DialContext(ctx, network, to)
	}
	m.refused.Add(1)
	m.refusedMu.Lock()
	m.refusedAddrs[addr]++
	m.refusedMu.Unlock()
	return nil, fmt.Errorf("conformance dialer refuses %s %s: not a mapped pod or Gateway address", network, addr)
}

// refusals describes the refused dials, for the summary.
func (m *addrMap) refusals() string {
	m.refusedMu.Lock()
	defer m.refusedMu.Unlock()
	var b strings.Builder
	for a, n := range m.refusedAddrs {
		fmt.Fprintf(&b, " %s×%d", a, n)
	}
	return b.String()
}

// roundTripper is the suite's DefaultRoundTripper dialing through the map. HTTP/1.1 and HTTPS requests go through the
// upstream implementation with CustomDialContext; its H2C_PRIOR_KNOWLEDGE and H2 transports ignore that hook (they
// dial with a net.Dialer of their own), so those two protocols are sent here by a copy of its round trip whose
// transports dial through the map.
type roundTripper struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	timeouts config.TimeoutConfig
	debug    bool
}

func (r *roundTripper) CaptureRoundTrip(req roundtripper.Request) (*roundtripper.CapturedRequest, *roundtripper.CapturedResponse, error) {
	switch req.Protocol {
	case roundtripper.H2CPriorKnowledgeProtocol:
		if req.ServerName != "" && len(req.ServerCertificate) > 0 {
			return nil, nil, errors.New("request has configured trusted CA certificates but h2 prior knowledge is not encrypted")
		}
		return r.roundTrip(req, &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return r.dial(ctx, network, addr)
			}})
	case roundtripper.H2Protocol:
		cfg, err := tlsClientConfig(req)
		if err != nil {
			return nil, nil, err
		}
		return r.roundTrip(req, &http2.Transport{TLSClientConfig: cfg,
			DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
				c, err := r.dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				tc := tls.Client(c, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return nil, err
				}
				return tc, nil
			}})
	default:
		d := &roundtripper.DefaultRoundTripper{Debug: r.debug, TimeoutConfig: r.timeouts, CustomDialContext: r.dial}
		return d.CaptureRoundTrip(req)
	}
}

// tlsClientConfig is the upstream createTLSClientConfig (unexported there).
func tlsClientConfig(req roundtripper.Request) (*tls.Config, error) {
	if req.ServerName == "" {
		return nil, errors.New("https request has no server name configured")
	}
	if len(req.ServerCertificate) == 0 {
		return nil, errors.New("https request has no trusted certificates configured")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(req.ServerCertificate) {
		return nil, errors.New("unexpected error adding trusted certificates failed")
	}
	return &tls.Config{ServerName: req.ServerName, RootCAs: roots, GetClientCertificate: req.GetClientCertificateHook}, nil
}

// roundTrip is the upstream DefaultRoundTripper.defaultRoundTrip (unexported there), less its debug dumps.
func (r *roundTripper) roundTrip(request roundtripper.Request, transport http.RoundTripper) (*roundtripper.CapturedRequest, *roundtripper.CapturedResponse, error) {
	client := &http.Client{Transport: transport}
	if request.UnfollowRedirect {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	method := "GET"
	if request.Method != "" {
		method = request.Method
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeouts.RequestTimeout)
	defer cancel()
	var body io.Reader
	if request.Body != "" {
		body = strings.NewReader(request.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, request.URL.String(), body)
	if err != nil {
		return nil, nil, err
	}
	if request.Host != "" {
		req.Host = request.Host
	}
	for name, value := range request.Headers {
		req.Header.Set(name, value[0])
	}
	resp, err := client.Do(req)
	if err != nil {
		if r.debug && request.T != nil {
			tlog.Logf(request.T, "Error sending request: %v", err)
		}
		return nil, nil, err
	}
	defer resp.Body.Close()
	cReq := &roundtripper.CapturedRequest{}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.Header.Get("Content-type") == "application/json" {
		if err := json.Unmarshal(b, cReq); err != nil {
			return nil, nil, fmt.Errorf("unexpected error reading response: %w", err)
		}
	} else {
		cReq.Method = method
	}
	cRes := &roundtripper.CapturedResponse{StatusCode: resp.StatusCode, ContentLength: resp.ContentLength,
		Protocol: resp.Proto, Headers: resp.Header}
	if resp.TLS != nil {
		cRes.PeerCertificates = resp.TLS.PeerCertificates
	}
	if roundtripper.IsRedirect(resp.StatusCode) {
		loc, err := resp.Location()
		if err != nil {
			return nil, nil, err
		}
		cRes.RedirectRequest = &roundtripper.RedirectRequest{Scheme: loc.Scheme, Host: loc.Hostname(), Port: loc.Port(), Path: loc.Path}
	}
	return cReq, cRes, nil
}

// grpcClient is the suite's grpc.DefaultClient dialing through the map. The suite shares one client between tests
// (and between goroutines of GRPCRouteWeight), so it keeps one connection per address and authority instead of
// DefaultClient's single connection, which would keep the first test's address and authority for every later test.
type grpcClient struct {
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

var _ confgrpc.Client = (*grpcClient)(nil)

func (c *grpcClient) conn(address, authority string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := address + "|" + authority
	if cc, ok := c.conns[key]; ok {
		return cc, nil
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return c.dial(ctx, "tcp", a) }),
	}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	} else {
		opts = append(opts, grpc.WithAuthority(address)) // what the dns resolver would give
	}
	// passthrough: the address goes to the dialer as it is, never to a resolver.
	cc, err := grpc.NewClient("passthrough:///"+address, opts...)
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = map[string]*grpc.ClientConn{}
	}
	c.conns[key] = cc
	return cc, nil
}

func (c *grpcClient) reset(address, authority string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := address + "|" + authority
	if cc, ok := c.conns[key]; ok {
		cc.Close()
		delete(c.conns, key)
	}
}

// SendRPC follows grpc.DefaultClient.SendRPC.
func (c *grpcClient) SendRPC(t *testing.T, address string, expected confgrpc.ExpectedResponse, timeout time.Duration) (*confgrpc.Response, error) {
	t.Helper()
	authority := ""
	if expected.RequestMetadata != nil {
		authority = expected.RequestMetadata.Authority
	}
	cc, err := c.conn(address, authority)
	if err != nil {
		return &confgrpc.Response{}, err
	}
	resp := &confgrpc.Response{Headers: &metadata.MD{}, Trailers: &metadata.MD{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if expected.RequestMetadata != nil && len(expected.RequestMetadata.Metadata) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.New(expected.RequestMetadata.Metadata))
	}
	stub := pb.NewGrpcEchoClient(cc)
	tlog.Logf(t, "Sending RPC")
	switch {
	case expected.EchoRequest != nil:
		resp.Response, err = stub.Echo(ctx, expected.EchoRequest, grpc.Header(resp.Headers), grpc.Trailer(resp.Trailers))
	case expected.EchoTwoRequest != nil:
		resp.Response, err = stub.EchoTwo(ctx, expected.EchoTwoRequest, grpc.Header(resp.Headers), grpc.Trailer(resp.Trailers))
	case expected.EchoThreeRequest != nil:
		resp.Response, err = stub.EchoThree(ctx, expected.EchoThreeRequest, grpc.Header(resp.Headers), grpc.Trailer(resp.Trailers))
	default:
		return resp, fmt.Errorf("no request specified")
	}
	if err != nil {
		resp.Code = status.Code(err)
		tlog.Logf(t, "RPC finished with error: %v", err)
		if resp.Code == codes.Internal {
			tlog.Logf(t, "Received code Internal. Resetting connection.")
			c.reset(address, authority)
		}
	} else {
		tlog.Logf(t, "RPC finished with response %v", resp.Response)
		resp.Code = codes.OK
	}
	return resp, nil
}

func (c *grpcClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cc := range c.conns {
		cc.Close()
		delete(c.conns, k)
	}
}

// wsDialer is the suite's websocket.DefaultDialer (x/net/websocket.Dial) over a connection from the map.
type wsDialer struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (d *wsDialer) Dial(rawURL, protocol, origin string) (*xwebsocket.Conn, error) {
	cfg, err := xwebsocket.NewConfig(rawURL, origin)
	if err != nil {
		return nil, err
	}
	if protocol != "" {
		cfg.Protocol = []string{protocol}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("conformance websocket dialer: scheme %q is not supported (only ws)", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &xwebsocket.DialError{Config: cfg, Err: err}
	}
	ws, err := xwebsocket.NewClient(cfg, c)
	if err != nil {
		c.Close()
		return nil, &xwebsocket.DialError{Config: cfg, Err: err}
	}
	return ws, nil
}

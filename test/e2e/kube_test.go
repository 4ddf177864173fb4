package e2e

// TestKubernetes runs fedgate the way a Kubernetes user meets it: three real API servers (envtest) stand for the hub
// cluster and the member clusters east and west. The hub and both spokes run in this process — the hub mirrors the
// hub cluster, each spoke reads its cluster with the Kubernetes source and writes status back — and the canary route
// is applied once, to the hub cluster, with a controller-runtime client.
//
// EndpointSlices refuse loopback addresses, so the pods have addresses in 10.244.0.0/16 and the spokes dial through
// a test-only dialer that maps exactly those pod IP:port pairs onto the loopback echo backends and refuses every other
// non-loopback address: no packet of this test leaves 127.0.0.0/8.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/clientconfig"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/kube"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/server"
	"github.com/fedgate/fedgate/spoke/agent"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/join"
	"github.com/fedgate/fedgate/spoke/kstatus"
	"github.com/fedgate/fedgate/spoke/proxy"
	kubesource "github.com/fedgate/fedgate/spoke/source/kube"
	"github.com/fedgate/fedgate/test/envtest"
)

const (
	podPort     = 8080
	eastPodIP   = "10.244.1.10"
	westPodIP   = "10.244.2.10"
	gatewayPort = 80
)

// podDialer maps pod IP:port pairs onto loopback addresses, lets loopback through (east-west, which the proxy does
// not dial with it anyway) and refuses everything else, counting the refusals.
type podDialer struct {
	pods    map[string]string
	refused atomic.Int64
	d       net.Dialer
}

func (p *podDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if to, ok := p.pods[addr]; ok {
		return p.d.DialContext(ctx, network, to)
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
		return p.d.DialContext(ctx, network, addr)
	}
	p.refused.Add(1)
	return nil, fmt.Errorf("test dialer refuses %s %s: not a mapped pod address", network, addr)
}

// recordingProxy is the real proxy, remembering each config it accepted and signalling the change, so the test can
// wait on what a spoke's table holds instead of polling traffic.
type recordingProxy struct {
	*proxy.Server
	mu      sync.Mutex
	last    *spokeconfig.SpokeConfig
	changed chan struct{} // closed and replaced on every accepted config
}

func newRecordingProxy(s *proxy.Server) *recordingProxy {
	return &recordingProxy{Server: s, changed: make(chan struct{})}
}

func (r *recordingProxy) Apply(cfg *spokeconfig.SpokeConfig) error {
	if err := r.Server.Apply(cfg); err != nil {
		return err
	}
	r.mu.Lock()
	r.last = cfg
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// waitFor blocks until cond holds for the last accepted config or timeout passes, and returns how long it took.
func (r *recordingProxy) waitFor(timeout time.Duration, cond func(*spokeconfig.SpokeConfig) bool) (time.Duration, bool) {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		last, changed := r.last, r.changed
		r.mu.Unlock()
		if last != nil && cond(last) {
			return time.Since(start), true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return time.Since(start), false
		}
	}
}

// endpointsOf counts the endpoints of cluster in a config's backends.
func endpointsOf(cfg *spokeconfig.SpokeConfig, cluster string) int {
	n := 0
	for _, b := range cfg.Backends {
		for _, ep := range b.Endpoints {
			if ep.Cluster == cluster {
				n++
			}
		}
	}
	return n
}

// syncBuffer collects the in-process components' logs; they are shown only when the test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// kubeSpoke is one member cluster's in-process spoke.
type kubeSpoke struct {
	name     string
	cluster  *envtest.Cluster
	hubAddr  string
	credsDir string
	eastWest string
	offset   int32 // gateway port 80 binds 127.0.0.1:80+offset
	dialer   *podDialer
	log      *slog.Logger

	proxy  *recordingProxy
	cancel context.CancelFunc
	done   chan error
}

// start runs a new agent on the spoke's credentials (as a restarted pod would: fresh proxy, source and status writer).
func (s *kubeSpoke) start(t *testing.T) {
	t.Helper()
	creds, err := credentials.Load(s.credsDir)
	if err != nil {
		t.Fatalf("%s: loading credentials: %v", s.name, err)
	}
	log := s.log.With("cluster", s.name)
	s.proxy = newRecordingProxy(proxy.New(proxy.Options{
		Cluster: s.name, ListenHost: "127.0.0.1", PortOffset: s.offset, Logger: log,
		EastWestServerTLS: creds.EastWestServerTLS(), EastWestClientTLSFor: creds.EastWestClientTLS,
		// Requests and active health checks both dial pod IPs through the pod dialer.
		DialContext: s.dialer.DialContext,
	}))
	src, err := kubesource.New(kubesource.Config{REST: s.cluster.Config, Log: log})
	if err != nil {
		t.Fatalf("%s: kubernetes source: %v", s.name, err)
	}
	w, err := kstatus.New(kstatus.Config{REST: s.cluster.Config, Log: log})
	if err != nil {
		t.Fatalf("%s: status writer: %v", s.name, err)
	}
	a, err := agent.New(agent.Config{
		Source: src, StatusWriter: w, Cleanup: w.Clean, Credentials: creds, HubAddress: s.hubAddr,
		EastWestListen: s.eastWest, EastWestAddress: s.eastWest, Proxy: s.proxy,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Log: log,
	})
	if err != nil {
		t.Fatalf("%s: agent: %v", s.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- a.Run(ctx) }()
}

// stop stops the agent and waits until it has released its ports.
func (s *kubeSpoke) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("%s: agent stopped with %v", s.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: agent did not stop within 30s", s.name)
	}
}

func (s *kubeSpoke) gatewayURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/", gatewayPort+int(s.offset))
}

// applyMember creates a member cluster's objects: our GatewayClass, Gateway default/gw (HTTP on port 80), and the
// Service, EndpointSlice (one ready pod at podIP) and ServiceExport of backend svc.
func applyMember(t *testing.T, c *envtest.Cluster, svc, podIP string) {
	t.Helper()
	ctx := context.Background()
	objs := []client.Object{
		&gatewayv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: "fedgate"},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: kubesource.DefaultControllerName},
		},
		&gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"},
			Spec: gatewayv1.GatewaySpec{
				GatewayClassName: "fedgate",
				Listeners: []gatewayv1.Listener{{
					Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: gatewayPort,
					AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromAll)}},
				}},
			},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: svc},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(podPort),
			}}},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "default", Name: svc + "-1",
				Labels: map[string]string{discoveryv1.LabelServiceName: svc},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](podPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{podIP},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			}},
		},
		serviceExport(svc),
	}
	for _, o := range objs {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("cluster %s: creating %T %s: %v", c.Name, o, o.GetName(), err)
		}
	}
}

func serviceExport(name string) *mcsv1a1.ServiceExport {
	return &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
}

// kubeCanary is the canary HTTPRoute applied at the hub cluster: color 90, color2 10.
func kubeCanary() *gatewayv1.HTTPRoute {
	backend := func(name string, weight int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To[gatewayv1.PortNumber](80)},
			Weight:                 ptr.To(weight),
		}}
	}
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "canary"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{backend("color", 90), backend("color2", 10)}}},
		},
	}
}

// routeConditions returns the conditions of the hub cluster's route for its (only) parent written by fedgate.
func routeConditions(ctx context.Context, c client.Client, name string) ([]metav1.Condition, error) {
	var r gatewayv1.HTTPRoute
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &r); err != nil {
		return nil, err
	}
	for _, p := range r.Status.Parents {
		if p.ControllerName == "fedgate.io/gateway-controller" {
			return p.Conditions, nil
		}
	}
	return nil, nil
}

func conditionIs(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) bool {
	c := meta.FindStatusCondition(conds, typ)
	return c != nil && c.Status == status && (reason == "" || c.Reason == reason)
}

func describeConditions(conds []metav1.Condition) string {
	var b strings.Builder
	for _, c := range conds {
		fmt.Fprintf(&b, "\n  %s=%s (%s) %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// reportIDs is the sorted list of object IDs the hub stores for cluster (duplicates stay visible).
func reportIDs(t *testing.T, h *server.Hub, cluster string) []string {
	t.Helper()
	objs, err := h.Store().Report(context.Background(), cluster)
	if err != nil {
		t.Fatalf("reading %s's report: %v", cluster, err)
	}
	ids := make([]string, 0, len(objs))
	for _, o := range objs {
		ids = append(ids, resources.ID(o.Kind, o.Namespace, o.Name))
	}
	sort.Strings(ids)
	return ids
}

// checkSplit asserts a 90/10 east/west split within ±3 points and no errors.
func checkSplit(t *testing.T, what string, counts map[string]int, n int) {
	t.Helper()
	east, west := share(counts, "east", n), share(counts, "west", n)
	t.Logf("%s: %d requests: east %.1f%%, west %.1f%%, errors %d (%v)", what, n, east, west, errorsIn(counts), counts)
	if errorsIn(counts) != 0 {
		t.Errorf("%s: %d failed requests: %v", what, errorsIn(counts), counts)
	}
	if east < 87 || east > 93 || west < 7 || west > 13 {
		t.Errorf("%s: split east %.1f%% / west %.1f%%, want 90/10 ±3 points", what, east, west)
	}
}

func TestKubernetes(t *testing.T) {
	began := time.Now()
	ctx := context.Background()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(logs.String(), "\n")
			if len(lines) > 150 {
				lines = lines[len(lines)-150:]
			}
			t.Logf("---- last lines of the in-process logs ----\n%s", strings.Join(lines, "\n"))
		}
	})

	// controller-runtime logs through its global logger (and prints a stack trace when none is set).
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))

	clusters := envtest.Start(t, "hub", "east", "west")
	hubC, eastC, westC := clusters[0], clusters[1], clusters[2]
	t.Logf("three API servers up in %v", time.Since(began).Round(time.Millisecond))
	if _, err := crenvtest.InstallCRDs(hubC.Config, crenvtest.CRDInstallOptions{
		Paths: []string{filepath.Join(envtest.RepoRoot(), "deploy", "hub-crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("installing the hub CRDs: %v", err)
	}
	hubScheme := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{gatewayv1.Install, hubv1alpha1.AddToScheme} {
		if err := add(hubScheme); err != nil {
			t.Fatal(err)
		}
	}
	hubClient, err := client.New(hubC.Config, client.Options{Scheme: hubScheme})
	if err != nil {
		t.Fatal(err)
	}

	cfg := server.DefaultConfig()
	// A fixed port, so the hub can be restarted where the spokes look for it.
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cfg.DataDir = filepath.Join(t.TempDir(), "hub-data")
	cfg.AdminConfig = filepath.Join(t.TempDir(), "admin-config")
	cfg.HubClusterREST = hubC.Config
	cfg.ShutdownGrace = time.Second
	cfg.Logger = log.With("component", "hub")
	h, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting the hub: %v", err)
	}
	t.Cleanup(h.Close)

	eastEcho, westEcho := startEcho(t, "east", "color"), startEcho(t, "west", "color2")
	dialer := &podDialer{pods: map[string]string{
		net.JoinHostPort(eastPodIP, strconv.Itoa(podPort)): fmt.Sprintf("127.0.0.1:%d", eastEcho.port),
		net.JoinHostPort(westPodIP, strconv.Itoa(podPort)): fmt.Sprintf("127.0.0.1:%d", westEcho.port),
	}}
	applyMember(t, eastC, "color", eastPodIP)
	applyMember(t, westC, "color2", westPodIP)

	// Join: a token bound to each cluster's name, and the CA pinned by hash, exactly as hubctl join does.
	spokes := map[string]*kubeSpoke{}
	for _, m := range []struct {
		name string
		c    *envtest.Cluster
	}{{"east", eastC}, {"west", westC}} {
		tok, _, err := h.Registration().CreateToken(ctx, registration.TokenOptions{TTL: time.Hour, ClusterName: m.name, Description: "envtest " + m.name})
		if err != nil {
			t.Fatalf("token for %s: %v", m.name, err)
		}
		s := &kubeSpoke{
			name: m.name, cluster: m.c, hubAddr: h.AdvertiseAddress(), dialer: dialer, log: log,
			credsDir: filepath.Join(t.TempDir(), m.name+"-credentials"),
			eastWest: fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
			offset:   int32(freePort(t, "127.0.0.1") - gatewayPort),
		}
		if _, err := join.Run(ctx, join.Options{
			Hub: h.AdvertiseAddress(), Token: tok.String(), CAHash: h.CA().ActiveHash(), ClusterName: m.name,
			EastWestAddress: s.eastWest, Labels: map[string]string{"env": "envtest"}, OutDir: s.credsDir,
		}); err != nil {
			t.Fatalf("joining %s: %v", m.name, err)
		}
		s.start(t)
		t.Cleanup(func() { s.stop(t) })
		spokes[m.name] = s
	}
	east, west := spokes["east"], spokes["west"]

	// The canary is applied once, to the hub cluster; the hub mirrors it into every member cluster's projection.
	applied := time.Now()
	if err := hubClient.Create(ctx, kubeCanary()); err != nil {
		t.Fatalf("creating the canary route in the hub cluster: %v", err)
	}
	converged := func(cfg *spokeconfig.SpokeConfig) bool {
		return len(cfg.Ports) > 0 && endpointsOf(cfg, "east") > 0 && endpointsOf(cfg, "west") > 0
	}
	if d, ok := east.proxy.waitFor(30*time.Second, converged); !ok {
		t.Fatalf("east never received a table with both clusters' endpoints (waited %v)", d)
	}
	t.Logf("east serves the canary %v after it was applied to the hub cluster", time.Since(applied).Round(time.Millisecond))

	hc := newClient()
	const n = 1000
	checkSplit(t, "canary through east", split(hc, east.gatewayURL(), "", n, 8), n)

	// Status at the hub: per cluster Accepted and Programmed on the hub cluster's route.
	var conds []metav1.Condition
	if d, ok := eventually(20*time.Second, func() bool {
		conds, err = routeConditions(ctx, hubClient, "canary")
		if err != nil {
			return false
		}
		for _, c := range []string{"east", "west"} {
			for _, what := range []string{"Accepted", "Programmed"} {
				if !conditionIs(conds, kube.ClusterConditionType(c, what), metav1.ConditionTrue, "") {
					return false
				}
			}
		}
		return conditionIs(conds, "Accepted", metav1.ConditionTrue, "") && conditionIs(conds, "ResolvedRefs", metav1.ConditionTrue, "")
	}); !ok {
		t.Errorf("hub route status not Accepted/Programmed in both clusters after %v (err %v):%s", d, err, describeConditions(conds))
	} else {
		t.Logf("hub route status:%s", describeConditions(conds))
	}

	// Status in the member clusters: kstatus writes the Gateways' Accepted and Programmed.
	for _, s := range []*kubeSpoke{east, west} {
		var gw gatewayv1.Gateway
		if d, ok := eventually(20*time.Second, func() bool {
			if err := s.cluster.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "gw"}, &gw); err != nil {
				return false
			}
			return conditionIs(gw.Status.Conditions, string(gatewayv1.GatewayConditionAccepted), metav1.ConditionTrue, "") &&
				conditionIs(gw.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed), metav1.ConditionTrue, "")
		}); !ok {
			t.Errorf("%s: Gateway default/gw not Accepted+Programmed after %v:%s", s.name, d, describeConditions(gw.Status.Conditions))
		}
	}

	// MCS: the hub merges the exports into ServiceImports that every member cluster holds.
	for _, s := range []*kubeSpoke{east, west} {
		if d, ok := eventually(20*time.Second, func() bool {
			for _, name := range []string{"color", "color2"} {
				if err := s.cluster.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &mcsv1a1.ServiceImport{}); err != nil {
					return false
				}
			}
			return true
		}); !ok {
			t.Errorf("%s: ServiceImports default/color and default/color2 not present after %v", s.name, d)
		}
	}

	// ManagedClusters mirror the join state.
	if d, ok := eventually(20*time.Second, func() bool {
		var list hubv1alpha1.ManagedClusterList
		if err := hubClient.List(ctx, &list); err != nil {
			return false
		}
		names := map[string]bool{}
		for _, mc := range list.Items {
			if conditionIs(mc.Status.Conditions, "Joined", metav1.ConditionTrue, "") &&
				conditionIs(mc.Status.Conditions, "Available", metav1.ConditionTrue, "") &&
				mc.Spec.EastWestAddress == spokes[mc.Name].eastWestOrEmpty() {
				names[mc.Name] = true
			}
		}
		return len(list.Items) == 2 && names["east"] && names["west"]
	}); !ok {
		var list hubv1alpha1.ManagedClusterList
		_ = hubClient.List(ctx, &list)
		t.Errorf("ManagedClusters east and west not Joined+Available with their east-west address after %v: %+v", d, list.Items)
	}

	// MCS: deleting west's ServiceExport takes west's endpoints out of east's table; east then never reaches west.
	if err := westC.Client.Delete(ctx, serviceExport("color2")); err != nil {
		t.Fatalf("deleting west's ServiceExport: %v", err)
	}
	d, ok := east.proxy.waitFor(10*time.Second, func(cfg *spokeconfig.SpokeConfig) bool { return endpointsOf(cfg, "west") == 0 })
	if !ok {
		t.Fatalf("west's endpoints still in east's table %v after its ServiceExport was deleted", d)
	}
	t.Logf("west's endpoints left east's table %v after the ServiceExport was deleted", d.Round(time.Millisecond))
	if d > 2*time.Second {
		t.Errorf("west's endpoints left east's table after %v, want within 2s", d)
	}
	if counts := split(hc, east.gatewayURL(), "", 200, 4); counts["west"] != 0 || counts["east"] < 170 {
		t.Errorf("after the export was deleted: %v, want no answer from west and color still served by east", counts)
	} else {
		t.Logf("without west's export: %v", counts)
	}
	if err := westC.Client.Create(ctx, serviceExport("color2")); err != nil {
		t.Fatalf("re-creating west's ServiceExport: %v", err)
	}
	d, ok = east.proxy.waitFor(10*time.Second, func(cfg *spokeconfig.SpokeConfig) bool { return endpointsOf(cfg, "west") > 0 })
	if !ok {
		t.Fatalf("west's endpoints not back in east's table %v after the ServiceExport was re-created", d)
	}
	t.Logf("west's endpoints back in east's table %v after the ServiceExport was re-created", d.Round(time.Millisecond))
	if d > 2*time.Second {
		t.Errorf("west's endpoints returned after %v, want within 2s", d)
	}
	checkSplit(t, "canary after the export came back", split(hc, east.gatewayURL(), "", n, 8), n)

	// A route the compiler rejects: a cross-namespace backendRef that no ReferenceGrant allows.
	cross := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cross"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"cross.example.com"},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{
					Name: "color", Namespace: ptr.To[gatewayv1.Namespace]("elsewhere"), Port: ptr.To[gatewayv1.PortNumber](80),
				},
			}}}}},
		},
	}
	if err := hubClient.Create(ctx, cross); err != nil {
		t.Fatalf("creating route cross in the hub cluster: %v", err)
	}
	if d, ok := eventually(20*time.Second, func() bool {
		conds, err = routeConditions(ctx, hubClient, "cross")
		return err == nil && conditionIs(conds, string(gatewayv1.RouteConditionResolvedRefs), metav1.ConditionFalse, string(gatewayv1.RouteReasonRefNotPermitted))
	}); !ok {
		t.Errorf("route cross: no ResolvedRefs=False/RefNotPermitted in its hub status after %v (err %v):%s", d, err, describeConditions(conds))
	} else {
		t.Logf("route cross at the hub:%s", describeConditions(conds))
	}
	checkSplit(t, "canary beside the rejected route", split(hc, east.gatewayURL(), "", n, 8), n)

	// Spoke restart: east's agent stops; while it is away one Service goes and another comes; a new agent on the
	// same credentials must leave the hub holding exactly the cluster's objects — none twice, none stale, none lost.
	mkService := func(name string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(podPort)}}},
		}
	}
	if err := eastC.Client.Create(ctx, mkService("before-restart")); err != nil {
		t.Fatal(err)
	}
	oldID := resources.ID(resources.KindService, "default", "before-restart")
	newID := resources.ID(resources.KindService, "default", "during-restart")
	if d, ok := eventually(10*time.Second, func() bool { return slices.Contains(reportIDs(t, h, "east"), oldID) }); !ok {
		t.Fatalf("the hub never stored %s from east (waited %v)", oldID, d)
	}
	before := reportIDs(t, h, "east")
	east.stop(t)
	if err := eastC.Client.Delete(ctx, mkService("before-restart")); err != nil {
		t.Fatal(err)
	}
	if err := eastC.Client.Create(ctx, mkService("during-restart")); err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(before), func(id string) bool { return id == oldID })
	want = append(want, newID)
	sort.Strings(want)
	east.start(t)
	var after []string
	if d, ok := eventually(20*time.Second, func() bool {
		after = reportIDs(t, h, "east")
		return slices.Equal(after, want)
	}); !ok {
		t.Errorf("after east's restart the hub stores %d objects, want %d (waited %v)\n got: %v\nwant: %v", len(after), len(want), d, after, want)
	} else {
		t.Logf("east re-synced %d objects %v after its restart (the one deleted while away is gone, the one created is there)", len(after), d.Round(time.Millisecond))
	}
	if _, ok := east.proxy.waitFor(20*time.Second, converged); !ok {
		t.Fatal("the restarted east never received a table with both clusters' endpoints")
	}
	checkSplit(t, "canary through the restarted east", split(hc, east.gatewayURL(), "", n, 8), n)
	// The hub's copy stays exact once the new agent has settled (a late duplicate report would show here).
	if got := reportIDs(t, h, "east"); !slices.Equal(got, want) {
		t.Errorf("east's stored report changed after traffic resumed:\n got: %v\nwant: %v", got, want)
	}

	// Hub restart: the hub stops; traffic keeps flowing on the spokes' last graphs; west changes while the hub is away;
	// a hub started again on the same data dir and address must end with exactly each cluster's objects.
	westBefore := reportIDs(t, h, "west")
	eastBefore := reportIDs(t, h, "east")
	h.Close()
	checkSplit(t, "canary with the hub down", split(hc, east.gatewayURL(), "", n, 8), n)
	if err := westC.Client.Create(ctx, mkService("while-hub-down")); err != nil {
		t.Fatal(err)
	}
	westWant := append(slices.Clone(westBefore), resources.ID(resources.KindService, "default", "while-hub-down"))
	sort.Strings(westWant)
	restarted := time.Now()
	h, err = server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restarting the hub: %v", err)
	}
	t.Cleanup(h.Close)
	var westAfter, eastAfter []string
	if d, ok := eventually(30*time.Second, func() bool {
		westAfter, eastAfter = reportIDs(t, h, "west"), reportIDs(t, h, "east")
		return slices.Equal(westAfter, westWant) && slices.Equal(eastAfter, eastBefore)
	}); !ok {
		t.Errorf("after the hub restart (waited %v):\nwest got  %v\nwest want %v\neast got  %v\neast want %v", d, westAfter, westWant, eastAfter, eastBefore)
	} else {
		t.Logf("hub restarted: both clusters re-synced exactly (%d and %d objects) %v after the new hub started", len(eastAfter), len(westAfter), time.Since(restarted).Round(time.Millisecond))
	}
	// The restarted hub serves new changes: the canary's weights move to 50/50 and east follows.
	var live gatewayv1.HTTPRoute
	if err := hubClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "canary"}, &live); err != nil {
		t.Fatal(err)
	}
	for i := range live.Spec.Rules[0].BackendRefs {
		live.Spec.Rules[0].BackendRefs[i].Weight = ptr.To[int32](50)
	}
	if err := hubClient.Update(ctx, &live); err != nil {
		t.Fatal(err)
	}
	if d, ok := eventually(20*time.Second, func() bool {
		s := split(hc, east.gatewayURL(), "", 200, 8)
		return s["east"] >= 80 && s["east"] <= 120 && errorsIn(s) == 0
	}); !ok {
		t.Errorf("after the hub restart east never followed 50/50 (waited %v): %v", d, split(hc, east.gatewayURL(), "", 200, 8))
	}

	// Removal: west's agent takes back everything fedgate wrote in west and exits saying so.
	removeCluster(t, cfg.AdminConfig, "west")
	select {
	case err := <-west.done:
		west.cancel = nil
		if err == nil || !strings.Contains(err.Error(), `cluster "west" was removed at the hub`) || !strings.Contains(err.Error(), "cleaned up") {
			t.Errorf("west's agent ended with %v, want it to say the cluster was removed and cleaned up", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("west's agent still runs 30s after the cluster was removed")
	}
	checkNothingOfFedgate(t, ctx, westC)

	if r := dialer.refused.Load(); r != 0 {
		t.Errorf("the spokes tried %d dials to unmapped non-loopback addresses", r)
	}
	t.Logf("whole test: %v", time.Since(began).Round(time.Millisecond))
}

// removeCluster removes cluster at the hub as hubctl cluster remove does, with the admin credential in adminConfig.
func removeCluster(t *testing.T, adminConfig, cluster string) {
	t.Helper()
	cc, err := clientconfig.Load(adminConfig)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := cc.TLS()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(cc.Hub, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fedgatepb.NewAdminClient(conn).RemoveCluster(context.Background(), &fedgatepb.RemoveClusterRequest{Name: cluster}); err != nil {
		t.Fatalf("removing %s: %v", cluster, err)
	}
}

// checkNothingOfFedgate fails unless the member cluster c holds nothing fedgate wrote: no fedgate-managed
// ServiceImport, no route parent status of fedgate's, no Valid/Conflict on ServiceExports, and fedgate's Gateways
// back to the API server's "Waiting for controller".
func checkNothingOfFedgate(t *testing.T, ctx context.Context, c *envtest.Cluster) {
	t.Helper()
	var imports mcsv1a1.ServiceImportList
	if err := c.Client.List(ctx, &imports, client.MatchingLabels{kstatus.ManagedByLabel: kstatus.ManagedByValue}); err != nil || len(imports.Items) != 0 {
		t.Errorf("%s keeps %d fedgate ServiceImports after its removal (%v)", c.Name, len(imports.Items), err)
	}
	var routes gatewayv1.HTTPRouteList
	if err := c.Client.List(ctx, &routes); err != nil {
		t.Fatal(err)
	}
	for _, r := range routes.Items {
		for _, p := range r.Status.Parents {
			if p.ControllerName == kstatus.DefaultControllerName {
				t.Errorf("%s: HTTPRoute %s keeps fedgate's parent status %+v", c.Name, r.Name, p)
			}
		}
	}
	var exports mcsv1a1.ServiceExportList
	if err := c.Client.List(ctx, &exports); err != nil {
		t.Fatal(err)
	}
	for _, e := range exports.Items {
		for _, typ := range []string{"Valid", "Conflict"} {
			if meta.FindStatusCondition(e.Status.Conditions, typ) != nil {
				t.Errorf("%s: ServiceExport %s keeps fedgate's %s condition", c.Name, e.Name, typ)
			}
		}
	}
	var classes gatewayv1.GatewayClassList
	if err := c.Client.List(ctx, &classes); err != nil {
		t.Fatal(err)
	}
	for _, gc := range classes.Items {
		if a := meta.FindStatusCondition(gc.Status.Conditions, "Accepted"); gc.Spec.ControllerName == kstatus.DefaultControllerName &&
			(a == nil || a.Status != metav1.ConditionUnknown) {
			t.Errorf("%s: GatewayClass %s keeps fedgate's status: %+v", c.Name, gc.Name, gc.Status.Conditions)
		}
	}
	var gateways gatewayv1.GatewayList
	if err := c.Client.List(ctx, &gateways); err != nil {
		t.Fatal(err)
	}
	for _, g := range gateways.Items {
		if p := meta.FindStatusCondition(g.Status.Conditions, "Programmed"); p == nil || p.Status != metav1.ConditionUnknown || len(g.Status.Listeners) > 0 {
			t.Errorf("%s: Gateway %s keeps fedgate's status: %+v, listeners %+v", c.Name, g.Name, g.Status.Conditions, g.Status.Listeners)
		}
	}
}

func (s *kubeSpoke) eastWestOrEmpty() string {
	if s == nil {
		return ""
	}
	return s.eastWest
}

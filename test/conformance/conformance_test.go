// Package conformance runs the upstream Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance) against
// fedgate with the hub in the loop: one member cluster (a real kube-apiserver and etcd from test/envtest, with
// kube-controller-manager's deployment, replicaset, endpointslice, namespace and garbage-collector controllers), a
// stand-in kubelet running the suite's echo-basic backends as local processes (kubelet_test.go), a hub in this
// process, and that cluster's spoke in this process — reading the cluster with the Kubernetes source, reporting to the
// hub, serving the hub's compiled config with its proxy and writing the hub's statuses back with kstatus. Nothing is
// dialed that addrMap (dial_test.go) did not map: pod IPs and the Gateway address exist only in API objects.
//
// Mode "default": the suite against one member cluster, profiles GATEWAY-HTTP and GATEWAY-GRPC, supported features as
// the GatewayClass declares them (status.supportedFeatures, written by kstatus) unless
// FEDGATE_CONFORMANCE_ALL_FEATURES=1. The ConformanceReport goes to FEDGATE_CONFORMANCE_OUT (default: the test's temp
// dir), with a summary (passed/failed/skipped per profile, every test's outcome, and — when the suite's setup cannot
// get its base Gateways Accepted and Programmed — which Gateway and condition block it and why, from the hub's
// compiled statuses). When setup blocks, the tests are still run against what exists, so each one's outcome is known.
//
// `make conformance` (hack/conformance.sh) builds echo-basic and runs this.
package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/apis/v1alpha2"
	"sigs.k8s.io/gateway-api/apis/v1alpha3"
	xv1alpha1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	gwconformance "sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/server"
	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/internal/version"
	"github.com/fedgate/fedgate/spoke/agent"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/join"
	"github.com/fedgate/fedgate/spoke/kstatus"
	"github.com/fedgate/fedgate/spoke/proxy"
	kubesource "github.com/fedgate/fedgate/spoke/source/kube"
	"github.com/fedgate/fedgate/test/envtest"
)

const (
	gatewayClassName = "gateway-conformance" // the suite's default (flags.DefaultGatewayClassName)
	clusterName      = "member"
	// gatewayHost is the address the spoke reports in every Gateway's status.addresses (--gateway-address). It is a
	// loopback address nothing listens on at the Gateway's ports: the suite's clients reach it only through addrMap
	// (port p → the spoke's listener at gatewayHost:p+offset), and a dial that bypassed the hooks would find nothing
	// rather than leave the machine.
	gatewayHost = "127.0.77.1"
)

// skipTests are the tests skipped by name, each for a reason written here. None today: a test fedgate fails is
// reported failed, not skipped.
var skipTests = map[string]string{}

// baseNamespaces are the namespaces whose Gateways and Pods the suite's setup waits for (NamespacesMustBeReady).
var baseNamespaces = []string{"gateway-conformance-infra", "gateway-conformance-app-backend", "gateway-conformance-web-backend"}

// timeouts is the suite's TimeoutConfig, set explicitly: its defaults, except the waits that only a broken setup
// reaches (everything here converges within seconds on one machine), shortened so a run that cannot pass ends.
func timeouts() config.TimeoutConfig {
	tc := config.DefaultTimeoutConfig()
	tc.GatewayMustHaveAddress = 60 * time.Second
	tc.GatewayMustHaveCondition = 60 * time.Second
	tc.GWCMustBeAccepted = 60 * time.Second
	tc.ListenerSetMustHaveCondition = 60 * time.Second
	tc.NamespacesMustBeReady = 90 * time.Second
	return tc
}

func TestConformance(t *testing.T) {
	// Deliberately skipped unless asked for, for now: the full suite takes many minutes, and while fedgate does not
	// get past the suite's setup (issue 11) it would only slow `make test` down. `make conformance` sets
	// FEDGATE_CONFORMANCE=1. This skip is temporary: once the suite passes, make test runs it too.
	if os.Getenv("FEDGATE_CONFORMANCE") != "1" {
		t.Skip("the Gateway API conformance suite runs with FEDGATE_CONFORMANCE=1 (make conformance)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := os.Getenv("FEDGATE_CONFORMANCE_OUT")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(out, "fedgate.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	logs := &lockedWriter{w: logFile}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	echoBin := echoBasic(t)

	began := time.Now()
	cl := envtest.StartWithOptions(t, envtest.Options{
		Collectors:  true,
		Controllers: []string{"deployment-controller", "replicaset-controller", "endpointslice-controller"},
	}, clusterName)[0]
	t.Logf("API server and kube-controller-manager up in %v", time.Since(began).Round(time.Millisecond))
	cs, err := kubernetes.NewForConfig(cl.Config)
	if err != nil {
		t.Fatal(err)
	}

	addrs := newAddrMap()
	kl := newKubelet(cs, echoBin, filepath.Join(out, "pods"), addrs, func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...), "component", "kubelet") })
	klCtx, klStop := context.WithCancel(ctx)
	klDone := make(chan error, 1)
	go func() { klDone <- kl.run(klCtx) }()
	t.Cleanup(func() { klStop(); <-klDone })

	if err := cl.Client.Create(ctx, &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: gatewayClassName},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: kubesource.DefaultControllerName},
	}); err != nil {
		t.Fatalf("creating GatewayClass %s: %v", gatewayClassName, err)
	}

	// The hub, in this process.
	cfg := server.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(t.TempDir(), "hub-data")
	cfg.AdminConfig = filepath.Join(t.TempDir(), "admin-config")
	cfg.ShutdownGrace = time.Second
	cfg.Logger = log.With("component", "hub")
	h, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting the hub: %v", err)
	}
	t.Cleanup(h.Close)

	// The member cluster's spoke, joined with a token as hubctl join does.
	tok, _, err := h.Registration().CreateToken(ctx, registration.TokenOptions{TTL: time.Hour, ClusterName: clusterName, Description: "conformance"})
	if err != nil {
		t.Fatal(err)
	}
	credsDir := filepath.Join(t.TempDir(), "credentials")
	eastWest := fmt.Sprintf("127.0.0.1:%d", mustFreePort(t))
	if _, err := join.Run(ctx, join.Options{Hub: h.AdvertiseAddress(), Token: tok.String(), CAHash: h.CA().ActiveHash(),
		ClusterName: clusterName, EastWestAddress: eastWest, OutDir: credsDir}); err != nil {
		t.Fatalf("joining: %v", err)
	}
	offset := portOffset(t)
	addrs.setHost(gatewayHost, gatewayHost, offset)
	t.Logf("gateway address %s: port p is served at %s:p+%d", gatewayHost, gatewayHost, offset)
	stopSpoke := startSpoke(t, cl, h.AdvertiseAddress(), credsDir, eastWest, int32(offset), addrs, log)
	t.Cleanup(stopSpoke)

	// The suite.
	scheme := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, v1alpha3.Install, v1alpha2.Install,
		xv1alpha1.Install, gatewayv1.Install, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	clientOpts := client.Options{Scheme: scheme}
	c, err := client.New(cl.Config, clientOpts)
	if err != nil {
		t.Fatal(err)
	}
	tc := timeouts()
	grpcC := &grpcClient{dial: addrs.DialContext}
	t.Cleanup(grpcC.Close)
	var skips []string
	for name := range skipTests {
		skips = append(skips, name)
	}
	reportPath := filepath.Join(out, "report-default.yaml")
	results := &results{}
	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName: gatewayClassName,
			Debug:            os.Getenv("FEDGATE_CONFORMANCE_DEBUG") == "1",
			ReportOutputPath: reportPath,
			// Base resources stay (the API server goes away with the test); each test's own are cleaned up, so
			// tests do not see each other's.
			CleanupBaseResources:       false,
			CleanupTestResources:       true,
			EnableAllSupportedFeatures: os.Getenv("FEDGATE_CONFORMANCE_ALL_FEATURES") == "1",
			TimeoutConfig:              tc,
			SkipTests:                  skips,
			RunTest:                    os.Getenv("FEDGATE_CONFORMANCE_RUN"),
			Mode:                       "default",
			Implementation: confv1.Implementation{
				Organization: "fedgate", Project: "fedgate", URL: "https://github.com/fedgate/fedgate",
				Version: version.Version(), Contact: []string{"https://github.com/fedgate/fedgate/issues"},
			},
			ConformanceProfiles: []suite.ConformanceProfileName{suite.GatewayHTTPConformanceProfileName, suite.GatewayGRPCConformanceProfileName},
		},
		Client:          c,
		ClientOptions:   clientOpts,
		Clientset:       cs,
		RestConfig:      cl.Config,
		RoundTripper:    &roundTripper{dial: addrs.DialContext, timeouts: tc},
		GRPCClient:      grpcC,
		WebSocketDialer: &wsDialer{dial: addrs.DialContext},
		ManifestFS:      []fs.FS{&gwconformance.Manifests},
		Hook:            results.hook,
	}
	// The suite reads the supported features from the GatewayClass's status (unless all are enabled): wait until
	// kstatus has written it, with the hub's Accepted condition.
	waitStart := time.Now()
	for {
		var gc gatewayv1.GatewayClass
		err := c.Get(ctx, client.ObjectKey{Name: gatewayClassName}, &gc)
		if err == nil && len(gc.Status.SupportedFeatures) > 0 && meta.IsStatusConditionTrue(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted)) {
			t.Logf("GatewayClass %s accepted after %v; supported features: %v", gatewayClassName, time.Since(waitStart).Round(time.Millisecond), gc.Status.SupportedFeatures)
			break
		}
		if time.Since(waitStart) > tc.GWCMustBeAccepted {
			t.Fatalf("GatewayClass %s not accepted with supported features within %v (err %v, status %+v)", gatewayClassName, tc.GWCMustBeAccepted, err, gc.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	diagnostic := os.Getenv("FEDGATE_CONFORMANCE_DIAGNOSTIC") == "isolate"
	if diagnostic {
		base, err := isolatedBaseManifests()
		if err != nil {
			t.Fatal(err)
		}
		opts.BaseManifests = "fedgate-diagnostic/base.yaml"
		opts.ManifestFS = []fs.FS{fstest.MapFS{opts.BaseManifests: &fstest.MapFile{Data: base}}, &gwconformance.Manifests}
		opts.ReportOutputPath = filepath.Join(out, "report-diagnostic-isolate.yaml")
		reportPath = opts.ReportOutputPath
		t.Logf("DIAGNOSTIC run (not a conformance result): base Gateways all-namespaces and backend-namespaces moved to ports 81 and 82, same-namespace-with-https-listener excluded from the readiness check")
	}
	cSuite, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatalf("conformance suite: %v", err)
	}

	// Setup runs as a subtest of its own, so that when it cannot get the base Gateways ready the blocking Gateways
	// are named and the tests still run against what exists.
	setupOK := t.Run("Setup", func(t *testing.T) { cSuite.Setup(t, tests.ConformanceTests) })
	var setupNote string
	if !setupOK {
		setupNote = diagnoseSetup(ctx, t, c, h.Store())
	}
	// The report can only be made once every test has ended: parallel tests run after this function returns, and the
	// suite marks its run finished in a cleanup of t. Cleanups run last-registered first, so this one, registered
	// before Run registers its own, runs after it — and before the spoke, hub and API server stop.
	runStart := time.Now()
	t.Cleanup(func() {
		t.Logf("the suite ran in %v", time.Since(runStart).Round(time.Second))
		report, err := cSuite.Report()
		if err != nil {
			t.Errorf("conformance report: %v", err)
			return
		}
		raw, err := yaml.Marshal(report)
		if err != nil {
			t.Error(err)
			return
		}
		if err := os.WriteFile(reportPath, raw, 0o644); err != nil {
			t.Error(err)
		}
		summary := summarize(report, results, setupOK, setupNote, addrs)
		if diagnostic {
			summary = "DIAGNOSTIC RUN, NOT A CONFORMANCE RESULT: " + diagnosticNote + "\n" + summary
		}
		summary += fmt.Sprintf("report: %s\nlogs: %s\n", reportPath, filepath.Join(out, "fedgate.log"))
		if err := os.WriteFile(filepath.Join(out, "summary.txt"), []byte(summary), 0o644); err != nil {
			t.Error(err)
		}
		t.Logf("\n%s", summary)
	})
	if err := cSuite.Run(t, tests.ConformanceTests); err != nil {
		t.Errorf("running the suite: %v", err)
	}
}

const diagnosticNote = "the suite's base Gateways all-namespaces and backend-namespaces listen on ports 81 and 82 " +
	"instead of 80 (fedgate judges port conflicts across all Gateways of a cluster, so three HTTP Gateways on port 80 " +
	"conflict) and same-namespace-with-https-listener (HTTPS, unsupported) is excluded from the setup's readiness " +
	"check, so that the tests behind the setup run on Gateways fedgate can program"

// isolatedBaseManifests is the suite's base manifests edited for FEDGATE_CONFORMANCE_DIAGNOSTIC=isolate (see
// diagnosticNote): a way to learn what the tests behind the setup say before fedgate isolates Gateways.
func isolatedBaseManifests() ([]byte, error) {
	raw, err := fs.ReadFile(&gwconformance.Manifests, "base/manifests.yaml")
	if err != nil {
		return nil, err
	}
	docs := strings.Split(string(raw), "\n---\n")
	edited := 0
	for i, d := range docs {
		if !strings.Contains(d, "\nkind: Gateway\n") {
			continue
		}
		switch {
		case strings.Contains(d, "\n  name: all-namespaces\n"):
			docs[i] = strings.Replace(d, "port: 80\n", "port: 81\n", 1)
		case strings.Contains(d, "\n  name: backend-namespaces\n"):
			docs[i] = strings.Replace(d, "port: 80\n", "port: 82\n", 1)
		case strings.Contains(d, "\n  name: same-namespace-with-https-listener\n"):
			docs[i] = strings.Replace(d, "\n  namespace: gateway-conformance-infra\n",
				"\n  namespace: gateway-conformance-infra\n  annotations:\n    gateway-api/skip-this-for-readiness: \"true\"\n", 1)
		default:
			continue
		}
		if docs[i] == d {
			return nil, fmt.Errorf("diagnostic: could not edit the base Gateway document:\n%s", d)
		}
		edited++
	}
	if edited != 3 {
		return nil, fmt.Errorf("diagnostic: edited %d base Gateways, want 3 (the suite's base manifests changed)", edited)
	}
	return []byte(strings.Join(docs, "\n---\n")), nil
}

// startSpoke runs the member cluster's agent in this process: the Kubernetes source, the proxy dialing local
// endpoints through addrs, kstatus writing the hub's statuses back with gatewayHost as the Gateway address.
func startSpoke(t *testing.T, cl *envtest.Cluster, hub, credsDir, eastWest string, offset int32, addrs *addrMap, log *slog.Logger) func() {
	t.Helper()
	creds, err := credentials.Load(credsDir)
	if err != nil {
		t.Fatal(err)
	}
	log = log.With("cluster", clusterName)
	px := proxy.New(proxy.Options{
		Cluster: clusterName, ListenHost: gatewayHost, PortOffset: offset, Logger: log,
		EastWestServerTLS: creds.EastWestServerTLS(), EastWestClientTLSFor: creds.EastWestClientTLS,
		DialContext: addrs.DialContext, // requests and active health checks
	})
	src, err := kubesource.New(kubesource.Config{REST: cl.Config, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kstatus.New(kstatus.Config{REST: cl.Config, GatewayAddresses: []string{gatewayHost}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Source: src, StatusWriter: w, Cleanup: w.Clean, Credentials: creds, HubAddress: hub,
		EastWestListen: eastWest, EastWestAddress: eastWest, Proxy: px, GatewayAddresses: []string{gatewayHost},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Logf("spoke stopped with %v", err)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("spoke did not stop within 40s")
		}
	}
}

// diagnoseSetup names each base Gateway that is not Accepted and Programmed, with the hub's compiled status for it
// (conditions, and every listener condition that is not True), and the base Pods that are not Ready.
func diagnoseSetup(ctx context.Context, t *testing.T, c client.Client, st *store.Store) string {
	var b strings.Builder
	b.WriteString("setup blocked (NamespacesMustBeReady):\n")
	compiled := map[string]compiler.ObjectStatus{}
	if all, err := st.Statuses(ctx, 0); err != nil {
		fmt.Fprintf(&b, "  reading the hub's compiled statuses: %v\n", err)
	} else {
		for key, v := range all {
			var s compiler.ObjectStatus
			if json.Unmarshal(v, &s) == nil {
				compiled[key] = s
			}
		}
	}
	for _, ns := range baseNamespaces {
		var gws gatewayv1.GatewayList
		if err := c.List(ctx, &gws, client.InNamespace(ns)); err != nil {
			fmt.Fprintf(&b, "  listing Gateways in %s: %v\n", ns, err)
			continue
		}
		for _, gw := range gws.Items {
			acc := meta.FindStatusCondition(gw.Status.Conditions, string(gatewayv1.GatewayConditionAccepted))
			prog := meta.FindStatusCondition(gw.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed))
			if acc != nil && acc.Status == metav1.ConditionTrue && prog != nil && prog.Status == metav1.ConditionTrue {
				fmt.Fprintf(&b, "  Gateway %s/%s: Accepted and Programmed\n", ns, gw.Name)
				continue
			}
			fmt.Fprintf(&b, "  Gateway %s/%s BLOCKS: %s, %s\n", ns, gw.Name, condString("Accepted", acc), condString("Programmed", prog))
			key := store.StatusKey(clusterName, "Gateway", ns, gw.Name)
			s, ok := compiled[key]
			if !ok {
				fmt.Fprintf(&b, "    the hub holds no compiled status for it (%s)\n", key)
			} else {
				for _, cd := range s.Conditions {
					fmt.Fprintf(&b, "    hub: %s=%s %s: %s\n", cd.Type, cd.Status, cd.Reason, cd.Message)
				}
				for _, l := range s.Listeners {
					for _, cd := range l.Conditions {
						if cd.Status != metav1.ConditionTrue || cd.Type == "Conflicted" {
							if cd.Type == "Conflicted" && cd.Status == metav1.ConditionFalse {
								continue
							}
							fmt.Fprintf(&b, "    hub: listener %s: %s=%s %s: %s\n", l.Name, cd.Type, cd.Status, cd.Reason, cd.Message)
						}
					}
				}
			}
		}
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(ns)); err == nil {
			for _, p := range pods.Items {
				ready := false
				for _, cd := range p.Status.Conditions {
					if cd.Type == "Ready" && cd.Status == "True" {
						ready = true
					}
				}
				if !ready {
					fmt.Fprintf(&b, "  Pod %s/%s is not Ready (phase %q)\n", ns, p.Name, p.Status.Phase)
				}
			}
		}
	}
	t.Logf("\n%s", b.String())
	return b.String()
}

func condString(typ string, c *metav1.Condition) string {
	if c == nil {
		return typ + " missing"
	}
	return fmt.Sprintf("%s=%s (%s: %s)", typ, c.Status, c.Reason, c.Message)
}

// results records every test's outcome from the suite's Hook, in the order they ended.
type results struct {
	mu   sync.Mutex
	list []testOutcome
}

type testOutcome struct {
	name, outcome string
	took          time.Duration
}

func (r *results) hook(t *testing.T, test suite.ConformanceTest, _ *suite.ConformanceTestSuite) {
	o := "PASS"
	switch {
	case t.Failed():
		o = "FAIL"
	case t.Skipped():
		o = "SKIP"
	}
	r.mu.Lock()
	r.list = append(r.list, testOutcome{name: test.ShortName, outcome: o})
	r.mu.Unlock()
}

// summarize prints passed/failed/skipped per profile (core and extended) from the report, then every test run.
func summarize(rep *confv1.ConformanceReport, res *results, setupOK bool, setupNote string, addrs *addrMap) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Gateway API conformance %s (%s channel), mode %s, fedgate %s\n", rep.GatewayAPIVersion, rep.GatewayAPIChannel, rep.Mode, rep.Implementation.Version)
	if !setupOK {
		b.WriteString(setupNote)
		b.WriteString("(the tests below ran although setup did not complete)\n")
	}
	for _, p := range rep.ProfileReports {
		fmt.Fprintf(&b, "%s core: %d passed/%d failed/%d skipped (%s)\n", p.Name, p.Core.Passed, p.Core.Failed, p.Core.Skipped, p.Core.Result)
		if p.Extended != nil {
			fmt.Fprintf(&b, "%s extended: %d passed/%d failed/%d skipped (%s); supported features %v; unsupported %d\n", p.Name,
				p.Extended.Passed, p.Extended.Failed, p.Extended.Skipped, p.Extended.Result, p.Extended.SupportedFeatures, len(p.Extended.UnsupportedFeatures))
		}
	}
	res.mu.Lock()
	list := append([]testOutcome(nil), res.list...)
	res.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	counts := map[string]int{}
	var lines []string
	for _, o := range list {
		counts[o.outcome]++
		if o.outcome != "SKIP" {
			lines = append(lines, fmt.Sprintf("  %s %s", o.outcome, o.name))
		}
	}
	fmt.Fprintf(&b, "tests run: %d passed, %d failed, %d skipped (skipped: not supported or skipped by name)\n", counts["PASS"], counts["FAIL"], counts["SKIP"])
	b.WriteString(strings.Join(lines, "\n"))
	b.WriteString("\n")
	if n := addrs.refused.Load(); n > 0 {
		fmt.Fprintf(&b, "refused dials (unmapped addresses): %d:%s\n", n, addrs.refusals())
	}
	return b.String()
}

// echoBasic returns the echo-basic binary: FEDGATE_ECHO_BASIC, or bin/conformance/echo-basic, built by
// hack/conformance.sh --build-only when missing.
func echoBasic(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FEDGATE_ECHO_BASIC"); p != "" {
		return p
	}
	root := envtest.RepoRoot()
	p := filepath.Join(root, "bin", "conformance", "echo-basic")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	cmd := exec.Command("bash", filepath.Join(root, "hack", "conformance.sh"), "--build-only")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building echo-basic: %v\n%s", err, b)
	}
	return p
}

// portOffset picks the offset added to every Gateway port: one at which the ports the suite's Gateways use are free
// on gatewayHost.
func portOffset(t *testing.T) int {
	t.Helper()
	for off := 20000; off < 30000; off += 1000 {
		ok := true
		for _, p := range []int{80, 443, 8080, 8443, 8090} {
			l, err := net.Listen("tcp", net.JoinHostPort(gatewayHost, fmt.Sprint(p+off)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return off
		}
	}
	t.Fatal("no free port offset for the gateway ports")
	return 0
}

func mustFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedWriter struct {
	mu sync.Mutex
	w  *os.File
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

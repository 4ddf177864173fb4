package server

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/controller"
	"github.com/fedgate/fedgate/hub/validation"
)

// servesRoute reports whether config holds a route made from the HTTPRoute name.
func servesRoute(config *spokeconfig.SpokeConfig, name string) bool {
	for _, p := range config.Ports {
		for _, vh := range p.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Source.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// A hub stopped cleanly ends its streams in time and resigns its compile leadership, and the same hub restarted on
// the same data dir serves a change to a spoke within a second of starting, the embedded etcd's own start included
// (issue 9: it used to wait out the previous process's 10 s election lease, every shutdown ran into the 5 s
// graceful-stop timeout, and the embedded etcd waited up to 1 s for its own election).
//
// The hub is restarted three times, each time with the spoke's streams open; the spoke reconnects while hubctl
// applies a change. No restart may wait out the old leader's lease. The whole restart, from calling Start until the
// spoke holds the change, must take less than a second at best of the three: under -race it takes 0.15–0.3 s on an
// idle two-core machine and a median of 0.4–0.5 s beside other race-enabled tests and builds, where a stalled fsync
// or a starved CPU stretches one restart in ten past a second.
func TestCleanRestartServesChangesWithinASecond(t *testing.T) {
	dataDir := t.TempDir()
	adminConfig := filepath.Join(t.TempDir(), "fedgate", "config")
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.AdminConfig = adminConfig
	if cfg.ShutdownGrace != 5*time.Second {
		t.Fatalf("the test measures against the default grace of 5s, not %v", cfg.ShutdownGrace)
	}
	// The CEL validators are built once per process: a hub starts building them as it starts, and every hub here
	// shares the test's process, so they are built before the first one starts and kept out of the figures, which
	// are about etcd, leadership and streams.
	if err := validation.Preload(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	hub, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	th := &testHub{Hub: hub, adminConfig: adminConfig, clusters: map[string]*clusterCred{}}
	th.admin = fedgatepb.NewAdminClient(adminConn(t, adminConfig))
	if err := hub.Controller().WaitCompiled(ctx, 1); err != nil {
		t.Fatal(err)
	}
	gwClass := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: fedgate}, spec: {controllerName: fedgate.io/gateway-controller}}`)
	gw := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: gw}, spec: {gatewayClassName: fedgate, listeners: [{name: http, protocol: HTTP, port: 8080}]}}`)
	svc := yamlObject(t, `{apiVersion: v1, kind: Service, metadata: {name: color}, spec: {ports: [{port: 80}]}}`)
	routeTo := func(name string) *fedgatepb.Object {
		return yamlObject(t, fmt.Sprintf(`{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: %s}, spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: color, port: 80}]}]}}`, name))
	}

	// connect opens a spoke's two streams to the hub, as east's agent does: Report, whose hello holds the cluster's
	// presence and which sends reports, and Subscribe, which streams its config from the one it serves (appliedHash)
	// on. Both stay open.
	connect := func(th *testHub, appliedHash string, reports ...*fedgatepb.ReportMessage) *subscriber {
		t.Helper()
		rep, err := th.joinedSync(t, "east").Report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hello := &fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{EastWestAddress: "127.0.0.1:15443"}}}
		for _, m := range append([]*fedgatepb.ReportMessage{hello}, reports...) {
			if err := rep.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		return subscribe(t, th, "east", appliedHash)
	}
	// waitServed waits until sub receives a config of revision rev or later that serves the HTTPRoute name.
	waitServed := func(sub *subscriber, rev int64, name string) *fedgatepb.SpokeConfigUpdate {
		t.Helper()
		for {
			u := sub.next(t)
			config, err := spokeconfig.Decode(u.ConfigJson)
			if err != nil {
				t.Fatalf("config %d: %v", u.Revision, err)
			}
			if u.Revision >= rev && servesRoute(config, name) {
				return u
			}
		}
	}

	sub := connect(th, "", snapshot(1, gwClass, gw, svc))
	applied, err := th.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{routeTo("before-restart")}})
	if err != nil {
		t.Fatal(err)
	}
	appliedHash := waitServed(sub, applied.Revision, "before-restart").Hash
	waitSessions(t, th, "east", 2)
	eastCert := th.clusters["east"].cert

	const restarts = 3
	best := time.Duration(1<<63 - 1)
	for i := range restarts {
		stopStart := time.Now()
		hub.Close()
		stopTook := time.Since(stopStart)
		if stopTook >= 2*time.Second {
			t.Errorf("restart %d: a clean stop took %v: its streams did not end before the %v grace", i+1, stopTook, cfg.ShutdownGrace)
		}

		cfg.Listen = hub.Addr().String() // the spoke and hubctl dial the same address again
		start := time.Now()
		hub, err = Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		started := time.Since(start)
		th = &testHub{Hub: hub, adminConfig: adminConfig, clusters: map[string]*clusterCred{}}
		// The spoke reconnects, over a connection of its own as its agent's retry makes one, with the certificate it
		// joined with.
		th.clusters["east"] = &clusterCred{cert: eastCert, conn: dial(t, cfg.Listen, &tls.Config{
			MinVersion: tls.VersionTLS13, RootCAs: th.hubRoots(t), Certificates: []tls.Certificate{eastCert},
		})}
		name := fmt.Sprintf("after-restart-%d", i+1)
		change := routeTo(name)
		admin := fedgatepb.NewAdminClient(adminConn(t, adminConfig))
		type result struct {
			resp *fedgatepb.ApplyResponse
			err  error
		}
		applyDone := make(chan result, 1)
		// hubctl applies the change while the spoke reconnects: they are separate processes.
		go func() {
			resp, err := admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{change}})
			applyDone <- result{resp, err}
		}()
		sub := connect(th, appliedHash)
		r := <-applyDone
		if r.err != nil {
			t.Fatal(r.err)
		}
		appliedHash = waitServed(sub, r.resp.Revision, name).Hash
		served := time.Since(start)
		best = min(best, served)
		t.Logf("restart %d: clean stop with the spoke's streams open %v; from Start to the spoke holding a change applied after it %v (Start returned after %v)",
			i+1, stopTook.Round(time.Millisecond), served.Round(time.Millisecond), started.Round(time.Millisecond))
		// Waiting out the previous process's leader lease (controller.DefaultSessionTTL) shows here in every restart,
		// however long etcd took to start.
		if d := served - started; d >= controller.DefaultSessionTTL/2 {
			t.Fatalf("restart %d: the spoke got the change %v after the hub began serving (did the old process resign its leadership?)", i+1, d)
		}
	}
	if best >= time.Second {
		t.Errorf("the best of %d restarts served a change to the spoke %v after Start was called, want < 1s", restarts, best)
	}
}

package health

import (
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// grpcBackend is a gRPC server on loopback (cleartext HTTP/2, as a kubernetes.io/h2c backend) with the standard
// health service; a plain GET gets the 415 gRPC answers it with.
func grpcBackend(t *testing.T) (string, *grpchealth.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), hs
}

// verdictAfter runs a Checker on one endpoint with cfg and reports the verdict after rounds intervals.
func verdictAfter(t *testing.T, addr string, cfg CheckConfig, rounds int) bool {
	t.Helper()
	c := NewChecker(slog.New(slog.DiscardHandler), nil, nil)
	defer c.Close()
	ep := NewRegistry().Endpoint("c1", addr)
	c.Sync([]Target{{Endpoint: ep, Config: cfg}})
	time.Sleep(time.Duration(rounds) * cfg.Interval)
	return ep.ActiveHealthy()
}

// A gRPC backend is not marked down by the default check (issue 10): GET / gets gRPC's 415, which took every
// gRPC/h2c backend out after three probes; the default for those is a TCP connect, and the gRPC health protocol is
// there for the asking.
func TestGRPCBackendIsNotMarkedDown(t *testing.T) {
	addr, hs := grpcBackend(t)
	fast := Defaults{Interval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond}

	def, ok := ResolveCheck(fast, nil, "kubernetes.io/h2c")
	if !ok || def.Type != CheckTCP {
		t.Fatalf("default check of an h2c backend: %+v, %v", def, ok)
	}
	if !verdictAfter(t, addr, def, 10) {
		t.Error("the default check marked a healthy gRPC backend down")
	}
	// What the default was: an HTTP GET over h2c, which a healthy gRPC server fails.
	get := def
	get.Type, get.Path = CheckHTTP, "/"
	if verdictAfter(t, addr, get, 10) {
		t.Error("GET / over h2c passed against a gRPC server; the test no longer shows why gRPC backends need another probe")
	}
	// grpc.health.v1: SERVING is healthy, NOT_SERVING down.
	g := def
	g.Type = CheckGRPC
	if !verdictAfter(t, addr, g, 10) {
		t.Error("the gRPC health check marked a SERVING backend down")
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if verdictAfter(t, addr, g, 10) {
		t.Error("the gRPC health check kept a NOT_SERVING backend up")
	}
}

// A TCP check fails on a closed port and passes on an open one.
func TestTCPCheck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	cfg := CheckConfig{Type: CheckTCP, Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 2}
	if !verdictAfter(t, l.Addr().String(), cfg, 6) {
		t.Error("an open port failed the TCP check")
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	if verdictAfter(t, addr, cfg, 6) {
		t.Error("a closed port passed the TCP check")
	}
}

// An endpoint that stops being probed while down is not left down forever.
func TestUnprobedEndpointIsNoLongerDown(t *testing.T) {
	c := NewChecker(slog.New(slog.DiscardHandler), nil, nil)
	defer c.Close()
	ep := NewRegistry().Endpoint("c1", "127.0.0.1:1")
	ep.SetActiveHealthy(false)
	c.Sync([]Target{{Endpoint: ep, Config: CheckConfig{Type: CheckTCP, Interval: time.Hour, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}}})
	c.Sync(nil)
	if !ep.ActiveHealthy() {
		t.Error("an endpoint no longer probed stays down on its last failed check")
	}
}

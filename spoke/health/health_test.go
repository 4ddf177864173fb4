package health

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// TestCheckDefaultsMatchDocs keeps docs/health.md's defaults table equal to the code's.
func TestCheckDefaultsMatchDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/health.md")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"path": "`" + DefaultCheckPath + "`", "interval": DefaultCheckInterval.String(), "timeout": DefaultCheckTimeout.String(),
		"healthyThreshold": strconv.Itoa(DefaultHealthyThreshold), "unhealthyThreshold": strconv.Itoa(DefaultUnhealthyThreshold),
	}
	for field, v := range want {
		re := regexp.MustCompile(`(?m)^\| ` + field + ` \| (.+) \|$`)
		m := re.FindSubmatch(doc)
		if m == nil || string(m[1]) != v {
			t.Errorf("docs/health.md default for %s = %q, code says %q", field, m, v)
		}
	}
}

func TestResolveCheck(t *testing.T) {
	d, ok := ResolveCheck(Defaults{}, nil, "")
	if !ok || d.Type != CheckHTTP || d.Path != "/" || d.Interval != 5*time.Second || d.Timeout != time.Second || d.HealthyThreshold != 2 || d.UnhealthyThreshold != 3 {
		t.Fatalf("built-in defaults = %+v, %v", d, ok)
	}
	// The spoke's flags replace the built-in defaults; zero flags keep them.
	flags := Defaults{Path: "/ready", Interval: 10 * time.Second, UnhealthyThreshold: 5}
	if c, ok := ResolveCheck(flags, nil, ""); !ok || c.Path != "/ready" || c.Interval != 10*time.Second || c.Timeout != time.Second || c.UnhealthyThreshold != 5 || c.HealthyThreshold != 2 {
		t.Fatalf("spoke defaults = %+v, %v", c, ok)
	}
	// A Service's annotations override field by field.
	c, ok := ResolveCheck(flags, &spokeconfig.HealthCheck{Path: "/hz", IntervalMs: 100, TimeoutMs: 500, UnhealthyThreshold: 1}, "")
	if !ok || c.Path != "/hz" || c.Interval != 100*time.Millisecond || c.Timeout != 100*time.Millisecond || c.HealthyThreshold != 2 || c.UnhealthyThreshold != 1 {
		t.Fatalf("override = %+v, %v (timeout must be capped by the interval)", c, ok)
	}
	// Off: a Service's "off"; the spoke's off, unless the Service sets an interval of its own.
	if _, ok := ResolveCheck(flags, &spokeconfig.HealthCheck{Disabled: true}, ""); ok {
		t.Error("a Service with health checks off is probed")
	}
	if _, ok := ResolveCheck(Defaults{Off: true}, nil, ""); ok {
		t.Error("a spoke with health checks off probes a backend that asks nothing")
	}
	if _, ok := ResolveCheck(Defaults{Off: true}, &spokeconfig.HealthCheck{Path: "/hz"}, ""); ok {
		t.Error("a spoke with health checks off probes a backend that only sets a path")
	}
	if c, ok := ResolveCheck(Defaults{Off: true}, &spokeconfig.HealthCheck{IntervalMs: 2000}, ""); !ok || c.Interval != 2*time.Second || c.Path != "/" {
		t.Errorf("a spoke with health checks off and a Service asking for a 2s interval: %+v, %v", c, ok)
	}
	// gRPC and h2c backends are probed by a connect unless the Service says otherwise.
	for _, ap := range []string{"kubernetes.io/h2c", "grpc", "h2c"} {
		if c, _ := ResolveCheck(Defaults{}, nil, ap); c.Type != CheckTCP {
			t.Errorf("appProtocol %s: type %s, want tcp", ap, c.Type)
		}
	}
	if c, _ := ResolveCheck(Defaults{}, &spokeconfig.HealthCheck{Type: "grpc", GRPCService: "echo"}, "kubernetes.io/h2c"); c.Type != CheckGRPC || !c.H2C || c.GRPCService != "echo" {
		t.Errorf("explicit grpc: %+v", c)
	}
}

func TestClusterDownAndSuspect(t *testing.T) {
	r := NewRegistry()
	e := r.Endpoint("west", "10.0.0.1:80")
	now := time.Now()
	if !e.Available(now.UnixNano()) {
		t.Fatal("new endpoint unavailable")
	}
	r.SetClusterAlive("west", false)
	if e.Available(now.UnixNano()) {
		t.Fatal("endpoint of a dead cluster available")
	}
	r.SetClusterAlive("west", true)
	e.Cluster().Suspect(now, time.Second)
	if e.Available(now.UnixNano()) || !e.Available(now.Add(time.Second).UnixNano()) {
		t.Fatal("suspicion does not hold for exactly its duration")
	}
	e.Cluster().Suspect(now, time.Second)
	r.SetClusterAlive("west", true)
	if !e.Available(now.UnixNano()) {
		t.Fatal("gossip's alive verdict does not clear a suspicion")
	}
	r.Retain(func(Key) bool { return false })
	if r.Endpoint("west", "10.0.0.1:80") == e {
		t.Fatal("retain kept a dropped endpoint")
	}
}

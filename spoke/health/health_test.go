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
	d := ResolveCheck(nil)
	if d.Path != "/" || d.Interval != 5*time.Second || d.Timeout != time.Second || d.HealthyThreshold != 2 || d.UnhealthyThreshold != 3 {
		t.Fatalf("defaults = %+v", d)
	}
	c := ResolveCheck(&spokeconfig.HealthCheck{Path: "/hz", IntervalMs: 100, TimeoutMs: 500, UnhealthyThreshold: 1})
	if c.Path != "/hz" || c.Interval != 100*time.Millisecond || c.Timeout != 100*time.Millisecond || c.HealthyThreshold != 2 || c.UnhealthyThreshold != 1 {
		t.Fatalf("override = %+v (timeout must be capped by the interval)", c)
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

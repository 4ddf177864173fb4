package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// churnRoutes returns n HTTPRoutes, one hostname each, all to backend churn.
func churnRoutes(from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: churn-%[1]d
  namespace: default
spec:
  parentRefs:
  - name: gw
  hostnames: ["churn-%[1]d.example.com"]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /churn}
    backendRefs:
    - name: churn
      port: 80
`, i)
	}
	return b.String()
}

func containsLineWith(out, word string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, word) {
			return true
		}
	}
	return false
}

// TestConfigChurnUnderLoad adds 1,000 routes at the hub and removes them again while requests flow on an untouched
// route: not one of those requests may fail.
func TestConfigChurnUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startWorld(t)
	c := newClient()
	url := w.east.gatewayURL("/")
	mustHubctl(t, w.hub.addr, canaryRoute(90, 10), "apply", "-f", "-")
	if _, ok := eventually(20*time.Second, func() bool {
		s := split(c, url, "", 50, 4)
		return s["east"] > 0 && s["west"] > 0 && errorsIn(s) == 0
	}); !ok {
		t.Fatal("canary never served")
	}

	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := get(c, url, "")
				sent.Add(1)
				if r.err != nil || r.code != 200 {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("code=%d err=%v", r.code, r.err))
				}
			}
		}()
	}

	dir := t.TempDir()
	const total, batch = 1000, 100
	for from := 0; from < total; from += batch {
		f := filepath.Join(dir, fmt.Sprintf("churn-%04d.yaml", from))
		writeFile(t, f, churnRoutes(from, batch))
		mustHubctl(t, w.hub.addr, "", "apply", "-f", f)
	}
	// All 1,000 routes reach east's table (the last one answers).
	if _, ok := eventually(30*time.Second, func() bool {
		r := get(c, url+"churn", fmt.Sprintf("churn-%d.example.com", total-1))
		return r.code == 200 && r.name == "churn"
	}); !ok {
		t.Fatal("the 1,000th churn route never served")
	}
	for from := 0; from < total; from += batch {
		mustHubctl(t, w.hub.addr, "", "delete", "-f", filepath.Join(dir, fmt.Sprintf("churn-%04d.yaml", from)))
	}
	if _, ok := eventually(30*time.Second, func() bool {
		// Without its route the request falls to the canary's catch-all virtual host.
		r := get(c, url+"churn", fmt.Sprintf("churn-%d.example.com", total-1))
		return r.code == 200 && r.name != "churn"
	}); !ok {
		t.Fatal("the churn routes were never removed from east's table")
	}
	close(stop)
	wg.Wait()
	t.Logf("requests on the untouched route during churn: %d sent, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during churn; first: %v", failed.Load(), sent.Load(), firstFailure.Load())
	}
	if sent.Load() < 100 {
		t.Fatalf("only %d requests sent during churn: the load did not run", sent.Load())
	}
}

package e2e

import (
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestWestSpokeKilledUnderLoad: Service color runs in both clusters; east's gateway spreads it over both. West's spoke
// is killed (SIGKILL, no goodbye) under load: idempotent requests through east see no error (the data path retries a
// failed east-west dial on east's own endpoint and marks west suspect; gossip then declares it dead), and when west
// comes back its endpoints take traffic again.
func TestWestSpokeKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startWorld(t)
	westColor := startEcho(t, "west", "color")
	writeFile(t, filepath.Join(w.west.sourceDir, "color.yaml"), serviceYAML("color", westColor.port))
	mustHubctl(t, w.hub.addr, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shared, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shared.example.com]
  rules: [{backendRefs: [{name: color, port: 80}]}]
`, "apply", "-f", "-")
	c := newClient()
	url, host := w.east.gatewayURL("/"), "shared.example.com"
	if _, ok := eventually(30*time.Second, func() bool {
		s := split(c, url, host, 40, 4)
		return s["east"] > 0 && s["west"] > 0 && errorsIn(s) == 0
	}); !ok {
		t.Fatalf("east never spread color over both clusters: %v", split(c, url, host, 20, 1))
	}

	type sample struct {
		at      time.Time
		cluster string
		failed  string
	}
	var mu sync.Mutex
	var samples []sample
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
				r := get(c, url, host)
				s := sample{at: time.Now(), cluster: r.cluster}
				if r.err != nil {
					s.failed = r.err.Error()
				} else if r.code != 200 {
					s.failed = fmt.Sprintf("status %d", r.code)
				}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	killed := time.Now()
	w.west.p.stop(syscall.SIGKILL)
	time.Sleep(5 * time.Second)

	restarted := time.Now()
	w.west.start(t)
	var back time.Duration
	if _, ok := eventually(30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := len(samples) - 1; i >= 0 && samples[i].at.After(restarted); i-- {
			if samples[i].cluster == "west" {
				back = samples[i].at.Sub(restarted)
				return true
			}
		}
		return false
	}); !ok {
		t.Error("traffic never returned to west after its spoke restarted")
	}
	close(stop)
	wg.Wait()

	var failed, total, westAfterKill int
	var firstFailure string
	for _, s := range samples {
		total++
		if s.failed != "" {
			failed++
			if firstFailure == "" {
				firstFailure = s.failed
			}
		}
		if s.cluster == "west" && s.at.After(killed.Add(50*time.Millisecond)) && s.at.Before(restarted) {
			westAfterKill++
		}
	}
	t.Logf("%d requests, %d failed; %d answered by west while its spoke was dead; traffic back to west %v after restart",
		total, failed, westAfterKill, back)
	if failed != 0 {
		t.Fatalf("%d of %d idempotent requests failed while west's spoke died; first: %s", failed, total, firstFailure)
	}
	if westAfterKill != 0 {
		t.Fatalf("%d answers came from west while its spoke was dead", westAfterKill)
	}
}

// serviceYAML is a Service and its EndpointSlice on 127.0.0.1:port.
func serviceYAML(name string, port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: %[2]d}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-west, namespace: default, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: http, port: %[2]d}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
`, name, port)
}

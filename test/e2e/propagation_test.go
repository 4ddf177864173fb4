package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedgate/fedgate/apis/clientconfig"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// BenchmarkPropagation measures hub apply → the spoke serving the new route: each iteration applies one new
// HTTPRoute (its own hostname) through the Admin API and polls east's gateway until the route answers. Prints p50 and
// p99; run with -benchtime 100x for 100 changes (make bench-propagation).
func BenchmarkPropagation(b *testing.B) {
	w := startWorld(b)
	c := newClient()
	url := w.east.gatewayURL("/prop")
	cc, err := clientconfig.Load(w.hub.adminConfig)
	if err != nil {
		b.Fatal(err)
	}
	tlsConf, err := cc.TLS()
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(w.hub.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	admin := fedgatepb.NewAdminClient(conn)
	// Warm up: the canary must be served before measuring.
	mustHubctl(b, w.hub.addr, canaryRoute(90, 10), "apply", "-f", "-")
	if _, ok := eventually(20*time.Second, func() bool { return get(c, w.east.gatewayURL("/"), "").code == 200 }); !ok {
		b.Fatal("canary never served")
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		host := fmt.Sprintf("prop-%d.example.com", i)
		objs, err := resources.DecodeYAML(strings.NewReader(fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: prop-%d, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [%q]
  rules:
  - matches: [{path: {type: PathPrefix, value: /prop}}]
    backendRefs: [{name: churn, port: 80}]
`, i, host)), "bench", "default")
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := admin.Apply(context.Background(), &fedgatepb.ApplyRequest{Objects: objs}); err != nil {
			b.Fatal(err)
		}
		for {
			r := get(c, url, host)
			if r.code == 200 && r.name == "churn" {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("route %s not served after 30 s", host)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
	fmt.Printf("propagation over %d changes: p50=%v p99=%v max=%v\n", len(lat), p(0.5), p(0.99), lat[len(lat)-1])
}

package compiler

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// projected is one cluster's projection as the hub judges it: its content hash (the encoding with revision 0, what
// decides whether the graph key — and so the spoke — gets a new config) and the bytes a push would send.
type projected struct {
	contentHash string
	bytes       int
}

// projectAll compiles in and projects every cluster.
func projectAll(tb testing.TB, in *Inputs) map[string]projected {
	tb.Helper()
	out := Compile(in)
	all := make(map[string]projected, len(in.Clusters))
	for name := range in.Clusters {
		sc := Project(out.Graph, name)
		b, _, err := spokeconfig.Encode(sc)
		if err != nil {
			tb.Fatal(err)
		}
		sc.Revision = 0
		_, content, err := spokeconfig.Encode(sc)
		if err != nil {
			tb.Fatal(err)
		}
		all[name] = projected{contentHash: content, bytes: len(b)}
	}
	return all
}

// changed lists the clusters whose projection content differs between a and b, and the bytes pushing them sends.
func changed(a, b map[string]projected) (clusters []string, bytes int) {
	for name, p := range b {
		if a[name].contentHash != p.contentHash {
			clusters = append(clusters, name)
			bytes += p.bytes
		}
	}
	return clusters, bytes
}

// addIdleService gives cluster c000 an exported Service no route uses, with one EndpointSlice of n endpoints.
func addIdleService(in *Inputs, n int, ready bool) {
	ci := in.Clusters["c000"]
	ci.Services = append(ci.Services, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "idle", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	})
	ci.ServiceExports = append(ci.ServiceExports, &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Name: "idle", Namespace: "default"}})
	eps := make([]discoveryv1.Endpoint, n)
	for i := range eps {
		eps[i] = discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready)}}
	}
	ci.EndpointSlices = append(ci.EndpointSlices, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "idle-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "idle"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(9000))}},
		Endpoints:   eps,
	})
}

// TestUnusedServiceChurnChangesNoProjection: endpoints of a Service no route uses come and go, and no cluster's
// projection changes, so no graph key is written and no spoke is pushed a config (issue 9, relevance filter). The
// same churn on a Service a route uses does change projections: the comparison can see a change.
func TestUnusedServiceChurnChangesNoProjection(t *testing.T) {
	build := func(idleEndpoints int, idleReady bool, usedEndpoints int) *Inputs {
		in := syntheticInputs(5, 10)
		addIdleService(in, idleEndpoints, idleReady)
		eps := in.Clusters["c000"].EndpointSlices[0] // svc-0-a's, used by route r0
		eps.Endpoints = eps.Endpoints[:usedEndpoints]
		return in
	}
	before := projectAll(t, build(2, true, 2))
	for _, tc := range []struct {
		name        string
		in          *Inputs
		wantChanged bool
	}{
		{"unused Service gains endpoints", build(5, true, 2), false},
		{"unused Service's endpoints turn unready", build(2, false, 2), false},
		{"unused Service loses every endpoint", build(0, true, 2), false},
		{"used Service loses an endpoint", build(2, true, 1), true},
	} {
		tc.in.Revision++ // a later compile
		clusters, _ := changed(before, projectAll(t, tc.in))
		if (len(clusters) > 0) != tc.wantChanged {
			t.Errorf("%s: changed projections %v, want changed: %v", tc.name, clusters, tc.wantChanged)
		}
	}
}

// BenchmarkRouteChangeBytes measures what one route change costs the fleet at 100 clusters (200 hub routes): how many
// projections change (each is pushed whole, ARCHITECTURE decision 2) and the bytes those pushes send, for a hub
// route's weight change (the route is in every cluster's projection) and for a route one cluster reports (only that
// cluster's projection); allBytes is the whole fleet's projections, for scale.
func BenchmarkRouteChangeBytes(b *testing.B) {
	const clusters, routes = 100, 200
	for _, tc := range []struct {
		name   string
		change func(in *Inputs, i int)
	}{
		{"hub-route-weight", func(in *Inputs, i int) {
			in.Hub.HTTPRoutes[0].Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(50 + i%40))
		}},
		{"cluster-route-weight", func(in *Inputs, i int) {
			in.Clusters["c007"].HTTPRoutes[0].Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(50 + i%40))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			in := syntheticInputs(clusters, routes)
			// c007 reports a route of its own, on its instance of the hub Gateway, to a Service it has.
			local := in.Hub.HTTPRoutes[7].DeepCopy()
			local.Name, local.Spec.Rules[0].Matches[0].Path.Value = "local", ptr("/local")
			local.Spec.Rules[0].BackendRefs = local.Spec.Rules[0].BackendRefs[:1]
			local.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "gw"}}
			in.Clusters["c007"].HTTPRoutes = append(in.Clusters["c007"].HTTPRoutes, local)
			prev := projectAll(b, in)
			all := 0
			for _, p := range prev {
				all += p.bytes
			}
			var nChanged, sent int
			i := 0
			for b.Loop() {
				i++
				tc.change(in, i)
				in.Revision++
				next := projectAll(b, in)
				cl, bytes := changed(prev, next)
				nChanged, sent = len(cl), bytes
				prev = next
			}
			b.ReportMetric(float64(nChanged), "changed-projections")
			b.ReportMetric(float64(sent), "bytes-sent")
			b.ReportMetric(float64(all), "all-bytes")
		})
	}
}

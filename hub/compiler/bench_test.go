package compiler

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// syntheticInputs builds a fleet: every cluster reports the class, a Gateway and its share of Services; the hub holds
// routes, each splitting traffic over two Services that live in different clusters.
func syntheticInputs(clusters, routes int) *Inputs {
	in := &Inputs{Revision: 1, Clusters: map[string]*ClusterInputs{}}
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "fedgate"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: ControllerName}}
	in.Hub.GatewayClasses = append(in.Hub.GatewayClasses, class)
	in.Hub.Gateways = append(in.Hub.Gateways, &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "default"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "fedgate", Listeners: []gatewayv1.Listener{
			{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 8080},
		}},
	})
	for c := 0; c < clusters; c++ {
		ci := &ClusterInputs{EastWestAddress: fmt.Sprintf("127.0.0.1:%d", 20000+c)}
		in.Clusters[fmt.Sprintf("c%03d", c)] = ci
	}
	for r := 0; r < routes; r++ {
		svcs := []string{fmt.Sprintf("svc-%d-a", r), fmt.Sprintf("svc-%d-b", r)}
		for i, name := range svcs {
			ci := in.Clusters[fmt.Sprintf("c%03d", (r+i)%clusters)]
			ci.Services = append(ci.Services, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
			})
			ci.EndpointSlices = append(ci.EndpointSlices, &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(9000))}},
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}}, {Addresses: []string{"127.0.0.2"}}},
			})
		}
		prefix := gatewayv1.PathMatchPathPrefix
		path := fmt.Sprintf("/r%d", r)
		in.Hub.HTTPRoutes = append(in.Hub.HTTPRoutes, &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("r%d", r), Namespace: "default"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Rules: []gatewayv1.HTTPRouteRule{{
					Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &prefix, Value: &path}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{
						{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svcs[0]), Port: ptr(int32(80))}, Weight: ptr(int32(90))}},
						{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svcs[1]), Port: ptr(int32(80))}, Weight: ptr(int32(10))}},
					},
				}},
			},
		})
	}
	return in
}

func TestSyntheticFleetValid(t *testing.T) {
	in := syntheticInputs(5, 40)
	out := Compile(in)
	if got := len(out.Graph.Backends); got != 80 {
		t.Errorf("backends = %d, want 80", got)
	}
	for name := range in.Clusters {
		p := Project(out.Graph, name)
		if err := p.Validate(); err != nil {
			t.Errorf("projection %s: %v", name, err)
		}
		if n := len(p.Ports[0].VirtualHosts[0].Routes); n != 40 {
			t.Errorf("projection %s: %d routes, want 40", name, n)
		}
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, size := range []struct{ clusters, routes int }{{3, 100}, {20, 1000}} {
		in := syntheticInputs(size.clusters, size.routes)
		b.Run(fmt.Sprintf("clusters=%d/routes=%d", size.clusters, size.routes), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out := Compile(in)
				for name := range in.Clusters {
					_ = Project(out.Graph, name)
				}
			}
		})
	}
}

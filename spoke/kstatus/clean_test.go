package kstatus

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// After Clean (the cluster was removed at the hub), nothing fedgate wrote is left: no ServiceImport of ours, no
// parent status entry of ours, our GatewayClass and its Gateway back to "Waiting for controller", no Valid/Conflict
// on ServiceExports — and what other controllers wrote is untouched. Run with the writer's least-privilege RBAC.
func TestCleanTakesBackEverythingFedgateWrote(t *testing.T) {
	ctx := context.Background()
	c := cluster.Client
	ns := cluster.Namespace(t)
	ours := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: ns + "-ours"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultControllerName}}
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: gatewayv1.ObjectName(ours.Name),
		Listeners:        []gatewayv1.Listener{{Name: "http", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}},
	}}
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}, {Name: "other-gw"}}},
	}}
	se := &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "color"}}
	// Created as `kubectl apply --server-side` of an export without spec creates it: with no managedFields at all.
	applied := &unstructured.Unstructured{}
	applied.SetGroupVersionKind(mcsv1a1.SchemeGroupVersion.WithKind("ServiceExport"))
	applied.SetNamespace(ns)
	applied.SetName(se.Name)
	//nolint:staticcheck // server-side apply of an unstructured object, as kubectl does
	if err := c.Patch(ctx, applied, client.Apply, client.FieldOwner("kubectl")); err != nil {
		t.Fatal(err)
	}
	// An export another MCS controller judges: the same condition types, written by it, never by fedgate.
	otherSE := &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"}}
	foreign := &mcsv1a1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "foreign"},
		Spec: mcsv1a1.ServiceImportSpec{Type: mcsv1a1.ClusterSetIP, Ports: []mcsv1a1.ServicePort{{Port: 1, Protocol: corev1.ProtocolTCP}}}}
	for _, o := range []client.Object{ours, gw, route, otherSE, foreign} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// Another controller's parent entry and condition, which must survive.
	get(t, route)
	route.Status.Parents = []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "other-gw"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: long}}}}
	if err := c.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	get(t, se)
	se.Status.Conditions = []metav1.Condition{{Type: "example.com/Synced", Status: metav1.ConditionTrue, Reason: "Synced", LastTransitionTime: long}}
	if err := c.Status().Update(ctx, se); err != nil {
		t.Fatal(err)
	}
	get(t, otherSE)
	otherSE.Status.Conditions = []metav1.Condition{{Type: "Valid", Status: metav1.ConditionTrue, Reason: "Valid", LastTransitionTime: long},
		{Type: "Conflict", Status: metav1.ConditionFalse, Reason: "NoConflicts", LastTransitionTime: long}}
	if err := client.WithFieldOwner(c, "example.com/mcs-controller").Status().Update(ctx, otherSE); err != nil {
		t.Fatal(err)
	}

	w := newWriter(t)
	apply(t, w, &spokeconfig.SpokeConfig{Cluster: "east",
		Statuses: []spokeconfig.ObjectStatus{
			{Kind: "GatewayClass", Name: ours.Name, Generation: 1, Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", "")}},
			{Kind: "Gateway", Namespace: ns, Name: "gw", Generation: 1,
				Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", ""), cond("Programmed", true, "Programmed", "")},
				Listeners:  []spokeconfig.ListenerStatus{{Name: "http", Conditions: []metav1.Condition{cond("Programmed", true, "Programmed", "")}}},
				Addresses:  []string{"10.0.0.7"}},
			{Kind: "HTTPRoute", Namespace: ns, Name: "r", Generation: 1, Parents: []spokeconfig.ParentStatus{
				{ParentRef: gatewayv1.ParentReference{Name: "gw"}, Conditions: []metav1.Condition{cond("Accepted", true, "Accepted", "")}}}},
			{Kind: "ServiceExport", Namespace: ns, Name: "color", Generation: 1, Conditions: []metav1.Condition{
				cond("Valid", true, "Valid", ""), cond("Conflict", false, "NoConflicts", "")}},
		},
		ServiceImports: []spokeconfig.ServiceImport{{Namespace: ns, Name: "color", Type: "ClusterSetIP",
			Ports: []spokeconfig.ServiceImportPort{{Name: "http", Protocol: "TCP", Port: 80}}, Clusters: []string{"west"}}},
	})
	get(t, route)
	if len(route.Status.Parents) != 2 {
		t.Fatalf("before Clean: route parents %+v, want ours and the other controller's", route.Status.Parents)
	}

	if err := w.Clean(ctx); err != nil {
		t.Fatalf("Clean: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "color"}, &mcsv1a1.ServiceImport{}); !apierrors.IsNotFound(err) {
		t.Errorf("our ServiceImport is still there: %v", err)
	}
	get(t, foreign)
	get(t, route)
	if len(route.Status.Parents) != 1 || route.Status.Parents[0].ControllerName != "example.com/other" {
		t.Errorf("route parents after Clean: %+v, want only the other controller's", route.Status.Parents)
	}
	get(t, gw)
	if len(gw.Status.Listeners) != 0 || len(gw.Status.Addresses) != 0 {
		t.Errorf("Gateway keeps listeners %+v or addresses %+v", gw.Status.Listeners, gw.Status.Addresses)
	}
	for _, typ := range []string{"Accepted", "Programmed"} {
		if c := meta.FindStatusCondition(gw.Status.Conditions, typ); c == nil || c.Status != metav1.ConditionUnknown || c.Reason != "Pending" {
			t.Errorf("Gateway %s after Clean: %+v, want Unknown/Pending", typ, c)
		}
	}
	get(t, ours)
	if c := meta.FindStatusCondition(ours.Status.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionUnknown || len(ours.Status.SupportedFeatures) != 0 {
		t.Errorf("GatewayClass after Clean: %+v, features %v", ours.Status.Conditions, ours.Status.SupportedFeatures)
	}
	get(t, se)
	if len(se.Status.Conditions) != 1 || se.Status.Conditions[0].Type != "example.com/Synced" {
		t.Errorf("ServiceExport conditions after Clean: %+v, want only the other tool's", se.Status.Conditions)
	}
	get(t, otherSE)
	if len(otherSE.Status.Conditions) != 2 {
		t.Errorf("another MCS controller's ServiceExport after Clean: %+v, want its Valid and Conflict untouched", otherSE.Status.Conditions)
	}
	// Clean twice (every replica of the removed cluster cleans): nothing left to do, no error.
	if err := w.Clean(ctx); err != nil {
		t.Fatalf("second Clean: %v", err)
	}
}

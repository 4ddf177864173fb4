package kstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
)

// Clean takes back everything this writer put in the cluster, for a cluster removed at the hub: it deletes the
// fedgate-managed ServiceImports, drops fedgate's entries from every route's status.parents, returns the status of
// fedgate's GatewayClasses and of their Gateways to what the API server gives a Gateway no controller has seen
// (Accepted and Programmed Unknown/Pending), and removes fedgate's conditions from ServiceExports (an empty server-side
// apply as FieldManager: the API server drops what only fedgate set), leaving another MCS controller's alone. It carries on past failures and returns them
// joined.
func (w *Writer) Clean(ctx context.Context) error {
	var errs []error
	if _, err := w.serviceImports(ctx, nil); err != nil {
		errs = append(errs, err)
	}
	var classes gatewayv1.GatewayClassList
	if err := w.c.List(ctx, &classes); err != nil {
		errs = append(errs, fmt.Errorf("listing GatewayClasses: %w", err))
	}
	ours := map[string]bool{}
	for i := range classes.Items {
		gc := &classes.Items[i]
		if gc.Spec.ControllerName != w.controller {
			continue
		}
		ours[gc.Name] = true
		if _, err := w.update(ctx, gc, client.ObjectKeyFromObject(gc), func() bool {
			old := gc.Status.DeepCopy()
			gc.Status = gatewayv1.GatewayClassStatus{Conditions: pendingConditions(gc.Generation, string(gatewayv1.GatewayClassConditionStatusAccepted))}
			return !equality.Semantic.DeepEqual(old, &gc.Status)
		}); err != nil {
			errs = append(errs, fmt.Errorf("GatewayClass %s: %w", gc.Name, err))
		}
	}
	var gateways gatewayv1.GatewayList
	if err := w.c.List(ctx, &gateways); err != nil {
		errs = append(errs, fmt.Errorf("listing Gateways: %w", err))
	}
	for i := range gateways.Items {
		gw := &gateways.Items[i]
		if !ours[string(gw.Spec.GatewayClassName)] {
			continue
		}
		if _, err := w.update(ctx, gw, client.ObjectKeyFromObject(gw), func() bool {
			old := gw.Status.DeepCopy()
			gw.Status = gatewayv1.GatewayStatus{Conditions: pendingConditions(gw.Generation,
				string(gatewayv1.GatewayConditionAccepted), string(gatewayv1.GatewayConditionProgrammed))}
			return !equality.Semantic.DeepEqual(old, &gw.Status)
		}); err != nil {
			errs = append(errs, fmt.Errorf("Gateway %s: %w", client.ObjectKeyFromObject(gw), err))
		}
	}
	var httpRoutes gatewayv1.HTTPRouteList
	if err := w.c.List(ctx, &httpRoutes); err != nil {
		errs = append(errs, fmt.Errorf("listing HTTPRoutes: %w", err))
	}
	for i := range httpRoutes.Items {
		r := &httpRoutes.Items[i]
		errs = append(errs, w.dropOurParents(ctx, "HTTPRoute", r, &r.Status.RouteStatus))
	}
	var grpcRoutes gatewayv1.GRPCRouteList
	if err := w.c.List(ctx, &grpcRoutes); err != nil {
		errs = append(errs, fmt.Errorf("listing GRPCRoutes: %w", err))
	}
	for i := range grpcRoutes.Items {
		r := &grpcRoutes.Items[i]
		errs = append(errs, w.dropOurParents(ctx, "GRPCRoute", r, &r.Status.RouteStatus))
	}
	var exports mcsv1a1.ServiceExportList
	if err := w.c.List(ctx, &exports); err != nil && !meta.IsNoMatchError(err) {
		errs = append(errs, fmt.Errorf("listing ServiceExports: %w", err))
	}
	for i := range exports.Items {
		se := &exports.Items[i]
		if len(conditionsWrittenBy(se.ManagedFields, FieldManager)) == 0 {
			continue
		}
		if err := w.applyServiceExportConditions(ctx, se, nil); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("ServiceExport %s: %w", client.ObjectKeyFromObject(se), err))
		}
	}
	return errors.Join(errs...)
}

// conditionsWrittenBy returns the types of the status conditions whose fields manager owns by server-side apply.
func conditionsWrittenBy(managed []metav1.ManagedFieldsEntry, manager string) map[string]bool {
	types := map[string]bool{}
	for _, m := range managed {
		// Apply only: what an Update recorded, an empty apply cannot take back, so it is not counted as applied.
		if m.Manager != manager || m.Operation != metav1.ManagedFieldsOperationApply || m.Subresource != "status" || m.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Status struct {
				Conditions map[string]json.RawMessage `json:"f:conditions"`
			} `json:"f:status"`
		}
		if json.Unmarshal(m.FieldsV1.Raw, &fields) != nil {
			continue
		}
		for k := range fields.Status.Conditions {
			var key struct {
				Type string `json:"type"`
			}
			if rest, ok := strings.CutPrefix(k, "k:"); ok && json.Unmarshal([]byte(rest), &key) == nil && key.Type != "" {
				types[key.Type] = true
			}
		}
	}
	return types
}

// dropOurParents removes this writer's entries from the status.parents of route, a kind (st is route's status,
// which update reads afresh).
func (w *Writer) dropOurParents(ctx context.Context, kind string, route client.Object, st *gatewayv1.RouteStatus) error {
	_, err := w.update(ctx, route, client.ObjectKeyFromObject(route), func() bool {
		kept := slices.DeleteFunc(slices.Clone(st.Parents), func(p gatewayv1.RouteParentStatus) bool { return p.ControllerName == w.controller })
		changed := len(kept) != len(st.Parents)
		st.Parents = kept
		return changed
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, client.ObjectKeyFromObject(route), err)
	}
	return nil
}

// pendingConditions are the conditions the Gateway API CRDs default a new object's status to: each type Unknown,
// reason Pending, "Waiting for controller".
func pendingConditions(generation int64, types ...string) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(types))
	for _, t := range types {
		out = append(out, metav1.Condition{Type: t, Status: metav1.ConditionUnknown, Reason: "Pending",
			Message: "Waiting for controller", ObservedGeneration: generation, LastTransitionTime: metav1.Now()})
	}
	return out
}

package kstatus

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// serviceImports makes the cluster's fedgate-managed ServiceImports equal to want: creates the missing ones, updates
// spec and status of the changed ones, deletes the ones the hub no longer lists. It returns how many it changed.
func (w *Writer) serviceImports(ctx context.Context, want []spokeconfig.ServiceImport) (int, error) {
	var list mcsv1a1.ServiceImportList
	if err := w.c.List(ctx, &list, client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		if meta.IsNoMatchError(err) && len(want) == 0 {
			return 0, nil // no MCS CRDs in this cluster and nothing to import: not an error
		}
		return 0, fmt.Errorf("listing ServiceImports: %w", err)
	}
	wanted := make(map[types.NamespacedName]bool, len(want))
	var errs []error
	changes := 0
	for i := range want {
		si := &want[i]
		k := types.NamespacedName{Namespace: si.Namespace, Name: si.Name}
		wanted[k] = true
		changed, err := w.serviceImport(ctx, si)
		if err != nil {
			errs = append(errs, fmt.Errorf("ServiceImport %q: %w", k, err))
		}
		if changed {
			changes++
		}
	}
	for i := range list.Items {
		si := &list.Items[i]
		if wanted[client.ObjectKeyFromObject(si)] {
			continue
		}
		err := w.c.Delete(ctx, si, client.Preconditions{UID: &si.UID})
		switch {
		case err == nil:
			changes++
			w.log.Info("deleted ServiceImport", "serviceImport", client.ObjectKeyFromObject(si))
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// Already gone, or replaced by a new object since the list (which the next Apply will judge).
		default:
			errs = append(errs, fmt.Errorf("ServiceImport %q: deleting: %w", client.ObjectKeyFromObject(si), err))
		}
	}
	return changes, errors.Join(errs...)
}

// serviceImport creates or updates one ServiceImport. One that exists without our label is someone else's and is
// left alone (with an error, so the operator learns why the import is not ours).
func (w *Writer) serviceImport(ctx context.Context, want *spokeconfig.ServiceImport) (bool, error) {
	k := types.NamespacedName{Namespace: want.Namespace, Name: want.Name}
	spec := importSpec(want)
	changed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		changed = false
		si := &mcsv1a1.ServiceImport{}
		err := w.c.Get(ctx, k, si)
		if apierrors.IsNotFound(err) {
			si = &mcsv1a1.ServiceImport{
				ObjectMeta: metav1.ObjectMeta{Namespace: want.Namespace, Name: want.Name, Labels: map[string]string{ManagedByLabel: ManagedByValue}},
				Spec:       spec,
			}
			if err := w.c.Create(ctx, si); err != nil {
				return err
			}
			changed = true
			w.log.Info("created ServiceImport", "serviceImport", k)
		} else if err != nil {
			return err
		} else if si.Labels[ManagedByLabel] != ManagedByValue {
			return fmt.Errorf("exists without label %s=%s: not managed by fedgate, left alone", ManagedByLabel, ManagedByValue)
		} else if !equality.Semantic.DeepEqual(si.Spec, spec) {
			si.Spec = spec
			if err := w.c.Update(ctx, si); err != nil {
				return err
			}
			changed = true
		}
		old := si.Status.DeepCopy()
		si.Status.Clusters = nil
		for _, c := range want.Clusters {
			si.Status.Clusters = append(si.Status.Clusters, mcsv1a1.ClusterStatus{Cluster: c})
		}
		ready := metav1.Condition{
			Type: string(mcsv1a1.ServiceImportConditionReady), Status: metav1.ConditionTrue,
			Reason: string(mcsv1a1.ServiceImportReasonReady), Message: "fedgate routes to the exporting clusters' endpoints",
			ObservedGeneration: si.Generation,
		}
		if want.Conflict != "" {
			// The MCS API resolves export conflicts (oldest export wins) rather than failing the import; the
			// conflict itself is reported on the ServiceExports. Say so here too.
			ready.Message += "; exports conflict: " + want.Conflict
		}
		meta.SetStatusCondition(&si.Status.Conditions, ready)
		if equality.Semantic.DeepEqual(old, &si.Status) {
			return nil
		}
		if err := w.c.Status().Update(ctx, si); err != nil {
			return err
		}
		changed = true
		return nil
	})
	return changed, err
}

func importSpec(want *spokeconfig.ServiceImport) mcsv1a1.ServiceImportSpec {
	t := mcsv1a1.ServiceImportType(want.Type)
	if t == "" {
		t = mcsv1a1.ClusterSetIP
	}
	ports := make([]mcsv1a1.ServicePort, 0, len(want.Ports)) // required field: empty list, not null
	for _, p := range want.Ports {
		sp := mcsv1a1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: p.Port}
		if sp.Protocol == "" {
			sp.Protocol = corev1.ProtocolTCP // the API server's default: without it every compare would differ
		}
		if p.AppProtocol != "" {
			sp.AppProtocol = &p.AppProtocol
		}
		ports = append(ports, sp)
	}
	slices.SortStableFunc(ports, func(a, b mcsv1a1.ServicePort) int { return int(a.Port) - int(b.Port) })
	return mcsv1a1.ServiceImportSpec{Type: t, Ports: ports}
}

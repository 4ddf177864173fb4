package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// caKind reads each CA-bundle ConfigMap the Gateways' client-certificate validation references
// (tlssecrets.CARefs) into st, in its reported form (resources.ReportedCAConfigMap: ca.crt alone). The Source does
// this itself, on the leader only: unlike a listener's key, the bundle is not needed by every replica (the hub sends it
// back in the projection).
func caKind(st *state) refKind {
	return refKind{
		what:     "CA ConfigMap",
		kind:     resources.KindConfigMap,
		refs:     tlssecrets.CARefs,
		informer: caConfigMapInformer,
		set: func(ref tlssecrets.Ref, obj any) {
			cm, ok := obj.(*corev1.ConfigMap)
			if !ok {
				return
			}
			o, err := tlssecrets.ReportedCAObject(cm)
			if err != nil {
				st.log.Error("cannot encode CA ConfigMap, not reporting it", "configmap", ref.String(), "err", err)
				st.remove(caID(ref))
				return
			}
			st.put(caID(ref), o)
		},
		del: func(ref tlssecrets.Ref) { st.remove(caID(ref)) },
	}
}

func caID(ref tlssecrets.Ref) string {
	return resources.ID(resources.KindConfigMap, ref.Namespace, ref.Name)
}

// caConfigMapInformer is the informer of the one ConfigMap ref: a list and watch by name, keeping only what is
// reported.
func caConfigMapInformer(cs kubernetes.Interface, ref tlssecrets.Ref) toolscache.SharedIndexInformer {
	cms := cs.CoreV1().ConfigMaps(ref.Namespace)
	byName := fields.OneTermEqualSelector("metadata.name", ref.Name).String()
	inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return cms.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return cms.Watch(ctx, o)
		},
	}, &corev1.ConfigMap{}, 0, toolscache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			return resources.ReportedCAConfigMap(cm), nil
		}
		return obj, nil
	})
	return inf
}

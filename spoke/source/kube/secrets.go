package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// SecretReaderConfig configures a SecretReader.
type SecretReaderConfig struct {
	// REST reaches the cluster's API server. Required.
	REST *rest.Config
	// Store receives the referenced Secrets. Required.
	Store *tlssecrets.Store
	// Log, default slog.Default().
	Log *slog.Logger
}

// SecretReader keeps a tlssecrets.Store holding exactly the Secrets that the cluster's Gateways reference
// (tlssecrets.GatewayRefs) and that exist. It watches the Gateways, and each referenced Secret alone: one watch per
// Secret, in its namespace, with the field selector metadata.name=<name>, started when the first Gateway references
// it and stopped when the last reference goes. It never lists or watches Secrets at large, so the data of a Secret
// no Gateway references is never read (RBAC cannot say so — list and watch of secrets are granted cluster-wide —
// so this code is what keeps it).
//
// Every replica of a spoke runs one, leader or not: every replica serves, so every replica needs the data. The leader's
// Source only reads the store to report the Secrets (in their data-free form).
type SecretReader struct {
	cfg SecretReaderConfig
	log *slog.Logger
}

// NewSecretReader returns a SecretReader for cfg.
func NewSecretReader(cfg SecretReaderConfig) (*SecretReader, error) {
	if cfg.REST == nil || cfg.Store == nil {
		return nil, errors.New("kube secret reader: REST config and store are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &SecretReader{cfg: cfg, log: log.With("component", "tls-secrets")}, nil
}

var gatewayGVR = gatewayv1.SchemeGroupVersion.WithResource("gateways")

// Run keeps the store until ctx ends. It marks the store synced once the Gateways are listed and every Secret they
// referenced then was read (or found absent). A cluster without the Gateway API has no references: the store stays
// empty (and synced). Run returns nil when ctx ends, an error when the API server cannot be reached at start.
func (r *SecretReader) Run(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(r.cfg.REST)
	if err != nil {
		return fmt.Errorf("kube secret reader: %w", err)
	}
	dc, err := dynamic.NewForConfig(r.cfg.REST)
	if err != nil {
		return fmt.Errorf("kube secret reader: %w", err)
	}
	if _, err := cs.Discovery().ServerResourcesForGroupVersion(gatewayv1.SchemeGroupVersion.String()); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("kube secret reader: discovery: %w", err)
		}
		r.log.Warn("Gateway API not served: no Gateway references a TLS Secret; restart the spoke after installing it")
		r.cfg.Store.MarkSynced()
		<-ctx.Done()
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	refs := newRefWatcher(ctx, r.secretKind(), cs, r.log)

	gws := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return dc.Resource(gatewayGVR).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return dc.Resource(gatewayGVR).Watch(ctx, o)
		},
	}, &unstructured.Unstructured{}, 0, toolscache.Indexers{})
	if _, err := gws.AddEventHandler(refs.handler()); err != nil {
		return fmt.Errorf("kube secret reader: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		gws.RunWithContext(ctx)
	}()
	defer func() {
		cancel()
		<-done
		refs.stop()
	}()

	if !toolscache.WaitForCacheSync(ctx.Done(), gws.HasSynced) {
		return nil
	}
	// The handler has seen every listed Gateway, so the watches of every Secret referenced at start exist now.
	synced := refs.synced()
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	r.log.Info("TLS Secrets read", "referenced", len(synced), "held", len(r.cfg.Store.Refs()))
	r.cfg.Store.MarkSynced()
	<-ctx.Done()
	return nil
}

// secretKind reads each referenced Secret into the store.
func (r *SecretReader) secretKind() refKind {
	return refKind{
		what:     "TLS Secret",
		refs:     tlssecrets.GatewayRefs,
		informer: secretInformer,
		set: func(ref tlssecrets.Ref, obj any) {
			s, ok := obj.(*corev1.Secret)
			if !ok {
				return
			}
			if err := r.cfg.Store.Set(s); err != nil {
				r.log.Error("cannot hold TLS Secret", "secret", ref.String(), "err", err)
			}
		},
		del: func(ref tlssecrets.Ref) { r.cfg.Store.Delete(ref.Namespace, ref.Name) },
	}
}

// secretInformer is the informer of the one Secret ref.
func secretInformer(cs kubernetes.Interface, ref tlssecrets.Ref) toolscache.SharedIndexInformer {
	secrets := cs.CoreV1().Secrets(ref.Namespace)
	byName := fields.OneTermEqualSelector("metadata.name", ref.Name).String()
	inf := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return secrets.Watch(ctx, o)
		},
	}, &corev1.Secret{}, 0, toolscache.Indexers{})
	// The informer's own copy keeps only what the store takes: no other data keys, labels or annotations.
	_ = inf.SetTransform(func(obj any) (any, error) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return obj, nil
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID, ResourceVersion: s.ResourceVersion,
				CreationTimestamp: s.CreationTimestamp},
			Type: s.Type,
			Data: map[string][]byte{corev1.TLSCertKey: s.Data[corev1.TLSCertKey], corev1.TLSPrivateKeyKey: s.Data[corev1.TLSPrivateKeyKey]},
		}, nil
	})
	return inf
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// SecretReaderConfig configures a SecretReader.
type SecretReaderConfig struct {
	// REST reaches the cluster's API server. Required.
	REST *rest.Config
	// Store receives the referenced Secrets. Required.
	Store *tlssecrets.Store
	// ControllerName: only the Gateways of GatewayClasses with this spec.controllerName are followed. Default
	// DefaultControllerName.
	ControllerName string
	// Log, default slog.Default().
	Log *slog.Logger
}

// SecretReader keeps a tlssecrets.Store holding exactly the Secrets that the cluster's Gateways of fedgate's
// GatewayClasses (ControllerName) reference (tlssecrets.GatewayRefs), in another namespace only with a ReferenceGrant
// there that permits it (tlssecrets.Permitted), and that exist. It watches the Gateways, the GatewayClasses and the
// ReferenceGrants, and each referenced Secret alone: one watch per
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
	if cfg.ControllerName == "" {
		cfg.ControllerName = DefaultControllerName
	}
	return &SecretReader{cfg: cfg, log: log.With("component", "tls-secrets")}, nil
}

var (
	gatewayGVR      = gatewayv1.SchemeGroupVersion.WithResource("gateways")
	gatewayClassGVR = gatewayv1.SchemeGroupVersion.WithResource("gatewayclasses")
	// ReferenceGrant v1beta1: the version every release with the kind serves (see watchedKinds).
	referenceGrantGVR = gatewayv1beta1.SchemeGroupVersion.WithResource("referencegrants")
)

// dynamicInformer is an informer of every object of gvr (unstructured).
func dynamicInformer(dc dynamic.Interface, gvr schema.GroupVersionResource) toolscache.SharedIndexInformer {
	return toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return dc.Resource(gvr).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return dc.Resource(gvr).Watch(ctx, o)
		},
	}, &unstructured.Unstructured{}, 0, toolscache.Indexers{})
}

// served reports whether the API server serves resource in gv.
func served(cs kubernetes.Interface, gv schema.GroupVersion, resource string) (bool, error) {
	l, err := cs.Discovery().ServerResourcesForGroupVersion(gv.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range l.APIResources {
		if r.Name == resource {
			return true, nil
		}
	}
	return false, nil
}

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
	refs := newRefWatcher(ctx, r.secretKind(), r.cfg.ControllerName, cs, r.log)
	// Gateways, their classes and, when served, ReferenceGrants (without them, no cross-namespace reference is read).
	informers := []toolscache.SharedIndexInformer{dynamicInformer(dc, gatewayGVR), dynamicInformer(dc, gatewayClassGVR)}
	handlers := []toolscache.ResourceEventHandler{refs.handler(), refs.classHandler()}
	grants, err := served(cs, gatewayv1beta1.SchemeGroupVersion, referenceGrantGVR.Resource)
	if err != nil {
		return fmt.Errorf("kube secret reader: discovery: %w", err)
	}
	if grants {
		informers = append(informers, dynamicInformer(dc, referenceGrantGVR))
		handlers = append(handlers, refs.grantHandler())
	} else {
		r.log.Warn("ReferenceGrants not served: no TLS Secret of another namespace than its Gateway's is read")
	}
	var regs []toolscache.InformerSynced
	for i, inf := range informers {
		reg, err := inf.AddEventHandler(handlers[i])
		if err != nil {
			return fmt.Errorf("kube secret reader: %w", err)
		}
		regs = append(regs, reg.HasSynced)
	}
	var running sync.WaitGroup
	for _, inf := range informers {
		running.Go(func() { inf.RunWithContext(ctx) })
	}
	defer func() {
		cancel()
		running.Wait()
		refs.stop()
	}()
	if !toolscache.WaitForCacheSync(ctx.Done(), regs...) {
		return nil
	}
	// The handlers have seen every listed Gateway, GatewayClass and ReferenceGrant, so the watches of every Secret
	// referenced (and permitted) at start exist now.
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
		kind:     resources.KindSecret,
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

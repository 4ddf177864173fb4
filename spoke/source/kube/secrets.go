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
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
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

	mu       sync.Mutex
	byGW     map[string][]tlssecrets.Ref     // the references of each Gateway, by namespace/name
	watches  map[tlssecrets.Ref]*secretWatch // one per referenced Secret
	watchCtx context.Context
	cs       kubernetes.Interface
	running  sync.WaitGroup // the Secret informers
}

// secretWatch is the informer of one Secret.
type secretWatch struct {
	cancel   context.CancelFunc
	informer toolscache.SharedIndexInformer
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
	r.mu.Lock()
	r.cs, r.watchCtx = cs, ctx
	r.byGW, r.watches = map[string][]tlssecrets.Ref{}, map[tlssecrets.Ref]*secretWatch{}
	r.mu.Unlock()

	gws := toolscache.NewSharedIndexInformer(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return dc.Resource(gatewayGVR).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return dc.Resource(gatewayGVR).Watch(ctx, o)
		},
	}, &unstructured.Unstructured{}, 0, toolscache.Indexers{})
	if _, err := gws.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.gateway(obj, false) },
		UpdateFunc: func(_, obj any) { r.gateway(obj, false) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			r.gateway(obj, true)
		},
	}); err != nil {
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
		r.mu.Lock()
		for ref, w := range r.watches {
			w.cancel()
			delete(r.watches, ref)
		}
		r.mu.Unlock()
		r.running.Wait()
	}()

	if !toolscache.WaitForCacheSync(ctx.Done(), gws.HasSynced) {
		return nil
	}
	// The handlers have seen every listed Gateway, so the watches of every Secret referenced at start exist now.
	r.mu.Lock()
	var synced []toolscache.InformerSynced
	for _, w := range r.watches {
		synced = append(synced, w.informer.HasSynced)
	}
	r.mu.Unlock()
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	r.log.Info("TLS Secrets read", "referenced", len(synced), "held", len(r.cfg.Store.Refs()))
	r.cfg.Store.MarkSynced()
	<-ctx.Done()
	return nil
}

// gateway records the references of the Gateway obj (none once deleted) and reconciles the Secret watches.
func (r *SecretReader) gateway(obj any, deleted bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := u.GetNamespace() + "/" + u.GetName()
	var refs []tlssecrets.Ref
	if !deleted {
		gw := &gatewayv1.Gateway{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, gw); err != nil {
			r.log.Error("cannot read Gateway for its certificateRefs", "object", resources.Describe(resources.KindGateway, u.GetNamespace(), u.GetName()), "err", err)
		} else {
			refs = tlssecrets.GatewayRefs(gw)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watchCtx.Err() != nil {
		return
	}
	if len(refs) == 0 {
		delete(r.byGW, key)
	} else {
		r.byGW[key] = refs
	}
	want := map[tlssecrets.Ref]bool{}
	for _, rs := range r.byGW {
		for _, ref := range rs {
			want[ref] = true
		}
	}
	for ref, w := range r.watches {
		if !want[ref] {
			w.cancel()
			delete(r.watches, ref)
			r.cfg.Store.Delete(ref.Namespace, ref.Name)
			r.log.Debug("TLS Secret no longer referenced", "secret", ref.String())
		}
	}
	for ref := range want {
		if r.watches[ref] == nil {
			r.watches[ref] = r.watchLocked(ref)
			r.log.Debug("TLS Secret referenced", "secret", ref.String())
		}
	}
}

// watchLocked starts the informer of the one Secret ref.
func (r *SecretReader) watchLocked(ref tlssecrets.Ref) *secretWatch {
	ctx, cancel := context.WithCancel(r.watchCtx)
	secrets := r.cs.CoreV1().Secrets(ref.Namespace)
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
	w := &secretWatch{cancel: cancel, informer: inf}
	// Events are applied under r.mu and only while this watch is the current one for ref, so a late event of a
	// stopped watch never brings back a Secret no Gateway references any more.
	apply := func(obj any, deleted bool) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj, deleted = t.Obj, true
		}
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Name != ref.Name || s.Namespace != ref.Namespace {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.watches[ref] != w {
			return
		}
		if deleted {
			r.cfg.Store.Delete(ref.Namespace, ref.Name)
			return
		}
		if err := r.cfg.Store.Set(s); err != nil {
			r.log.Error("cannot hold TLS Secret", "secret", ref.String(), "err", err)
		}
	}
	_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { apply(obj, false) },
		UpdateFunc: func(_, obj any) { apply(obj, false) },
		DeleteFunc: func(obj any) { apply(obj, true) },
	})
	r.running.Go(func() { inf.RunWithContext(ctx) })
	return w
}

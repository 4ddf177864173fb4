package kube

import (
	"context"
	"log/slog"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// refKind says which objects a refWatcher reads of those the cluster's Gateways reference, and where they go.
type refKind struct {
	// what names the objects in logs ("TLS Secret").
	what string
	// kind is the objects' kind in the core group (resources.KindSecret): what a ReferenceGrant must name.
	kind string
	// refs returns the objects a Gateway references.
	refs func(*gatewayv1.Gateway) []tlssecrets.Ref
	// informer returns the informer of the one object ref: a list and watch in its namespace with the field selector
	// metadata.name=<name>, never of the kind at large.
	informer func(cs kubernetes.Interface, ref tlssecrets.Ref) toolscache.SharedIndexInformer
	// set holds obj, an object delivered by ref's informer; del drops ref. Both are called under the watcher's lock,
	// only for the current watch of a referenced object.
	set func(ref tlssecrets.Ref, obj any)
	del func(ref tlssecrets.Ref)
}

// refWatcher keeps one watch per object the cluster's Gateways reference (refKind.refs), started when the first
// Gateway references it and stopped when the last reference goes; the Gateways' events come through its handler.
// SecretReader (TLS Secrets) and the Source (CA ConfigMaps) use it.
//
// Only references fedgate would honour are followed, so that no tenant can make the spoke read (and report the
// existence of) an object it could not use: those of a Gateway whose GatewayClass has the spoke's controllerName
// (classHandler), and, to another namespace, only those a ReferenceGrant in the object's namespace permits
// (grantHandler, tlssecrets.Permitted). A change of a class or a grant recomputes the references.
type refWatcher struct {
	kind       refKind
	controller string
	cs         kubernetes.Interface
	log        *slog.Logger

	mu       sync.Mutex
	ctx      context.Context               // of the watches; once done, no watch starts
	gateways map[string]*gatewayv1.Gateway // by namespace/name
	classes  map[string]bool               // the GatewayClasses with our controllerName, by name
	grants   map[string]*gatewayv1.ReferenceGrant
	watches  map[tlssecrets.Ref]*refWatch
	stopping bool
	running  sync.WaitGroup // the informers
}

// refWatch is the informer of one referenced object.
type refWatch struct {
	cancel   context.CancelFunc
	informer toolscache.SharedIndexInformer
}

// newRefWatcher returns a refWatcher whose watches run until ctx ends or stop is called; it follows the references
// of the Gateways of the GatewayClasses with controllerName.
func newRefWatcher(ctx context.Context, kind refKind, controllerName string, cs kubernetes.Interface, log *slog.Logger) *refWatcher {
	return &refWatcher{kind: kind, controller: controllerName, cs: cs, log: log, ctx: ctx,
		gateways: map[string]*gatewayv1.Gateway{}, classes: map[string]bool{}, grants: map[string]*gatewayv1.ReferenceGrant{},
		watches: map[tlssecrets.Ref]*refWatch{}}
}

// eventHandler calls f with each event's object (unstructured) and whether it was deleted.
func eventHandler(f func(u *unstructured.Unstructured, deleted bool)) toolscache.ResourceEventHandler {
	call := func(obj any, deleted bool) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if u, ok := obj.(*unstructured.Unstructured); ok {
			f(u, deleted)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { call(obj, false) },
		UpdateFunc: func(_, obj any) { call(obj, false) },
		DeleteFunc: func(obj any) { call(obj, true) },
	}
}

// handler is the event handler of an informer of Gateways (unstructured).
func (w *refWatcher) handler() toolscache.ResourceEventHandler { return eventHandler(w.gateway) }

// classHandler is the event handler of an informer of GatewayClasses (unstructured).
func (w *refWatcher) classHandler() toolscache.ResourceEventHandler { return eventHandler(w.class) }

// grantHandler is the event handler of an informer of ReferenceGrants (unstructured, any served version).
func (w *refWatcher) grantHandler() toolscache.ResourceEventHandler { return eventHandler(w.grant) }

// synced returns the HasSynced of every current watch: once the Gateway informer's handler has seen its first list,
// these are the watches of every object referenced then.
func (w *refWatcher) synced() []toolscache.InformerSynced {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]toolscache.InformerSynced, 0, len(w.watches))
	for _, rw := range w.watches {
		out = append(out, rw.informer.HasSynced)
	}
	return out
}

// stop stops every watch and waits for their informers; no watch starts afterwards.
func (w *refWatcher) stop() {
	w.mu.Lock()
	w.stopping = true
	for ref, rw := range w.watches {
		rw.cancel()
		delete(w.watches, ref)
	}
	w.mu.Unlock()
	w.running.Wait()
}

// gateway records the Gateway u (forgets it once deleted) and reconciles the watches.
func (w *refWatcher) gateway(u *unstructured.Unstructured, deleted bool) {
	key := u.GetNamespace() + "/" + u.GetName()
	var gw *gatewayv1.Gateway
	if !deleted {
		gw = &gatewayv1.Gateway{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, gw); err != nil {
			w.log.Error("cannot read Gateway for its references", "what", w.kind.what, "object", resources.Describe(resources.KindGateway, u.GetNamespace(), u.GetName()), "err", err)
			gw = nil
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if gw == nil {
		delete(w.gateways, key)
	} else {
		w.gateways[key] = gw
	}
	w.reconcileLocked()
}

// class records whether the GatewayClass u is ours and reconciles the watches.
func (w *refWatcher) class(u *unstructured.Unstructured, deleted bool) {
	c, _, _ := unstructured.NestedString(u.Object, "spec", "controllerName")
	w.mu.Lock()
	defer w.mu.Unlock()
	if !deleted && c == w.controller {
		w.classes[u.GetName()] = true
	} else {
		delete(w.classes, u.GetName())
	}
	w.reconcileLocked()
}

// grant records the ReferenceGrant u (forgets it once deleted, or unreadable) and reconciles the watches.
func (w *refWatcher) grant(u *unstructured.Unstructured, deleted bool) {
	key := u.GetNamespace() + "/" + u.GetName()
	var g *gatewayv1.ReferenceGrant
	if !deleted {
		g = &gatewayv1.ReferenceGrant{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, g); err != nil {
			w.log.Error("cannot read ReferenceGrant", "what", w.kind.what, "object", resources.Describe(resources.KindReferenceGrant, u.GetNamespace(), u.GetName()), "err", err)
			g = nil
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if g == nil {
		delete(w.grants, key)
	} else {
		w.grants[key] = g
	}
	w.reconcileLocked()
}

// wantLocked returns the objects to watch: the permitted references of the Gateways of our classes.
func (w *refWatcher) wantLocked() map[tlssecrets.Ref]bool {
	want := map[tlssecrets.Ref]bool{}
	grants := make([]*gatewayv1.ReferenceGrant, 0, len(w.grants))
	for _, g := range w.grants {
		grants = append(grants, g)
	}
	for _, gw := range w.gateways {
		if !w.classes[string(gw.Spec.GatewayClassName)] {
			continue
		}
		for _, ref := range w.kind.refs(gw) {
			if tlssecrets.Permitted(gw.Namespace, ref, w.kind.kind, grants) {
				want[ref] = true
			}
		}
	}
	return want
}

// reconcileLocked starts and stops watches so that exactly the wanted objects are watched.
func (w *refWatcher) reconcileLocked() {
	if w.stopping || w.ctx.Err() != nil {
		return
	}
	want := w.wantLocked()
	for ref, rw := range w.watches {
		if !want[ref] {
			rw.cancel()
			delete(w.watches, ref)
			w.kind.del(ref)
			w.log.Debug("no longer referenced", "what", w.kind.what, "object", ref.String())
		}
	}
	for ref := range want {
		if w.watches[ref] == nil {
			w.watches[ref] = w.watchLocked(ref)
			w.log.Debug("referenced", "what", w.kind.what, "object", ref.String())
		}
	}
}

// watchLocked starts the informer of the one object ref.
func (w *refWatcher) watchLocked(ref tlssecrets.Ref) *refWatch {
	ctx, cancel := context.WithCancel(w.ctx)
	inf := w.kind.informer(w.cs, ref)
	rw := &refWatch{cancel: cancel, informer: inf}
	// Events are applied under w.mu and only while this watch is the current one for ref, so a late event of a
	// stopped watch never brings back an object no Gateway references any more.
	apply := func(obj any, deleted bool) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj, deleted = t.Obj, true
		}
		m, ok := obj.(interface {
			GetNamespace() string
			GetName() string
		})
		if !ok || m.GetName() != ref.Name || m.GetNamespace() != ref.Namespace {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.watches[ref] != rw {
			return
		}
		if deleted {
			w.kind.del(ref)
			return
		}
		w.kind.set(ref, obj)
	}
	_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { apply(obj, false) },
		UpdateFunc: func(_, obj any) { apply(obj, false) },
		DeleteFunc: func(obj any) { apply(obj, true) },
	})
	w.running.Go(func() { inf.RunWithContext(ctx) })
	return rw
}

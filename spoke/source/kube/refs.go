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
type refWatcher struct {
	kind refKind
	cs   kubernetes.Interface
	log  *slog.Logger

	mu       sync.Mutex
	ctx      context.Context             // of the watches; once done, no watch starts
	byGW     map[string][]tlssecrets.Ref // the references of each Gateway, by namespace/name
	watches  map[tlssecrets.Ref]*refWatch
	stopping bool
	running  sync.WaitGroup // the informers
}

// refWatch is the informer of one referenced object.
type refWatch struct {
	cancel   context.CancelFunc
	informer toolscache.SharedIndexInformer
}

// newRefWatcher returns a refWatcher whose watches run until ctx ends or stop is called.
func newRefWatcher(ctx context.Context, kind refKind, cs kubernetes.Interface, log *slog.Logger) *refWatcher {
	return &refWatcher{kind: kind, cs: cs, log: log, ctx: ctx, byGW: map[string][]tlssecrets.Ref{}, watches: map[tlssecrets.Ref]*refWatch{}}
}

// handler is the event handler of an informer of Gateways (unstructured).
func (w *refWatcher) handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.gateway(obj, false) },
		UpdateFunc: func(_, obj any) { w.gateway(obj, false) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			w.gateway(obj, true)
		},
	}
}

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

// gateway records the references of the Gateway obj (none once deleted) and reconciles the watches.
func (w *refWatcher) gateway(obj any, deleted bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := u.GetNamespace() + "/" + u.GetName()
	var refs []tlssecrets.Ref
	if !deleted {
		gw := &gatewayv1.Gateway{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, gw); err != nil {
			w.log.Error("cannot read Gateway for its references", "what", w.kind.what, "object", resources.Describe(resources.KindGateway, u.GetNamespace(), u.GetName()), "err", err)
		} else {
			refs = w.kind.refs(gw)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping || w.ctx.Err() != nil {
		return
	}
	if len(refs) == 0 {
		delete(w.byGW, key)
	} else {
		w.byGW[key] = refs
	}
	want := map[tlssecrets.Ref]bool{}
	for _, rs := range w.byGW {
		for _, ref := range rs {
			want[ref] = true
		}
	}
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

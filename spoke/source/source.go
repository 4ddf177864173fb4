// Package source produces the set of a cluster's local objects (Gateways, routes, Services, EndpointSlices, ...) that
// a spoke reports to the hub. A Source only observes; it never writes to the cluster and knows nothing about the hub.
//
// Two implementations are planned: Dir (a directory of YAML, for standalone spokes, demos and tests) and a Kubernetes
// source (controller-runtime informers). Both emit full snapshots; the reporter turns them into deltas.
package source

import (
	"bytes"
	"context"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

// Snapshot is the full set of a cluster's local objects at one moment, sorted with resources.SortObjects. Snapshots
// are immutable once emitted: consumers may keep them and a Source must not modify one after passing it to emit.
type Snapshot struct {
	Objects []*fedgatepb.Object
}

// Source watches a cluster's objects.
type Source interface {
	// Run calls emit with the first complete snapshot as soon as it has one, then again whenever the set of objects
	// changes, until ctx ends. emit is called from one goroutine at a time and must not block for long. Run returns
	// nil when ctx ends and an error when the source cannot continue.
	Run(ctx context.Context, emit func(Snapshot)) error
}

// NewSnapshot sorts objs and returns them as a Snapshot. It takes ownership of objs.
func NewSnapshot(objs []*fedgatepb.Object) Snapshot {
	resources.SortObjects(objs)
	return Snapshot{Objects: objs}
}

// Equal reports whether two snapshots hold the same objects with the same content.
func (s Snapshot) Equal(o Snapshot) bool {
	if len(s.Objects) != len(o.Objects) {
		return false
	}
	for i, a := range s.Objects {
		if !SameObject(a, o.Objects[i]) {
			return false
		}
	}
	return true
}

// SameObject reports whether a and b are the same object with the same content. Content is compared as the JSON
// bytes: sources produce them deterministically, so a spurious difference costs one redundant upsert, never a miss.
func SameObject(a, b *fedgatepb.Object) bool {
	return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name && a.ApiVersion == b.ApiVersion &&
		bytes.Equal(a.Json, b.Json)
}

// ObjectID names an object in a snapshot (see resources.ID).
func ObjectID(o *fedgatepb.Object) string { return resources.ID(o.Kind, o.Namespace, o.Name) }

// Static is a Source whose objects never change: it emits them once. A spoke with no local objects to report (it only
// routes to other clusters) runs with an empty Static so the hub still learns of it.
type Static struct {
	Objects []*fedgatepb.Object
}

// Run implements Source.
func (s Static) Run(ctx context.Context, emit func(Snapshot)) error {
	emit(NewSnapshot(append([]*fedgatepb.Object(nil), s.Objects...)))
	<-ctx.Done()
	return nil
}

package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/google/uuid"

	"github.com/fedgate/fedgate/apis/resources"
)

// stampMetadata gives an object applied at the hub the bookkeeping an API server would: a uid and creationTimestamp
// when it is created (kept from then on), generation 1 on create and one more whenever anything but metadata and
// status changes. Route precedence ("oldest route wins") and observedGeneration in every status rely on these, so
// objects applied with hubctl behave exactly like objects applied to a cluster. Client-supplied values of these
// fields are ignored, as an API server ignores them. The output is canonical JSON (sorted keys), so re-applying the
// same object stores the same bytes.
func stampMetadata(prev, next []byte, now time.Time) ([]byte, error) {
	var n map[string]any
	if err := json.Unmarshal(next, &n); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	meta, _ := n["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		n["metadata"] = meta
	}
	for _, f := range []string{"resourceVersion", "managedFields", "selfLink", "uid", "creationTimestamp", "generation", "deletionTimestamp"} {
		delete(meta, f)
	}
	delete(n, "status")
	var p map[string]any
	if len(prev) > 0 {
		if err := json.Unmarshal(prev, &p); err != nil {
			p = nil // an unreadable stored value is replaced as if new
		}
	}
	pm, _ := p["metadata"].(map[string]any)
	if pm == nil {
		meta["uid"] = uuid.NewString()
		meta["creationTimestamp"] = now.UTC().Format(time.RFC3339)
		meta["generation"] = 1
		return json.Marshal(n)
	}
	meta["uid"], meta["creationTimestamp"] = pm["uid"], pm["creationTimestamp"]
	if meta["uid"] == nil {
		meta["uid"] = uuid.NewString()
	}
	if meta["creationTimestamp"] == nil {
		meta["creationTimestamp"] = now.UTC().Format(time.RFC3339)
	}
	gen, _ := pm["generation"].(float64)
	if gen < 1 {
		gen = 1
	}
	if !reflect.DeepEqual(withoutMeta(p), withoutMeta(n)) {
		gen++
	}
	meta["generation"] = int64(gen)
	return json.Marshal(n)
}

// withoutMeta is the object without metadata and status: what generation counts changes of.
func withoutMeta(o map[string]any) map[string]any {
	out := make(map[string]any, len(o))
	for k, v := range o {
		if k != "metadata" && k != "status" {
			out[k] = v
		}
	}
	return out
}

// OriginAnnotation marks objects the hub mirrored from the hub cluster (hub/kube), with the value OriginHubCluster. A
// mirrored object has one writer, the mirror: hubctl may neither change nor delete it (ErrMirrored), and a deletion
// in the hub cluster deletes only what came from there.
const OriginAnnotation = "hub.fedgate.io/origin"

// OriginHubCluster is OriginAnnotation's value on mirrored objects.
const OriginHubCluster = "kubernetes"

// ErrMirrored refuses a hubctl change to an object mirrored from the hub cluster: the mirror would put the hub
// cluster's version back, after spokes had been sent the change.
var ErrMirrored = errors.New("mirrored from the hub cluster")

// Mirrored tells whether an object's JSON carries the mirror's origin annotation.
func Mirrored(js []byte) bool {
	var o struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	return json.Unmarshal(js, &o) == nil && o.Metadata.Annotations[OriginAnnotation] == OriginHubCluster
}

func mirroredError(i int, field, kind, namespace, name string) error {
	return fmt.Errorf("%s[%d]: %s: %w: change it in the hub cluster (kubectl); hubctl does not write mirrored objects", field, i, resources.Describe(kind, namespace, name), ErrMirrored)
}

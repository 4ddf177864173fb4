package server

import (
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/store"
)

// An object mirrored from the hub cluster has one writer, the mirror (issue 9: hubctl delete printed "deleted", the
// mirror put the object back ~60 ms later and in between spokes were sent a config without it). hubctl apply and
// delete of it are refused with an error naming the object and where to change it, and nothing is written: no input
// change, so no compile and no config pushed.
func TestMirroredObjectsAreChangedOnlyInTheHubCluster(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	mirroredRoute := func(weight int) *fedgatepb.Object {
		js := fmt.Sprintf(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"color","namespace":"default",`+
			`"annotations":{%q:%q}},"spec":{"rules":[{"backendRefs":[{"name":"color","port":80,"weight":%d}]}]}}`, store.OriginAnnotation, store.OriginHubCluster, weight)
		return &fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Namespace: "default", Name: "color", Json: []byte(js)}
	}
	// What hub/kube stores for a route applied to the hub cluster with kubectl.
	if _, _, err := h.Store().ApplyMirrored(ctx, []*fedgatepb.Object{mirroredRoute(90)}); err != nil {
		t.Fatal(err)
	}
	before, err := h.Store().Client().Get(ctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Controller().WaitCompiled(ctx, before.Header.Revision); err != nil {
		t.Fatal(err)
	}
	compiles := h.Controller().Compiles()
	unchanged := func(what string) {
		t.Helper()
		now, err := h.Store().Client().Get(ctx, store.HubPrefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if now.Header.Revision != before.Header.Revision {
			t.Fatalf("%s changed the store (revision %d → %d)", what, before.Header.Revision, now.Header.Revision)
		}
		if len(now.Kvs) != 1 || !strings.Contains(string(now.Kvs[0].Value), `"weight":90`) {
			t.Fatalf("%s: stored hub objects %s", what, now.Kvs)
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, `HTTPRoute "default/color"`) || !strings.Contains(msg, "change it in the hub cluster") {
			t.Fatalf("%s: %v; want FailedPrecondition naming the object and where to change it", what, err)
		}
		unchanged(what)
	}

	plain := route("color")
	plain.Json = []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"color","namespace":"default"},` +
		`"spec":{"rules":[{"backendRefs":[{"name":"color","port":80,"weight":50}]}]}}`)
	_, err = h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{plain}})
	refused("hubctl apply with new weights", err)
	_, err = h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{route("other"), plain}})
	refused("an apply of two objects, one mirrored", err)
	_, err = h.admin.Delete(ctx, &fedgatepb.DeleteRequest{Refs: []*fedgatepb.ObjectRef{
		{Kind: "HTTPRoute", Namespace: "default", Name: "other"}, {Kind: "HTTPRoute", Namespace: "default", Name: "color"},
	}})
	refused("hubctl delete", err)
	// Nor can hubctl pass an object off as mirrored (the mirror would delete it as gone from the hub cluster).
	fake := mirroredRoute(10)
	fake.Name = "fake"
	fake.Json = []byte(strings.Replace(string(fake.Json), `"name":"color","namespace"`, `"name":"fake","namespace"`, 1))
	if _, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{fake}}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "metadata.annotations["+store.OriginAnnotation+"]") {
		t.Fatalf("hubctl apply of an object carrying the origin annotation: %v", err)
	}
	unchanged("an apply carrying the origin annotation")
	if n := h.Controller().Compiles() - compiles; n != 0 {
		t.Fatalf("%d compiles after refused changes", n)
	}

	// The mirror itself still changes and deletes it.
	if _, _, err := h.Store().ApplyMirrored(ctx, []*fedgatepb.Object{mirroredRoute(50)}); err != nil {
		t.Fatal(err)
	}
	del, _, _, err := h.Store().DeleteMirrored(ctx, []*fedgatepb.ObjectRef{{Kind: "HTTPRoute", Namespace: "default", Name: "color"}})
	if err != nil || len(del) != 1 {
		t.Fatalf("the mirror's delete: %v %v", del, err)
	}
}

package server

import (
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/store"
)

// TestUnusedEndpointSliceChurnPushesNothing: the endpoints of a Service no route uses change; the hub compiles, but no
// cluster's graph key is written, so no spoke is pushed a config and no config hash changes (issue 9, relevance
// filter). A change a projection depends on (a listener's port) is written.
func TestUnusedEndpointSliceChurnPushesNothing(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	cli := h.Store().Client()
	slice := func(endpoints string) *fedgatepb.Object {
		return yamlObject(t, fmt.Sprintf(`{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: idle-1, namespace: apps, `+
			`labels: {kubernetes.io/service-name: idle}}, addressType: IPv4, ports: [{name: http, port: 9000}], endpoints: [%s]}`, endpoints))
	}
	reportEast := func(seq int64, port int, endpoints string) {
		t.Helper()
		objs := append(gateway(t, port), service("idle"), slice(endpoints))
		if _, err := report(t, h, "east", snapshot(seq, objs...)); err != nil {
			t.Fatal(err)
		}
	}
	// compiled waits for the compile of everything written so far and returns the graph keys' mod revisions.
	compiled := func() map[string]int64 {
		t.Helper()
		resp, err := cli.Get(ctx, store.GraphPrefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Controller().WaitCompiled(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
		resp, err = cli.Get(ctx, store.GraphPrefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		mods := map[string]int64{}
		for _, kv := range resp.Kvs {
			mods[string(kv.Key)] = kv.ModRevision
		}
		return mods
	}

	if _, err := report(t, h, "west", snapshot(1, gateway(t, 18080)...)); err != nil {
		t.Fatal(err)
	}
	reportEast(1, 18080, `{addresses: [10.0.0.1]}`)
	before := compiled()
	if len(before) != 2 {
		t.Fatalf("graph keys %v, want east's and west's", before)
	}
	reportEast(2, 18080, `{addresses: [10.0.0.1]}, {addresses: [10.0.0.2], conditions: {ready: false}}`)
	if after := compiled(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("an unused Service's endpoints changed and graph keys were written: %v → %v", before, after)
	}
	reportEast(3, 18081, `{addresses: [10.0.0.1]}`)
	if after := compiled(); after[store.GraphKey("east")] == before[store.GraphKey("east")] {
		t.Fatalf("east's listener moved and its graph key was not written: %v → %v", before, after)
	}
}

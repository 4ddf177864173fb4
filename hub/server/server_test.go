package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/store"
)

type testHub struct {
	*Hub
	admin       fedgatepb.AdminClient
	adminConfig string
	// clusters holds a joined identity per cluster name (see joinedSync).
	clusters map[string]*clusterCred
}

func startHub(t *testing.T, mutate ...func(*Config)) *testHub {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.AdminConfig = filepath.Join(t.TempDir(), "fedgate", "config")
	cfg.ShutdownGrace = time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if err := h.Controller().WaitCompiled(ctx, 1); err != nil { // the initial compile
		t.Fatal(err)
	}
	th := &testHub{Hub: h, adminConfig: cfg.AdminConfig, clusters: map[string]*clusterCred{}}
	th.admin = fedgatepb.NewAdminClient(adminConn(t, cfg.AdminConfig))
	return th
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func object(apiVersion, kind, ns, name, spec string) *fedgatepb.Object {
	js := fmt.Sprintf(`{"apiVersion":%q,"kind":%q,"metadata":{"name":%q,"namespace":%q},"spec":%s}`, apiVersion, kind, name, ns, spec)
	return &fedgatepb.Object{ApiVersion: apiVersion, Kind: kind, Namespace: ns, Name: name, Json: []byte(js)}
}

func route(name string) *fedgatepb.Object {
	return object("gateway.networking.k8s.io/v1", "HTTPRoute", "default", name, `{"hostnames":["a.example"]}`)
}

func service(name string) *fedgatepb.Object {
	return object("v1", "Service", "apps", name, `{"ports":[{"port":80}]}`)
}

// waitKey blocks until pred holds for key's value (nil when absent), using an etcd watch as the signal.
func waitKey(t *testing.T, cli *clientv3.Client, key string, pred func(v []byte) bool) {
	t.Helper()
	ctx := testCtx(t)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var v []byte
	if len(resp.Kvs) > 0 {
		v = resp.Kvs[0].Value
	}
	if pred(v) {
		return
	}
	for wr := range cli.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
		for _, ev := range wr.Events {
			v = nil
			if ev.Type == clientv3.EventTypePut {
				v = ev.Kv.Value
			}
			if pred(v) {
				return
			}
		}
	}
	t.Fatalf("%s: condition not reached: %v", key, ctx.Err())
}

func names(objs []*fedgatepb.ListedObject) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Cluster+":"+o.Object.Kind+"/"+o.Object.Name)
	}
	return out
}

func TestAdminApplyIsAllOrNothing(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	cases := []struct {
		name    string
		bad     *fedgatepb.Object
		wantMsg string
	}{
		{"field of the wrong type", object("gateway.networking.k8s.io/v1", "HTTPRoute", "default", "broken", `{"hostnames":5}`), `objects[1]: HTTPRoute "default/broken"`},
		{"unknown kind", object("example.com/v1", "Widget", "default", "w", `{}`), `objects[1]: Widget "default/w": kind`},
		{"envelope disagrees with JSON", func() *fedgatepb.Object { o := route("x"); o.Name = "y"; return o }(), `objects[1]: HTTPRoute "default/y": metadata.name`},
		{"a Namespace, which clusters report", object("v1", "Namespace", "", "team-a", `{}`), `objects[1]: Namespace "team-a": kind: Unsupported value: Namespaces are reported by the clusters`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{route("good"), tc.bad}})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("apply: got %v, want InvalidArgument", err)
			}
			if !strings.Contains(status.Convert(err).Message(), tc.wantMsg) {
				t.Fatalf("error %q does not name the object and field (%q)", status.Convert(err).Message(), tc.wantMsg)
			}
			list, err := h.admin.List(ctx, &fedgatepb.ListRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Objects) != 0 {
				t.Fatalf("a refused apply stored %v", names(list.Objects))
			}
		})
	}
}

// An object written for an older version of its kind with a served version's schema (GRPCRoute v1alpha2) is stored as
// the served version, and the response warns about it; hubctl shows the warning.
func TestAdminApplyStoresOlderVersionsAsServed(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	old := object("gateway.networking.k8s.io/v1alpha2", "GRPCRoute", "default", "echo", `{"rules":[{"backendRefs":[{"name":"echo","port":9000}]}]}`)
	resp, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{old}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `GRPCRoute "default/echo": gateway.networking.k8s.io/v1alpha2 is stored as gateway.networking.k8s.io/v1`) {
		t.Errorf("warnings %q", resp.Warnings)
	}
	list, err := h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "grpcroutes"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Objects) != 1 || list.Objects[0].Object.ApiVersion != "gateway.networking.k8s.io/v1" ||
		!strings.Contains(string(list.Objects[0].Object.Json), `"apiVersion":"gateway.networking.k8s.io/v1"`) {
		t.Fatalf("stored %v, want the route as gateway.networking.k8s.io/v1", list.Objects)
	}
	// The same route applied as v1 changes nothing and warns about nothing.
	resp, err = h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{
		object("gateway.networking.k8s.io/v1", "GRPCRoute", "default", "echo", `{"rules":[{"backendRefs":[{"name":"echo","port":9000}]}]}`)}})
	if err != nil || len(resp.Warnings) != 0 || resp.Results[0].Action != "unchanged" {
		t.Fatalf("the same route as v1: %v %v", resp, err)
	}
}

func TestAdminApplyListDelete(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	resp, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{route("a"), route("b")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 2 || resp.Results[0].Action != "created" || resp.Revision == 0 {
		t.Fatalf("apply response: %v", resp)
	}
	if err := h.Controller().WaitCompiled(ctx, resp.Revision); err != nil {
		t.Fatal(err)
	}
	list, err := h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "routes"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list.Objects); strings.Join(got, ",") != ":HTTPRoute/a,:HTTPRoute/b" {
		t.Fatalf("listed %v", got)
	}
	if _, err := h.admin.List(ctx, &fedgatepb.ListRequest{Kind: "widgets"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("list of an unknown kind: %v", err)
	}
	del, err := h.admin.Delete(ctx, &fedgatepb.DeleteRequest{Refs: []*fedgatepb.ObjectRef{
		{Kind: "HTTPRoute", Namespace: "default", Name: "a"}, {Kind: "HTTPRoute", Namespace: "default", Name: "nope"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Deleted) != 1 || len(del.NotFound) != 1 || del.NotFound[0].Name != "nope" {
		t.Fatalf("delete response: %v", del)
	}
}

// report opens a Report stream, sends hello and msgs, closes it and returns the hub's answer.
func report(t *testing.T, h *testHub, cluster string, msgs ...*fedgatepb.ReportMessage) (*fedgatepb.ReportAck, error) {
	t.Helper()
	return reportAs(t, h, cluster, cluster, msgs...)
}

// reportAs reports over the identity of cluster while the hello names helloCluster.
func reportAs(t *testing.T, h *testHub, cluster, helloCluster string, msgs ...*fedgatepb.ReportMessage) (*fedgatepb.ReportAck, error) {
	t.Helper()
	stream, err := h.joinedSync(t, cluster).Report(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	all := append([]*fedgatepb.ReportMessage{{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{
		Cluster: helloCluster, EastWestAddress: "127.0.0.1:15443", AgentVersion: "test",
	}}}}, msgs...)
	for _, m := range all {
		if err := stream.Send(m); err != nil {
			break // the hub ended the stream; CloseAndRecv has its status
		}
	}
	return stream.CloseAndRecv()
}

func snapshot(seq int64, objs ...*fedgatepb.Object) *fedgatepb.ReportMessage {
	return &fedgatepb.ReportMessage{Seq: seq, Msg: &fedgatepb.ReportMessage_Snapshot{Snapshot: &fedgatepb.ReportSnapshot{Objects: objs}}}
}

func TestReportStoresSnapshotsAndRefusesBadOnes(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	ack, err := report(t, h, "east", snapshot(1, service("web"), service("db")),
		&fedgatepb.ReportMessage{Seq: 2, Msg: &fedgatepb.ReportMessage_Delta{Delta: &fedgatepb.ReportDelta{
			Deletes: []*fedgatepb.ObjectRef{{Kind: "Service", Namespace: "apps", Name: "db"}},
		}}})
	if err != nil || ack.Seq != 2 {
		t.Fatalf("report: ack %v, err %v", ack, err)
	}
	stored := func() string {
		objs, err := h.Store().Report(ctx, "east")
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, o := range objs {
			n = append(n, o.Name)
		}
		return strings.Join(n, ",")
	}
	if got := stored(); got != "web" {
		t.Fatalf("stored report %q, want web", got)
	}
	// The compile loop turned the new cluster into a graph.
	waitKey(t, h.Store().Client(), store.GraphKey("east"), func(v []byte) bool { return v != nil })

	bad := []struct {
		name string
		obj  *fedgatepb.Object
		want string
	}{
		{"unknown kind", object("example.com/v1", "Widget", "apps", "w", `{}`), `snapshot.objects[1]: Widget "apps/w"`},
		{"does not decode", object("v1", "Service", "apps", "broken", `"not an object"`), `snapshot.objects[1]: Service "apps/broken"`},
		{"name breaks the key", func() *fedgatepb.Object { o := service("x"); o.Name = "../x"; return o }(), `metadata.name`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := report(t, h, "east", snapshot(3, service("other"), tc.obj))
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("bad report: got %v, want InvalidArgument naming %q", err, tc.want)
			}
			if got := stored(); got != "web" {
				t.Fatalf("a refused report changed the stored report to %q", got)
			}
		})
	}
	// The identity is the certificate's: east's certificate cannot report for west, and nothing of it is stored.
	_, err = reportAs(t, h, "east", "west", snapshot(4, service("intruder")))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), `certificate is for cluster "east"`) {
		t.Fatalf("report for another cluster: got %v, want PermissionDenied", err)
	}
	if objs, err := h.Store().Report(ctx, "west"); err != nil || len(objs) != 0 {
		t.Fatalf("west's report after a refused cross-cluster report: %v %v", objs, err)
	}
	if got := stored(); got != "web" {
		t.Fatalf("a refused cross-cluster report changed east's report to %q", got)
	}
}

// subscriber is one Subscribe stream with its received updates on a channel.
type subscriber struct {
	stream  fedgatepb.Sync_SubscribeClient
	updates chan *fedgatepb.SpokeConfigUpdate
	done    chan error // the stream's final error, once it ends
}

func subscribe(t *testing.T, h *testHub, cluster, appliedHash string) *subscriber {
	t.Helper()
	return subscribeAs(t, h, cluster, cluster, appliedHash)
}

// subscribeAs subscribes over the identity of cluster while the hello names helloCluster.
func subscribeAs(t *testing.T, h *testHub, cluster, helloCluster, appliedHash string) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	stream, err := h.joinedSync(t, cluster).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{stream: stream, updates: make(chan *fedgatepb.SpokeConfigUpdate, 16), done: make(chan error, 1)}
	if err := stream.Send(&fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Hello{Hello: &fedgatepb.Hello{
		Cluster: helloCluster, AppliedHash: appliedHash,
	}}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.updates)
		for {
			u, err := stream.Recv()
			if err != nil {
				s.done <- err
				return
			}
			s.updates <- u
		}
	}()
	return s
}

func (s *subscriber) next(t *testing.T) *fedgatepb.SpokeConfigUpdate {
	t.Helper()
	select {
	case u, ok := <-s.updates:
		if !ok {
			t.Fatal("subscribe stream ended")
		}
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("no config update within 20s")
	}
	return nil
}

// writeGraph stores a graph for east directly, standing in for a compile whose output changed.
func writeGraph(t *testing.T, h *testHub, ew string) *store.GraphRecord {
	t.Helper()
	ctx := testCtx(t)
	cfg := &spokeconfig.SpokeConfig{Cluster: "east", Clusters: []spokeconfig.Cluster{{Name: "west", EastWestAddress: ew}}}
	if _, err := h.Store().WriteGraphs(ctx, nil, h.Controller().Compiled(), map[string]store.Projection{"east": {Config: cfg}}); err != nil {
		t.Fatal(err)
	}
	g, _, err := h.Store().ReadGraph(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestSubscribeSendsConfigsAndRecordsAcks(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	// A cluster with no graph yet gets nothing until one exists.
	s1 := subscribe(t, h, "east", "")
	rec, err := h.Store().UpsertCluster(ctx, store.ClusterRecord{Name: "east", EastWestAddress: "127.0.0.1:15443"})
	if err != nil {
		t.Fatal(err)
	}
	_ = rec
	u := s1.next(t)
	if spokeconfig.Hash(u.ConfigJson) != u.Hash {
		t.Fatal("update hash does not match its config")
	}
	cfg, err := spokeconfig.Decode(u.ConfigJson)
	if err != nil || cfg.Cluster != "east" || cfg.Revision != u.Revision {
		t.Fatalf("config: %+v, err %v", cfg, err)
	}

	// Every later change is streamed.
	g2 := writeGraph(t, h, "127.0.0.1:2")
	if u := s1.next(t); u.Hash != g2.Hash || u.Revision != g2.Revision {
		t.Fatalf("second update %d/%s, want %d/%s", u.Revision, u.Hash, g2.Revision, g2.Hash)
	}

	// ACK and NACK are recorded and shown by ListClusters.
	if err := s1.stream.Send(&fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Ack{Ack: &fedgatepb.Ack{Revision: g2.Revision, Hash: g2.Hash}}}); err != nil {
		t.Fatal(err)
	}
	waitKey(t, h.Store().Client(), store.SyncStateKey("east"), func(v []byte) bool {
		return strings.Contains(string(v), fmt.Sprintf(`"ackedRevision":%d`, g2.Revision))
	})
	if err := s1.stream.Send(&fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Nack{Nack: &fedgatepb.Nack{Revision: g2.Revision + 1, Error: "port 80 in use"}}}); err != nil {
		t.Fatal(err)
	}
	waitKey(t, h.Store().Client(), store.SyncStateKey("east"), func(v []byte) bool { return strings.Contains(string(v), "port 80 in use") })
	cl, err := h.admin.ListClusters(ctx, &fedgatepb.ListClustersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Clusters) != 1 {
		t.Fatalf("clusters: %v", cl.Clusters)
	}
	c := cl.Clusters[0]
	// A compile of the running hub may replace the graph written above (and send it) at any time: the hub has sent at
	// least g2.
	if c.Name != "east" || c.SentRevision < g2.Revision || c.AckedRevision != g2.Revision ||
		c.NackedRevision != g2.Revision+1 || c.LastNackError != "port 80 in use" || c.EastWestAddress != "127.0.0.1:15443" {
		t.Fatalf("cluster info: %+v", c)
	}
	_ = s1.stream.CloseSend()

	// A re-subscribe that already serves the current graph is not sent it again: the first thing it receives is
	// the next change.
	s2 := subscribe(t, h, "east", g2.Hash)
	g3 := writeGraph(t, h, "127.0.0.1:3")
	if u := s2.next(t); u.Hash != g3.Hash {
		t.Fatalf("re-subscribe with the current hash received %d/%s first, want the newer %d/%s", u.Revision, u.Hash, g3.Revision, g3.Hash)
	}

	// A spoke that serves an older graph gets the current one at once.
	s3 := subscribe(t, h, "east", g2.Hash)
	if u := s3.next(t); u.Hash != g3.Hash {
		t.Fatalf("stale subscriber got %s, want %s", u.Hash, g3.Hash)
	}
}

func TestReportHoldsPresence(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	stream, err := h.joinedSync(t, "west").Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: &fedgatepb.Hello{Labels: map[string]string{"region": "us"}}}}); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, h, "west", 1)
	cl, err := h.admin.ListClusters(ctx, &fedgatepb.ListClustersRequest{})
	if err != nil || len(cl.Clusters) != 1 || !cl.Clusters[0].Connected || cl.Clusters[0].Labels["region"] != "us" || cl.Clusters[0].JoinedAtUnix == 0 {
		t.Fatalf("while connected: %v %v", cl, err)
	}
	if _, err := stream.CloseAndRecv(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	waitPresence(t, h, "west", 0)
	cl, err = h.admin.ListClusters(ctx, &fedgatepb.ListClustersRequest{})
	if err != nil || cl.Clusters[0].Connected {
		t.Fatalf("after disconnect: %v %v", cl, err)
	}
}

func yamlObject(t *testing.T, doc string) *fedgatepb.Object {
	t.Helper()
	objs, err := resources.DecodeYAML(strings.NewReader(doc), "test", "default")
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return objs[0]
}

// TestApplyAndReportReachTheSubscriber runs the whole hub pipeline: a route applied at the hub and a Gateway reported
// by a cluster are compiled into that cluster's SpokeConfig, streamed to its subscriber, and statuses are listed.
func TestApplyAndReportReachTheSubscriber(t *testing.T) {
	h := startHub(t)
	ctx := testCtx(t)
	gwClass := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: GatewayClass, metadata: {name: fedgate}, spec: {controllerName: fedgate.io/gateway-controller}}`)
	gw := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: gw}, spec: {gatewayClassName: fedgate, listeners: [{name: http, protocol: HTTP, port: 8080}]}}`)
	svc := yamlObject(t, `{apiVersion: v1, kind: Service, metadata: {name: color}, spec: {ports: [{port: 80}]}}`)
	rt := yamlObject(t, `{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: color}, spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: color, port: 80}]}]}}`)

	sub := subscribe(t, h, "east", "")
	if _, err := report(t, h, "east", snapshot(1, gwClass, gw, svc)); err != nil {
		t.Fatal(err)
	}
	resp, err := h.admin.Apply(ctx, &fedgatepb.ApplyRequest{Objects: []*fedgatepb.Object{rt}})
	if err != nil {
		t.Fatal(err)
	}
	// Updates arrive as the compile loop catches up; the one compiled from the apply's revision has the route.
	for {
		u := sub.next(t)
		cfg, err := spokeconfig.Decode(u.ConfigJson)
		if err != nil {
			t.Fatalf("config %d: %v", u.Revision, err)
		}
		if u.Revision < resp.Revision {
			continue
		}
		if len(cfg.Ports) != 1 || cfg.Ports[0].Port != 8080 || len(cfg.Ports[0].VirtualHosts) == 0 ||
			len(cfg.Ports[0].VirtualHosts[0].Routes) == 0 || cfg.Ports[0].VirtualHosts[0].Routes[0].Source.Name != "color" {
			t.Fatalf("config at revision %d lacks the route on port 8080: %s", u.Revision, u.ConfigJson)
		}
		break
	}
	if err := h.Controller().WaitCompiled(ctx, resp.Revision); err != nil {
		t.Fatal(err)
	}
	list, err := h.admin.List(ctx, &fedgatepb.ListRequest{IncludeReports: true})
	if err != nil {
		t.Fatal(err)
	}
	statusOf := map[string]string{}
	for _, o := range list.Objects {
		statusOf[o.Cluster+":"+o.Object.Kind+"/"+o.Object.Name] = string(o.StatusJson)
	}
	for _, id := range []string{":HTTPRoute/color", "east:Gateway/gw"} {
		if !strings.Contains(statusOf[id], `"Accepted"`) {
			t.Errorf("status of %s: %q, want an Accepted condition", id, statusOf[id])
		}
	}
}

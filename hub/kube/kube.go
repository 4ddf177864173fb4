// Package kube connects the hub to a Kubernetes "hub cluster" (hub --kubeconfig): Gateway API objects applied there
// with kubectl are mirrored into the hub's store exactly like objects applied with hubctl; their compiled status is
// written back (per parent, with a condition per cluster saying whether that cluster accepted and programmed the route
// and at which graph revision); and every joined cluster is mirrored into a ManagedCluster object.
//
// The loop is level-triggered: any change in the hub cluster or in etcd's status/cluster keys schedules one full,
// idempotent pass. It writes to the API server only what differs.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/store"
)

// mirroredKinds are the kinds read from the hub cluster, in the order their status is written.
var mirroredKinds = []schema.GroupVersionKind{
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: resources.KindGatewayClass},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: resources.KindGateway},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: resources.KindHTTPRoute},
	{Group: "gateway.networking.k8s.io", Version: "v1", Kind: resources.KindGRPCRoute},
	{Group: "gateway.networking.k8s.io", Version: "v1beta1", Kind: resources.KindReferenceGrant},
}

// Options of the hub-cluster integration.
type Options struct {
	Config *rest.Config
	Store  *store.Store
	// Resync is the longest time between passes (default 10 s); changes trigger a pass at once.
	Resync time.Duration
	Logger *slog.Logger
	// Joined returns labels and join time for a cluster (from the registration records); may be nil.
	Joined func(ctx context.Context, cluster string) (labels map[string]string, joinedAt time.Time, ok bool)
}

// Syncer mirrors the hub cluster into the store and status back.
type Syncer struct {
	o      Options
	c      client.Client
	log    *slog.Logger
	passes int
}

// New connects to the hub cluster.
func New(o Options) (*Syncer, error) {
	if o.Resync == 0 {
		o.Resync = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := runtime.NewScheme()
	if err := hubv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	c, err := client.New(o.Config, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("hub cluster client: %w", err)
	}
	return &Syncer{o: o, c: c, log: o.Logger.With("component", "hub-cluster")}, nil
}

// Run passes until ctx ends, while this hub replica holds the hub-cluster mirror's leadership (an etcd election, so
// several replicas never write the same statuses in turn). A pass is triggered by etcd changes under status/,
// syncstate/, clusters/, presence/, and at least every Resync (which also picks up hub-cluster changes: a pass lists
// them).
func (s *Syncer) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := s.lead(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("hub cluster mirror lost its leadership; campaigning again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// watchTrigger calls poke on every change under prefix until ctx ends. The watch requires its etcd member to have a
// leader, so it ends whenever the member loses one (an election, a partition) — and on any other watch error: it is
// watched again, after a pass (poke), since changes made meanwhile went unseen. A pass reads everything, so the new
// watch need not start where the old one stopped.
func watchTrigger(ctx context.Context, cli *clientv3.Client, prefix string, poke func()) {
	for {
		for range cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()) {
			poke()
		}
		poke()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lead campaigns, then passes until ctx ends or the leadership's etcd session expires.
func (s *Syncer) lead(ctx context.Context) error {
	cli := s.o.Store.Client()
	// Not ctx: Session.Close revokes under the session's context, so a cancelled one would leave the leader key to
	// expire after the TTL and a restarted hub would wait it out.
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(10), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return err
	}
	defer session.Close()
	election := concurrency.NewElection(session, store.KubeLeaderPrefix)
	if err := election.Campaign(ctx, "hub"); err != nil {
		return err
	}
	s.log.Info("leading the hub cluster mirror")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	for _, p := range []string{store.StatusPrefix, store.SyncStatePrefix, store.ClustersPrefix, store.PresencePrefix} {
		go watchTrigger(ctx, cli, p, poke)
	}
	tick := time.NewTicker(min(s.o.Resync, time.Second))
	defer tick.Stop()
	poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-session.Done():
			return errors.New("etcd session expired")
		case <-trigger:
		case <-tick.C:
		}
		if err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("hub cluster pass failed", "err", err)
		}
	}
}

// Pass runs one full mirror + status + cluster pass.
func (s *Syncer) Pass(ctx context.Context) error {
	s.passes++
	objs, err := s.mirror(ctx)
	if err != nil {
		return err
	}
	if err := s.writeStatus(ctx, objs); err != nil {
		return err
	}
	return s.syncClusters(ctx)
}

// mirror lists the hub cluster's Gateway API objects, stores them as hub objects and deletes the mirrored ones that
// are gone. Objects the hub refuses are reported in the log and skipped; the rest still go in.
func (s *Syncer) mirror(ctx context.Context) ([]*unstructured.Unstructured, error) {
	var all []*unstructured.Unstructured
	var wire []*fedgatepb.Object
	present := map[string]bool{}
	for _, gvk := range mirroredKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := s.c.List(ctx, list); err != nil {
			if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
				continue // CRD not installed in the hub cluster
			}
			return nil, fmt.Errorf("list %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			all = append(all, u.DeepCopy())
			o, err := toWire(u)
			if err != nil {
				s.log.Warn("hub cluster object skipped", "kind", gvk.Kind, "namespace", u.GetNamespace(), "name", u.GetName(), "err", err)
				continue
			}
			wire = append(wire, o)
			present[resources.ID(o.Kind, o.Namespace, o.Name)] = true
		}
	}
	if len(wire) > 0 {
		if _, _, err := s.o.Store.ApplyMirrored(ctx, wire); err != nil {
			return nil, fmt.Errorf("store hub-cluster objects: %w", err)
		}
	}
	stored, _, err := s.o.Store.ListObjects(ctx, nil, "", false)
	if err != nil {
		return nil, err
	}
	var gone []*fedgatepb.ObjectRef
	for _, so := range stored {
		o := so.Object
		if present[resources.ID(o.Kind, o.Namespace, o.Name)] || !store.Mirrored(o.Json) {
			continue
		}
		gone = append(gone, &fedgatepb.ObjectRef{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
	}
	if len(gone) > 0 {
		if _, _, _, err := s.o.Store.DeleteMirrored(ctx, gone); err != nil {
			return nil, fmt.Errorf("delete objects removed from the hub cluster: %w", err)
		}
	}
	return all, nil
}

// toWire turns a hub-cluster object into what hubctl would have applied: spec and identity, marked with its origin,
// without the server's bookkeeping (which would make every status write look like a change).
func toWire(u *unstructured.Unstructured) (*fedgatepb.Object, error) {
	c := u.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
	unstructured.RemoveNestedField(c.Object, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(c.Object, "metadata", "selfLink")
	ann := c.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
	ann[store.OriginAnnotation] = store.OriginHubCluster
	c.SetAnnotations(ann)
	return resources.FromUnstructured(c, "")
}

// writeStatus copies each mirrored object's compiled status into the hub cluster.
func (s *Syncer) writeStatus(ctx context.Context, objs []*unstructured.Unstructured) error {
	statuses, err := s.o.Store.Statuses(ctx, 0)
	if err != nil {
		return err
	}
	clusters, err := s.o.Store.Clusters(ctx)
	if err != nil {
		return err
	}
	acked := map[string]int64{}
	for _, c := range clusters {
		acked[c.Record.Name] = c.Sync.AckedRevision
	}
	for _, u := range objs {
		raw := statuses[store.StatusKey("", u.GetKind(), u.GetNamespace(), u.GetName())]
		if len(raw) == 0 {
			continue
		}
		var st compiler.ObjectStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			continue
		}
		want := statusFor(u.GetKind(), &st, u.GetGeneration(), acked)
		if want == nil {
			continue
		}
		cur, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status")
		merged := mergeStatus(u.GetKind(), cur, want)
		if equalJSON(cur, merged) {
			continue
		}
		patch := u.DeepCopy()
		if err := unstructured.SetNestedField(patch.Object, merged, "status"); err != nil {
			return err
		}
		if err := s.c.Status().Update(ctx, patch); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return fmt.Errorf("write status of %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	return nil
}

// ClusterConditionType is the condition type, inside a route's parent status, for one cluster: e.g.
// "east.clusters.fedgate.io/Programmed".
func ClusterConditionType(cluster, what string) string {
	return cluster + ".clusters.fedgate.io/" + what
}

// statusFor renders the compiled status of one object as its Kubernetes status (as JSON-compatible maps). Routes get
// one parent entry per parentRef: the aggregate conditions (Accepted, ResolvedRefs: True only when True in every
// cluster, naming each cluster where not) plus, per cluster, <cluster>.clusters.fedgate.io/Accepted and /Programmed
// (see programmed).
func statusFor(kind string, st *compiler.ObjectStatus, generation int64, acked map[string]int64) map[string]any {
	switch kind {
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		byRef := map[string][]compiler.ParentStatus{}
		var order []string
		for _, p := range st.Parents {
			b, _ := json.Marshal(p.ParentRef)
			k := string(b)
			if _, ok := byRef[k]; !ok {
				order = append(order, k)
			}
			byRef[k] = append(byRef[k], p)
		}
		var parents []any
		for _, k := range order {
			ps := byRef[k]
			agg := aggregate(ps, generation)
			for _, p := range ps {
				if p.Cluster == "" {
					continue
				}
				accepted := meta.FindStatusCondition(p.Conditions, "Accepted")
				acc := metav1.Condition{Type: ClusterConditionType(p.Cluster, "Accepted"), Status: metav1.ConditionUnknown, Reason: "Pending", ObservedGeneration: generation}
				if accepted != nil {
					acc.Status, acc.Reason, acc.Message = accepted.Status, accepted.Reason, accepted.Message
				}
				agg = append(agg, acc)
				agg = append(agg, programmed(p, accepted, acked, generation))
			}
			var ref map[string]any
			_ = json.Unmarshal([]byte(k), &ref)
			parents = append(parents, map[string]any{
				"parentRef":      ref,
				"controllerName": string(compiler.ControllerName),
				"conditions":     conditionsJSON(agg),
			})
		}
		return map[string]any{"parents": parents}
	case resources.KindGateway, resources.KindGatewayClass:
		conds := make([]metav1.Condition, 0, len(st.Conditions))
		for _, c := range st.Conditions {
			c.ObservedGeneration = generation
			conds = append(conds, c)
		}
		return map[string]any{"conditions": conditionsJSON(conds)}
	}
	return nil
}

// programmed is the <cluster>.clusters.fedgate.io/Programmed condition of a route's parent in one cluster: True once
// that cluster's spoke acknowledged a graph at least as new as the one the route stands in as its status says
// (p.GraphRevision); False for good (reason from Accepted) when the cluster does not accept the route, and Pending
// while the spoke has not acknowledged that graph or the graph could not be delivered.
func programmed(p compiler.ParentStatus, accepted *metav1.Condition, acked map[string]int64, generation int64) metav1.Condition {
	c := metav1.Condition{Type: ClusterConditionType(p.Cluster, "Programmed"), Status: metav1.ConditionFalse, ObservedGeneration: generation}
	switch rev := acked[p.Cluster]; {
	case accepted == nil:
		c.Reason, c.Message = "Pending", fmt.Sprintf("cluster %s has not judged the route yet", p.Cluster)
	case accepted.Status != metav1.ConditionTrue:
		c.Reason, c.Message = accepted.Reason, fmt.Sprintf("cluster %s does not accept the route: %s", p.Cluster, accepted.Message)
	case p.GraphRevision == 0:
		c.Reason, c.Message = "Pending", fmt.Sprintf("cluster %s has no config with the route: its projection failed (hubctl get clusters says why)", p.Cluster)
	case rev >= p.GraphRevision:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Programmed", fmt.Sprintf("cluster %s acknowledged graph revision %d (the route is in it from revision %d)", p.Cluster, rev, p.GraphRevision)
	default:
		c.Reason, c.Message = "Pending", fmt.Sprintf("cluster %s has acknowledged graph revision %d; the route is in revision %d", p.Cluster, rev, p.GraphRevision)
	}
	return c
}

// aggregate folds per-cluster conditions of one parentRef into one: True only when True everywhere; otherwise the
// first cluster's reason and every cluster's message where it is not True.
func aggregate(ps []compiler.ParentStatus, generation int64) []metav1.Condition {
	var out []metav1.Condition
	for _, typ := range []string{"Accepted", "ResolvedRefs"} {
		agg := metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: typ, ObservedGeneration: generation}
		seen := false
		var notTrue []string
		for _, p := range ps {
			c := meta.FindStatusCondition(p.Conditions, typ)
			if c == nil {
				continue
			}
			if !seen {
				agg.Message = c.Message
			}
			seen = true
			if c.Status == metav1.ConditionTrue {
				continue
			}
			if len(notTrue) == 0 {
				agg.Status, agg.Reason = c.Status, c.Reason
			}
			if p.Cluster != "" {
				notTrue = append(notTrue, fmt.Sprintf("cluster %s: %s", p.Cluster, c.Message))
			} else {
				notTrue = append(notTrue, c.Message)
			}
		}
		if len(notTrue) > 0 {
			agg.Message = strings.Join(notTrue, "; ")
		}
		if seen {
			out = append(out, agg)
		}
	}
	return out
}

func conditionsJSON(cs []metav1.Condition) []any {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Type < cs[j].Type })
	out := make([]any, 0, len(cs))
	for _, c := range cs {
		if c.Reason == "" {
			c.Reason = "Unknown"
		}
		out = append(out, map[string]any{
			"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
			"observedGeneration": c.ObservedGeneration,
		})
	}
	return out
}

// mergeStatus keeps other controllers' route parents and each condition's lastTransitionTime unless its status
// changed.
func mergeStatus(kind string, cur any, want map[string]any) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	curMap, _ := cur.(map[string]any)
	stamp := func(old []any, conds []any) []any {
		prev := map[string]map[string]any{}
		for _, o := range old {
			if m, ok := o.(map[string]any); ok {
				prev[fmt.Sprint(m["type"])] = m
			}
		}
		for _, c := range conds {
			m := c.(map[string]any)
			if p, ok := prev[fmt.Sprint(m["type"])]; ok && p["status"] == m["status"] && p["lastTransitionTime"] != nil {
				m["lastTransitionTime"] = p["lastTransitionTime"]
			} else {
				m["lastTransitionTime"] = now
			}
		}
		return conds
	}
	out := map[string]any{}
	for k, v := range curMap {
		out[k] = v
	}
	switch kind {
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		var oldOurs = map[string][]any{}
		var others []any
		if ps, ok := curMap["parents"].([]any); ok {
			for _, p := range ps {
				m, _ := p.(map[string]any)
				if m == nil {
					continue
				}
				if m["controllerName"] != string(compiler.ControllerName) {
					others = append(others, m)
					continue
				}
				b, _ := json.Marshal(m["parentRef"])
				oldOurs[string(b)], _ = m["conditions"].([]any)
			}
		}
		parents := append([]any{}, others...)
		for _, p := range want["parents"].([]any) {
			m := p.(map[string]any)
			b, _ := json.Marshal(m["parentRef"])
			m["conditions"] = stamp(oldOurs[string(b)], m["conditions"].([]any))
			parents = append(parents, m)
		}
		out["parents"] = parents
	default:
		old, _ := curMap["conditions"].([]any)
		out["conditions"] = stamp(old, want["conditions"].([]any))
	}
	return out
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// syncClusters mirrors every cluster the hub knows into a ManagedCluster and deletes ManagedClusters of clusters the
// hub no longer knows.
func (s *Syncer) syncClusters(ctx context.Context) error {
	clusters, err := s.o.Store.Clusters(ctx)
	if err != nil {
		return err
	}
	var list hubv1alpha1.ManagedClusterList
	if err := s.c.List(ctx, &list); err != nil {
		if meta.IsNoMatchError(err) {
			return nil // CRD not installed in the hub cluster
		}
		return err
	}
	existing := map[string]*hubv1alpha1.ManagedCluster{}
	for i := range list.Items {
		existing[list.Items[i].Name] = &list.Items[i]
	}
	for _, c := range clusters {
		name := c.Record.Name
		mc := existing[name]
		delete(existing, name)
		if mc == nil {
			mc = &hubv1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
			mc.Spec.EastWestAddress = c.Record.EastWestAddress
			mc.Spec.Labels = c.Record.Labels
			mc.Labels = sanitizeLabels(c.Record.Labels)
			if err := s.c.Create(ctx, mc); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create ManagedCluster %s: %w", name, err)
			}
		} else if mc.Spec.EastWestAddress != c.Record.EastWestAddress || !equalJSON(mc.Spec.Labels, c.Record.Labels) {
			mc.Spec.EastWestAddress = c.Record.EastWestAddress
			mc.Spec.Labels = c.Record.Labels
			if err := s.c.Update(ctx, mc); err != nil && !apierrors.IsConflict(err) {
				return fmt.Errorf("update ManagedCluster %s: %w", name, err)
			}
		}
		want := mc.Status.DeepCopy()
		want.Connected = c.Connected
		want.AgentVersion = c.Record.AgentVersion
		want.SentRevision, want.AckedRevision, want.NackedRevision = c.Sync.SentRevision, c.Sync.AckedRevision, c.Sync.NackedRevision
		want.LastNackError = c.Sync.LastNackError
		if joined := c.Record.JoinedAt; !joined.IsZero() && want.JoinedAt == nil {
			t := metav1.NewTime(joined)
			want.JoinedAt = &t
		}
		if s.o.Joined != nil {
			if _, at, ok := s.o.Joined(ctx, name); ok {
				t := metav1.NewTime(at)
				want.JoinedAt = &t
			}
		}
		avail := metav1.Condition{Type: "Available", Status: metav1.ConditionFalse, Reason: "Disconnected", Message: "the cluster's spoke is not connected", ObservedGeneration: mc.Generation}
		if c.Connected && c.Sync.AckedRevision >= c.Sync.SentRevision && c.Sync.AckedRevision > 0 {
			avail.Status, avail.Reason, avail.Message = metav1.ConditionTrue, "Serving", fmt.Sprintf("serving graph revision %d", c.Sync.AckedRevision)
		} else if c.Connected {
			avail.Reason, avail.Message = "Syncing", fmt.Sprintf("sent revision %d, acknowledged %d", c.Sync.SentRevision, c.Sync.AckedRevision)
		}
		meta.SetStatusCondition(&want.Conditions, avail)
		meta.SetStatusCondition(&want.Conditions, metav1.Condition{Type: "Joined", Status: metav1.ConditionTrue, Reason: "Joined", ObservedGeneration: mc.Generation})
		if equalJSON(want, &mc.Status) {
			continue
		}
		mc.Status = *want
		if err := s.c.Status().Update(ctx, mc); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("update ManagedCluster %s status: %w", name, err)
		}
	}
	for name, mc := range existing {
		if err := s.c.Delete(ctx, mc); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ManagedCluster %s: %w", name, err)
		}
	}
	return nil
}

// sanitizeLabels keeps the join labels that are valid Kubernetes labels.
func sanitizeLabels(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if len(k) <= 63 && len(v) <= 63 && !strings.ContainsAny(k+v, " \t\n") {
			out[k] = v
		}
	}
	return out
}

// RBACRules is what the hub needs in the hub cluster (deploy/hub/rbac.yaml must grant it; test/deploy checks).
func RBACRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"}, Verbs: []string{"list"}},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{"managedclusters"}, Verbs: []string{"list", "create", "update", "delete"}},
		{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{"managedclusters/status"}, Verbs: []string{"update"}},
	}
}

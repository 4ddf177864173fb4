// Package kube connects the hub to a Kubernetes "hub cluster" (hub --kubeconfig): Gateway API objects applied there
// with kubectl are mirrored into the hub's store exactly like objects applied with hubctl; their compiled status is
// written back (routes: per parent, with a condition per cluster saying whether that cluster accepted and programmed
// the route and at which graph revision; Gateways: conditions, listeners summed up over clusters, and every serving
// cluster's gateway addresses); and every joined cluster is mirrored into a ManagedCluster object.
//
// The hub cluster is read through informers (a controller-runtime cache): after the first list, changes arrive as
// watch events. Any event, and any change in etcd under status/, syncstate/, clusters/, presence/ or joined/,
// schedules one full, idempotent pass over the cache and the store; a pass also runs every Resync as a safety net.
// A pass writes to the API server only what differs, and lists nothing there.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	"github.com/fedgate/fedgate/apis/resources"
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

// managedClusterKind is the sixth kind watched: fedgate's own.
var managedClusterKind = hubv1alpha1.GroupVersion.WithKind("ManagedCluster")

// DefaultResync is how often a pass runs when nothing changes: a safety net only, since changes in the hub cluster
// and in etcd each trigger a pass. It also bounds how stale a connected cluster's ManagedCluster lastSeen gets
// (LastSeenRefresh plus one resync).
const DefaultResync = 30 * time.Second

// holdOff is how long a pass waits after the first change that triggers it, so that a burst of events (a kubectl
// apply of many objects, the status writes of the last pass echoing back) makes one pass, not one each.
const holdOff = 50 * time.Millisecond

// Member is what the hub's registration knows of a joined cluster.
type Member struct {
	Labels          map[string]string
	EastWestAddress string
	JoinedAt        time.Time
}

// Options of the hub-cluster integration.
type Options struct {
	Config *rest.Config
	Store  *store.Store
	// Resync is the longest time between passes (default DefaultResync); changes trigger a pass at once.
	Resync time.Duration
	Logger *slog.Logger
	// Members returns every joined cluster by name (from the registration's join records, store.JoinedPrefix); may be
	// nil, when only clusters whose spoke has connected are mirrored.
	Members func(ctx context.Context) (map[string]Member, error)
	// Now is the clock of ManagedCluster lastSeen; nil means time.Now.
	Now func() time.Time
}

// Syncer mirrors the hub cluster into the store and status back.
type Syncer struct {
	o      Options
	scheme *runtime.Scheme
	// c writes to the hub cluster, and reads when no cache runs (Pass called on its own, as tests do).
	c   client.Client
	log *slog.Logger

	// reader is what a pass reads the hub cluster through: the leader's informer cache while Run leads, else c.
	// Only the goroutine running passes touches it.
	reader *hubReader
}

// New connects to the hub cluster.
func New(o Options) (*Syncer, error) {
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := runtime.NewScheme()
	if err := hubv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	c, err := client.New(o.Config, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("hub cluster client: %w", err)
	}
	return &Syncer{o: o, scheme: s, c: c, log: o.Logger.With("component", "hub-cluster"), reader: &hubReader{direct: c}}, nil
}

// hubReader reads the hub cluster: from an informer cache when one runs (only the kinds it watches; the others are
// not served by the API server), or straight from the API server.
type hubReader struct {
	direct client.Reader
	cache  cache.Cache
	// watched: kinds with a synced informer in cache.
	watched map[schema.GroupVersionKind]bool
}

// list fills list with every object of gvk. served is false when the hub cluster does not serve the kind (its CRD is
// not installed).
func (r *hubReader) list(ctx context.Context, gvk schema.GroupVersionKind, list client.ObjectList) (served bool, err error) {
	if r.cache != nil {
		if !r.watched[gvk] {
			return false, nil
		}
		return true, r.cache.List(ctx, list)
	}
	if err := r.direct.List(ctx, list); err != nil {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Run passes until ctx ends, while this hub replica holds the hub-cluster mirror's leadership (an etcd election, so
// several replicas never write the same statuses in turn). While it leads, it watches the hub cluster through
// informers and etcd under status/, syncstate/, clusters/, presence/ and joined/; every change triggers a pass.
func (s *Syncer) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := s.lead(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("hub cluster mirror lost its leadership or its watches; campaigning again", "err", err)
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

// triggerPrefixes are the etcd prefixes whose changes the hub cluster's objects depend on.
var triggerPrefixes = []string{store.StatusPrefix, store.SyncStatePrefix, store.ClustersPrefix, store.PresencePrefix, store.JoinedPrefix}

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

	w, err := s.startCache(ctx, poke)
	if err != nil {
		return err
	}
	defer w.stop()
	s.reader = w.reader
	defer func() { s.reader = &hubReader{direct: s.c} }()

	for _, p := range triggerPrefixes {
		go watchTrigger(ctx, cli, p, poke)
	}
	tick := time.NewTicker(s.o.Resync)
	defer tick.Stop()
	poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-session.Done():
			return errors.New("etcd session expired")
		case err := <-w.done:
			return fmt.Errorf("hub cluster cache stopped: %w", err)
		case <-trigger:
			select { // gather the rest of a burst
			case <-ctx.Done():
				return nil
			case <-time.After(holdOff):
			}
			select {
			case <-trigger:
			default:
			}
		case <-tick.C:
			// A kind whose CRD was missing may have been installed since.
			if err := w.watchMissing(ctx); err != nil {
				s.log.Warn("watching the hub cluster's kinds", "err", err)
			}
		}
		if err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("hub cluster pass failed", "err", err)
		}
	}
}

// watches is a running informer cache of the hub cluster and the kinds it watches.
type watches struct {
	reader *hubReader
	mapper meta.RESTMapper
	poke   func()
	log    *slog.Logger
	done   chan error
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startCache starts informers for every watched kind the hub cluster serves and waits for their first lists. Every
// event pokes. A kind the hub cluster does not serve is skipped (watchMissing tries it again); any other failure
// fails the start.
func (s *Syncer) startCache(ctx context.Context, poke func()) (*watches, error) {
	httpClient, err := rest.HTTPClientFor(s.o.Config)
	if err != nil {
		return nil, fmt.Errorf("hub cluster: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(s.o.Config, httpClient)
	if err != nil {
		return nil, fmt.Errorf("hub cluster discovery: %w", err)
	}
	c, err := cache.New(s.o.Config, cache.Options{
		HTTPClient: httpClient, Scheme: s.scheme, Mapper: mapper,
		DefaultTransform: cache.TransformStripManagedFields(),
		// Lists go to the informers started here, never to new ones started behind our back.
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("hub cluster cache: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	w := &watches{
		reader: &hubReader{direct: s.c, cache: c, watched: map[schema.GroupVersionKind]bool{}},
		mapper: mapper, poke: poke, log: s.log, done: make(chan error, 1), cancel: cancel,
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := c.Start(cctx); err != nil {
			w.done <- err
		}
	}()
	if err := w.watchMissing(cctx); err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

func (w *watches) stop() {
	w.cancel()
	w.wg.Wait()
}

// syncTimeout bounds the wait for one kind's first list.
const syncTimeout = time.Minute

// watchMissing starts an informer for every watched kind that has none yet and that the hub cluster serves, and
// waits for their first lists.
func (w *watches) watchMissing(ctx context.Context) error {
	var started []schema.GroupVersionKind
	var regs []toolscache.InformerSynced
	for _, gvk := range append(append([]schema.GroupVersionKind(nil), mirroredKinds...), managedClusterKind) {
		if w.reader.watched[gvk] {
			continue
		}
		if _, err := w.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			if meta.IsNoMatchError(err) {
				continue // CRD not installed in the hub cluster (yet)
			}
			return fmt.Errorf("%s: %w", gvk.Kind, err)
		}
		var obj client.Object
		if gvk == managedClusterKind {
			obj = &hubv1alpha1.ManagedCluster{}
		} else {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			obj = u
		}
		inf, err := w.reader.cache.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("informer for %s: %w", gvk.Kind, err)
		}
		reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { w.poke() },
			UpdateFunc: func(any, any) { w.poke() },
			DeleteFunc: func(any) { w.poke() },
		})
		if err != nil {
			return fmt.Errorf("informer for %s: %w", gvk.Kind, err)
		}
		started, regs = append(started, gvk), append(regs, reg.HasSynced)
	}
	if len(started) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	synced := toolscache.WaitForCacheSync(sctx.Done(), regs...)
	cancel()
	if !synced {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("the first lists of %v did not complete within %s; check the hub's RBAC in the hub cluster", started, syncTimeout)
	}
	for _, gvk := range started {
		w.reader.watched[gvk] = true
	}
	w.log.Info("watching the hub cluster", "kinds", len(w.reader.watched))
	return nil
}

// Pass runs one full mirror + status + cluster pass.
func (s *Syncer) Pass(ctx context.Context) error {
	objs, err := s.mirror(ctx)
	if err != nil {
		return err
	}
	clusters, err := s.o.Store.Clusters(ctx)
	if err != nil {
		return err
	}
	return errors.Join(s.writeStatus(ctx, objs, clusters), s.syncClusters(ctx, clusters))
}

// mirror reads the hub cluster's Gateway API objects, stores them as hub objects and deletes the mirrored ones that
// are gone. Objects the hub refuses are reported in the log and skipped; the rest still go in.
func (s *Syncer) mirror(ctx context.Context) ([]*unstructured.Unstructured, error) {
	var all []*unstructured.Unstructured
	var wire []*fedgatepb.Object
	present := map[string]bool{}
	for _, gvk := range mirroredKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		served, err := s.reader.list(ctx, gvk, list)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", gvk.Kind, err)
		}
		if !served {
			continue // CRD not installed in the hub cluster
		}
		for i := range list.Items {
			u := &list.Items[i]
			all = append(all, u)
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

// RBACRules is what the hub needs in the hub cluster (deploy/hub/rbac.yaml must grant it; test/deploy checks).
func RBACRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{"managedclusters"}, Verbs: []string{"list", "watch", "create", "update", "delete"}},
		{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{"managedclusters/status"}, Verbs: []string{"update"}},
	}
}

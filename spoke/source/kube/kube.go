// Package kube is the spoke's Kubernetes source: it watches the objects of the spoke's own cluster through
// controller-runtime informers and emits full snapshots of what the spoke reports to the hub (see package source).
//
// It only reads. Secrets and ConfigMaps are never watched at large, only one by one: SecretReader reads exactly the
// Secrets the cluster's Gateways reference as listener certificates (a watch per Secret, by name), keeping their data
// in memory (tlssecrets.Store) for the proxy; the Source reports them without their data
// (resources.ReportedTLSSecret), so certificates' keys stay in the cluster and never reach the hub, a log or a disk.
// The Source itself reads the ConfigMaps the Gateways' client-certificate validation references as CA bundles
// (tlssecrets.CARefs, a watch per ConfigMap, by name) and reports them with their ca.crt alone
// (resources.ReportedCAConfigMap). EndpointSlices are reported only when they belong to a Service (label
// kubernetes.io/service-name), and GatewayClasses only when fedgate is their controller.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/spoke/source"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// Defaults for Config.
const (
	DefaultControllerName = "fedgate.io/gateway-controller"
	DefaultDebounce       = 100 * time.Millisecond
	DefaultSyncTimeout    = 2 * time.Minute
)

// lastAppliedAnnotation is kubectl's copy of the whole object: as large as the spec, never read by the hub.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// Config of a Source.
type Config struct {
	// REST reaches the cluster's API server. Required.
	REST *rest.Config
	// ControllerName: GatewayClasses with this spec.controllerName are reported. Default DefaultControllerName.
	ControllerName string
	// Debounce: after a change, the source waits this long (collecting further changes) before emitting, so a burst
	// of events (a rollout updating many EndpointSlices) yields one snapshot. The wait is not extended by later
	// events, which bounds the delay even under constant churn. Default DefaultDebounce.
	Debounce time.Duration
	// SyncTimeout bounds the wait for the first complete list of every kind. An informer that is refused (missing
	// RBAC) retries forever; this turns that into an error naming the kinds. Default DefaultSyncTimeout.
	SyncTimeout time.Duration
	// TLSSecrets, when set, is the store a SecretReader keeps: its Secrets are reported, in their data-free form, and
	// the first snapshot waits (within SyncTimeout) until the reader has read the Secrets referenced at its start.
	TLSSecrets *tlssecrets.Store
	// Log, default slog.Default().
	Log *slog.Logger
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.REST == nil {
		return errors.New("kube source: REST config is required")
	}
	if c.Debounce < 0 || c.SyncTimeout < 0 {
		return errors.New("kube source: debounce and sync timeout must not be negative")
	}
	return nil
}

// kind is one watched kind.
type kind struct {
	gvk      schema.GroupVersionKind
	resource string // plural, for RBAC
	// optional kinds come from CRDs that a cluster may lack: they are skipped with a warning when the API server does
	// not serve them. Built-in kinds are required.
	optional bool
	// keep, when set, decides whether an object is reported.
	keep func(u *unstructured.Unstructured) bool
	// selector, when set, restricts the informer (server-side) to matching objects.
	selector labels.Selector
}

// watchedKinds lists everything the source reports, in resources.Kinds order plus policies. Versions are the ones
// fedgate decodes (resources.Typed): ReferenceGrant v1beta1 is the stored version and served by every release that
// has the kind; ServiceExport v1alpha1 is what the hub decodes.
func watchedKinds(controllerName string) []kind {
	gw := func(version, k string) schema.GroupVersionKind {
		return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: version, Kind: k}
	}
	serviceSlices, err := labels.NewRequirement(discoveryv1.LabelServiceName, selection.Exists, nil)
	if err != nil {
		panic(err) // constant input
	}
	return []kind{
		{gvk: gw("v1", resources.KindGatewayClass), resource: "gatewayclasses", optional: true, keep: func(u *unstructured.Unstructured) bool {
			c, _, _ := unstructured.NestedString(u.Object, "spec", "controllerName")
			return c == controllerName
		}},
		// Every Gateway is reported, not only those of a local class: the class may be applied at the hub.
		{gvk: gw("v1", resources.KindGateway), resource: "gateways", optional: true},
		{gvk: gw("v1", resources.KindHTTPRoute), resource: "httproutes", optional: true},
		{gvk: gw("v1", resources.KindGRPCRoute), resource: "grpcroutes", optional: true},
		{gvk: gw("v1beta1", resources.KindReferenceGrant), resource: "referencegrants", optional: true},
		{gvk: schema.GroupVersionKind{Version: "v1", Kind: resources.KindService}, resource: "services"},
		{gvk: discoveryv1.SchemeGroupVersion.WithKind(resources.KindEndpointSlice), resource: "endpointslices",
			selector: labels.NewSelector().Add(*serviceSlices)},
		{gvk: schema.GroupVersionKind{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Kind: resources.KindServiceExport},
			resource: "serviceexports", optional: true},
		// Namespaces for their labels (allowedRoutes.namespaces.from: Selector); Encode keeps only their metadata.
		{gvk: schema.GroupVersionKind{Version: "v1", Kind: resources.KindNamespace}, resource: "namespaces"},
		// Policies: watched once apis/resources carries them to the hub (see servedKinds).
		{gvk: gw("v1", "BackendTLSPolicy"), resource: "backendtlspolicies", optional: true},
		{gvk: schema.GroupVersionKind{Group: "gateway.networking.x-k8s.io", Version: "v1alpha1", Kind: "XBackendTrafficPolicy"},
			resource: "xbackendtrafficpolicies", optional: true},
	}
}

// RBACRules are the permissions a Source and a SecretReader need in their cluster: list and watch of every kind the
// Source may report, of Secrets (the SecretReader's watch of each referenced Secret by name) and of ConfigMaps (the
// Source's watch of each referenced CA ConfigMap by name) — RBAC cannot narrow a grant to the objects some Gateway
// references, so the code does — and nothing else (no get, no writes).
// Discovery needs no rule (system:discovery grants it).
func RBACRules() []rbacv1.PolicyRule {
	byGroup := map[string][]string{}
	var groups []string
	add := func(group, resource string) {
		if byGroup[group] == nil {
			groups = append(groups, group)
		}
		byGroup[group] = append(byGroup[group], resource)
	}
	for _, k := range watchedKinds(DefaultControllerName) {
		add(k.gvk.Group, k.resource)
	}
	add("", "secrets")
	add("", "configmaps")
	sort.Strings(groups)
	rules := make([]rbacv1.PolicyRule, 0, len(groups))
	for _, g := range groups {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{g}, Resources: byGroup[g], Verbs: []string{"list", "watch"}})
	}
	return rules
}

// Source reports a cluster's objects from its API server. Create with New.
type Source struct {
	cfg Config
	log *slog.Logger
}

var _ source.Source = (*Source)(nil)

// New returns a Source for cfg.
func New(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ControllerName == "" {
		cfg.ControllerName = DefaultControllerName
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = DefaultSyncTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Source{cfg: cfg, log: log.With("component", "source-kube")}, nil
}

// Run implements source.Source. It returns an error when the API server cannot be reached at start, a required kind
// is not served, or the first lists do not complete within SyncTimeout; after the first snapshot, API server outages
// are ridden out by the informers (the last snapshot stands meanwhile).
func (s *Source) Run(ctx context.Context, emit func(source.Snapshot)) error {
	httpClient, err := rest.HTTPClientFor(s.cfg.REST)
	if err != nil {
		return fmt.Errorf("kube source: %w", err)
	}
	kinds, err := s.servedKinds(httpClient)
	if err != nil {
		return err
	}

	byObject := map[client.Object]cache.ByObject{}
	for _, k := range kinds {
		if k.selector != nil {
			byObject[newObject(k.gvk)] = cache.ByObject{Label: k.selector}
		}
	}
	c, err := cache.New(s.cfg.REST, cache.Options{
		HTTPClient:       httpClient,
		Scheme:           runtime.NewScheme(), // unstructured only: no Go types needed
		ByObject:         byObject,
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("kube source: %w", err)
	}

	st := &state{objs: map[string]*fedgatepb.Object{}, kick: make(chan struct{}, 1), log: s.log}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var regs []toolscache.ResourceEventHandlerRegistration
	for _, k := range kinds {
		inf, err := c.GetInformer(ctx, newObject(k.gvk), cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("kube source: informer for %s: %w", k.gvk.Kind, err)
		}
		reg, err := inf.AddEventHandler(st.handler(k))
		if err != nil {
			return fmt.Errorf("kube source: informer for %s: %w", k.gvk.Kind, err)
		}
		regs = append(regs, reg)
	}

	// The CA ConfigMaps the Gateways of our classes reference (and, in another namespace, a ReferenceGrant permits),
	// read through the Gateway, GatewayClass and ReferenceGrant informers' events (when Gateways are served).
	var cas *refWatcher
	var casRegs []toolscache.InformerSynced
	for _, k := range kinds {
		if k.gvk.Kind != resources.KindGateway {
			continue
		}
		cs, err := kubernetes.NewForConfigAndClient(s.cfg.REST, httpClient)
		if err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
		cas = newRefWatcher(ctx, caKind(st), s.cfg.ControllerName, cs, s.log)
		defer cas.stop() // after the cache stopped (deferred calls run last first)
	}
	for _, k := range kinds {
		var h toolscache.ResourceEventHandler
		switch {
		case cas == nil:
		case k.gvk.Kind == resources.KindGateway:
			h = cas.handler()
		case k.gvk.Kind == resources.KindGatewayClass:
			h = cas.classHandler()
		case k.gvk.Kind == resources.KindReferenceGrant:
			h = cas.grantHandler()
		}
		if h == nil {
			continue
		}
		inf, err := c.GetInformer(ctx, newObject(k.gvk), cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("kube source: informer for %s: %w", k.gvk.Kind, err)
		}
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return fmt.Errorf("kube source: informer for %s: %w", k.gvk.Kind, err)
		}
		casRegs = append(casRegs, reg.HasSynced)
	}

	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	defer func() {
		cancel()
		<-cacheDone
	}()

	// The cache being synced means its stores hold the first lists; the registrations being synced means our handlers
	// have also seen every object of those lists, which is what the first snapshot is built from.
	syncCtx, syncCancel := context.WithTimeout(ctx, s.cfg.SyncTimeout)
	synced := toolscache.WaitForCacheSync(syncCtx.Done(), hasSynced(regs)...)
	if !synced {
		syncCancel()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kube source: informers did not sync within %s (kinds %s); check the spoke's RBAC and the API server",
			s.cfg.SyncTimeout, unsynced(kinds, regs))
	}
	if cas != nil {
		// Once the handler has seen every listed Gateway, the watches of every CA ConfigMap referenced then exist: the
		// first snapshot holds them, so that the hub never judges a bundle missing because it was not read yet.
		synced = toolscache.WaitForCacheSync(syncCtx.Done(), casRegs...) &&
			toolscache.WaitForCacheSync(syncCtx.Done(), cas.synced()...)
		if !synced {
			syncCancel()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kube source: the referenced CA ConfigMaps were not read within %s; check the spoke's RBAC (list and watch of configmaps) and the API server", s.cfg.SyncTimeout)
		}
	}
	syncCancel()

	var secretsChanged <-chan struct{}
	if sec := s.cfg.TLSSecrets; sec != nil {
		// The first snapshot holds the Secrets referenced now, so that the hub never judges a listener's certificate
		// missing because the reader had not read it yet.
		syncCtx, syncCancel := context.WithTimeout(ctx, s.cfg.SyncTimeout)
		select {
		case <-sec.Synced():
		case <-syncCtx.Done():
		}
		syncCancel()
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-sec.Synced():
		default:
			return fmt.Errorf("kube source: the referenced TLS Secrets were not read within %s; check the spoke's RBAC (list and watch of secrets) and the API server", s.cfg.SyncTimeout)
		}
		secretsChanged = sec.Changed()
	}
	last := st.snapshot(s.cfg.TLSSecrets)
	s.log.Info("initial snapshot", "objects", len(last.Objects), "kinds", len(kinds))
	emit(last)

	var timer *time.Timer
	var timerC <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-cacheDone:
			cacheDone <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kube source: cache stopped: %w", err)
		case <-secretsChanged:
			secretsChanged = s.cfg.TLSSecrets.Changed()
			if timer == nil {
				timer = time.NewTimer(s.cfg.Debounce)
				timerC = timer.C
			}
		case <-st.kick:
			if timer == nil {
				timer = time.NewTimer(s.cfg.Debounce)
				timerC = timer.C
			}
		case <-timerC:
			timer, timerC = nil, nil
			snap := st.snapshot(s.cfg.TLSSecrets)
			// A change can be undone within the debounce window (A→B→A): no snapshot then.
			if snap.Equal(last) {
				continue
			}
			last = snap
			s.log.Debug("snapshot", "objects", len(snap.Objects))
			emit(snap)
		}
	}
}

// servedKinds returns the watched kinds the API server serves, failing when a required one is missing.
func (s *Source) servedKinds(httpClient *http.Client) ([]kind, error) {
	mapper, err := apiutil.NewDynamicRESTMapper(s.cfg.REST, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kube source: discovery: %w", err)
	}
	var out []kind
	for _, k := range watchedKinds(s.cfg.ControllerName) {
		if !resources.Known(k.gvk.GroupVersion().String(), k.gvk.Kind) {
			// The hub would refuse the object; the kind is listed so that it is picked up as soon as apis/resources
			// carries it.
			s.log.Info("kind not carried to the hub yet, not watching", "kind", k.gvk.Kind, "apiVersion", k.gvk.GroupVersion().String())
			continue
		}
		_, err := mapper.RESTMapping(k.gvk.GroupKind(), k.gvk.Version)
		switch {
		case err == nil:
			out = append(out, k)
		case meta.IsNoMatchError(err) && k.optional:
			s.log.Warn("kind not served by the API server (CRD not installed?), not reporting it; restart the spoke after installing it",
				"kind", k.gvk.Kind, "apiVersion", k.gvk.GroupVersion().String())
		default:
			return nil, fmt.Errorf("kube source: %s %s: %w", k.gvk.GroupVersion(), k.gvk.Kind, err)
		}
	}
	return out, nil
}

func newObject(gvk schema.GroupVersionKind) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	return u
}

func hasSynced(regs []toolscache.ResourceEventHandlerRegistration) []toolscache.InformerSynced {
	out := make([]toolscache.InformerSynced, len(regs))
	for i, r := range regs {
		out[i] = r.HasSynced
	}
	return out
}

func unsynced(kinds []kind, regs []toolscache.ResourceEventHandlerRegistration) []string {
	var out []string
	for i, r := range regs {
		if !r.HasSynced() {
			out = append(out, kinds[i].gvk.Kind)
		}
	}
	return out
}

// state holds the encoded form of every reported object, maintained by the informers' handlers. Encoding on each
// event (rather than listing the cache per snapshot) is what makes a status-only update cost no snapshot: the object
// encodes to the same bytes, so nothing is marked changed.
type state struct {
	mu   sync.Mutex
	objs map[string]*fedgatepb.Object // by source.ObjectID; values are never modified once stored
	kick chan struct{}                // capacity 1: "something changed"
	log  *slog.Logger
}

func (st *state) handler(k kind) toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { st.upsert(k, obj) },
		UpdateFunc: func(_, obj any) { st.upsert(k, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				st.remove(resources.ID(k.gvk.Kind, u.GetNamespace(), u.GetName()))
			}
		},
	}
}

func (st *state) upsert(k kind, obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		st.log.Error("informer delivered an unexpected type", "kind", k.gvk.Kind, "type", fmt.Sprintf("%T", obj))
		return
	}
	id := resources.ID(k.gvk.Kind, u.GetNamespace(), u.GetName())
	if k.keep != nil && !k.keep(u) {
		st.remove(id)
		return
	}
	o, err := Encode(u)
	if err != nil {
		// Cannot happen for objects the API server accepted; withdraw rather than report a stale version.
		st.log.Error("cannot encode object, not reporting it", "object", resources.Describe(k.gvk.Kind, u.GetNamespace(), u.GetName()), "err", err)
		st.remove(id)
		return
	}
	st.mu.Lock()
	old, had := st.objs[id]
	if had && source.SameObject(old, o) {
		st.mu.Unlock()
		return
	}
	st.objs[id] = o
	st.mu.Unlock()
	st.changed()
}

// put reports o as id (an object the state's handlers do not encode themselves).
func (st *state) put(id string, o *fedgatepb.Object) {
	st.mu.Lock()
	old, had := st.objs[id]
	if had && source.SameObject(old, o) {
		st.mu.Unlock()
		return
	}
	st.objs[id] = o
	st.mu.Unlock()
	st.changed()
}

func (st *state) remove(id string) {
	st.mu.Lock()
	_, had := st.objs[id]
	delete(st.objs, id)
	st.mu.Unlock()
	if had {
		st.changed()
	}
}

func (st *state) changed() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// snapshot is every reported object, with the data-free form of the Secrets in secrets (when set).
func (st *state) snapshot(secrets *tlssecrets.Store) source.Snapshot {
	st.mu.Lock()
	objs := make([]*fedgatepb.Object, 0, len(st.objs))
	for _, o := range st.objs {
		objs = append(objs, o)
	}
	st.mu.Unlock()
	if secrets != nil {
		objs = append(objs, secrets.Objects()...)
	}
	return source.NewSnapshot(objs) // IDs are unique, so the sort fully determines the order despite map iteration
}

// Encode turns an object read from the API server into its wire form, without the fields that change when nothing
// the hub cares about changed: status, resourceVersion, managedFields, kubectl's last-applied annotation and a
// Namespace's spec (its finalizers). generation
// and creationTimestamp are kept (the hub uses them for observedGeneration and route precedence). u is not modified.
func Encode(u *unstructured.Unstructured) (*fedgatepb.Object, error) {
	c := &unstructured.Unstructured{Object: make(map[string]any, len(u.Object))}
	for k, v := range u.Object {
		if k != "status" && k != "metadata" && (k != "spec" || u.GetKind() != resources.KindNamespace) {
			c.Object[k] = v // shared, read only: FromUnstructured only marshals what it does not remove
		}
	}
	if md, ok := u.Object["metadata"].(map[string]any); ok {
		m := make(map[string]any, len(md))
		for k, v := range md {
			switch k {
			case "resourceVersion", "managedFields", "selfLink":
			case "annotations":
				if a, ok := v.(map[string]any); ok {
					if _, has := a[lastAppliedAnnotation]; has {
						b := make(map[string]any, len(a))
						for ak, av := range a {
							if ak != lastAppliedAnnotation {
								b[ak] = av
							}
						}
						if len(b) == 0 {
							continue
						}
						v = b
					}
				}
				m[k] = v
			default:
				m[k] = v
			}
		}
		c.Object["metadata"] = m
	}
	return resources.FromUnstructured(c, "")
}

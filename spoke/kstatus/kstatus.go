// Package kstatus writes the hub's compiled statuses back to the spoke's own Kubernetes cluster, so kubectl users see
// fedgate's verdict on their GatewayClasses, Gateways, routes and ServiceExports where they applied them, and keeps
// the cluster's ServiceImports (MCS API) in line with the hub's merge of every cluster's ServiceExports.
//
// The hub decides every condition; this package only merges them into the objects' status subresources with the
// Kubernetes conventions the hub cannot apply from afar: lastTransitionTime changes only when a condition's status
// does, other controllers' route parent entries are left alone, and an unchanged status is not written at all (every
// write would otherwise wake every watcher of the object).
package kstatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/features"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// DefaultControllerName is the GatewayClass controllerName fedgate serves; route parent entries with it are ours.
const DefaultControllerName gatewayv1.GatewayController = "fedgate.io/gateway-controller"

// ManagedByLabel marks the ServiceImports this package maintains; ServiceImports without it belong to someone else
// and are never touched.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "fedgate"
)

// FieldManager is the field manager of every write of the Writer: the API server's managedFields then say which
// conditions on a shared object (a ServiceExport) fedgate wrote last, and Clean takes back only those.
const FieldManager = "fedgate-spoke"

// DefaultSupportedFeatures are the Gateway API features fedgate's proxy implements, reported in
// GatewayClass status.supportedFeatures.
var DefaultSupportedFeatures = []features.FeatureName{
	features.SupportGateway,
	features.SupportGRPCRoute,
	features.SupportHTTPRoute,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteRetry,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportReferenceGrant,
}

// Scheme knows the types Writer reads and writes.
var Scheme = newScheme()

func newScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, gatewayv1.Install, mcsv1a1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// RBACRules are the permissions a Writer needs in its cluster: reading (and, for Clean, listing) the objects whose
// status it writes, updating their status subresources (patching, for ServiceExports: server-side apply), and full
// control of ServiceImports (which it creates and
// deletes).
func RBACRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{gatewayv1.GroupName}, Resources: []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{gatewayv1.GroupName}, Resources: []string{"gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{mcsv1a1.GroupName}, Resources: []string{"serviceexports"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{mcsv1a1.GroupName}, Resources: []string{"serviceexports/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{mcsv1a1.GroupName}, Resources: []string{"serviceimports/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{mcsv1a1.GroupName}, Resources: []string{"serviceimports"}, Verbs: []string{"get", "list", "create", "update", "delete"}},
	}
}

// Config of a Writer.
type Config struct {
	// REST reaches the cluster's API server. Required unless Client is set.
	REST *rest.Config
	// Client, when set, is used instead of one built from REST; it must know Scheme's types. Reads go through it too,
	// so a cached client must watch GatewayClasses, Gateways, HTTPRoutes, GRPCRoutes, ServiceExports and
	// ServiceImports.
	Client client.Client
	// GatewayAddresses are the addresses (IPs or hostnames) this cluster's gateway is reachable at, reported in each
	// Gateway's status.addresses when the hub's status names none.
	GatewayAddresses []string
	// ControllerName, default DefaultControllerName.
	ControllerName gatewayv1.GatewayController
	// SupportedFeatures for GatewayClass status; nil means DefaultSupportedFeatures.
	SupportedFeatures []features.FeatureName
	// Resync: Run re-applies the last config this often. Default DefaultResync.
	Resync time.Duration
	// MinBackoff and MaxBackoff bound Run's retry delay after a failed Apply. Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// OnApplied, when set, is called by Run after each Apply with the config's revision and Apply's error (metrics,
	// tests).
	OnApplied func(revision int64, err error)
	// Log, default slog.Default().
	Log *slog.Logger
}

// Writer applies SpokeConfig statuses and ServiceImports to a cluster: directly with Apply, or asynchronously with
// Offer and Run (what a spoke does). Concurrent Apply calls are safe but pointless: the later may be overtaken.
type Writer struct {
	c          client.Client
	controller gatewayv1.GatewayController
	features   []gatewayv1.SupportedFeature
	addresses  []string // Config.GatewayAddresses
	log        *slog.Logger

	resync, minBackoff, maxBackoff time.Duration
	onApplied                      func(int64, error)

	mu     sync.Mutex
	latest *spokeconfig.SpokeConfig // the newest offered config, kept for the next Run
	wake   chan struct{}            // capacity 1: a config was offered since Run last looked
}

// New returns a Writer.
func New(cfg Config) (*Writer, error) {
	c := cfg.Client
	if c == nil {
		if cfg.REST == nil {
			return nil, errors.New("kstatus: REST config or client is required")
		}
		var err error
		if c, err = client.New(cfg.REST, client.Options{Scheme: Scheme}); err != nil {
			return nil, fmt.Errorf("kstatus: %w", err)
		}
	}
	c = client.WithFieldOwner(c, FieldManager)
	w := &Writer{c: c, controller: cfg.ControllerName, log: cfg.Log, resync: cfg.Resync, minBackoff: cfg.MinBackoff,
		maxBackoff: cfg.MaxBackoff, onApplied: cfg.OnApplied, wake: make(chan struct{}, 1), addresses: slices.Clone(cfg.GatewayAddresses)}
	if w.resync <= 0 {
		w.resync = DefaultResync
	}
	if w.minBackoff <= 0 {
		w.minBackoff = DefaultMinBackoff
	}
	if w.maxBackoff <= 0 {
		w.maxBackoff = DefaultMaxBackoff
	}
	if w.controller == "" {
		w.controller = DefaultControllerName
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.log = w.log.With("component", "kstatus")
	fs := cfg.SupportedFeatures
	if fs == nil {
		fs = DefaultSupportedFeatures
	}
	for _, f := range fs {
		w.features = append(w.features, gatewayv1.SupportedFeature{Name: gatewayv1.FeatureName(f)})
	}
	// The API requires ascending order by name.
	sort.Slice(w.features, func(i, j int) bool { return w.features[i].Name < w.features[j].Name })
	w.features = slices.CompactFunc(w.features, func(a, b gatewayv1.SupportedFeature) bool { return a.Name == b.Name })
	return w, nil
}

// Apply writes every status in sc and reconciles the cluster's fedgate-managed ServiceImports with
// sc.ServiceImports. Objects that no longer exist are skipped (the next snapshot tells the hub). It carries on past
// failures and returns them joined, each naming its object.
func (w *Writer) Apply(ctx context.Context, sc *spokeconfig.SpokeConfig) error {
	if sc == nil {
		return errors.New("kstatus: nil config")
	}
	var errs []error
	written := 0
	for i := range sc.Statuses {
		st := &sc.Statuses[i]
		var wrote bool
		var err error
		switch st.Kind {
		case resources.KindGatewayClass:
			wrote, err = w.gatewayClass(ctx, st)
		case resources.KindGateway:
			wrote, err = w.gateway(ctx, st)
		case resources.KindHTTPRoute:
			wrote, err = w.httpRoute(ctx, st)
		case resources.KindGRPCRoute:
			wrote, err = w.grpcRoute(ctx, st)
		case resources.KindServiceExport:
			wrote, err = w.serviceExport(ctx, st)
		default:
			continue // kinds without a status of ours (Service, EndpointSlice, ReferenceGrant)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s status: %w", resources.Describe(st.Kind, st.Namespace, st.Name), err))
		}
		if wrote {
			written++
		}
	}
	imports, err := w.serviceImports(ctx, sc.ServiceImports)
	if err != nil {
		errs = append(errs, err)
	}
	w.log.Debug("applied", "revision", sc.Revision, "statuses", len(sc.Statuses), "written", written, "serviceImportChanges", imports)
	return errors.Join(errs...)
}

// update runs the read-modify-write loop for one object: get, let mutate build the new status (returning false when
// nothing changed), write the status subresource, and start over on a conflict. It returns whether it wrote.
func (w *Writer) update(ctx context.Context, obj client.Object, key types.NamespacedName, mutate func() bool) (bool, error) {
	wrote := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		wrote = false
		if err := w.c.Get(ctx, key, obj); err != nil {
			return err
		}
		if !mutate() {
			return nil
		}
		if err := w.c.Status().Update(ctx, obj); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, nil // deleted since it was reported
	}
	return wrote, err
}

func key(st *spokeconfig.ObjectStatus) types.NamespacedName {
	return types.NamespacedName{Namespace: st.Namespace, Name: st.Name}
}

func (w *Writer) gatewayClass(ctx context.Context, st *spokeconfig.ObjectStatus) (bool, error) {
	gc := &gatewayv1.GatewayClass{}
	return w.update(ctx, gc, types.NamespacedName{Name: st.Name}, func() bool {
		if gc.Spec.ControllerName != w.controller {
			return false // the class changed hands since it was reported
		}
		old := gc.Status.DeepCopy()
		gc.Status.Conditions = mergeConditions(gc.Status.Conditions, st.Conditions, st.Generation)
		gc.Status.SupportedFeatures = slices.Clone(w.features)
		return !equality.Semantic.DeepEqual(old, &gc.Status)
	})
}

func (w *Writer) gateway(ctx context.Context, st *spokeconfig.ObjectStatus) (bool, error) {
	gw := &gatewayv1.Gateway{}
	return w.update(ctx, gw, key(st), func() bool {
		old := gw.Status.DeepCopy()
		gw.Status.Conditions = mergeConditions(gw.Status.Conditions, st.Conditions, st.Generation)
		addrs := st.Addresses
		if len(addrs) == 0 {
			// The hub does not know where this cluster's gateway is reachable; the spoke does (--gateway-address).
			addrs = w.addresses
		}
		gw.Status.Addresses = gatewayAddresses(addrs)
		listeners := make([]gatewayv1.ListenerStatus, 0, len(st.Listeners))
		for _, l := range st.Listeners {
			var prev []metav1.Condition
			for _, o := range gw.Status.Listeners {
				if string(o.Name) == l.Name {
					prev = o.Conditions
				}
			}
			kinds := slices.Clone(l.SupportedKinds)
			if kinds == nil {
				kinds = []gatewayv1.RouteGroupKind{} // required field: an empty list, not null
			}
			listeners = append(listeners, gatewayv1.ListenerStatus{
				Name:           gatewayv1.SectionName(l.Name),
				SupportedKinds: kinds,
				AttachedRoutes: l.AttachedRoutes,
				// A listener's conditions are wholly ours: start from the hub's, keeping transition times.
				Conditions: ownConditions(prev, l.Conditions, st.Generation),
			})
		}
		gw.Status.Listeners = listeners
		return !equality.Semantic.DeepEqual(old, &gw.Status)
	})
}

// gatewayAddresses types each address: an IP is IPAddress, anything else a Hostname.
func gatewayAddresses(addrs []string) []gatewayv1.GatewayStatusAddress {
	if len(addrs) == 0 {
		return nil
	}
	out := make([]gatewayv1.GatewayStatusAddress, 0, len(addrs))
	for _, a := range addrs {
		t := gatewayv1.HostnameAddressType
		if net.ParseIP(a) != nil {
			t = gatewayv1.IPAddressType
		}
		out = append(out, gatewayv1.GatewayStatusAddress{Type: &t, Value: a})
	}
	return out
}

func (w *Writer) httpRoute(ctx context.Context, st *spokeconfig.ObjectStatus) (bool, error) {
	r := &gatewayv1.HTTPRoute{}
	return w.update(ctx, r, key(st), func() bool {
		parents, changed := w.mergeParents(r.Status.Parents, st, r.Namespace)
		r.Status.Parents = parents
		return changed
	})
}

func (w *Writer) grpcRoute(ctx context.Context, st *spokeconfig.ObjectStatus) (bool, error) {
	r := &gatewayv1.GRPCRoute{}
	return w.update(ctx, r, key(st), func() bool {
		parents, changed := w.mergeParents(r.Status.Parents, st, r.Namespace)
		r.Status.Parents = parents
		return changed
	})
}

// mergeParents replaces our entries of a route's status.parents with the hub's and keeps every other controller's
// entry where it was. Ours are the entries whose controllerName is ours, whichever parent they name: a parentRef the
// route no longer has must lose its entry.
func (w *Writer) mergeParents(cur []gatewayv1.RouteParentStatus, st *spokeconfig.ObjectStatus, routeNS string) ([]gatewayv1.RouteParentStatus, bool) {
	out := make([]gatewayv1.RouteParentStatus, 0, len(cur)+len(st.Parents))
	var ours []gatewayv1.RouteParentStatus
	for _, p := range cur {
		if p.ControllerName == w.controller {
			ours = append(ours, p)
		} else {
			out = append(out, p)
		}
	}
	for _, hp := range st.Parents {
		var prev []metav1.Condition
		for _, o := range ours {
			if sameParent(o.ParentRef, hp.ParentRef, routeNS) {
				prev = o.Conditions
			}
		}
		out = append(out, gatewayv1.RouteParentStatus{
			ParentRef:      *hp.ParentRef.DeepCopy(),
			ControllerName: w.controller,
			Conditions:     ownConditions(prev, hp.Conditions, st.Generation),
		})
	}
	return out, !equality.Semantic.DeepEqual(cur, out)
}

// sameParent compares parent references with the API's defaults applied (group gateway.networking.k8s.io, kind
// Gateway, the route's namespace), so an entry written with explicit defaults matches a reference without them.
func sameParent(a, b gatewayv1.ParentReference, routeNS string) bool {
	norm := func(p gatewayv1.ParentReference) string {
		group, kind, ns, section, port := gatewayv1.GroupName, "Gateway", routeNS, "", ""
		if p.Group != nil {
			group = string(*p.Group)
			if group == "" {
				group = "core"
			}
		}
		if p.Kind != nil {
			kind = string(*p.Kind)
		}
		if p.Namespace != nil {
			ns = string(*p.Namespace)
		}
		if p.SectionName != nil {
			section = string(*p.SectionName)
		}
		if p.Port != nil {
			port = fmt.Sprint(*p.Port)
		}
		return strings.Join([]string{group, kind, ns, string(p.Name), section, port}, "\x00")
	}
	return norm(a) == norm(b)
}

// serviceExport writes the hub's conditions on a ServiceExport with server-side apply, as FieldManager: another MCS
// controller may judge the same export, and the API server's managedFields then record which conditions are fedgate's
// (an Update would record nothing on an export whose managedFields are empty, as `kubectl apply --server-side` of an
// export without spec leaves them), so that Clean can take back exactly those.
func (w *Writer) serviceExport(ctx context.Context, st *spokeconfig.ObjectStatus) (bool, error) {
	se := &mcsv1a1.ServiceExport{}
	if err := w.c.Get(ctx, key(st), se); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil // deleted since it was reported
		}
		return false, err
	}
	want := ownConditions(se.Status.Conditions, st.Conditions, st.Generation)
	ours := conditionsWrittenBy(se.ManagedFields, FieldManager)
	same := len(ours) == len(want)
	for _, c := range want {
		cur := meta.FindStatusCondition(se.Status.Conditions, c.Type)
		same = same && ours[c.Type] && cur != nil && equality.Semantic.DeepEqual(*cur, c)
	}
	if same {
		return false, nil
	}
	if err := w.applyServiceExportConditions(ctx, se, want); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// applyServiceExportConditions server-side applies conditions as the whole of fedgate's part of se's status: the
// conditions fedgate set before and are not in conditions go (an empty list takes all of them back).
func (w *Writer) applyServiceExportConditions(ctx context.Context, se *mcsv1a1.ServiceExport, conditions []metav1.Condition) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(mcsv1a1.SchemeGroupVersion.WithKind("ServiceExport"))
	u.SetNamespace(se.Namespace)
	u.SetName(se.Name)
	if len(conditions) > 0 {
		list := make([]any, 0, len(conditions))
		for i := range conditions {
			m, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(&conditions[i])
			if err != nil {
				return err
			}
			list = append(list, m)
		}
		u.Object["status"] = map[string]any{"conditions": list}
	}
	//nolint:staticcheck // server-side apply of an unstructured object; the typed Apply API needs apply configurations.
	return w.c.Status().Patch(ctx, u, client.Apply, client.FieldOwner(FieldManager), client.ForceOwnership)
}

// mergeConditions sets each of the hub's conditions into cur with meta.SetStatusCondition semantics
// (lastTransitionTime moves only when the status changes) and leaves conditions of other types alone: on Gateways and
// GatewayClasses other parties (the CRD's defaults, other tools) may own some.
func mergeConditions(cur, hub []metav1.Condition, generation int64) []metav1.Condition {
	out := slices.Clone(cur)
	for _, c := range hub {
		c.LastTransitionTime = metav1.Time{} // the hub leaves it zero; SetStatusCondition stamps now on a change
		if c.ObservedGeneration == 0 {
			c.ObservedGeneration = generation
		}
		meta.SetStatusCondition(&out, c)
	}
	return out
}

// ownConditions returns the hub's conditions, each keeping its lastTransitionTime from prev when the status is
// unchanged. Types missing from hub are dropped: the whole list is ours. Never nil (the API requires the list).
func ownConditions(prev, hub []metav1.Condition, generation int64) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(hub))
	for _, c := range hub {
		c.LastTransitionTime = metav1.Time{}
		if c.ObservedGeneration == 0 {
			c.ObservedGeneration = generation
		}
		if p := meta.FindStatusCondition(prev, c.Type); p != nil {
			out = append(out, *p)
		}
		meta.SetStatusCondition(&out, c)
	}
	return out
}

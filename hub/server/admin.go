// Package server implements the hub's gRPC API (fedgatepb.Admin for hubctl, fedgatepb.Sync for spokes) on top of
// hub/store, and wires store, compile loop and gRPC server into one process (Start, Run). It never compiles: it
// writes inputs to etcd and streams the graphs the compile loop (hub/controller) writes back.
package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/hub/validation"
)

// AdminService implements fedgatepb.AdminServer. Every method is for the admin identity only (hub/auth's policy).
type AdminService struct {
	fedgatepb.UnimplementedAdminServer
	st        *store.Store
	log       *slog.Logger
	reg       *registration.Service
	sessions  *auth.Sessions
	ca        *pki.Authority
	advertise string
}

// Apply validates every object, then stores all of them in one transaction. One invalid object refuses the whole
// request, so a multi-document file is never half applied. An object written for an older version of its kind with the
// schema of a served one is stored as the served version, and the response's warnings say so.
func (a *AdminService) Apply(ctx context.Context, req *fedgatepb.ApplyRequest) (*fedgatepb.ApplyResponse, error) {
	var warnings []string
	for i, o := range req.GetObjects() {
		// Upgrade first: an older shape (a v1.1 Gateway's client validation) does not decode into today's types.
		var w string
		if o != nil {
			var err error
			if w, err = resources.Upgrade(o); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
			}
		}
		if err := checkEnvelope(o); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
		}
		if o.Kind == resources.KindNamespace {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %s: kind: Unsupported value: Namespaces are reported by the clusters, whose labels allowedRoutes selectors match there; they are not applied at the hub",
				i, resources.Describe(o.Kind, o.Namespace, o.Name))
		}
		if err := mergeStringData(o); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
		}
		if err := dropLastApplied(o); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
		}
		if w != "" {
			warnings = append(warnings, w)
		}
		if err := validation.Validate(o); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
		}
		if store.Mirrored(o.Json) {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %s: metadata.annotations[%s]: Forbidden: only the hub sets it, on objects it mirrors from the hub cluster",
				i, resources.Describe(o.Kind, o.Namespace, o.Name), store.OriginAnnotation)
		}
	}
	results, rev, err := a.st.ApplyHub(ctx, req.GetObjects())
	if err != nil {
		return nil, storeError(err)
	}
	resp := &fedgatepb.ApplyResponse{Revision: rev, Warnings: warnings}
	for _, r := range results {
		resp.Results = append(resp.Results, &fedgatepb.ApplyResult{Ref: r.Ref, Action: r.Action})
		if r.Action != store.ActionUnchanged {
			a.log.Info("applied", "object", resources.ID(r.Ref.Kind, r.Ref.Namespace, r.Ref.Name), "action", r.Action, "revision", rev)
		}
	}
	return resp, nil
}

// Delete removes objects applied at the hub.
func (a *AdminService) Delete(ctx context.Context, req *fedgatepb.DeleteRequest) (*fedgatepb.DeleteResponse, error) {
	for i, r := range req.GetRefs() {
		if r == nil {
			return nil, status.Errorf(codes.InvalidArgument, "refs[%d]: Required value", i)
		}
		if err := store.CheckRef(r.Kind, r.Namespace, r.Name); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "refs[%d]: %v", i, err)
		}
	}
	deleted, notFound, rev, err := a.st.DeleteHub(ctx, req.GetRefs())
	if err != nil {
		return nil, storeError(err)
	}
	for _, r := range deleted {
		a.log.Info("deleted", "object", resources.ID(r.Kind, r.Namespace, r.Name), "revision", rev)
	}
	return &fedgatepb.DeleteResponse{Deleted: deleted, NotFound: notFound, Revision: rev}, nil
}

// List returns objects with their compiled status, everything read at one revision.
func (a *AdminService) List(ctx context.Context, req *fedgatepb.ListRequest) (*fedgatepb.ListResponse, error) {
	var kinds []string
	if req.GetKind() != "" {
		ks, ok := resources.KindFor(req.GetKind())
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "kind: Unsupported value: %q", req.GetKind())
		}
		kinds = ks
	}
	objs, rev, err := a.st.ListObjects(ctx, kinds, req.GetNamespace(), req.GetIncludeReports())
	if err != nil {
		return nil, storeError(err)
	}
	statuses, err := a.st.Statuses(ctx, rev)
	if err != nil {
		return nil, storeError(err)
	}
	ptrs := make([]*fedgatepb.Object, len(objs))
	byObj := make(map[*fedgatepb.Object]string, len(objs))
	for i, o := range objs {
		ptrs[i] = o.Object
		byObj[o.Object] = o.Cluster
	}
	// hubctl shows kinds in resources.Kinds order; hub objects before reported ones of the same kind.
	resources.SortObjects(ptrs)
	resp := &fedgatepb.ListResponse{Revision: rev}
	var reported []*fedgatepb.ListedObject
	for _, o := range ptrs {
		cluster := byObj[o]
		if o.Kind == resources.KindSecret {
			o = redactSecret(o)
		}
		lo := &fedgatepb.ListedObject{Object: o, Cluster: cluster, StatusJson: statuses[store.StatusKey(cluster, o.Kind, o.Namespace, o.Name)]}
		if cluster == "" {
			resp.Objects = append(resp.Objects, lo)
		} else {
			reported = append(reported, lo)
		}
	}
	resp.Objects = append(resp.Objects, reported...)
	return resp, nil
}

// ListClusters returns every joined or known cluster with its connection and sync state. Labels and the join time
// come from the join record (what the admin's token admitted); a cluster that joined but never connected is listed
// too, disconnected.
func (a *AdminService) ListClusters(ctx context.Context, _ *fedgatepb.ListClustersRequest) (*fedgatepb.ListClustersResponse, error) {
	cls, err := a.st.Clusters(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	var joined map[string]*registration.JoinRecord
	if a.reg != nil {
		if joined, err = a.reg.JoinedAll(ctx); err != nil {
			return nil, storeError(err)
		}
	}
	resp := &fedgatepb.ListClustersResponse{}
	for _, c := range cls {
		ci := &fedgatepb.ClusterInfo{
			Name:                    c.Record.Name,
			Labels:                  c.Record.Labels,
			EastWestAddress:         c.Record.EastWestAddress,
			AgentVersion:            c.Record.AgentVersion,
			Connected:               c.Connected,
			JoinedAtUnix:            c.Record.JoinedAt.Unix(),
			LastSeenUnix:            c.Record.LastSeen.Unix(),
			SentRevision:            c.Sync.SentRevision,
			AckedRevision:           c.Sync.AckedRevision,
			NackedRevision:          c.Sync.NackedRevision,
			LastNackError:           c.Sync.LastNackError,
			ReportedObjects:         c.ReportedObjects,
			ProjectionError:         c.Sync.ProjectionError,
			ProjectionErrorRevision: c.Sync.ProjectionRevision,
		}
		if j := joined[c.Record.Name]; j != nil {
			mergeJoin(ci, j)
			delete(joined, c.Record.Name)
		}
		resp.Clusters = append(resp.Clusters, ci)
	}
	for _, j := range joined {
		ci := &fedgatepb.ClusterInfo{Name: j.Name}
		mergeJoin(ci, j)
		resp.Clusters = append(resp.Clusters, ci)
	}
	sort.Slice(resp.Clusters, func(i, k int) bool { return resp.Clusters[i].Name < resp.Clusters[k].Name })
	return resp, nil
}

func mergeJoin(ci *fedgatepb.ClusterInfo, j *registration.JoinRecord) {
	ci.JoinedAtUnix = j.JoinedAt.Unix()
	if len(j.Labels) > 0 || len(ci.Labels) == 0 {
		labels := maps.Clone(ci.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, j.Labels) // the join's labels win: the admin admitted the cluster with them
		ci.Labels = labels
	}
	if ci.EastWestAddress == "" {
		ci.EastWestAddress = j.EastWestAddress
	}
}

// errNoRegistration refuses token and removal calls on an AdminService built without registration (tests of the
// object API alone).
var errNoRegistration = status.Error(codes.FailedPrecondition, "cluster registration is not configured on this hub")

// CreateToken creates a bootstrap token and returns it with the complete join command. The secret is in the response
// only; it is neither stored nor logged.
func (a *AdminService) CreateToken(ctx context.Context, req *fedgatepb.CreateTokenRequest) (*fedgatepb.CreateTokenResponse, error) {
	if a.reg == nil {
		return nil, errNoRegistration
	}
	if req.GetTtlSeconds() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "ttlSeconds: Invalid value: %d: must not be negative", req.GetTtlSeconds())
	}
	if req.GetUsages() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "usages: Invalid value: %d: must not be negative", req.GetUsages())
	}
	tok, info, err := a.reg.CreateToken(ctx, registration.TokenOptions{
		TTL: time.Duration(req.GetTtlSeconds()) * time.Second, Usages: req.GetUsages(), ClusterName: req.GetClusterName(),
		Rejoin: req.GetRejoin(), Description: req.GetDescription(),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	hash := a.ca.ActiveHash()
	name := req.GetClusterName()
	if name == "" {
		name = "NAME"
	}
	cmd := fmt.Sprintf("hubctl join --hub %s --token %s --ca-hash %s --cluster-name %s", a.advertise, tok, hash, name)
	return &fedgatepb.CreateTokenResponse{Token: tok.String(), Info: info, CaHash: hash, HubAddress: a.advertise, JoinCommand: cmd}, nil
}

// ListTokens lists tokens without their secrets.
func (a *AdminService) ListTokens(ctx context.Context, _ *fedgatepb.ListTokensRequest) (*fedgatepb.ListTokensResponse, error) {
	if a.reg == nil {
		return nil, errNoRegistration
	}
	toks, err := a.reg.ListTokens(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	return &fedgatepb.ListTokensResponse{Tokens: toks}, nil
}

// DeleteToken deletes a token by id (a token string "id.secret" is accepted too; only its id is used).
func (a *AdminService) DeleteToken(ctx context.Context, req *fedgatepb.DeleteTokenRequest) (*fedgatepb.DeleteTokenResponse, error) {
	if a.reg == nil {
		return nil, errNoRegistration
	}
	id, _, _ := strings.Cut(req.GetId(), ".")
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "id: Required value")
	}
	if err := a.reg.DeleteToken(ctx, id); err != nil {
		return nil, grpcError(err)
	}
	a.log.Info("token deleted", "id", id)
	return &fedgatepb.DeleteTokenResponse{}, nil
}

// sessionDrain bounds how long RemoveCluster waits for the removed cluster's streams to finish their handlers, so
// that nothing they still write lands after the cleanup.
const sessionDrain = 5 * time.Second

// RemoveCluster revokes the cluster (every certificate serial it was issued is refused from now on), cuts its open
// streams, then deletes what it reported and what the hub kept about it, in one transaction. The compile loop sees
// the reports go and recompiles: the cluster's backends leave every other spoke's table.
func (a *AdminService) RemoveCluster(ctx context.Context, req *fedgatepb.RemoveClusterRequest) (*fedgatepb.RemoveClusterResponse, error) {
	if a.reg == nil {
		return nil, errNoRegistration
	}
	name := req.GetName()
	serials, err := a.reg.RemoveCluster(ctx, name)
	if err != nil {
		return nil, grpcError(err)
	}
	cut := a.sessions.Cut(name, auth.RemovedError(name))
	wctx, cancel := context.WithTimeout(ctx, sessionDrain)
	if err := a.sessions.Wait(wctx, name); err != nil {
		a.log.Warn("removed cluster's streams did not end in time; cleaning up anyway", "cluster", name, "err", err)
	}
	cancel()
	cli := a.st.Client()
	count, err := cli.Get(ctx, store.ReportClusterPrefix(name), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, storeError(err)
	}
	_, err = cli.Txn(ctx).Then(
		clientv3.OpDelete(store.ReportClusterPrefix(name), clientv3.WithPrefix()),
		clientv3.OpDelete(store.ClusterKey(name)),
		clientv3.OpDelete(store.PresenceClusterPrefix(name), clientv3.WithPrefix()),
		clientv3.OpDelete(store.GraphKey(name)),
		clientv3.OpDelete(store.SyncStateKey(name)),
	).Commit()
	if err != nil {
		return nil, storeError(err)
	}
	a.log.Info("cluster removed", "cluster", name, "revokedCertificates", len(serials), "streamsCut", cut, "removedObjects", count.Count)
	return &fedgatepb.RemoveClusterResponse{RevokedSerials: serials, RemovedObjects: count.Count}, nil
}

// grpcError passes a status error through and maps anything else as a store failure.
func grpcError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return storeError(err)
}

// checkEnvelope checks what validation does not: that the kind is one fedgate carries, that the envelope names the
// same object as its JSON (the key is built from the envelope, the compiler reads the JSON), and that the names can
// be etcd key segments.
func checkEnvelope(o *fedgatepb.Object) error {
	if o == nil {
		return errors.New("object: Required value")
	}
	desc := resources.Describe(o.Kind, o.Namespace, o.Name)
	if !resources.Known(o.ApiVersion, o.Kind) {
		return fmt.Errorf("%s: kind: Unsupported value: %s %s is not carried by fedgate", desc, o.ApiVersion, o.Kind)
	}
	if err := store.CheckRef(o.Kind, o.Namespace, o.Name); err != nil {
		return err
	}
	typed, err := resources.Typed(o)
	if err != nil {
		return err
	}
	m, err := meta.Accessor(typed)
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if m.GetName() != o.Name {
		return fmt.Errorf("%s: metadata.name: Invalid value: %q: does not match the envelope name %q", desc, m.GetName(), o.Name)
	}
	if m.GetNamespace() != o.Namespace {
		return fmt.Errorf("%s: metadata.namespace: Invalid value: %q: does not match the envelope namespace %q", desc, m.GetNamespace(), o.Namespace)
	}
	return nil
}

// storeError maps a store failure to a gRPC status: oversized requests are the caller's to split, objects mirrored
// from the hub cluster are changed there, anything else is etcd being unavailable (the client may retry).
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, store.ErrMirrored):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrInvalidObject):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// mergeStringData writes a Secret's stringData into its data, as the API server does on write, so that the hub stores
// (sealed) and compiles one form. Other kinds are left alone. Errors never quote the data.
func mergeStringData(o *fedgatepb.Object) error {
	if o.Kind != resources.KindSecret {
		return nil
	}
	var body map[string]any
	if err := json.Unmarshal(o.Json, &body); err != nil {
		return fmt.Errorf("%s: body is not a JSON object", resources.Describe(o.Kind, o.Namespace, o.Name))
	}
	sd, ok := body["stringData"].(map[string]any)
	if !ok {
		return nil
	}
	data, _ := body["data"].(map[string]any)
	if data == nil {
		data = map[string]any{}
	}
	for k, v := range sd {
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: stringData[%s]: Invalid value: must be a string", resources.Describe(o.Kind, o.Namespace, o.Name), k)
		}
		data[k] = base64.StdEncoding.EncodeToString([]byte(str))
	}
	body["data"] = data
	delete(body, "stringData")
	js, err := json.Marshal(body)
	if err != nil {
		return err
	}
	o.Json = js
	return nil
}

// lastAppliedAnnotation is the annotation kubectl apply writes: the whole applied object, a Secret's data included.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// dropLastApplied removes lastAppliedAnnotation from a Secret before the hub stores it: it would hold the Secret's
// data (a listener's private key) outside data, where redaction and whoever reads metadata do not expect it. Other
// kinds are left alone. Errors never quote the data.
func dropLastApplied(o *fedgatepb.Object) error {
	if o.Kind != resources.KindSecret {
		return nil
	}
	var body map[string]any
	if err := json.Unmarshal(o.Json, &body); err != nil {
		return fmt.Errorf("%s: body is not a JSON object", resources.Describe(o.Kind, o.Namespace, o.Name))
	}
	meta, _ := body["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	if _, ok := ann[lastAppliedAnnotation]; !ok {
		return nil
	}
	delete(ann, lastAppliedAnnotation)
	if len(ann) == 0 {
		delete(meta, "annotations")
	}
	js, err := json.Marshal(body)
	if err != nil {
		return err
	}
	o.Json = js
	return nil
}

// redactedSecretMetadata are the metadata fields hubctl sees of a Secret; every other one (annotations other than
// fedgate's, managedFields, ...) may carry a copy of the data and is left out.
var redactedSecretMetadata = []string{"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "labels"}

// fedgateAnnotation tells whether an annotation key is fedgate's own (fedgate.io/ or a subdomain of fedgate.io).
func fedgateAnnotation(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	return ok && (prefix == "fedgate.io" || strings.HasSuffix(prefix, ".fedgate.io"))
}

// redactSecret is a Secret as hubctl may see it: apiVersion, kind, type and an allowlist of metadata (fedgate's
// annotations alone), never data, stringData or anything else that might quote them, such as kubectl's
// last-applied-configuration (the hub holds listener keys; they leave it only inside the projections of the clusters
// serving them).
func redactSecret(o *fedgatepb.Object) *fedgatepb.Object {
	out := &fedgatepb.Object{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}
	var body map[string]any
	if json.Unmarshal(o.Json, &body) != nil {
		body = nil
	}
	meta, _ := body["metadata"].(map[string]any)
	redacted := map[string]any{}
	for _, f := range redactedSecretMetadata {
		if v, ok := meta[f]; ok {
			redacted[f] = v
		}
	}
	if redacted["name"] == nil {
		redacted["name"] = o.Name
	}
	if redacted["namespace"] == nil && o.Namespace != "" {
		redacted["namespace"] = o.Namespace
	}
	if ann, ok := meta["annotations"].(map[string]any); ok {
		kept := map[string]any{}
		for k, v := range ann {
			if fedgateAnnotation(k) {
				kept[k] = v
			}
		}
		if len(kept) > 0 {
			redacted["annotations"] = kept
		}
	}
	res := map[string]any{"apiVersion": o.ApiVersion, "kind": o.Kind, "metadata": redacted}
	if t, ok := body["type"].(string); ok {
		res["type"] = t
	}
	out.Json, _ = json.Marshal(res)
	return out
}

// Package server implements the hub's gRPC API (fedgatepb.Admin for hubctl, fedgatepb.Sync for spokes) on top of
// hub/store, and wires store, compile loop and gRPC server into one process (Start, Run). It never compiles: it
// writes inputs to etcd and streams the graphs the compile loop (hub/controller) writes back.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/hub/validation"
)

// AdminService implements fedgatepb.AdminServer.
type AdminService struct {
	fedgatepb.UnimplementedAdminServer
	st  *store.Store
	log *slog.Logger
}

// NewAdminService returns the admin API over st.
func NewAdminService(st *store.Store, log *slog.Logger) *AdminService {
	return &AdminService{st: st, log: log.With("component", "admin")}
}

// Apply validates every object, then stores all of them in one transaction. One invalid object refuses the whole
// request, so a multi-document file is never half applied.
func (a *AdminService) Apply(ctx context.Context, req *fedgatepb.ApplyRequest) (*fedgatepb.ApplyResponse, error) {
	for i, o := range req.GetObjects() {
		if err := checkEnvelope(o); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
		}
		if err := validation.Validate(o); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "objects[%d]: %v", i, err)
		}
	}
	results, rev, err := a.st.ApplyHub(ctx, req.GetObjects())
	if err != nil {
		return nil, storeError(err)
	}
	resp := &fedgatepb.ApplyResponse{Revision: rev}
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

// ListClusters returns every known cluster with its connection and sync state.
func (a *AdminService) ListClusters(ctx context.Context, _ *fedgatepb.ListClustersRequest) (*fedgatepb.ListClustersResponse, error) {
	cls, err := a.st.Clusters(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	resp := &fedgatepb.ListClustersResponse{}
	for _, c := range cls {
		resp.Clusters = append(resp.Clusters, &fedgatepb.ClusterInfo{
			Name:            c.Record.Name,
			Labels:          c.Record.Labels,
			EastWestAddress: c.Record.EastWestAddress,
			AgentVersion:    c.Record.AgentVersion,
			Connected:       c.Connected,
			JoinedAtUnix:    c.Record.JoinedAt.Unix(),
			LastSeenUnix:    c.Record.LastSeen.Unix(),
			SentRevision:    c.Sync.SentRevision,
			AckedRevision:   c.Sync.AckedRevision,
			NackedRevision:  c.Sync.NackedRevision,
			LastNackError:   c.Sync.LastNackError,
			ReportedObjects: c.ReportedObjects,
		})
	}
	return resp, nil
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

// storeError maps a store failure to a gRPC status: oversized requests are the caller's to split, anything else is
// etcd being unavailable (the client may retry).
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/compiler"
	"github.com/fedgate/fedgate/hub/store"
)

// SyncService implements fedgatepb.SyncServer: reports up, graphs down.
type SyncService struct {
	fedgatepb.UnimplementedSyncServer
	st  *store.Store
	log *slog.Logger
	// stopping is closed when the hub shuts down, so long-lived Report and Subscribe streams end promptly and
	// graceful stop does not wait for spokes to hang up.
	stopping <-chan struct{}
}

// NewSyncService returns the sync API over st. Closing stopping ends every Report and Subscribe stream with
// Unavailable.
func NewSyncService(st *store.Store, log *slog.Logger, stopping <-chan struct{}) *SyncService {
	return &SyncService{st: st, log: log.With("component", "sync"), stopping: stopping}
}

// clusterIdentity decides which cluster a stream speaks for: the one in the caller's verified certificate (put in
// the context by hub/auth's interceptor), never the Hello. A Hello may leave its cluster empty or repeat the
// certificate's; naming another cluster is refused, so a spoke can neither report for nor subscribe to another.
func clusterIdentity(ctx context.Context, hello *fedgatepb.Hello) (string, error) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok || p.Kind != identity.KindCluster {
		return "", status.Error(codes.Unauthenticated, "a cluster certificate issued by the hub is required")
	}
	if claimed := hello.GetCluster(); claimed != "" && claimed != p.Name {
		return "", status.Errorf(codes.PermissionDenied, "hello.cluster: Forbidden: %q: this certificate is for cluster %q", claimed, p.Name)
	}
	return p.Name, nil
}

// helloIdentity checks that a stream opened with a hello and returns the caller's cluster (from its certificate).
func helloIdentity(ctx context.Context, hello *fedgatepb.Hello, stream string) (string, error) {
	if hello == nil {
		return "", status.Errorf(codes.InvalidArgument, "%s: the first message must be a hello", stream)
	}
	return clusterIdentity(ctx, hello)
}

// Report stores what a spoke reports. Every message is checked whole before anything of it is stored: an object of
// an unknown kind or one that does not decode refuses the message (and ends the stream with InvalidArgument naming
// the object), so a bad report never reaches the compiler.
func (s *SyncService) Report(stream fedgatepb.Sync_ReportServer) error {
	return cutReason(stream.Context(), s.report(stream))
}

func (s *SyncService) report(stream fedgatepb.Sync_ReportServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	cluster, err := helloIdentity(ctx, hello, "report")
	if err != nil {
		return err
	}
	if ew := hello.GetEastWestAddress(); ew != "" {
		if _, _, err := net.SplitHostPort(ew); err != nil {
			return status.Errorf(codes.InvalidArgument, "hello.eastWestAddress: Invalid value: %q: %v", ew, err)
		}
	}
	if g := hello.GetGossipAddress(); g != "" {
		if _, _, err := net.SplitHostPort(g); err != nil {
			return status.Errorf(codes.InvalidArgument, "hello.gossipAddress: Invalid value: %q: %v", g, err)
		}
	}
	if err := checkGatewayAddresses(hello.GetGatewayAddresses()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	log := s.log.With("cluster", cluster, "stream", "report")
	if _, err := s.st.UpsertCluster(ctx, store.ClusterRecord{
		Name: cluster, EastWestAddress: hello.GetEastWestAddress(), Labels: hello.GetLabels(), AgentVersion: hello.GetAgentVersion(),
		GossipAddress: hello.GetGossipAddress(), GatewayAddresses: hello.GetGatewayAddresses(),
	}); err != nil {
		return storeError(err)
	}
	presence, err := s.st.HoldPresence(ctx, cluster)
	if err != nil {
		return storeError(err)
	}
	log.Info("cluster connected", "agentVersion", hello.GetAgentVersion(), "eastWest", hello.GetEastWestAddress())
	defer func() {
		// The stream's context is done by now; cleanup gets its own short deadline.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := presence.Close(cctx); err != nil {
			log.Warn("releasing presence", "err", err)
		}
		if err := s.st.TouchCluster(cctx, cluster); err != nil {
			log.Warn("recording last seen", "err", err)
		}
		log.Info("cluster disconnected")
	}()

	// Messages are read on their own goroutine so that a cut session (the cluster was removed: hub/auth cancels the
	// stream's context) ends the handler at once instead of when the spoke next sends.
	type received struct {
		msg *fedgatepb.ReportMessage
		err error
	}
	msgs := make(chan received)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case msgs <- received{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	seq := first.GetSeq()
	for {
		var r received
		select {
		case <-ctx.Done():
			return endedBy(ctx)
		case <-s.stopping:
			return status.Error(codes.Unavailable, "hub shutting down")
		case r = <-msgs:
		}
		msg, err := r.msg, r.err
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&fedgatepb.ReportAck{Seq: seq})
		}
		if err != nil {
			return err
		}
		var rev int64
		switch m := msg.GetMsg().(type) {
		case *fedgatepb.ReportMessage_Snapshot:
			objs := m.Snapshot.GetObjects()
			if err := checkReported(objs, "snapshot.objects"); err != nil {
				log.Warn("refused report snapshot", "seq", msg.GetSeq(), "err", err)
				return err
			}
			rev, err = s.st.ReplaceReport(ctx, cluster, objs)
			log.Debug("report snapshot stored", "seq", msg.GetSeq(), "objects", len(objs), "revision", rev)
		case *fedgatepb.ReportMessage_Delta:
			if err := checkReported(m.Delta.GetUpserts(), "delta.upserts"); err != nil {
				log.Warn("refused report delta", "seq", msg.GetSeq(), "err", err)
				return err
			}
			for i, r := range m.Delta.GetDeletes() {
				if r == nil {
					return status.Errorf(codes.InvalidArgument, "delta.deletes[%d]: Required value", i)
				}
				if err := store.CheckRef(r.Kind, r.Namespace, r.Name); err != nil {
					return status.Errorf(codes.InvalidArgument, "delta.deletes[%d]: %v", i, err)
				}
			}
			rev, err = s.st.ApplyReportDelta(ctx, cluster, m.Delta.GetUpserts(), m.Delta.GetDeletes())
			log.Debug("report delta stored", "seq", msg.GetSeq(), "upserts", len(m.Delta.GetUpserts()),
				"deletes", len(m.Delta.GetDeletes()), "revision", rev)
		case *fedgatepb.ReportMessage_Hello:
			return status.Error(codes.InvalidArgument, "report: hello may only be the first message")
		default:
			return status.Errorf(codes.InvalidArgument, "report: message %d is empty", msg.GetSeq())
		}
		if err != nil {
			return storeError(err)
		}
		seq = max(seq, msg.GetSeq())
	}
}

// checkReported decodes every reported object the way the compiler will, so that what is stored always compiles; an
// object of an older version with a served one's schema is rewritten as the served version.
func checkReported(objs []*fedgatepb.Object, field string) error {
	var scratch compiler.Resources
	for i, o := range objs {
		if err := checkEnvelope(o); err != nil {
			return status.Errorf(codes.InvalidArgument, "%s[%d]: %v", field, i, err)
		}
		// Stored as the served version, however it arrived (as Apply stores it).
		if _, err := resources.Upgrade(o); err != nil {
			return status.Errorf(codes.InvalidArgument, "%s[%d]: %v", field, i, err)
		}
		if err := scratch.AddObject(o); err != nil {
			return status.Errorf(codes.InvalidArgument, "%s[%d]: %v", field, i, err)
		}
	}
	return nil
}

// Subscribe streams a cluster's graph: the current one unless the spoke already serves it (same hash), then every
// change, from an etcd watch on graph/<cluster> that starts right after the revision of the first read, so no change
// falls between them. ACKs and NACKs are recorded in syncstate/<cluster>.
func (s *SyncService) Subscribe(stream fedgatepb.Sync_SubscribeServer) error {
	return cutReason(stream.Context(), s.subscribe(stream))
}

func (s *SyncService) subscribe(stream fedgatepb.Sync_SubscribeServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	cluster, err := helloIdentity(ctx, hello, "subscribe")
	if err != nil {
		return err
	}
	log := s.log.With("cluster", cluster, "stream", "subscribe")
	log.Info("subscribed", "appliedRevision", hello.GetAppliedRevision(), "appliedHash", shortHash(hello.GetAppliedHash()))

	// Acks and Nacks arrive on their own goroutine; stream.Send stays on this one (gRPC allows one of each).
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receiveAcks(ctx, stream, cluster, log) }()

	rec, rev, err := s.st.ReadGraph(ctx, cluster)
	if err != nil {
		return storeError(err)
	}
	lastHash := hello.GetAppliedHash()
	if rec != nil && rec.Hash == lastHash {
		// The spoke serves exactly this config (a reconnect, or a hub restart): count it as acknowledged.
		if _, err := s.st.UpdateSyncState(ctx, cluster, func(st *store.SyncState) {
			st.SentRevision, st.SentHash = rec.Revision, rec.Hash
			st.AckedRevision, st.AckedHash = max(st.AckedRevision, rec.Revision), rec.Hash
		}); err != nil {
			return storeError(err)
		}
	}
	send := func(rec *store.GraphRecord) error {
		if rec == nil || rec.Hash == lastHash {
			return nil
		}
		if err := stream.Send(&fedgatepb.SpokeConfigUpdate{Revision: rec.Revision, Hash: rec.Hash, ConfigJson: rec.Config}); err != nil {
			return err
		}
		lastHash = rec.Hash
		log.Debug("sent config", "revision", rec.Revision, "hash", shortHash(rec.Hash))
		_, err := s.st.UpdateSyncState(ctx, cluster, func(st *store.SyncState) { st.SentRevision, st.SentHash = rec.Revision, rec.Hash })
		return err
	}
	if err := send(rec); err != nil {
		return err
	}

	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	watch := s.st.Client().Watch(wctx, store.GraphKey(cluster), clientv3.WithRev(rev+1))
	for {
		select {
		case err := <-recvErr:
			return err
		case <-s.stopping:
			return status.Error(codes.Unavailable, "hub shutting down")
		case wr, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					return endedBy(ctx)
				}
				return status.Error(codes.Unavailable, "graph watch closed")
			}
			if err := wr.Err(); err != nil {
				// Compacted past our revision: read the current graph and watch again from there.
				log.Debug("graph watch restarted", "err", err)
				if rec, rev, err = s.st.ReadGraph(ctx, cluster); err != nil {
					return storeError(err)
				}
				if err := send(rec); err != nil {
					return err
				}
				// etcd has already closed the failed watch; the new one shares its context.
				watch = s.st.Client().Watch(wctx, store.GraphKey(cluster), clientv3.WithRev(rev+1))
				continue
			}
			// Only the newest put of a batch matters: a spoke that is behind skips straight to the latest graph.
			var latest *store.GraphRecord
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue // the cluster vanished; its spoke keeps serving what it has
				}
				r, err := s.st.DecodeGraph(string(ev.Kv.Key), ev.Kv.Value)
				if err != nil {
					log.Error("malformed stored graph", "err", err)
					continue
				}
				latest = r
			}
			if err := send(latest); err != nil {
				return err
			}
		}
	}
}

// receiveAcks records the spoke's answers until the stream ends. A clean end (the spoke closed its side) returns nil.
func (s *SyncService) receiveAcks(ctx context.Context, stream fedgatepb.Sync_SubscribeServer, cluster string, log *slog.Logger) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := msg.GetMsg().(type) {
		case *fedgatepb.SubscribeMessage_Ack:
			_, err = s.st.UpdateSyncState(ctx, cluster, func(st *store.SyncState) {
				st.AckedRevision, st.AckedHash = m.Ack.GetRevision(), m.Ack.GetHash()
			})
			log.Debug("ack", "revision", m.Ack.GetRevision())
		case *fedgatepb.SubscribeMessage_Nack:
			_, err = s.st.UpdateSyncState(ctx, cluster, func(st *store.SyncState) {
				st.NackedRevision, st.LastNackError = m.Nack.GetRevision(), m.Nack.GetError()
			})
			log.Warn("spoke refused config", "revision", m.Nack.GetRevision(), "err", m.Nack.GetError())
		case *fedgatepb.SubscribeMessage_Hello:
			return status.Error(codes.InvalidArgument, "subscribe: hello may only be the first message")
		default:
			return status.Error(codes.InvalidArgument, "subscribe: empty message")
		}
		if err != nil {
			return storeError(fmt.Errorf("record sync state: %w", err))
		}
	}
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// cutReason is what a stream handler that ended with err returns: once the stream's context has ended, the reason it
// ended (endedBy), whichever call of the handler noticed first — a store call fails with the context's bare
// Canceled, and a spoke must be told its cluster was removed or re-joined.
func cutReason(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return endedBy(ctx)
	}
	return err
}

// endedBy is the status a stream whose context ended returns: the cause hub/auth gave when it cut the stream (the
// cluster was removed, its certificate revoked), else the context's own error.
func endedBy(ctx context.Context) error {
	if cause := context.Cause(ctx); status.Code(cause) != codes.Unknown {
		return cause
	}
	return status.FromContextError(ctx.Err()).Err()
}

// maxGatewayAddresses is how many gateway addresses a hello may name: a Gateway's status.addresses holds 16.
const maxGatewayAddresses = 16

// checkGatewayAddresses refuses gateway addresses a Gateway's status.addresses would refuse: each must be an IP or a
// lowercase DNS name.
func checkGatewayAddresses(addrs []string) error {
	if len(addrs) > maxGatewayAddresses {
		return fmt.Errorf("hello.gatewayAddresses: Too many: %d: must have at most %d items", len(addrs), maxGatewayAddresses)
	}
	for i, a := range addrs {
		if _, err := netip.ParseAddr(a); err == nil {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(a); len(errs) > 0 {
			return fmt.Errorf("hello.gatewayAddresses[%d]: Invalid value: %q: must be an IP address or a DNS name: %s", i, a, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Package registration is how clusters join the hub: bootstrap tokens (created by an admin, stored only as a hash),
// the Join exchange of a token and a CSR for the cluster's own certificate, renewal over the existing identity, and
// removal with revocation of every certificate the cluster was issued.
//
// Every refusal happens before anything is written: a join either records the cluster, its certificate serial and the
// token's spent usage in one etcd transaction, or changes nothing. Token secrets and keys are never logged.
package registration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/hub/store"
)

// etcd keys owned by this package.
const (
	TokenPrefix   = "/fedgate/v1/tokens/" // <id> → tokenRecord
	CertPrefix    = "/fedgate/v1/certs/"  // <cluster>/<serial> → certRecord
	RevokedPrefix = store.RevokedPrefix   // <serial> → revokedRecord
	JoinPrefix    = store.JoinedPrefix    // <cluster> → joinRecord
)

// maxPrunedPerRenewal bounds how many expired certificate records one renewal deletes.
const maxPrunedPerRenewal = 64

// maxLiveCertificates bounds the unexpired certificates one cluster may hold (Renew refuses beyond it).
const maxLiveCertificates = 8

// Defaults.
const (
	DefaultTokenTTL = 24 * time.Hour
	DefaultUsages   = 1
	DefaultCertTTL  = 24 * time.Hour
)

type tokenRecord struct {
	SecretHash  string    `json:"secretHash"`
	Expires     time.Time `json:"expires"`
	UsagesLeft  int32     `json:"usagesLeft"`
	ClusterName string    `json:"clusterName,omitempty"`
	// Rejoin lets the token replace the certificates of ClusterName when that cluster is already joined.
	Rejoin      bool      `json:"rejoin,omitempty"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
}

type certRecord struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
	Issued   time.Time `json:"issued"`
}

type revokedRecord struct {
	Cluster string    `json:"cluster"`
	Revoked time.Time `json:"revoked"`
	// Reason is why the certificate was revoked ("removed" or "re-joined"); a stream or call refused for it is told.
	Reason string `json:"reason,omitempty"`
	// NotAfter is the revoked certificate's own expiry. Records are kept past it: the hub and the east-west listener
	// judge a connection's certificate at its TLS handshake only (spokes renew over their open connections), so a
	// connection opened before the expiry could outlive it, and only the record refuses it then.
	NotAfter time.Time `json:"notAfter,omitzero"`
}

// revocations returns the revocation records (serial hex → record) of the certificates in certKVs (CertPrefix
// records), all revoked at now for reason.
func revocations(certKVs []*mvccpb.KeyValue, cluster, reason string, now time.Time) map[string]revokedRecord {
	out := make(map[string]revokedRecord, len(certKVs))
	for _, kv := range certKVs {
		var cr certRecord
		_ = json.Unmarshal(kv.Value, &cr) // a malformed record is still revoked, without an expiry
		out[strings.TrimPrefix(string(kv.Key), CertPrefix+cluster+"/")] = revokedRecord{Cluster: cluster, Revoked: now, Reason: reason, NotAfter: cr.NotAfter}
	}
	return out
}

// Revocation reasons as stored.
const (
	reasonRemoved  = "removed"
	reasonRejoined = "re-joined"
)

// revocation is what a refused caller is told about the revocation: which cluster and what happened to it.
func (r revokedRecord) revocation() auth.Revocation {
	switch {
	case r.Cluster == "":
		return auth.Revocation{Reason: identity.ReasonCertificateRevoked}
	case r.Reason == reasonRemoved:
		return auth.Revocation{Cluster: r.Cluster, Reason: identity.ReasonClusterRemoved}
	case r.Reason == reasonRejoined:
		return auth.Revocation{Cluster: r.Cluster, Reason: identity.ReasonClusterRejoined}
	}
	return auth.Revocation{Cluster: r.Cluster, Reason: identity.ReasonCertificateRevoked}
}

// decodeRevoked reads a revocation record; a malformed one still revokes, without a reason.
func decodeRevoked(b []byte) revokedRecord {
	var r revokedRecord
	_ = json.Unmarshal(b, &r)
	return r
}

// JoinRecord is what the hub keeps about a joined cluster.
type JoinRecord struct {
	Name            string            `json:"name"`
	Labels          map[string]string `json:"labels,omitempty"`
	EastWestAddress string            `json:"eastWestAddress,omitempty"`
	JoinedAt        time.Time         `json:"joinedAt"`
	TokenID         string            `json:"tokenID"`
}

// Service implements fedgatepb.RegistrationServer and the token/removal parts of the admin API.
type Service struct {
	fedgatepb.UnimplementedRegistrationServer

	etcd     *clientv3.Client
	ca       *pki.Authority
	certTTL  time.Duration
	now      func() time.Time
	log      *slog.Logger
	sessions *auth.Sessions

	mu      sync.RWMutex
	revoked map[string]auth.Revocation // serial hex → why it was revoked
}

// Options configure a Service.
type Options struct {
	CertTTL time.Duration    // default DefaultCertTTL
	Now     func() time.Time // default time.Now
	Logger  *slog.Logger
	// Sessions, when set, are the hub's open cluster streams: a re-join cuts the cluster's streams (they run on the
	// certificates it revokes).
	Sessions *auth.Sessions
}

// New returns a Service and loads the revocation list.
func New(ctx context.Context, etcd *clientv3.Client, ca *pki.Authority, o Options) (*Service, error) {
	if o.CertTTL == 0 {
		o.CertTTL = DefaultCertTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Service{etcd: etcd, ca: ca, certTTL: o.CertTTL, now: o.Now, log: o.Logger.With("component", "registration"),
		sessions: o.Sessions, revoked: map[string]auth.Revocation{}}
	if err := s.loadRevoked(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) loadRevoked(ctx context.Context) error {
	next, err := s.reloadRevoked(ctx)
	if err != nil {
		return err
	}
	go s.watchRevoked(ctx, next)
	return nil
}

// reloadRevoked replaces the in-memory list with every revocation in etcd and returns the revision to watch from.
func (s *Service) reloadRevoked(ctx context.Context) (next int64, err error) {
	resp, err := s.etcd.Get(ctx, RevokedPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	revoked := make(map[string]auth.Revocation, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		revoked[strings.TrimPrefix(string(kv.Key), RevokedPrefix)] = decodeRevoked(kv.Value).revocation()
	}
	s.mu.Lock()
	s.revoked = revoked
	s.mu.Unlock()
	return resp.Header.Revision + 1, nil
}

// Bounds of the wait before the revocation watch is re-established.
const (
	revokedWatchRetryMin = 100 * time.Millisecond
	revokedWatchRetryMax = 5 * time.Second
)

// watchRevoked keeps the in-memory list in step with revocations made by other hub replicas until ctx ends. A watch
// that ends for any other reason (an etcd leader change, a cancelled watch, a closed channel) is re-established from
// the revision after the last event it delivered, so no revocation is missed; when etcd has compacted that revision
// away, the whole list is read again and watched from there. Every failure is logged and retried with backoff.
func (s *Service) watchRevoked(ctx context.Context, next int64) {
	delay := revokedWatchRetryMin
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		var err error
		for wr := range s.etcd.Watch(wctx, RevokedPrefix, clientv3.WithPrefix(), clientv3.WithRev(next)) {
			if err = wr.Err(); err != nil {
				break
			}
			cut := map[string]auth.Revocation{}
			s.mu.Lock()
			for _, ev := range wr.Events {
				sn := strings.TrimPrefix(string(ev.Kv.Key), RevokedPrefix)
				switch ev.Type {
				case clientv3.EventTypePut:
					r := decodeRevoked(ev.Kv.Value).revocation()
					s.revoked[sn] = r
					cut[sn] = r
				case clientv3.EventTypeDelete: // deleted by hand (etcdctl): no longer revoked
					delete(s.revoked, sn)
				}
				next = ev.Kv.ModRevision + 1
			}
			s.mu.Unlock()
			// Streams on this replica that run on a certificate another replica (or this one) revoked end now.
			if s.sessions != nil {
				for sn, why := range cut {
					s.sessions.CutSerial(sn, auth.RevokedError(sn, why))
				}
			}
			delay = revokedWatchRetryMin
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch channel closed")
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			reloaded, rerr := s.reloadRevoked(ctx)
			if rerr == nil {
				s.log.Warn("revocation watch fell behind a compaction; revocation list reloaded", "err", err, "revision", reloaded-1)
				next = reloaded
				continue
			}
			err = fmt.Errorf("%w; reloading the revocation list: %w", err, rerr)
		}
		s.log.Warn("revocation watch ended; resuming", "err", err, "fromRevision", next, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, revokedWatchRetryMax)
	}
}

// Revoked implements auth.Revoker.
func (s *Service) Revoked(serial *big.Int) (auth.Revocation, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, revoked := s.revoked[identity.SerialHex(serial)]
	return r, revoked
}

// TokenOptions describe a token to create.
type TokenOptions struct {
	TTL    time.Duration // ≤ 0: DefaultTokenTTL
	Usages int32         // ≤ 0: DefaultUsages
	// ClusterName, when set, is the only cluster name the token admits.
	ClusterName string
	// Rejoin lets the token join ClusterName while that cluster is joined already, revoking every certificate it
	// holds. Without it a token never admits the name of a joined cluster. Requires ClusterName.
	Rejoin      bool
	Description string
}

// CreateToken creates a token.
func (s *Service) CreateToken(ctx context.Context, o TokenOptions) (identity.Token, *fedgatepb.TokenInfo, error) {
	if o.TTL <= 0 {
		o.TTL = DefaultTokenTTL
	}
	if o.Usages <= 0 {
		o.Usages = DefaultUsages
	}
	if o.ClusterName != "" {
		if err := identity.ValidateClusterName(o.ClusterName); err != nil {
			return identity.Token{}, nil, status.Errorf(codes.InvalidArgument, "clusterName: %v", err)
		}
	} else if o.Rejoin {
		return identity.Token{}, nil, status.Error(codes.InvalidArgument, "rejoin: Invalid value: true: a re-join token must name its cluster (clusterName)")
	}
	tok, err := identity.NewToken()
	if err != nil {
		return identity.Token{}, nil, err
	}
	now := s.now()
	rec := tokenRecord{SecretHash: identity.HashSecret(tok), Expires: now.Add(o.TTL), UsagesLeft: o.Usages, ClusterName: o.ClusterName,
		Rejoin: o.Rejoin, Description: o.Description, Created: now}
	b, _ := json.Marshal(rec)
	key := TokenPrefix + tok.ID
	// Token ids are random; the compare only guards against the astronomically unlikely collision.
	resp, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return identity.Token{}, nil, err
	}
	if !resp.Succeeded {
		return identity.Token{}, nil, status.Error(codes.Aborted, "token id collision, try again")
	}
	s.log.Info("token created", "id", tok.ID, "expires", rec.Expires, "usages", o.Usages, "cluster", o.ClusterName, "rejoin", o.Rejoin)
	return tok, info(tok.ID, rec), nil
}

func info(id string, r tokenRecord) *fedgatepb.TokenInfo {
	return &fedgatepb.TokenInfo{Id: id, ExpiresUnix: r.Expires.Unix(), UsagesLeft: r.UsagesLeft, ClusterName: r.ClusterName, Rejoin: r.Rejoin,
		Description: r.Description, CreatedUnix: r.Created.Unix()}
}

// ListTokens lists tokens (never their secrets).
func (s *Service) ListTokens(ctx context.Context) ([]*fedgatepb.TokenInfo, error) {
	resp, err := s.etcd.Get(ctx, TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []*fedgatepb.TokenInfo
	for _, kv := range resp.Kvs {
		var r tokenRecord
		if json.Unmarshal(kv.Value, &r) != nil {
			continue
		}
		out = append(out, info(strings.TrimPrefix(string(kv.Key), TokenPrefix), r))
	}
	return out, nil
}

// DeleteToken deletes a token by id.
func (s *Service) DeleteToken(ctx context.Context, id string) error {
	resp, err := s.etcd.Delete(ctx, TokenPrefix+id)
	if err != nil {
		return err
	}
	if resp.Deleted == 0 {
		return status.Errorf(codes.NotFound, "token %q not found", id)
	}
	return nil
}

// Join implements fedgatepb.RegistrationServer.
func (s *Service) Join(ctx context.Context, req *fedgatepb.JoinRequest) (*fedgatepb.JoinResponse, error) {
	tok, err := identity.ParseToken(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	name := req.GetClusterName()
	if err := identity.ValidateClusterName(name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	key := TokenPrefix + tok.ID
	resp, err := s.etcd.Get(ctx, key)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "token store unavailable")
	}
	// One message for unknown id and wrong secret: a caller learns nothing about which token ids exist.
	invalid := status.Errorf(codes.Unauthenticated, "token %s is not valid", tok.ID)
	if len(resp.Kvs) == 0 {
		s.log.Warn("join refused: unknown token", "id", tok.ID, "cluster", name)
		return nil, invalid
	}
	kv := resp.Kvs[0]
	var rec tokenRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, status.Error(codes.Internal, "token record unreadable")
	}
	if !constantTimeEqual(rec.SecretHash, identity.HashSecret(tok)) {
		s.log.Warn("join refused: wrong token secret", "id", tok.ID, "cluster", name)
		return nil, invalid
	}
	now := s.now()
	if !now.Before(rec.Expires) {
		s.log.Warn("join refused: token expired", "id", tok.ID, "cluster", name, "expired", rec.Expires)
		return nil, status.Errorf(codes.Unauthenticated, "token %s expired at %s", tok.ID, rec.Expires.UTC().Format(time.RFC3339))
	}
	if rec.UsagesLeft <= 0 {
		s.log.Warn("join refused: token used up", "id", tok.ID, "cluster", name)
		return nil, status.Errorf(codes.Unauthenticated, "token %s has no usages left", tok.ID)
	}
	if rec.ClusterName != "" && rec.ClusterName != name {
		s.log.Warn("join refused: token bound to another cluster", "id", tok.ID, "cluster", name, "bound", rec.ClusterName)
		return nil, status.Errorf(codes.PermissionDenied, "token %s is bound to cluster %q, not %q", tok.ID, rec.ClusterName, name)
	}
	// The cluster's join record and certificates, read at one revision: the transaction below commits only if neither
	// changed since, so a join never races another join, a renewal or a removal of the same name.
	cur, err := s.etcd.Txn(ctx).Then(clientv3.OpGet(JoinPrefix+name), clientv3.OpGet(CertPrefix+name+"/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	joinKVs, certKVs := cur.Responses[0].GetResponseRange().Kvs, cur.Responses[1].GetResponseRange().Kvs
	rejoin := len(joinKVs) > 0 || len(certKVs) > 0
	if rejoin && !(rec.Rejoin && rec.ClusterName == name) {
		s.log.Warn("join refused: cluster already joined", "id", tok.ID, "cluster", name)
		return nil, status.Errorf(codes.AlreadyExists, "cluster %q is already joined: token %s may not take its name; to re-join it, "+
			"use a token created for it with --cluster-name %s --rejoin (which revokes its current certificates)", name, tok.ID, name)
	}
	certPEM, cert, err := s.ca.SignClusterCSR(req.GetCsrPem(), name, s.certTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	serial := identity.SerialHex(cert.SerialNumber)
	rec.UsagesLeft--
	tb, _ := json.Marshal(rec)
	jb, _ := json.Marshal(JoinRecord{Name: name, Labels: req.GetLabels(), EastWestAddress: req.GetEastWestAddress(), JoinedAt: now, TokenID: tok.ID})
	cb, _ := json.Marshal(certRecord{Serial: serial, NotAfter: cert.NotAfter, Issued: now})
	// The token's ModRevision guards the spend: two joins racing on a single-use token cannot both succeed.
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision),
		clientv3.Compare(clientv3.ModRevision(CertPrefix+name+"/"), "<", cur.Header.Revision+1).WithPrefix(),
	}
	if len(joinKVs) > 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(JoinPrefix+name), "=", joinKVs[0].ModRevision))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(JoinPrefix+name), "=", 0))
	}
	ops := []clientv3.Op{
		clientv3.OpPut(key, string(tb)),
		clientv3.OpPut(JoinPrefix+name, string(jb)),
		clientv3.OpPut(CertPrefix+name+"/"+serial, string(cb)),
	}
	// A re-join revokes every certificate the cluster held, in the same transaction that issues the new one.
	why := revokedRecord{Cluster: name, Reason: reasonRejoined}.revocation()
	var revoked []string
	for old, rr := range revocations(certKVs, name, reasonRejoined, now) {
		revoked = append(revoked, old)
		rb, _ := json.Marshal(rr)
		ops = append(ops, clientv3.OpDelete(CertPrefix+name+"/"+old), clientv3.OpPut(RevokedPrefix+old, string(rb)))
	}
	// A cluster joined again after its removal: the certificates revoked by the removal now say "re-joined", so an
	// old agent that comes back is told its cluster lives on under a new identity — not "removed", on which it would
	// clean up after the new agent.
	superseded, err := s.removedSerials(ctx, name)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	for sn, rr := range superseded {
		rr.Reason = reasonRejoined
		rb, _ := json.Marshal(rr)
		ops = append(ops, clientv3.OpPut(RevokedPrefix+sn, string(rb)))
	}
	txn, err := s.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	if !txn.Succeeded {
		return nil, status.Errorf(codes.Aborted, "token %s or cluster %q changed concurrently, try again", tok.ID, name)
	}
	if len(superseded) > 0 {
		sns := make([]string, 0, len(superseded))
		for sn := range superseded {
			sns = append(sns, sn)
		}
		s.revoke(sns, why)
	}
	if rejoin {
		s.revoke(revoked, why)
		cut := 0
		if s.sessions != nil {
			// Only the old certificates can have streams open: the new one is not in the joiner's hands yet.
			for _, sn := range revoked {
				cut += s.sessions.CutSerial(sn, auth.RevokedError(sn, why))
			}
		}
		s.log.Warn("cluster re-joined; its previous certificates are revoked", "cluster", name, "token", tok.ID, "serial", serial,
			"revokedCertificates", len(revoked), "streamsCut", cut, "expires", cert.NotAfter)
	} else {
		s.log.Info("cluster joined", "cluster", name, "token", tok.ID, "serial", serial, "expires", cert.NotAfter)
	}
	return &fedgatepb.JoinResponse{CertificatePem: certPEM, CaBundlePem: s.ca.BundlePEM(), ExpiresUnix: cert.NotAfter.Unix()}, nil
}

// removedSerials returns the revocation records of cluster's certificates revoked by its removal.
func (s *Service) removedSerials(ctx context.Context, cluster string) (map[string]revokedRecord, error) {
	resp, err := s.etcd.Get(ctx, RevokedPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]revokedRecord{}
	for _, kv := range resp.Kvs {
		if r := decodeRevoked(kv.Value); r.Cluster == cluster && r.Reason == reasonRemoved {
			out[strings.TrimPrefix(string(kv.Key), RevokedPrefix)] = r
		}
	}
	return out, nil
}

func (s *Service) revoke(serials []string, why auth.Revocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range serials {
		s.revoked[sn] = why
	}
}

// Renew implements fedgatepb.RegistrationServer: a cluster renews its own certificate (the caller's identity comes
// from its current certificate, verified by the interceptor).
func (s *Service) Renew(ctx context.Context, req *fedgatepb.RenewRequest) (*fedgatepb.RenewResponse, error) {
	p, ok := auth.PrincipalFrom(ctx)
	current, hasSerial := auth.SerialFrom(ctx)
	if !ok || p.Kind != identity.KindCluster || !hasSerial {
		return nil, status.Error(codes.PermissionDenied, "only a cluster may renew its certificate")
	}
	certPEM, cert, err := s.ca.SignClusterCSR(req.GetCsrPem(), p.Name, s.certTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	now := s.now()
	cb, _ := json.Marshal(certRecord{Serial: identity.SerialHex(cert.SerialNumber), NotAfter: cert.NotAfter, Issued: now})
	ops := []clientv3.Op{clientv3.OpPut(CertPrefix+p.Name+"/"+identity.SerialHex(cert.SerialNumber), string(cb))}
	// The records of the cluster's expired certificates go in the same transaction (at most maxPrunedPerRenewal,
	// within etcd's default 128 operations): every TLS handshake refuses an expired certificate anyway, and keeping
	// them would grow the removal and re-join transactions (one operation per record) and the revoked serials every
	// projection carries, renewal after renewal.
	held, err := s.etcd.Get(ctx, CertPrefix+p.Name+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	live := 0
	for _, kv := range held.Kvs {
		var rec certRecord
		expired := json.Unmarshal(kv.Value, &rec) == nil && !rec.NotAfter.IsZero() && rec.NotAfter.Before(now)
		if !expired {
			live++
		} else if len(ops) <= maxPrunedPerRenewal {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	// A spoke renewing on schedule holds two live certificates at most; a cluster that renews in a loop must not grow
	// the records its removal or re-join has to revoke in one transaction past what etcd allows.
	if live >= maxLiveCertificates {
		return nil, status.Errorf(codes.ResourceExhausted, "cluster %q already holds %d unexpired certificates; renew when one expires", p.Name, live)
	}
	// Only a certificate the cluster still holds may renew: a removal or re-join racing with a renewal must win.
	txn, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(CertPrefix+p.Name+"/"+current), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	if !txn.Succeeded {
		return nil, status.Errorf(codes.PermissionDenied, "cluster %q is not joined with certificate %s", p.Name, current)
	}
	s.log.Info("certificate renewed", "cluster", p.Name, "serial", identity.SerialHex(cert.SerialNumber), "expires", cert.NotAfter,
		"expiredRecordsPruned", len(ops)-1)
	return &fedgatepb.RenewResponse{CertificatePem: certPEM, CaBundlePem: s.ca.BundlePEM(), ExpiresUnix: cert.NotAfter.Unix()}, nil
}

// RemoveCluster revokes every certificate issued to the cluster and deletes its join record. Removing the cluster's
// reported objects and cutting its streams is the caller's part (the hub's store and session registry).
func (s *Service) RemoveCluster(ctx context.Context, name string) ([]string, error) {
	if err := identity.ValidateClusterName(name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var serials []string
	for attempt := 0; ; attempt++ {
		// The certificates and the join record are read at one revision, and the removal commits only if neither
		// changed since: a renewal or join landing in between would otherwise leave a certificate deleted from the
		// records but never revoked.
		resp, err := s.etcd.Get(ctx, CertPrefix+name+"/", clientv3.WithPrefix())
		if err != nil {
			return nil, err
		}
		rev := resp.Header.Revision
		join, err := s.etcd.Get(ctx, JoinPrefix+name, clientv3.WithRev(rev))
		if err != nil {
			return nil, err
		}
		if len(resp.Kvs) == 0 && len(join.Kvs) == 0 {
			return nil, status.Errorf(codes.NotFound, "cluster %q is not joined", name)
		}
		ops := []clientv3.Op{clientv3.OpDelete(JoinPrefix + name), clientv3.OpDelete(CertPrefix+name+"/", clientv3.WithPrefix())}
		serials = serials[:0]
		for serial, rr := range revocations(resp.Kvs, name, reasonRemoved, s.now()) {
			serials = append(serials, serial)
			rb, _ := json.Marshal(rr)
			ops = append(ops, clientv3.OpPut(RevokedPrefix+serial, string(rb)))
		}
		txn, err := s.etcd.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(CertPrefix+name+"/"), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(JoinPrefix+name), "<", rev+1),
		).Then(ops...).Commit()
		if err != nil {
			return nil, err
		}
		if txn.Succeeded {
			break
		}
		if attempt == 4 {
			return nil, status.Errorf(codes.Aborted, "cluster %q changed during its removal five times; try again", name)
		}
	}
	s.revoke(serials, revokedRecord{Cluster: name, Reason: reasonRemoved}.revocation())
	sort.Strings(serials)
	s.log.Info("cluster removed", "cluster", name, "revokedCertificates", len(serials))
	return serials, nil
}

// Joined returns the join record of a cluster, or nil.
func (s *Service) Joined(ctx context.Context, name string) (*JoinRecord, error) {
	resp, err := s.etcd.Get(ctx, JoinPrefix+name)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	var r JoinRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return nil, fmt.Errorf("join record of %q: %w", name, err)
	}
	return &r, nil
}

// JoinedAll returns every join record by cluster name.
func (s *Service) JoinedAll(ctx context.Context) (map[string]*JoinRecord, error) {
	resp, err := s.etcd.Get(ctx, JoinPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[string]*JoinRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r JoinRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			s.log.Warn("unreadable join record", "key", string(kv.Key), "err", err)
			continue
		}
		out[r.Name] = &r
	}
	return out, nil
}

// ErrNotJoined is returned by callers that require a joined cluster.
var ErrNotJoined = errors.New("cluster is not joined")

func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

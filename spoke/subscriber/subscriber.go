// Package subscriber receives this spoke's projection of the routing graph from the hub over Sync.Subscribe, applies
// each revision to the proxy, answers ACK or NACK, and keeps the last good config on disk so that a restarted spoke
// serves at once, hub or no hub.
//
// Invariants: a config that fails verification, decoding or Apply is NACKed and changes nothing (the proxy keeps its
// previous table and the cache keeps the last good config); revisions never go backwards.
package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/internal/retry"
)

// healthyAfter is how long a stream must have lived for the next reconnect to start from the shortest backoff.
const healthyAfter = 3 * time.Second

// Applier makes a config live. *proxy.Server satisfies it; an error means the config was refused and the previous one
// keeps serving.
type Applier interface {
	Apply(*spokeconfig.SpokeConfig) error
}

// Options configure a Subscriber.
type Options struct {
	// Client is the hub's Sync service. Required for Run.
	Client fedgatepb.SyncClient
	// Hello opens every stream; AppliedRevision and AppliedHash are filled in per stream. Required, with Cluster set.
	Hello *fedgatepb.Hello
	// Applier receives every accepted config. Required.
	Applier Applier
	// CacheDir holds the last good config. Empty disables the cache.
	CacheDir string
	// MinBackoff and MaxBackoff bound the reconnect delay. Defaults retry.DefaultBase and retry.DefaultMax.
	MinBackoff, MaxBackoff time.Duration
	// Log, default slog.Default().
	Log *slog.Logger
}

// Subscriber keeps the proxy on the hub's latest good config for this cluster.
type Subscriber struct {
	opts Options
	log  *slog.Logger

	mu          sync.Mutex
	appliedRev  int64
	appliedHash string
}

// New returns a Subscriber serving nothing until LoadCache or Run.
func New(opts Options) (*Subscriber, error) {
	if opts.Hello == nil || opts.Hello.Cluster == "" {
		return nil, errors.New("subscriber: Hello.Cluster must be set")
	}
	if opts.Applier == nil {
		return nil, errors.New("subscriber: Applier must be set")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Subscriber{opts: opts, log: log.With("component", "subscriber")}, nil
}

// Applied returns the revision and hash of the config serving now (0, "" if none).
func (s *Subscriber) Applied() (revision int64, hash string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appliedRev, s.appliedHash
}

// LoadCache applies the cached config, if there is one. It reports whether a config was applied. A damaged cache,
// one for another cluster, or one the proxy refuses is an error and leaves the subscriber with nothing applied: the
// hub will send a full config on connect.
func (s *Subscriber) LoadCache() (bool, error) {
	if s.opts.CacheDir == "" {
		return false, nil
	}
	e, err := ReadCache(s.opts.CacheDir)
	if err != nil || e == nil {
		return false, err
	}
	if e.Cluster != s.opts.Hello.Cluster {
		return false, fmt.Errorf("cache in %s is for cluster %q, not %q", s.opts.CacheDir, e.Cluster, s.opts.Hello.Cluster)
	}
	cfg, err := spokeconfig.Decode(e.Config)
	if err != nil {
		return false, fmt.Errorf("cache in %s: %w", s.opts.CacheDir, err)
	}
	if err := s.opts.Applier.Apply(cfg); err != nil {
		return false, fmt.Errorf("cache in %s: apply revision %d: %w", s.opts.CacheDir, e.Revision, err)
	}
	s.setApplied(e.Revision, e.Hash)
	s.log.Info("serving cached config", "revision", e.Revision, "hash", e.Hash)
	return true, nil
}

func (s *Subscriber) setApplied(rev int64, hash string) {
	s.mu.Lock()
	s.appliedRev, s.appliedHash = rev, hash
	s.mu.Unlock()
}

// Run subscribes until ctx ends, reconnecting with exponential backoff. It returns nil when ctx ends, or when the hub
// refuses the cluster's certificate (retry.Refused; logged as an error): no reconnect could succeed, and the proxy
// keeps serving the last config — except when the refusal says the cluster was removed: then it returns a
// *retry.RemovedError.
func (s *Subscriber) Run(ctx context.Context) error {
	if s.opts.Client == nil {
		return errors.New("subscriber: Client must be set")
	}
	b := retry.Backoff{Base: s.opts.MinBackoff, Max: s.opts.MaxBackoff}
	for {
		start := time.Now()
		progressed, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if removed := retry.Removed(err); removed != nil {
			s.log.Error("this cluster was removed at the hub; subscribe stream stopping", "err", err)
			return removed
		}
		if retry.Refused(err) {
			s.log.Error("the hub refuses this cluster's certificate (the cluster was re-joined at the hub); "+
				"subscribe stream not reconnecting, serving the last config: restart the spoke with new credentials", "err", err)
			return nil
		}
		if progressed || time.Since(start) >= healthyAfter {
			b.Reset()
		}
		delay := b.Next()
		s.log.Warn("subscribe stream ended, reconnecting", "err", err, "in", delay)
		if !retry.Wait(ctx, delay) {
			return nil
		}
	}
}

// session runs one Subscribe stream. progressed reports whether the hub sent anything, proof the connection worked.
func (s *Subscriber) session(ctx context.Context) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.opts.Client.Subscribe(sctx)
	if err != nil {
		return false, fmt.Errorf("open subscribe stream: %w", err)
	}
	rev, hash := s.Applied()
	hello := &fedgatepb.Hello{
		Cluster:         s.opts.Hello.Cluster,
		AgentVersion:    s.opts.Hello.AgentVersion,
		EastWestAddress: s.opts.Hello.EastWestAddress,
		Labels:          s.opts.Hello.Labels,
		AppliedRevision: rev,
		AppliedHash:     hash,
	}
	if err := stream.Send(&fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Hello{Hello: hello}}); err != nil {
		// The real status comes from Recv.
		if _, rerr := stream.Recv(); rerr != nil {
			err = rerr
		}
		return false, fmt.Errorf("send hello: %w", err)
	}
	s.log.Info("subscribed", "appliedRevision", rev)
	for {
		u, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		reply := s.Handle(u)
		if reply == nil {
			continue
		}
		if err := stream.Send(reply); err != nil {
			return progressed, fmt.Errorf("send ack: %w", err)
		}
	}
}

// Handle verifies, decodes and applies one update and returns the ACK or NACK to send, or nil for an update older than
// the config serving now (a reordered or replayed message that must not roll the proxy back).
func (s *Subscriber) Handle(u *fedgatepb.SpokeConfigUpdate) *fedgatepb.SubscribeMessage {
	rev, hash := s.Applied()
	log := s.log.With("revision", u.Revision, "hash", u.Hash)
	if u.Revision < rev {
		log.Info("ignoring stale config", "appliedRevision", rev)
		return nil
	}
	if u.Revision == rev && u.Hash == hash {
		// Already serving it (e.g. the hub resent after a reconnect): confirm without rebuilding the table.
		return ack(u)
	}
	if got := spokeconfig.Hash(u.ConfigJson); got != u.Hash {
		return s.nack(log, u, fmt.Errorf("config hash mismatch: update says %s, content hashes to %s", u.Hash, got))
	}
	cfg, err := spokeconfig.Decode(u.ConfigJson)
	if err != nil {
		return s.nack(log, u, err)
	}
	if cfg.Cluster != s.opts.Hello.Cluster {
		return s.nack(log, u, fmt.Errorf("config is for cluster %q, this is %q", cfg.Cluster, s.opts.Hello.Cluster))
	}
	start := time.Now()
	if err := s.opts.Applier.Apply(cfg); err != nil {
		return s.nack(log, u, fmt.Errorf("apply: %w", err))
	}
	s.setApplied(u.Revision, u.Hash)
	log.Info("applied config", "took", time.Since(start), "ports", len(cfg.Ports), "backends", len(cfg.Backends))
	if s.opts.CacheDir != "" {
		// The config is live either way; a failed cache write only costs a cold start without the hub, so it is
		// logged rather than NACKed.
		if err := WriteCache(s.opts.CacheDir, CacheEntry{Cluster: cfg.Cluster, Revision: u.Revision, Hash: u.Hash, Config: u.ConfigJson}); err != nil {
			log.Error("cannot write config cache", "err", err)
		}
	}
	return ack(u)
}

func ack(u *fedgatepb.SpokeConfigUpdate) *fedgatepb.SubscribeMessage {
	return &fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Ack{Ack: &fedgatepb.Ack{Revision: u.Revision, Hash: u.Hash}}}
}

func (s *Subscriber) nack(log *slog.Logger, u *fedgatepb.SpokeConfigUpdate, err error) *fedgatepb.SubscribeMessage {
	log.Warn("rejected config, previous one keeps serving", "err", err)
	return &fedgatepb.SubscribeMessage{Msg: &fedgatepb.SubscribeMessage_Nack{Nack: &fedgatepb.Nack{Revision: u.Revision, Hash: u.Hash, Error: err.Error()}}}
}

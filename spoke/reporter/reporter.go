// Package reporter streams a spoke's local objects to the hub over Sync.Report: a Hello, a full snapshot, then deltas
// against what it last sent. It reconnects for as long as it runs and resends a full snapshot on every new stream,
// because the hub may have lost or compacted anything sent before. It only reads snapshots; it never writes to the
// cluster and never interprets the hub's routing graph.
package reporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/spoke/internal/retry"
	"github.com/fedgate/fedgate/spoke/source"
)

// healthyAfter is how long a stream must have lived for the next reconnect to start again from the shortest backoff.
// A hub that accepts and immediately drops the stream (rejecting the cluster, say) keeps the backoff growing.
const healthyAfter = 3 * time.Second

// Options configure a Reporter.
type Options struct {
	// Client is the hub's Sync service. Required.
	Client fedgatepb.SyncClient
	// Hello opens every stream: cluster, agent version, east-west address, labels. Required, with Cluster set.
	Hello *fedgatepb.Hello
	// MinBackoff and MaxBackoff bound the reconnect delay. Defaults retry.DefaultBase and retry.DefaultMax.
	MinBackoff, MaxBackoff time.Duration
	// Log, default slog.Default().
	Log *slog.Logger
}

// Reporter keeps the hub's copy of this cluster's objects current.
type Reporter struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	latest *source.Snapshot
	// changed has room for one token: Update never blocks, and several updates between two sends coalesce into one
	// delta from the last sent snapshot to the newest.
	changed chan struct{}

	seq int64 // owned by Run's goroutine
}

// New returns a Reporter; nothing is sent until Run.
func New(opts Options) (*Reporter, error) {
	if opts.Client == nil {
		return nil, errors.New("reporter: Client must be set")
	}
	if opts.Hello == nil || opts.Hello.Cluster == "" {
		return nil, errors.New("reporter: Hello.Cluster must be set")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Reporter{opts: opts, log: log.With("component", "reporter"), changed: make(chan struct{}, 1)}, nil
}

// Update records the newest snapshot. It is the emit function for a source.Source; it never blocks.
func (r *Reporter) Update(s source.Snapshot) {
	r.mu.Lock()
	r.latest = &s
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *Reporter) current() *source.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest
}

// Run reports until ctx ends, reconnecting with exponential backoff. It returns nil when ctx ends, or when the hub
// refuses the cluster's certificate (retry.Refused; logged as an error): no reconnect could succeed — a
// *retry.RemovedError when the refusal says the cluster was removed.
func (r *Reporter) Run(ctx context.Context) error {
	b := retry.Backoff{Base: r.opts.MinBackoff, Max: r.opts.MaxBackoff}
	for {
		start := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if removed := retry.Removed(err); removed != nil {
			r.log.Error("this cluster was removed at the hub; report stream stopping", "err", err)
			return removed
		}
		if retry.Refused(err) {
			r.log.Error("the hub refuses this cluster's certificate (the cluster was re-joined at the hub); "+
				"report stream not reconnecting: restart the spoke with new credentials", "err", err)
			return nil
		}
		if time.Since(start) >= healthyAfter {
			b.Reset()
		}
		delay := b.Next()
		r.log.Warn("report stream ended, reconnecting", "err", err, "in", delay)
		if !retry.Wait(ctx, delay) {
			return nil
		}
	}
}

// session runs one Report stream: Hello, full snapshot, then deltas until the stream or ctx ends.
func (r *Reporter) session(ctx context.Context) error {
	// Wait for the source's first snapshot before connecting, so the hub never sees this cluster report nothing
	// merely because the source had not started yet.
	for r.current() == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.changed:
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.opts.Client.Report(sctx)
	if err != nil {
		return fmt.Errorf("open report stream: %w", err)
	}
	// The hub answers only when it ends the stream, so a pending receive is how a broken or closed stream is noticed
	// while there is nothing to send.
	ended := make(chan error, 1)
	go func() {
		var ack fedgatepb.ReportAck
		err := stream.RecvMsg(&ack)
		if err == nil {
			err = fmt.Errorf("hub closed the report stream (acked seq %d)", ack.Seq)
		}
		ended <- err
	}()
	fail := func(what string, err error) error {
		cancel()
		// The receive carries the stream's real status; Send only says io.EOF.
		if rerr := <-ended; rerr != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", what, rerr)
		}
		return fmt.Errorf("%s: %w", what, err)
	}

	if err := stream.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Hello{Hello: r.opts.Hello}, Seq: r.nextSeq()}); err != nil {
		return fail("send hello", err)
	}
	sent := r.current()
	// Drain a pending change token: the snapshot about to go out already includes it.
	select {
	case <-r.changed:
		sent = r.current()
	default:
	}
	if err := stream.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Snapshot{Snapshot: &fedgatepb.ReportSnapshot{Objects: sent.Objects}}, Seq: r.nextSeq()}); err != nil {
		return fail("send snapshot", err)
	}
	r.log.Info("reported snapshot", "objects", len(sent.Objects), "seq", r.seq)

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ended:
			return err
		case <-r.changed:
		}
		next := r.current()
		d := Diff(sent.Objects, next.Objects)
		if len(d.Upserts) == 0 && len(d.Deletes) == 0 {
			sent = next
			continue
		}
		if err := stream.Send(&fedgatepb.ReportMessage{Msg: &fedgatepb.ReportMessage_Delta{Delta: d}, Seq: r.nextSeq()}); err != nil {
			return fail("send delta", err)
		}
		r.log.Debug("reported delta", "upserts", len(d.Upserts), "deletes", len(d.Deletes), "seq", r.seq)
		sent = next
	}
}

func (r *Reporter) nextSeq() int64 {
	r.seq++
	return r.seq
}

// Diff returns the delta that turns the object set from into to: upserts for objects that are new or whose content
// changed (in to's order), deletes for objects gone (in from's order).
func Diff(from, to []*fedgatepb.Object) *fedgatepb.ReportDelta {
	old := make(map[string]*fedgatepb.Object, len(from))
	for _, o := range from {
		old[source.ObjectID(o)] = o
	}
	d := &fedgatepb.ReportDelta{}
	kept := make(map[string]bool, len(to))
	for _, o := range to {
		id := source.ObjectID(o)
		kept[id] = true
		if prev, ok := old[id]; !ok || !source.SameObject(prev, o) {
			d.Upserts = append(d.Upserts, o)
		}
	}
	for _, o := range from {
		if !kept[source.ObjectID(o)] {
			d.Deletes = append(d.Deletes, &fedgatepb.ObjectRef{ApiVersion: o.ApiVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
		}
	}
	return d
}

package kstatus

import (
	"context"
	"time"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Defaults for the Run loop.
const (
	DefaultResync     = 5 * time.Minute
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// Offer hands the writer a config to write back from Run; only the latest offered config is kept, so a spoke that
// receives revisions faster than its API server takes writes skips the intermediate ones. It never blocks: call it
// from the config path right after the proxy accepted the config (a failed status write must never NACK a config).
// sc must not be modified afterwards.
func (w *Writer) Offer(sc *spokeconfig.SpokeConfig) {
	if sc == nil {
		return
	}
	w.mu.Lock()
	w.pending = sc
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes offered configs until ctx ends. A failed Apply is retried with exponential backoff (unless a newer
// config arrives first, which is applied instead); the last applied config is re-applied every Resync so status that
// someone else overwrote or deleted comes back (unchanged objects cost a read each, no write).
func (w *Writer) Run(ctx context.Context) error {
	var (
		current *spokeconfig.SpokeConfig
		backoff time.Duration
		timer   = time.NewTimer(w.resync)
	)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
			w.mu.Lock()
			current, w.pending = w.pending, nil
			w.mu.Unlock()
			if current == nil {
				continue
			}
			backoff = 0
		case <-timer.C:
			if current == nil {
				timer.Reset(w.resync)
				continue
			}
		}
		err := w.Apply(ctx, current)
		if w.onApplied != nil {
			w.onApplied(current.Revision, err)
		}
		next := w.resync
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, w.minBackoff), w.maxBackoff)
			next = backoff
			w.log.Warn("status write-back failed, retrying", "revision", current.Revision, "retryIn", next, "err", err)
		} else {
			backoff = 0
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

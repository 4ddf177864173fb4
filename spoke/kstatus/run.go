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
// Offer works while no Run is going (a replica that does not lead): the next Run starts from the latest offer.
// sc must not be modified afterwards.
func (w *Writer) Offer(sc *spokeconfig.SpokeConfig) {
	if sc == nil {
		return
	}
	w.mu.Lock()
	w.latest = sc
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes offered configs until ctx ends. It starts with the latest config offered so far, even one an earlier
// Run already wrote (a replica that leads again writes what it serves now, whatever happened meanwhile), then writes
// each new offer. A failed Apply is retried with exponential backoff (unless a newer config arrives first, which is
// applied instead); the last applied config is re-applied every Resync so status that someone else overwrote or
// deleted comes back (unchanged objects cost a read each, no write). Runs may follow each other but must not overlap.
func (w *Writer) Run(ctx context.Context) error {
	// The token announces what latest already holds; reading latest after draining it loses no offer.
	select {
	case <-w.wake:
	default:
	}
	w.mu.Lock()
	current := w.latest
	w.mu.Unlock()
	var backoff time.Duration
	first := w.resync
	if current != nil {
		first = 0
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
			w.mu.Lock()
			current = w.latest
			w.mu.Unlock()
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

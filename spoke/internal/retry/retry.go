// Package retry paces the spoke's reconnect loops to the hub: exponential backoff with jitter, so that a hub restart
// does not get every spoke of a fleet reconnecting in the same instant; and it tells the one refusal no reconnect can
// cure.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/identity"
)

// RemovedError ends a stream loop when the hub says the cluster was removed (identity.ReasonClusterRemoved): the
// agent cleans up what fedgate wrote in the cluster and exits.
type RemovedError struct {
	Cluster string
	Err     error // the hub's refusal
}

func (e *RemovedError) Error() string {
	return fmt.Sprintf("cluster %q was removed at the hub: %v", e.Cluster, e.Err)
}

func (e *RemovedError) Unwrap() error { return e.Err }

// Removed returns a *RemovedError when err is the hub's refusal of a removed cluster's certificate, else nil.
func Removed(err error) *RemovedError {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == identity.ErrorDomain && ei.GetReason() == identity.ReasonClusterRemoved {
			return &RemovedError{Cluster: ei.GetMetadata()["cluster"], Err: err}
		}
	}
	return nil
}

// Refused reports whether the hub refused this spoke's certificate (gRPC Unauthenticated): it was revoked because
// the cluster was removed or re-joined, or the hub does not accept it at all. Reconnecting with the same certificate
// cannot succeed, so the stream loops stop and say so instead of retrying forever.
func Refused(err error) bool { return status.Code(err) == codes.Unauthenticated }

// Defaults used by the spoke's streams.
const (
	DefaultBase = 100 * time.Millisecond
	DefaultMax  = 10 * time.Second
)

// Backoff yields growing delays: attempt n waits a random duration in [d/2, d] where d = min(Max, Base·2ⁿ). The
// half-fixed floor keeps the growth visible while the random half spreads a fleet out. Not safe for concurrent use.
type Backoff struct {
	Base, Max time.Duration
	attempt   int
}

// Next returns the delay before the next attempt and advances.
func (b *Backoff) Next() time.Duration {
	base, maxD := b.Base, b.Max
	if base <= 0 {
		base = DefaultBase
	}
	if maxD <= 0 {
		maxD = DefaultMax
	}
	d := base
	for i := 0; i < b.attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	b.attempt++
	half := d / 2
	return half + rand.N(d-half+1)
}

// Reset starts the sequence over; call it once a connection has proved healthy.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits for the next delay or until ctx ends, reporting whether the caller should try again.
func (b *Backoff) Sleep(ctx context.Context) bool { return Wait(ctx, b.Next()) }

// Wait waits d or until ctx ends, reporting whether the caller should go on (false: ctx ended).
func Wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

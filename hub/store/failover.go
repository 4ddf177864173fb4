package store

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// failoverWindow bounds how long a request is retried while etcd fails over: longer than an election plus etcd's
// request timeout (7 s by default), so one lost member or leader never fails a hubctl apply.
const failoverWindow = 15 * time.Second

// transient reports whether err is etcd failing over — electing a leader, a member gone — rather than refusing the
// request. The client retries such errors itself only for reads; a transaction that failed this way may or may not
// have committed.
func transient(err error) bool {
	for _, e := range []error{rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex} {
		if errors.Is(err, e) {
			return true
		}
	}
	return status.Code(err) == codes.Unavailable
}

// failover paces the retries of one request through an etcd failover.
type failover struct {
	deadline time.Time
	delay    time.Duration
}

// retry reports whether a request that failed with err should be tried again, after waiting for it: only a transient
// error within failoverWindow of the first, while ctx lasts.
func (f *failover) retry(ctx context.Context, err error) bool {
	if !transient(err) || ctx.Err() != nil {
		return false
	}
	if f.deadline.IsZero() {
		f.deadline, f.delay = time.Now().Add(failoverWindow), 50*time.Millisecond
	}
	if time.Now().Add(f.delay).After(f.deadline) {
		return false
	}
	t := time.NewTimer(f.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	f.delay = min(2*f.delay, time.Second)
	return true
}

package health

import "time"

// Outlier is passive outlier detection: an endpoint that fails Consecutive times in a row (a 5xx response or a
// connection error) is ejected for BaseEjection, doubled for each further ejection without a success in between and
// capped at MaxEjection. When it comes back the next request decides: a success clears its record, a failure streak
// ejects it for longer.
//
// At most MaxEjectionPercent of a backend's endpoints are ejected at once, unless every one of them is failing: a
// backend with one bad endpoint out of two loses that one, a backend whose endpoints all fail is ejected entirely
// (503 at once instead of a 502 from each), and a partial outage never strips a backend down to nothing on the
// strength of a few errors.
type Outlier struct {
	Consecutive        int32
	BaseEjection       time.Duration
	MaxEjection        time.Duration
	MaxEjectionPercent int
}

// Defaults of passive outlier detection (Envoy's consecutive-5xx detector, with a shorter base ejection because a
// spoke sees fewer requests per endpoint than a mesh sidecar fleet).
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjection        = 5 * time.Second
	DefaultMaxEjection         = 5 * time.Minute
	DefaultMaxEjectionPercent  = 50
)

// DefaultOutlier returns the defaults above.
func DefaultOutlier() Outlier {
	return Outlier{
		Consecutive:        DefaultConsecutiveFailures,
		BaseEjection:       DefaultBaseEjection,
		MaxEjection:        DefaultMaxEjection,
		MaxEjectionPercent: DefaultMaxEjectionPercent,
	}
}

// Success records a good outcome: the failure streak ends, and so does the growth of the next ejection.
func (o *Outlier) Success(e *Endpoint) {
	if e.consecutive.Load() != 0 {
		e.consecutive.Store(0)
	}
	if e.ejections.Load() != 0 {
		e.ejections.Store(0)
	}
}

// Failure records a bad outcome at now. peers are the endpoints of the same backend (including e), used for the
// ejection cap. It reports whether e was ejected by this failure.
func (o *Outlier) Failure(e *Endpoint, peers []*Endpoint, now time.Time) bool {
	e.Failures.Add(1)
	n := e.consecutive.Add(1)
	if n < o.Consecutive {
		return false
	}
	nowN := now.UnixNano()
	if e.Ejected(nowN) {
		return false
	}
	if len(peers) > 1 {
		ejected, failing := 0, 0
		for _, p := range peers {
			if p == e {
				continue
			}
			if p.Ejected(nowN) {
				ejected++
				failing++
			} else if p.consecutive.Load() >= o.Consecutive || !p.Available(nowN) {
				failing++
			}
		}
		allFailing := failing == len(peers)-1
		if (ejected+1)*100 > o.MaxEjectionPercent*len(peers) && !allFailing {
			return false
		}
	}
	k := e.ejections.Add(1)
	d := o.BaseEjection
	for i := int32(1); i < k && d < o.MaxEjection; i++ {
		d *= 2
	}
	d = min(d, o.MaxEjection)
	e.ejectedUntil.Store(nowN + int64(d))
	// The streak restarts: after the ejection the endpoint gets a fresh count of chances.
	e.consecutive.Store(0)
	return true
}

package compiler

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Annotations on a Service that set the active health check of its endpoints (README, "Health checks"). Each
// cluster's Service sets the check of that cluster's endpoints: a spoke probes only its own.
const (
	// AnnotationHealthCheck "off" (or "false") turns the checks off; "on" (or "true") changes nothing.
	AnnotationHealthCheck = "fedgate.io/health-check"
	// AnnotationHealthCheckType is http, tcp or grpc (spokeconfig.HealthCheck.Type).
	AnnotationHealthCheckType = "fedgate.io/health-check-type"
	// AnnotationHealthCheckPath is the path an http check GETs.
	AnnotationHealthCheckPath = "fedgate.io/health-check-path"
	// AnnotationHealthCheckInterval is a Go duration, 100ms to 1h; "0" turns the checks off. A Service that sets one
	// is probed even on a spoke whose default checks are off.
	AnnotationHealthCheckInterval = "fedgate.io/health-check-interval"
	// AnnotationHealthCheckTimeout is a Go duration, 10ms to 1m (the interval bounds it too).
	AnnotationHealthCheckTimeout = "fedgate.io/health-check-timeout"
	// AnnotationHealthCheckHealthyThreshold and AnnotationHealthCheckUnhealthyThreshold are probe counts, 1 to 100.
	AnnotationHealthCheckHealthyThreshold   = "fedgate.io/health-check-healthy-threshold"
	AnnotationHealthCheckUnhealthyThreshold = "fedgate.io/health-check-unhealthy-threshold"
	// AnnotationHealthCheckGRPCService is the service a grpc check asks about (default: the server as a whole).
	AnnotationHealthCheckGRPCService = "fedgate.io/health-check-grpc-service"
)

// healthCheckAnnotations are the annotations healthCheckOf reads.
var healthCheckAnnotations = []string{
	AnnotationHealthCheck, AnnotationHealthCheckType, AnnotationHealthCheckPath, AnnotationHealthCheckInterval,
	AnnotationHealthCheckTimeout, AnnotationHealthCheckHealthyThreshold, AnnotationHealthCheckUnhealthyThreshold,
	AnnotationHealthCheckGRPCService,
}

// ClusterHealthCheck is the health check a cluster's Service sets for that cluster's endpoints of a backend.
type ClusterHealthCheck struct {
	Cluster     string                   `json:"cluster"`
	HealthCheck *spokeconfig.HealthCheck `json:"healthCheck"`
}

// healthCheckOf reads a Service's health-check annotations; nil when it has none. A value out of range or malformed
// is left out — the spoke's default stands for that field — and said in Problems, which the spoke logs: refusing the
// Service over it would take its endpoints out of routing.
func healthCheckOf(svc *corev1.Service) *spokeconfig.HealthCheck {
	ann := svc.Annotations
	var hc spokeconfig.HealthCheck
	found := false
	problem := func(key, v, why string) {
		hc.Problems = append(hc.Problems, fmt.Sprintf("%s: %q: %s", key, v, why))
	}
	duration := func(key, v string, lo, hi time.Duration) (ms int64, ok bool) {
		d, err := time.ParseDuration(v)
		if err != nil || d < lo || d > hi {
			problem(key, v, fmt.Sprintf("want a duration from %v to %v", lo, hi))
			return 0, false
		}
		return d.Milliseconds(), true
	}
	threshold := func(key, v string) int {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			problem(key, v, "want a whole number from 1 to 100")
			return 0
		}
		return n
	}
	for _, key := range healthCheckAnnotations {
		v, ok := ann[key]
		if !ok {
			continue
		}
		found = true
		switch key {
		case AnnotationHealthCheck:
			switch strings.ToLower(v) {
			case "off", "false":
				hc.Disabled = true
			case "on", "true":
			default:
				problem(key, v, `want "off" or "on"`)
			}
		case AnnotationHealthCheckType:
			switch v {
			case spokeconfig.HealthCheckHTTP, spokeconfig.HealthCheckTCP, spokeconfig.HealthCheckGRPC:
				hc.Type = v
			default:
				problem(key, v, "want http, tcp or grpc")
			}
		case AnnotationHealthCheckPath:
			if !strings.HasPrefix(v, "/") || len(v) > 1024 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				problem(key, v, "want a path starting with /, without spaces or control characters, at most 1024 bytes")
			} else {
				hc.Path = v
			}
		case AnnotationHealthCheckInterval:
			if d, err := time.ParseDuration(v); err == nil && d == 0 {
				hc.Disabled = true
			} else if ms, ok := duration(key, v, 100*time.Millisecond, time.Hour); ok {
				hc.IntervalMs = ms
			}
		case AnnotationHealthCheckTimeout:
			if ms, ok := duration(key, v, 10*time.Millisecond, time.Minute); ok {
				hc.TimeoutMs = ms
			}
		case AnnotationHealthCheckHealthyThreshold:
			hc.HealthyThreshold = threshold(key, v)
		case AnnotationHealthCheckUnhealthyThreshold:
			hc.UnhealthyThreshold = threshold(key, v)
		case AnnotationHealthCheckGRPCService:
			hc.GRPCService = v
		}
	}
	for key, v := range ann {
		if strings.HasPrefix(key, "fedgate.io/health-check") && !isHealthCheckAnnotation(key) {
			found = true
			hc.Problems = append(hc.Problems, fmt.Sprintf("%s: %q: unknown annotation", key, v))
		}
	}
	if !found {
		return nil
	}
	slices.Sort(hc.Problems) // unknown annotations came from a map
	return &hc
}

func isHealthCheckAnnotation(key string) bool { return slices.Contains(healthCheckAnnotations, key) }

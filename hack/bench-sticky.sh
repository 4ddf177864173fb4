#!/usr/bin/env bash
# Sticky vs plain proxy throughput in one run (BenchmarkStickyVsPlain in spoke/proxy): each iteration sends one plain
# and one cookie-sticky request through the same proxy, and the benchmark reports the throughput ratio sticky/plain.
# Also runs BenchmarkRouteMatch, which must stay at 0 allocs/op.
# Env: BENCHTIME (default 3s), COUNT (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count="${COUNT:-3}" -run '^$' -bench 'StickyVsPlain|RouteMatch' -benchmem -benchtime "${BENCHTIME:-3s}" ./spoke/proxy

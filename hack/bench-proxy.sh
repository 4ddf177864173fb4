#!/usr/bin/env bash
# Benchmarks the spoke's embedded proxy against nginx and haproxy on loopback (make bench-proxy).
# Builds bin/spoke, runs it standalone from test/bench/proxy-static.json (127.0.0.1:18089 → 127.0.0.1:18080) and
# hands it to the shared side-by-side script, whose summary line carries project/nginx_rps.
# Env: DUR, ROUNDS, CONNS (passed through; DUR=5 ROUNDS=2 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-/work/shared/bench/peers.sh}
missing=()
for t in nginx haproxy wrk; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench-proxy: installing ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
go build -o bin/spoke ./cmd/spoke
PROJECT_PROXY_CMD="$PWD/bin/spoke --static-config $PWD/test/bench/proxy-static.json" exec bash "$PEERS"

#!/usr/bin/env bash
# Benchmarks the spoke's embedded proxy against nginx, haproxy and caddy on loopback (make bench-proxy).
# Everything it needs comes from this repository: hack/install-peers.sh installs nginx, haproxy, wrk and h2load (apt),
# caddy is built with `go install` into .cache/peers/ (ignored by git; skipped with a note when that fails), bin/spoke
# is built from this tree and run standalone from test/bench/proxy-static.json (127.0.0.1:18089 → 127.0.0.1:18080),
# and hack/bench-peers.sh runs every target side by side (HTTP/1.1 with wrk, h2c with h2load) and prints the rows and
# the summary line: summary ... project/nginx_rps=R project/nginx_p99=P [project/caddy_rps=C] ... project/nginx_h2c_rps=R
# Env: DUR (seconds per row, default 8), ROUNDS (default 3), CONNS (default 32), H2C=0 (skip h2c rows), H2C_CLIENTS,
# H2C_STREAMS (see hack/bench-peers.sh); CADDY (a caddy binary to use instead), CADDY_VERSION, NO_CADDY=1 (skip caddy).
# DUR=3 ROUNDS=1 for a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

hack/install-peers.sh

# caddy: the newest release that builds with this repository's Go toolchain (never a toolchain switch).
CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
if [ -n "${NO_CADDY:-}" ]; then
  CADDY=
elif [ -z "${CADDY:-}" ]; then
  dir=.cache/peers/caddy-$CADDY_VERSION
  CADDY=$dir/caddy
  if [ ! -x "$CADDY" ]; then
    echo "bench-proxy: building caddy $CADDY_VERSION into $dir (once; a few minutes)"
    mkdir -p "$dir"
    if ! (cd "$dir" && GOBIN=$PWD GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
      "$GO" install "github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION") >"$dir/install.log" 2>&1; then
      echo "bench-proxy: caddy $CADDY_VERSION did not build; continuing without caddy (see $dir/install.log):" >&2
      tail -5 "$dir/install.log" >&2
      CADDY=
    fi
  fi
fi
if [ -n "$CADDY" ] && [ ! -x "$CADDY" ]; then
  echo "bench-proxy: CADDY=$CADDY is not executable; continuing without caddy" >&2
  CADDY=
fi
[ -z "$CADDY" ] || CADDY=$(cd "$(dirname "$CADDY")" && pwd)/$(basename "$CADDY")

"$GO" build -o bin/spoke ./cmd/spoke
CADDY=$CADDY exec hack/bench-peers.sh "$PWD/bin/spoke" --static-config "$PWD/test/bench/proxy-static.json"

#!/usr/bin/env bash
# Regenerates apis/fedgatepb from apis/proto. With --verify, generates into a scratch copy and fails when the committed
# code differs (stale generated code).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/bin:$PATH"
out=.
if [ "${1:-}" = "--verify" ]; then
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
fi
protoc -I apis/proto \
  --go_out="$out" --go_opt=module=github.com/fedgate/fedgate \
  --go-grpc_out="$out" --go-grpc_opt=module=github.com/fedgate/fedgate \
  apis/proto/fedgate/v1/*.proto
if [ "${1:-}" = "--verify" ]; then
  if ! diff -ru apis/fedgatepb "$out/apis/fedgatepb"; then
    echo "generated code in apis/fedgatepb is stale: run 'make generate'" >&2
    exit 1
  fi
  echo "generated code is up to date"
fi

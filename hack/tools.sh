#!/usr/bin/env bash
# Installs the code generators into bin/: protoc from Debian (protobuf-compiler), the Go plugins from the module proxy
# at pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
if ! command -v protoc >/dev/null; then
  echo "installing protobuf-compiler (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; } >/dev/null
fi
[ -x bin/protoc-gen-go ] || GOBIN="$PWD/bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ -x bin/protoc-gen-go-grpc ] || GOBIN="$PWD/bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

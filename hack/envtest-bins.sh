#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into bin/envtest/ for controller-runtime's envtest (nothing
# else can be downloaded here), kubectl of the same release for the tests that run the README's install commands
# (test/e2e/install_test.go), and kube-controller-manager for the tests that need its garbage collector and namespace
# controller (test/envtest Options.Collectors). A throwaway module under .cache/ requires k8s.io/kubernetes at the release matching our
# k8s.io/api, with every k8s.io/* staging module replaced by its v0.x twin (kubernetes' own go.mod points them at
# ./staging, which a module download does not have). Idempotent: builds only the binaries that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$PWD/bin/envtest
if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/etcd" ] && [ -x "$OUT/kubectl" ] && [ -x "$OUT/kube-controller-manager" ]; then exit 0; fi
mkdir -p "$OUT"
api=$(go list -m -f '{{.Version}}' k8s.io/api)              # v0.37.x
kube=v1${api#v0}                                             # v1.37.x
etcd=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
W=$PWD/.cache/kube-build
mkdir -p "$W"
modfile=$(go mod download -json "k8s.io/kubernetes@$kube" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
  echo "module fedgate.local/kube-build"
  echo
  grep '^go ' "$modfile"
  echo
  echo "require k8s.io/kubernetes $kube"
  echo
  echo "replace ("
  sed -n '/^replace (/,/^)/p' "$modfile" | awk '$2=="=>"{print "\t" $1 " => " $1 " '"$api"'"}'
  echo ")"
} > "$W/go.mod"
cat > "$W/tools.go" <<'G'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
G
for bin in kube-apiserver kubectl kube-controller-manager; do
  if [ ! -x "$OUT/$bin" ]; then
    echo "envtest: building $bin $kube (a few minutes the first time)"
    (cd "$W" && { GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$kube" >/dev/null; } &&
      GOFLAGS=-mod=mod go build -o "$OUT/$bin" "k8s.io/kubernetes/cmd/$bin")
  fi
done
if [ -x "$OUT/etcd" ]; then ls -l "$OUT"; exit 0; fi
# etcd's server module has replace directives (../api, ../client, ...), which `go install module@version` refuses:
# build it from a second throwaway module that requires it at the same version as its sibling modules.
echo "envtest: building etcd $etcd"
E=$W/../etcd-build
mkdir -p "$E"
cat > "$E/go.mod" <<M
module fedgate.local/etcd-build

$(grep '^go ' "$modfile")

require go.etcd.io/etcd/server/v3 $etcd

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $etcd
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $etcd
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $etcd
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $etcd
)
M
cat > "$E/tools.go" <<'G'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
G
cd "$E"
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$etcd" >/dev/null
GOFLAGS=-mod=mod go build -o "$OUT/etcd" go.etcd.io/etcd/server/v3
ls -l "$OUT"

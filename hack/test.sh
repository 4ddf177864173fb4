#!/usr/bin/env bash
# The project's whole test suite, as CI runs it: generated code fresh, gofmt and vet clean, every test with the race
# detector.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
hack/tools.sh
hack/generate.sh --verify
# kube-apiserver and etcd for envtest, built from the Go module proxy (minutes on a fresh machine; cached in bin/).
hack/envtest-bins.sh
# nginx (the differential tests' reference), haproxy, wrk and h2load, from Debian's packages.
hack/install-peers.sh
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then echo "gofmt -l: not formatted:"; echo "$unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 30m ./... 2>&1 | tee /tmp/fedgate-test.log
# The network-facing parsers and the hub's rewriting of what hubctl users and clusters send, fuzzed for a bounded time on top of their seed corpora (which go test ran above).
echo "== fuzz"
for target in FuzzServeConn:./spoke/proxy/ FuzzReadRequest:./spoke/proxy/internal/h1/ FuzzUpgradeGatewayV11:./apis/resources/; do
  go test -run '^$' -fuzz "^${target%%:*}\$" -fuzztime "${FUZZTIME:-30s}" "${target#*:}"
done

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
# The network-facing parsers and the hub's rewriting of what hubctl users and clusters send, fuzzed for a bounded
# time on top of their seed corpora (which go test ran above).
echo "== fuzz"
# Go's fuzzing coordinator can fail a run whose -fuzztime expires while a worker is mid-input, with a bare "context
# deadline exceeded" and no failing input (golang/go#75804); such a run is retried once. A run that wrote a failing
# input, or failed any other way, fails the test.
fuzz() { # target package
  local out
  out=$(go test -run '^$' -fuzz "^$1\$" -fuzztime "${FUZZTIME:-30s}" "$2" 2>&1) && { tail -2 <<<"$out"; return 0; }
  echo "$out" | tail -20
  if grep -q 'context deadline exceeded' <<<"$out" && ! grep -qE 'Failing input written|panic:' <<<"$out"; then
    echo "fuzz $1: the coordinator's deadline race (no failing input); running it again"
    go test -run '^$' -fuzz "^$1\$" -fuzztime "${FUZZTIME:-30s}" "$2"
    return
  fi
  return 1
}
for target in FuzzServeConn:./spoke/proxy/ FuzzReadRequest:./spoke/proxy/internal/h1/ FuzzUpgradeGatewayV11:./apis/resources/; do
  fuzz "${target%%:*}" "${target#*:}"
done

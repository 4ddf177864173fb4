#!/usr/bin/env bash
# Prints the version stamped into the binaries and images: `git describe --tags --always --dirty` (a tag, or the
# commit, "-dirty" when the tree has changes), or "dev" outside a git checkout.
# With --ldflags, prints the -X flags that stamp it and the revision into internal/version instead.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
if [[ "${1:-}" == --ldflags ]]; then
  revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || true)}
  pkg=github.com/fedgate/fedgate/internal/version
  echo "-X $pkg.version=$version -X $pkg.revision=$revision"
else
  echo "$version"
fi

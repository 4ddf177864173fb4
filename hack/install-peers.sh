#!/usr/bin/env bash
# Installs the reference peers the differential tests and benchmarks run side by side with fedgate, from Debian's
# packages: nginx, haproxy, wrk and h2load (nghttp2-client). Does nothing when they are already there.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # nginx and haproxy live in /usr/sbin
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-peers: installing ${missing[*]} (apt)"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
{ $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; } >/dev/null

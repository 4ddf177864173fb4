#!/usr/bin/env bash
# make demo: a hub with embedded etcd and its own CA, spokes east and west joined with bootstrap tokens (mTLS to the hub
# and between spokes), one echo backend in each, the canary route applied once at the hub (color 90 / color2 10),
# 1,000 requests through east's gateway with the split shown; then a step to 50/50.
# Everything runs on loopback: the hub on 127.0.0.1, east's gateway on 127.0.0.2, west's on 127.0.0.3.
# State (etcd data, CA, admin credential, spoke credentials and caches, logs) goes to .cache/demo; Ctrl-C or the end
# stops everything. hubctl uses the demo's admin credential ($DEMO/admin-config), never ~/.fedgate/config.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DEMO=$PWD/.cache/demo
HUB=127.0.0.1:${HUB_PORT:-19443}
GW_PORT=${GW_PORT:-18888}
rm -rf "$DEMO" && mkdir -p "$DEMO"/{east,west,logs}
go build -ldflags "$(hack/version.sh --ldflags)" -o "$BIN/" ./cmd/hub ./cmd/spoke ./cmd/hubctl ./test/cmd/echo ./test/cmd/traffic

pids=()
cleanup() {
  echo; echo "== stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "logs were in $DEMO/logs"
}
trap cleanup EXIT INT TERM

say() { printf '\n== %s\n' "$*"; }
render() { # template, then VAR=value pairs
  local t; t=$(cat "$1"); shift
  for kv in "$@"; do t=${t//\$\{${kv%%=*}\}/${kv#*=}}; done
  printf '%s\n' "$t"
}

export FEDGATE_CONFIG=$DEMO/admin-config
say "hub (embedded etcd and CA in $DEMO/hub-data) on $HUB; admin credential written to $FEDGATE_CONFIG"
"$BIN/hub" --listen "$HUB" --advertise-address "$HUB" --data-dir "$DEMO/hub-data" --admin-config "$FEDGATE_CONFIG" \
  >"$DEMO/logs/hub.log" 2>&1 & pids+=($!)

say "echo backends: color (cluster east) on 127.0.0.1:18181, color2 (cluster west) on 127.0.0.1:18182"
"$BIN/echo" --listen 127.0.0.1:18181 --cluster east --name color >"$DEMO/logs/color.log" 2>&1 & pids+=($!)
"$BIN/echo" --listen 127.0.0.1:18182 --cluster west --name color2 >"$DEMO/logs/color2.log" 2>&1 & pids+=($!)

render hack/demo/cluster.yaml.tmpl GW_PORT=$GW_PORT SVC=color BACKEND_PORT=18181 > "$DEMO/east/cluster.yaml"
render hack/demo/cluster.yaml.tmpl GW_PORT=$GW_PORT SVC=color2 BACKEND_PORT=18182 > "$DEMO/west/cluster.yaml"

for i in $(seq 100); do "$BIN/hubctl" get clusters >/dev/null 2>&1 && break; sleep 0.1; done

for c in east:127.0.0.2 west:127.0.0.3; do
  name=${c%%:*} host=${c#*:}
  say "join $name: hubctl token create --cluster-name $name, then the join command it prints"
  join=$("$BIN/hubctl" token create --cluster-name "$name" --ttl 1h --description "make demo" | tee /dev/stderr | awk '/^ *hubctl join / && !n++')  # the first: credentials into a directory
  # The printed command, with the demo's binary, east-west address and credentials directory added.
  echo "+ ${join/--token [a-z0-9]*.[a-z0-9]*/--token <id>.<secret>} --east-west-address $host:15443 --labels demo=true --out $DEMO/$name-credentials"
  read -r -a words <<<"$join"
  "$BIN/hubctl" "${words[@]:1}" --east-west-address "$host:15443" --labels demo=true --out "$DEMO/$name-credentials"
done

say "spokes: east (gateway 127.0.0.2:$GW_PORT) and west (gateway 127.0.0.3:$GW_PORT), each with its credentials"
for c in east:127.0.0.2 west:127.0.0.3; do
  name=${c%%:*} host=${c#*:}
  "$BIN/spoke" --hub "$HUB" --credentials-dir "$DEMO/$name-credentials" --source-dir "$DEMO/$name" --listen-host "$host" \
    --east-west-listen "$host:15443" --east-west-address "$host:15443" --gossip-listen "$host:17946" --cache-dir "$DEMO/$name-cache" \
    >"$DEMO/logs/spoke-$name.log" 2>&1 & pids+=($!)
done

say "hubctl apply: HTTPRoute default/canary, color 90 / color2 10, applied once at the hub"
render hack/demo/canary.yaml.tmpl W_COLOR=90 W_COLOR2=10 | tee "$DEMO/canary.yaml" | "$BIN/hubctl" apply -f -

wait_split() { # wait until east's gateway answers from both clusters
  for i in $(seq 200); do
    out=$("$BIN/traffic" --url "http://127.0.0.2:$GW_PORT/" -n 40 2>/dev/null || true)
    if grep -q "east " <<<"$out" && grep -q "west " <<<"$out" && grep -q "codes map\[200:40\]" <<<"$out"; then return 0; fi
    sleep 0.1
  done
  echo "the canary was not served from both clusters in time; see $DEMO/logs" >&2; return 1
}
wait_split

say "hubctl get clusters / routes"
"$BIN/hubctl" get clusters
"$BIN/hubctl" get routes

say "1,000 requests through east's gateway (90/10)"
"$BIN/traffic" --url "http://127.0.0.2:$GW_PORT/" -n 1000

say "canary step: hubctl apply with color 50 / color2 50"
render hack/demo/canary.yaml.tmpl W_COLOR=50 W_COLOR2=50 | "$BIN/hubctl" apply -f -
# Wait (at most 10 s) until east's gateway follows the new weights before measuring.
for i in $(seq 100); do
  west=$("$BIN/traffic" --url "http://127.0.0.2:$GW_PORT/" -n 100 2>/dev/null | awk '/per cluster/{c=1} c && $1=="west"{print int($2)}')
  [ "${west:-0}" -ge 35 ] && break
  sleep 0.1
done
say "1,000 requests through east's gateway (50/50)"
"$BIN/traffic" --url "http://127.0.0.2:$GW_PORT/" -n 1000
say "the same through west's gateway: west reaches color in east over east-west"
"$BIN/traffic" --url "http://127.0.0.3:$GW_PORT/" -n 1000

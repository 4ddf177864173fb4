#!/usr/bin/env bash
# Side-by-side reverse-proxy benchmark on loopback, all targets in one run (hack/bench-proxy.sh prepares and calls it).
#
#   hack/bench-peers.sh [PROJECT_CMD ARGS...]
#
# HTTP/1.1 rows, wrk -t1 -c$CONNS --latency:
#   direct      the nginx backend itself, 127.0.0.1:18080 (the limit)
#   nginx       nginx, 1 worker, upstream keepalive            127.0.0.1:18081
#   haproxy     haproxy, 1 thread, http-reuse always           127.0.0.1:18082
#   caddy       caddy reverse_proxy, GOMAXPROCS=1              127.0.0.1:18083 (only when $CADDY is an executable)
#   project     PROJECT_CMD (when given), GOMAXPROCS=1: it must listen on 127.0.0.1:$PROJECT_PORT (18089) and forward
#               every request to http://127.0.0.1:18080/, and accept h2c with prior knowledge on the same port
# h2c rows (HTTP/2 over cleartext, prior knowledge), h2load -c$H2C_CLIENTS -m$H2C_STREAMS, to the same HTTP/1.1 backend:
#   h2c_direct  the backend's own h2c listener                 127.0.0.1:18085 (the limit)
#   h2c_nginx   nginx (the same process as "nginx"), `listen ... http2`, 127.0.0.1:18084
#   h2c_project PROJECT_CMD's port
# Every proxy is pinned to CPU 0 with one worker/thread, the backend and the load generator to CPU 1, so the proxies
# compete on equal terms. Output: one row per target per round, then one summary line of medians and ratios to nginx:
#   summary <target>_rps=.. <target>_p99_ms=.. ... project/nginx_rps=R project/nginx_p99=P [project/caddy_rps=C]
#           [h2c_<target>_rps=.. h2c_<target>_p99_ms=.. ... project/nginx_h2c_rps=R project/nginx_h2c_p99=P]
# h2c p99 comes from h2load's per-request log (--log-file); h2load itself prints only min/max/mean/sd.
# Needs nginx, haproxy, wrk, h2load and curl (hack/install-peers.sh installs them) and taskset.
# Env: DUR (seconds per row, default 8), ROUNDS (default 3), CONNS (wrk connections, default 32), H2C (0 skips the h2c
# rows), H2C_CLIENTS (default 8), H2C_STREAMS (concurrent streams per client, default 16), CADDY (caddy binary),
# PROJECT_PORT (default 18089).
set -uo pipefail
D=${DUR:-8}; R=${ROUNDS:-3}; C=${CONNS:-32}; PP=${PROJECT_PORT:-18089}
H2C=${H2C:-1}; HC=${H2C_CLIENTS:-8}; HM=${H2C_STREAMS:-16}
CADDY=${CADDY:-}
need=(nginx haproxy wrk curl taskset)
[ "$H2C" = 0 ] || need+=(h2load)
for t in "${need[@]}"; do
  command -v "$t" >/dev/null || { echo "bench-peers: $t not installed (hack/install-peers.sh)" >&2; exit 2; }
done

ports=(18080 18081 18082 18084 18085)
[ -n "$CADDY" ] && ports+=(18083)
[ $# -gt 0 ] && ports+=("$PP")
for p in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "bench-peers: 127.0.0.1:$p is already in use (another benchmark running?)" >&2
    exit 2
  fi
done

W=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")
pids=()
cleanup() {
  local p alive
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 30); do # up to 3 s for a clean exit, then KILL
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$W/backend.conf" <<C
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:18080; location / { return 200 "hello from backend\n"; } }
  server { listen 127.0.0.1:18085 http2; keepalive_requests 1000000; location / { return 200 "hello from backend\n"; } } }
C
# The h2c server: keepalive_requests because nginx 1.22 closes an HTTP/2 connection after keepalive_requests (default
# 1000) requests and h2load does not reconnect (http2_max_requests is obsolete in 1.22); its own upstream keeps as many
# idle connections as there are concurrent streams, since with `keepalive 64` and 128 streams nginx opens and closes
# a backend connection per request beyond 64 (thousands in TIME_WAIT), which measures the pool size, not the proxy.
hk=$((HC * HM)); [ "$hk" -ge 64 ] || hk=64
cat >"$W/nginx.conf" <<C
worker_processes 1; daemon off; pid $W/n.pid; error_log $W/n.err;
events { worker_connections 4096; }
http { access_log off; upstream be { server 127.0.0.1:18080; keepalive 64; }
  upstream be_h2c { server 127.0.0.1:18080; keepalive $hk; }
  server { listen 127.0.0.1:18081; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:18084 http2; keepalive_requests 1000000;
    location / { proxy_pass http://be_h2c; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
printf 'global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\nfrontend f\n  bind 127.0.0.1:18082\n  default_backend b\nbackend b\n  server s1 127.0.0.1:18080\n' >"$W/haproxy.cfg"
printf '{\n  admin off\n  auto_https off\n}\nhttp://127.0.0.1:18083 {\n  reverse_proxy 127.0.0.1:18080\n}\n' >"$W/Caddyfile"

taskset -c 1 nginx -c "$W/backend.conf" >"$W/backend.log" 2>&1 & pids+=("$!")
taskset -c 0 nginx -c "$W/nginx.conf" >"$W/nginx.log" 2>&1 & pids+=("$!")
taskset -c 0 haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 & pids+=("$!")
h1="direct:18080 nginx:18081 haproxy:18082"
h2="h2c_direct:18085 h2c_nginx:18084"
if [ -n "$CADDY" ]; then
  GOMAXPROCS=1 taskset -c 0 "$CADDY" run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 & pids+=("$!")
  h1="$h1 caddy:18083"
fi
if [ $# -gt 0 ]; then
  GOMAXPROCS=1 taskset -c 0 "$@" >"$W/project.log" 2>&1 & pids+=("$!")
  h1="$h1 project:$PP"
  h2="$h2 h2c_project:$PP"
fi
[ "$H2C" = 0 ] && h2=

# Wait (up to 15 s) until every target answers 200, over HTTP/2 for the h2c ones.
ready() { # name port
  local want=1.1 opt=--http1.1 got
  case $1 in h2c_*) want=2 opt=--http2-prior-knowledge ;; esac
  got=$(curl -s -o /dev/null -m 2 "$opt" -w '%{http_code} %{http_version}' "http://127.0.0.1:$2/" 2>/dev/null)
  [ "$got" = "200 $want" ]
}
fail() {
  echo "bench-peers: $*" >&2
  for l in "$W"/*.log "$W"/*.err; do [ -s "$l" ] && { echo "--- ${l##*/}" >&2; tail -20 "$l" >&2; }; done
  exit 1
}
for t in $h1 $h2; do
  n=0
  until ready "${t%%:*}" "${t#*:}"; do
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "a target exited at start (pid $p; logs below)"; done
    n=$((n + 1))
    [ "$n" -lt 75 ] || fail "${t%%:*} on 127.0.0.1:${t#*:} does not answer 200 (over HTTP/2 for h2c_*)"
    sleep 0.2
  done
done

# ms from wrk's "99%  1.23ms" (us, ms or s).
wrk_p99() { awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}'; }

for round in $(seq "$R"); do
  for t in $h1; do
    out=$(taskset -c 1 wrk -t1 -c"$C" -d"${D}s" --latency "http://127.0.0.1:${t#*:}/" 2>&1)
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p99=$(wrk_p99 <<<"$out")
    bad=$(awk '/Non-2xx/{printf "non2xx=%s ", $NF} /Socket errors/{printf "sockerr=[%s] ", $0}' <<<"$out")
    printf "round=%s target=%-11s rps=%-10s p99_ms=%-8s %s\n" "$round" "${t%%:*}" "${rps:-0}" "${p99:-0}" "$bad" | tee -a "$W/rows"
  done
  for t in $h2; do
    # http:// URLs: h2load speaks h2c with prior knowledge (its default --npn-list is h2c).
    out=$(taskset -c 1 h2load -t1 -c"$HC" -m"$HM" -D"$D" --log-file="$W/h2.log" "http://127.0.0.1:${t#*:}/" 2>&1)
    rps=$(awk '/^finished in/{print $4}' <<<"$out")
    mean=$(awk '/^time for request:/{v=$6; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
    # p99 over the successful requests of the per-request log (column 3: microseconds until the end of the response).
    p99=$(awk -F'\t' '$2>=200 && $2<300 {print $3}' "$W/h2.log" | sort -n | awk '{v[NR]=$1} END{if (NR) printf "%.2f", v[int(NR*0.99+0.999999)]/1000}')
    bad=$(awk '/^requests:/{if ($10+0 || $12+0 || $14+0) printf "failed=%s errored=%s timeout=%s ", $10, $12, $14}
      /^status codes:/{n=$5+$7+$9; if (n) printf "non2xx=%s ", n}' <<<"$out")
    [ -n "$rps" ] || bad="$bad h2load=[$(tail -1 <<<"$out")]"
    printf "round=%s target=%-11s rps=%-10s p99_ms=%-8s mean_ms=%-6s %s\n" "$round" "${t%%:*}" "${rps:-0}" "${p99:-0}" "${mean:-0}" "$bad" | tee -a "$W/rows"
    rm -f "$W/h2.log"
  done
done

# Medians per target, in the order they ran; then the ratios to nginx (HTTP/1.1 first, as before; h2c after).
awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
  t = v["target"]; if (!(t in n)) order[++nt] = t; n[t]++; rps[t, n[t]] = v["rps"]; p99[t, n[t]] = v["p99_ms"]}
function med(a, t,   i, j, x, k, m) {k = n[t]; for (i = 1; i <= k; i++) x[i] = a[t, i] + 0
  for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) {m = x[i]; x[i] = x[j]; x[j] = m}
  return x[int((k + 1) / 2)]}
function ratio(a, b) {return b > 0 ? a / b : 0}
END {line = "summary"; h2 = ""
  for (i = 1; i <= nt; i++) {t = order[i]; mr[t] = med(rps, t); mp[t] = med(p99, t)
    s = sprintf(" %s_rps=%.0f %s_p99_ms=%.2f", t, mr[t], t, mp[t]); if (t ~ /^h2c_/) h2 = h2 s; else line = line s}
  if (("project" in n) && ("nginx" in n)) line = line sprintf(" project/nginx_rps=%.3f project/nginx_p99=%.3f", ratio(mr["project"], mr["nginx"]), ratio(mp["project"], mp["nginx"]))
  if (("project" in n) && ("caddy" in n)) line = line sprintf(" project/caddy_rps=%.3f", ratio(mr["project"], mr["caddy"]))
  line = line h2
  if (("h2c_project" in n) && ("h2c_nginx" in n)) line = line sprintf(" project/nginx_h2c_rps=%.3f project/nginx_h2c_p99=%.3f", ratio(mr["h2c_project"], mr["h2c_nginx"]), ratio(mp["h2c_project"], mp["h2c_nginx"]))
  print line}' "$W/rows"

#!/usr/bin/env bash
# Load test (issue 10): 1 000 concurrent client connections for 60 s through the
# branch proxy, a mix of store hits and cold misses, with p50/p99 latency, errors
# and the proxy's resident memory.
#
#   benches/load.sh                 # CONNS=1000 DURATION=60s OBJECTS=200 OBJ_KIB=256
#   BIN=path/to/branchcache benches/load.sh   # use an already built binary
#
# Chain, all on loopback: nginx (origin, OBJECTS files of OBJ_KIB) → publisher
# (peerdist content information) → proxy (reverse mode, store in a temp dir).
# Half of the objects are downloaded once before the run (hits), the other
# half are cold when the load starts (misses → origin ranges, then hits).
# wrk (installed from apt when missing) drives the load; a Lua script picks a
# random object per request. The same wrk run against nginx directly is the
# anchor (same machine, same run). RSS of the proxy is sampled every second
# (VmRSS) and its peak (VmHWM) read at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

CONNS=${CONNS:-1000}
DURATION=${DURATION:-60s}
OBJECTS=${OBJECTS:-200}
OBJ_KIB=${OBJ_KIB:-256}
THREADS=${THREADS:-2}

bench_tools nginx wrk
bench_nofile

bench_workdir bc-load-bench

ORIGIN_PORT=$(free_port); PUB_PORT=$(free_port); PROXY_PORT=$(free_port)
PUB_ADMIN=$(free_port); PROXY_ADMIN=$(free_port)

bench_bin

mkdir -p "$WORK/www"
for i in $(seq 0 $((OBJECTS - 1))); do
  head -c "$((OBJ_KIB * 1024))" /dev/urandom > "$WORK/www/o$i.bin"
done
chmod 644 "$WORK"/www/*

nginx_start "$WORK/nginx" "worker_processes 1; worker_rlimit_nofile 65536;" 4096 \
  "keepalive_requests 1000000;" <<CONF
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; etag on; }
CONF

bc_daemon publisher "$PUB_ADMIN" "" "$(publisher_toml "$PUB_PORT" "$ORIGIN_PORT")"
bc_daemon proxy "$PROXY_ADMIN" 'max_size = "10 GiB"' "$(proxy_toml "$PROXY_PORT" "$PUB_PORT")"
PROXY_PID=$DAEMON_PID

wait_for 200 "http://127.0.0.1:$PROXY_ADMIN/readyz" "http://127.0.0.1:$PUB_ADMIN/readyz" \
  "http://127.0.0.1:$ORIGIN_PORT/o0.bin" || true

echo "warming half of the objects…" >&2
for i in $(seq 0 2 $((OBJECTS - 1))); do
  curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/o$i.bin"
done
# Correctness spot check before loading.
for i in 0 1; do
  a=$(curl -sf "http://127.0.0.1:$PROXY_PORT/o$i.bin" | sha256sum | cut -c1-64)
  b=$(sha256sum "$WORK/www/o$i.bin" | cut -c1-64)
  [ "$a" = "$b" ] || { echo "o$i.bin differs through the proxy" >&2; exit 1; }
done

cat > "$WORK/paths.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/o" .. math.random(0, $((OBJECTS - 1))) .. ".bin")
end
LUA

rss_log="$WORK/rss.txt"
( while kill -0 "$PROXY_PID" 2>/dev/null; do
    awk '/VmRSS/{print $2}' "/proc/$PROXY_PID/status" >> "$rss_log" 2>/dev/null || true
    sleep 1
  done ) &
pids+=("$!")

echo "load: $CONNS connections for $DURATION through the proxy…" >&2
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/paths.lua" \
  "http://127.0.0.1:$PROXY_PORT/" > "$WORK/wrk-proxy.txt" 2>&1 || true
hwm=$(awk '/VmHWM/{print $2}' "/proc/$PROXY_PID/status")
curl -sf "http://127.0.0.1:$PROXY_ADMIN/metrics" > "$WORK/metrics.txt"

echo "anchor: the same load against nginx directly…" >&2
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/paths.lua" \
  "http://127.0.0.1:$ORIGIN_PORT/" > "$WORK/wrk-nginx.txt" 2>&1 || true

python3 - "$WORK/wrk-proxy.txt" "$WORK/wrk-nginx.txt" "$rss_log" "$hwm" "$CONNS" "$DURATION" "$OBJECTS" "$OBJ_KIB" "$WORK/metrics.txt" <<'PY'
import re, sys
proxy, nginx, rss_log, hwm, conns, dur, objs, kib, metrics_path = sys.argv[1:10]
def parse(path):
    t = open(path).read()
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", t, re.M))
    req = re.search(r"(\d+) requests in", t)
    rps = re.search(r"Requests/sec:\s+(\S+)", t)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    errs = int(non2xx.group(1)) if non2xx else 0
    sockerr = sum(int(x) for x in sock.groups()) if sock else 0
    return lat, int(req.group(1)) if req else 0, float(rps.group(1)) if rps else 0.0, errs, sockerr, t
pl, preq, prps, perr, psock, ptext = parse(proxy)
nl, nreq, nrps, nerr, nsock, ntext = parse(nginx)
rss = [int(x) for x in open(rss_log).read().split()] or [0]
metrics = open(metrics_path).read()
def m(name):
    tot = 0.0
    for line in metrics.splitlines():
        if line.startswith(name):
            tot += float(line.rsplit(" ", 1)[1])
    return tot
print(f"proxy, {conns} connections, {dur}, {objs} objects x {kib} KiB (half warm): "
      f"{preq} requests, {prps:.0f} req/s, p50 {pl.get('50','?')}, p99 {pl.get('99','?')}, "
      f"non-2xx {perr}, socket errors {psock}")
print(f"nginx direct (anchor), same load: {nreq} requests, {nrps:.0f} req/s, "
      f"p50 {nl.get('50','?')}, p99 {nl.get('99','?')}, non-2xx {nerr}, socket errors {nsock}")
print(f"proxy throughput = {prps / nrps if nrps else 0:.2f}x nginx")
print(f"proxy RSS: max sampled {max(rss) / 1024:.0f} MiB, peak (VmHWM) {int(hwm) / 1024:.0f} MiB, "
      f"last {rss[-1] / 1024:.0f} MiB")
parts = []
for src in ("store", "origin"):
    name = 'branchcache_proxy_served_bytes_total{source="' + src + '"}'
    parts.append("%s %.2f GB" % (src, m(name) / 1e9))
print("proxy bytes by source: " + ", ".join(parts))
if perr or psock:
    print("ERRORS through the proxy: see wrk output below"); print(ptext)
PY

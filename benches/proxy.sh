#!/usr/bin/env bash
# Branch proxy vs nginx proxy_cache (issue 5, Proof): warm-hit throughput on a
# large object, small-object requests/s, and the proxy's peak RSS under 64
# concurrent large downloads, all in one run, printed as ratios.
#
#   benches/proxy.sh                # SIZE_MIB=1024 PAR=64 SMALL_COUNT=200 WRK_DURATION=15s WRK_ROUNDS=2 MAX_AGE=3600
#   BIN=/path/to/branchcache benches/proxy.sh   # use that binary, do not build
#   PROXY_BENCH_PERF=FILE benches/proxy.sh      # also `perf record -g` the proxy during its wrk run
#   PROXY_BENCH_PERF_HIT=FILE benches/proxy.sh  # ... during its first timed large hit
#
# Contenders, all on 127.0.0.1:
#   origin:      nginx, one worker, sendfile, etags, and the SAME freshness
#                policy for both contenders: `Cache-Control: max-age=$MAX_AGE`
#                on every answer (default 3600 s, longer than the run).
#   branchcache: origin nginx → branchcache [publisher] → branchcache [proxy]
#                (store in the temp dir). The publisher relays the origin's
#                Cache-Control on its peerdist answer; the proxy keeps the
#                content information while fresh (RFC 9111), so a warm request
#                is a store hit with no upstream traffic.
#   nginx:       origin nginx → second nginx with proxy_cache (cache on disk in
#                the temp dir, worker_processes auto, sendfile), honouring the
#                origin's Cache-Control (no proxy_cache_valid override, so no
#                more generous policy than the proxy's); a warm request is a
#                cache HIT with no upstream traffic.
# Measures:
#   1. warm hit of one SIZE_MIB object: curl -o /dev/null, HIT_RUNS (default 5)
#      each, interleaved, the median time of each (robust to the odd lucky or
#      unlucky run of either contender on a shared machine; best times printed too);
#      ratio = nginx time / proxy time (target >= 1.0x). Before each round both
#      contenders' cached files (the proxy's store data, nginx's cache files)
#      are synced, dropped from the page cache and read back in (HIT_REPLACE=1,
#      the default; 0 keeps the pages where the warm-up put them): in a VM the
#      speed of reading a given page-cache page depends on how the host backs
#      that guest memory, and one unlucky placement of either contender's GiB
#      made its every run 20-50 % slower for the rest of the run, whatever the
#      software (docs/PERFORMANCE.md, session 6). Each round draws afresh;
#      the timed downloads are still all page-cache hits;
#   2. 16 KiB objects (SMALL_COUNT files, all warmed first): wrk -t2 -c64
#      -d$WRK_DURATION, random file per request, WRK_ROUNDS rounds for each
#      contender, alternating (proxy, nginx, proxy, …: neither gets the
#      quieter half of the run); req/s is the mean over the rounds; the publisher runs with
#      min_size = "4 KiB" so these objects get content information and the
#      proxy serves them from its store (the default 64 KiB would pass them
#      through); ratio = proxy req/s / nginx req/s (target >= 1.0x);
#   3. the proxy's peak RSS (VmHWM, reset through /proc/PID/clear_refs just
#      before) during PAR concurrent warm downloads of the object (target <= 128 MiB).
# nginx and wrk are installed from apt when missing. Needs curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SIZE_MIB=${SIZE_MIB:-1024}
PAR=${PAR:-64}
SMALL_COUNT=${SMALL_COUNT:-200}
WRK_DURATION=${WRK_DURATION:-15s}
WRK_CONNS=${WRK_CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WRK_ROUNDS=${WRK_ROUNDS:-2}
HIT_RUNS=${HIT_RUNS:-5}
HIT_REPLACE=${HIT_REPLACE:-1}
MAX_AGE=${MAX_AGE:-3600}

bench_tools nginx wrk
bench_nofile
bench_bin
bench_workdir bc-proxy-bench

ORIGIN_PORT=$(free_port); NGX_PORT=$(free_port); PUB_PORT=$(free_port)
PROXY_PORT=$(free_port); PUB_ADMIN=$(free_port); PROXY_ADMIN=$(free_port)

mkdir -p "$WORK/www/small" "$WORK/ngx-cache-data"
echo "generating ${SIZE_MIB} MiB object and ${SMALL_COUNT} x 16 KiB objects…" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/www/obj.bin"
for i in $(seq 0 $((SMALL_COUNT - 1))); do
  head -c 16384 /dev/urandom > "$WORK/www/small/s$i.bin"
done
chmod -R a+rX "$WORK/www"

# Origin: one worker, sendfile, etags (the publisher revalidates with them).
nginx_start "$WORK/origin" "worker_processes 1; worker_rlimit_nofile 65536;" 4096 \
  "tcp_nopush on; keepalive_requests 1000000;" <<CONF
  server {
    listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; etag on;
    add_header Cache-Control "max-age=$MAX_AGE" always;
  }
CONF

# The nginx contender: a caching reverse proxy, cache on disk.
nginx_start "$WORK/ngxcache" "worker_processes auto; worker_rlimit_nofile 65536;" 4096 \
  "tcp_nopush on; keepalive_requests 1000000;" <<CONF
  proxy_cache_path $WORK/ngx-cache-data levels=1:2 keys_zone=bench:16m max_size=20g inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_lock on;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }
CONF

bc_daemon publisher "$PUB_ADMIN" "" "$(publisher_toml "$PUB_PORT" "$ORIGIN_PORT")
min_size = \"4 KiB\""
bc_daemon proxy "$PROXY_ADMIN" 'max_size = "20 GiB"' "$(proxy_toml "$PROXY_PORT" "$PUB_PORT")"
PROXY_PID=$DAEMON_PID

wait_for 300 "http://127.0.0.1:$PROXY_ADMIN/readyz" "http://127.0.0.1:$PUB_ADMIN/readyz" \
  "http://127.0.0.1:$ORIGIN_PORT/small/s0.bin" "http://127.0.0.1:$NGX_PORT/small/s0.bin" \
  || { echo "services did not come up" >&2; exit 1; }

metric() { # $1 = exact metric line prefix (name{labels}); prints its value or 0
  curl -sf "http://127.0.0.1:$PROXY_ADMIN/metrics" \
    | awk -v m="$1" 'index($0, m " ") == 1 {v = $2} END {print v + 0}'
}
STORE_BYTES='branchcache_proxy_served_bytes_total{source="store"}'
ORIGIN_BYTES='branchcache_proxy_served_bytes_total{source="origin"}'
HITS='branchcache_proxy_requests_total{outcome="hit"}'
FRESH='branchcache_proxy_freshness_total{result="fresh"}'

PROXY_URL="http://127.0.0.1:$PROXY_PORT"
NGX_URL="http://127.0.0.1:$NGX_PORT"
want=$(sha256sum "$WORK/www/obj.bin" | cut -c1-64)

echo "warming the ${SIZE_MIB} MiB object through both…" >&2
curl -sf -o /dev/null "$PROXY_URL/obj.bin"
curl -sf -o /dev/null "$NGX_URL/obj.bin"
got=$(curl -sf "$PROXY_URL/obj.bin" | sha256sum | cut -c1-64)
[ "$got" = "$want" ] || { echo "object differs through the proxy" >&2; exit 1; }
got=$(curl -sf "$NGX_URL/obj.bin" | sha256sum | cut -c1-64)
[ "$got" = "$want" ] || { echo "object differs through nginx proxy_cache" >&2; exit 1; }
status=$(curl -s -o /dev/null -D - "$NGX_URL/obj.bin" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status"{print $2}')
[ "$status" = "HIT" ] || { echo "nginx proxy_cache did not hit (X-Cache-Status '$status')" >&2; exit 1; }

perf_pid=
perf_start() { # $1 = output file (empty: no profile); records the proxy until perf_stop
  [ -n "$1" ] || return 0
  perf record -q -F "${PROXY_BENCH_PERF_FREQ:-999}" ${PROXY_BENCH_PERF_ARGS:--g} -p "$PROXY_PID" -o "$1" 2>/dev/null &
  perf_pid=$!
  sleep 0.5
}
perf_stop() {
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" || true
  perf_pid=
}
ctx_switches() { # $@ = pids; prints "tid:switches" for each of their threads
  local p f
  for p in "$@"; do
    for f in /proc/"$p"/task/*/status; do
      awk -v f="$f" '/ctxt_switches/ {n += $2} END {split(f, a, "/"); printf "%s:%d ", a[5], n}' "$f" 2>/dev/null || true
    done
  done
  echo
}
ctx_delta() { # $1, $2 = ctx_switches before and after; prints the switches in between
  # (threads that exited in between are not counted; new ones count from zero)
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); for (i = 1; i <= n; i++) { split(x[i], kv, ":"); before[kv[1]] = kv[2] }
    n = split(b, y, " "); for (i = 1; i <= n; i++) { split(y[i], kv, ":"); d += kv[2] - before[kv[1]] }
    print d + 0 }'
}
cpu_ticks() { # $@ = pids; prints summed utime + stime in clock ticks
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
NGX_WORKERS=$(pgrep -P "$(cat "$WORK/ngxcache/nginx.pid")" | tr '\n' ' ')
# Sync each file under the given directories, drop its pages from the page
# cache and read it back in (fresh page-cache pages: see HIT_REPLACE above).
replace_pages() {
  python3 - "$@" <<'PY'
import os, sys
for root in sys.argv[1:]:
    files = 0
    for d, _, names in os.walk(root):
        for name in names:
            files += 1
            fd = os.open(os.path.join(d, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                while os.read(fd, 1 << 20):
                    pass
            finally:
                os.close(fd)
    if files == 0:
        sys.exit(f"replace_pages: no cached file under {root}")
PY
}

echo "timing warm hits (median of $HIT_RUNS each, interleaved)…" >&2
store0=$(metric "$STORE_BYTES"); origin0=$(metric "$ORIGIN_BYTES")
ptimes=(); ntimes=(); pcpu=0; ncpu=0; pctx=0; nctx=0
for i in $(seq "$HIT_RUNS"); do
  if [ "$HIT_REPLACE" = 1 ]; then
    replace_pages "$WORK/proxy-store/data" "$WORK/ngx-cache-data"
  fi
  # Optional: profile the proxy during its first timed large hit.
  [ "$i" = 1 ] && perf_start "${PROXY_BENCH_PERF_HIT:-}"
  c0=$(cpu_ticks "$PROXY_PID"); x0=$(ctx_switches "$PROXY_PID")
  ptimes+=("$(curl -sf -o /dev/null -w '%{time_total}' "$PROXY_URL/obj.bin")")
  c1=$(cpu_ticks "$PROXY_PID"); x1=$(ctx_switches "$PROXY_PID")
  pcpu=$((pcpu + c1 - c0)); pctx=$((pctx + $(ctx_delta "$x0" "$x1")))
  perf_stop
  # shellcheck disable=SC2086
  c0=$(cpu_ticks $NGX_WORKERS); x0=$(ctx_switches $NGX_WORKERS)
  ntimes+=("$(curl -sf -o /dev/null -w '%{time_total}' "$NGX_URL/obj.bin")")
  # shellcheck disable=SC2086
  c1=$(cpu_ticks $NGX_WORKERS); x1=$(ctx_switches $NGX_WORKERS)
  ncpu=$((ncpu + c1 - c0)); nctx=$((nctx + $(ctx_delta "$x0" "$x1")))
done
CLK_TCK=$(getconf CLK_TCK)
store1=$(metric "$STORE_BYTES"); origin1=$(metric "$ORIGIN_BYTES")

echo "warming ${SMALL_COUNT} small objects through both…" >&2
for i in $(seq 0 $((SMALL_COUNT - 1))); do
  curl -sf -o /dev/null "$PROXY_URL/small/s$i.bin"
  curl -sf -o /dev/null "$NGX_URL/small/s$i.bin"
done
for i in 0 $((SMALL_COUNT - 1)); do
  a=$(curl -sf "$PROXY_URL/small/s$i.bin" | sha256sum | cut -c1-64)
  b=$(sha256sum "$WORK/www/small/s$i.bin" | cut -c1-64)
  [ "$a" = "$b" ] || { echo "small/s$i.bin differs through the proxy" >&2; exit 1; }
done

cat > "$WORK/paths.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/small/s" .. math.random(0, $((SMALL_COUNT - 1))) .. ".bin")
end
LUA
echo "wrk: ${WRK_CONNS} connections, ${WRK_ROUNDS} rounds of ${WRK_DURATION} each, proxy and nginx alternating…" >&2
hits0=$(metric "$HITS"); fresh0=$(metric "$FRESH")
wrk_pcpu=0; wrk_ncpu=0; wrk_pctx=0; wrk_nctx=0
for round in $(seq "$WRK_ROUNDS"); do
  # Optional: profile the proxy during its first wrk round (perf report -i FILE).
  [ "$round" = 1 ] && perf_start "${PROXY_BENCH_PERF:-}"
  c0=$(cpu_ticks "$PROXY_PID"); x0=$(ctx_switches "$PROXY_PID")
  wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" -s "$WORK/paths.lua" \
    "$PROXY_URL/" > "$WORK/wrk-proxy-$round.txt" 2>&1 || true
  c1=$(cpu_ticks "$PROXY_PID"); x1=$(ctx_switches "$PROXY_PID")
  wrk_pcpu=$((wrk_pcpu + c1 - c0)); wrk_pctx=$((wrk_pctx + $(ctx_delta "$x0" "$x1")))
  perf_stop
  # shellcheck disable=SC2086
  c0=$(cpu_ticks $NGX_WORKERS); x0=$(ctx_switches $NGX_WORKERS)
  wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" -s "$WORK/paths.lua" \
    "$NGX_URL/" > "$WORK/wrk-nginx-$round.txt" 2>&1 || true
  # shellcheck disable=SC2086
  c1=$(cpu_ticks $NGX_WORKERS); x1=$(ctx_switches $NGX_WORKERS)
  wrk_ncpu=$((wrk_ncpu + c1 - c0)); wrk_nctx=$((wrk_nctx + $(ctx_delta "$x0" "$x1")))
done
hits1=$(metric "$HITS"); fresh1=$(metric "$FRESH")

echo "RSS: ${PAR} concurrent warm downloads of the ${SIZE_MIB} MiB object…" >&2
hwm_reset=no
if echo 5 > "/proc/$PROXY_PID/clear_refs" 2>/dev/null; then hwm_reset=yes; fi
rss_log="$WORK/rss.txt"; : > "$rss_log"
( while kill -0 "$PROXY_PID" 2>/dev/null; do
    awk '/VmRSS/{r=$2} /RssAnon/{a=$2} END{print r, a}' "/proc/$PROXY_PID/status" >> "$rss_log" 2>/dev/null || true
    sleep 0.5
  done ) &
sampler=$!
pids+=("$sampler")
t0=$(date +%s.%N)
par=()
for i in $(seq "$PAR"); do
  curl -s -o /dev/null -w '%{http_code} %{size_download}\n' "$PROXY_URL/obj.bin" > "$WORK/par$i.txt" &
  par+=($!)
done
for p in "${par[@]}"; do wait "$p" || true; done
t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/{print $2}' "/proc/$PROXY_PID/status")
kill "$sampler" 2>/dev/null || true
cat "$WORK"/par*.txt > "$WORK/par-all.txt"

python3 - "$SIZE_MIB" "$PAR" "$WORK" "$hwm" "$hwm_reset" "$t0" "$t1" \
  "$store0" "$store1" "$origin0" "$origin1" "$hits0" "$hits1" "$WRK_CONNS" "$WRK_DURATION" "$SMALL_COUNT" \
  "${ptimes[*]}" "${ntimes[*]}" "$fresh0" "$fresh1" "$MAX_AGE" "$pcpu" "$ncpu" "$CLK_TCK" \
  "$wrk_pcpu" "$wrk_ncpu" "$wrk_pctx" "$wrk_nctx" "$WRK_ROUNDS" "$pctx" "$nctx" "$HIT_REPLACE" <<'PY'
import re, sys
(size_mib, par, work, hwm, hwm_reset, t0, t1, store0, store1, origin0, origin1,
 hits0, hits1, conns, dur, small_count, ptimes, ntimes, fresh0, fresh1, max_age,
 pcpu, ncpu, clk_tck, wrk_pcpu, wrk_ncpu, wrk_pctx, wrk_nctx, nrounds, pctx, nctx,
 replace) = sys.argv[1:33]
size_mib, par = int(size_mib), int(par)
size = size_mib * 1024 * 1024
import statistics
pts = [float(x) for x in ptimes.split()]
nts = [float(x) for x in ntimes.split()]
runs = len(pts)
pt, nt = statistics.median(pts), statistics.median(nts)
def ok(c): return "ok" if c else "MISSED"
label = "1 GiB" if size_mib == 1024 else f"{size_mib} MiB"
r1 = nt / pt
print(f"warm {label} hit (median of {runs}): proxy {pt:.2f} s, nginx proxy_cache {nt:.2f} s, "
      f"ratio {r1:.2f}x (target >= 1.0x) {ok(r1 >= 1.0)}")
if replace == "1":
    print("  (page-cache pages of both contenders' cached files dropped and read back in before each round)")
pcpu_s, ncpu_s = int(pcpu) / int(clk_tck), int(ncpu) / int(clk_tck)
print(f"  (CPU user+sys over the {runs} timed downloads: proxy process {pcpu_s:.2f} s, nginx proxy_cache "
      f"workers {ncpu_s:.2f} s; per GiB: proxy {pcpu_s / runs / (size / 2**30):.2f} s, nginx "
      f"{ncpu_s / runs / (size / 2**30):.2f} s; less noisy than wall time on a shared machine; "
      f"context switches per GiB: proxy {int(pctx) / runs / (size / 2**30):.0f}, nginx "
      f"{int(nctx) / runs / (size / 2**30):.0f})")
served_store = float(store1) - float(store0)
served_origin = float(origin1) - float(origin0)
print(f"  ({runs} timed proxy downloads: {served_store / 2**20:.0f} MiB from the store, "
      f"{served_origin / 2**20:.0f} MiB from the origin; best proxy {min(pts):.2f} s, nginx "
      f"{min(nts):.2f} s (ratio {min(nts) / min(pts):.2f}x); all times proxy [{ptimes}] s, nginx [{ntimes}] s)")

def parse(path):
    t = open(path).read()
    rps = re.search(r"Requests/sec:\s+(\S+)", t)
    req = re.search(r"(\d+) requests in", t)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    errs = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return (float(rps.group(1)) if rps else 0.0), (int(req.group(1)) if req else 0), errs, t
def rounds(who):
    runs = [parse(f"{work}/wrk-{who}-{r}.txt") for r in range(1, int(nrounds) + 1)]
    rps = [r[0] for r in runs]
    return (sum(rps) / len(rps), sum(r[1] for r in runs), sum(r[2] for r in runs),
            "\n".join(r[3] for r in runs), rps)
prps, preq, perr, ptext, prounds = rounds("proxy")
nrps, nreq, nerr, ntext, nrounds_rps = rounds("nginx")
r2 = prps / nrps if nrps else 0.0
print(f"16 KiB objects, wrk -c{conns} -d{dur} x {nrounds} alternating: proxy {prps:.0f} req/s, nginx proxy_cache {nrps:.0f} req/s, "
      f"ratio {r2:.2f}x (target >= 1.0x) {ok(r2 >= 1.0 and perr == 0)}")
hits = float(hits1) - float(hits0)
fresh = float(fresh1) - float(fresh0)
print(f"  (origin Cache-Control: max-age={max_age} for both; publisher min_size = \"4 KiB\" so 16 KiB "
      f"objects get content information and the proxy serves them from its store: {hits:.0f} store "
      f"hits, {fresh:.0f} of them fresh (no upstream request), counted by the proxy during the run, "
      f"{preq} requests completed by wrk; "
      f"{small_count} objects, all warmed first; errors proxy {perr}, nginx {nerr})")
pus = int(wrk_pcpu) / int(clk_tck) / preq * 1e6 if preq else 0.0
nus = int(wrk_ncpu) / int(clk_tck) / nreq * 1e6 if nreq else 0.0
print(f"  (req/s per round: proxy {', '.join(f'{x:.0f}' for x in prounds)}; nginx "
      f"{', '.join(f'{x:.0f}' for x in nrounds_rps)})")
print(f"  (CPU user+sys per request during wrk: proxy process {pus:.1f} us, nginx proxy_cache "
      f"workers {nus:.1f} us; ratio nginx/proxy {nus / pus if pus else 0.0:.2f}; context switches "
      f"per request: proxy {int(wrk_pctx) / max(preq, 1):.2f}, nginx {int(wrk_nctx) / max(nreq, 1):.2f})")
if perr or nerr:
    print("wrk output (proxy):\n" + ptext + "\nwrk output (nginx):\n" + ntext)

lines = open(f"{work}/par-all.txt").read().split("\n")
good = sum(1 for l in lines if l.strip() == f"200 {size}")
samples = [l.split() for l in open(f"{work}/rss.txt").read().splitlines() if l.strip()]
rss = [int(x[0]) for x in samples] or [0]
anon = [int(x[1]) for x in samples if len(x) > 1] or [0]
hwm_mib = int(hwm) / 1024
elapsed = float(t1) - float(t0)
note = "VmHWM reset just before" if hwm_reset == "yes" else "VmHWM could not be reset: lifetime peak"
print(f"proxy peak RSS during {par} concurrent warm {label} downloads: {hwm_mib:.0f} MiB "
      f"(target <= 128 MiB) {ok(hwm_mib <= 128 and good == par)}")
print(f"  ({note}; max sampled VmRSS {max(rss) / 1024:.0f} MiB, of it heap/anonymous (RssAnon) "
      f"{max(anon) / 1024:.0f} MiB; {good}/{par} complete; "
      f"{par * size / elapsed / 1e6:.0f} MB/s aggregate over {elapsed:.1f} s)")
PY

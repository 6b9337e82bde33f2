#!/usr/bin/env bash
# Publisher benchmark: one 1 GiB object served by nginx on loopback, the
# publisher (release build) in front of it.
#
#   benches/publisher.sh            # SIZE_MIB=1024 WARM_RUNS=20 COLD_RUNS=5 by default
#   BIN=/path/to/branchcache benches/publisher.sh   # use that binary, do not build
#                                   # (unset or target/release/branchcache: cargo build --release first)
#
# Prints, in one run:
#   - cold: time of the first peerdist request (origin read + hashing + CI)
#     next to `openssl dgst -sha256` of the same file (page cache warm), the
#     median of COLD_RUNS (default 5) rounds (each round changes the file's
#     ETag), with the CPU the publisher and nginx spent, and `branchcache
#     hash` of the file (the same hashing without the network);
#   - warm: time of repeated peerdist requests (conditional GET → 304 at the
#     origin, CI from the cache), median and min over WARM_RUNS;
#   - CI overhead: content information bytes per GiB of content;
#   - identity pass-through throughput vs nginx directly.
#
# Origin: nginx (installed from apt when missing), one worker, sendfile, a
# private prefix under a temp dir, bound to 127.0.0.1 only. All traffic is
# loopback. Needs curl, openssl, python3 (free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SIZE_MIB=${SIZE_MIB:-1024}
WARM_RUNS=${WARM_RUNS:-20}
COLD_RUNS=${COLD_RUNS:-5}

bench_tools nginx

bench_workdir bc-publisher-bench

ORIGIN_PORT=$(free_port); PUB_PORT=$(free_port); ADMIN_PORT=$(free_port)

bench_bin

mkdir -p "$WORK/www"
echo "generating ${SIZE_MIB} MiB object…" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/www/obj.bin"
chmod 644 "$WORK/www/obj.bin"

nginx_start "$WORK/nginx" "worker_processes 1;" 256 "tcp_nopush on;" <<CONF
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; }
CONF

bc_daemon bc "$ADMIN_PORT" "" "$(publisher_toml "$PUB_PORT" "$ORIGIN_PORT")"

wait_for 100 "http://127.0.0.1:$ADMIN_PORT/readyz" -r 0-0 "http://127.0.0.1:$ORIGIN_PORT/obj.bin" || true

PD=(-H 'Accept-Encoding: peerdist' -H 'X-P2P-PeerDist: Version=1.1')

# Page cache warm for both contenders.
cat "$WORK/www/obj.bin" > /dev/null

secs() { python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$@"; }
# user+sys CPU seconds of a process and its children's threads so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
nginx_cpu_s() {
  local p
  for p in $(pgrep -P "$NGINX_PID"); do cpu_s "$p"; echo; done | awk '{s += $1} END {printf "%.3f", s}'
}
generated() {
  curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '$1=="branchcache_publisher_ci_generated_total"{print $2}'
}

# COLD_RUNS rounds, each: openssl over the file, then a cold peerdist request
# (touching the file gives nginx a new ETag, so the publisher must read and
# hash the whole object again; checked with its ci_generated counter).
cold=(); ossl=(); pub_cpu=(); ngx_cpu=()
for i in $(seq "$COLD_RUNS"); do
  touch "$WORK/www/obj.bin"
  t0=$(date +%s.%N)
  openssl dgst -sha256 "$WORK/www/obj.bin" > /dev/null
  t1=$(date +%s.%N)
  ossl+=("$(secs "$t0" "$t1")")
  g0=$(generated); c0=$(cpu_s "$DAEMON_PID"); n0=$(nginx_cpu_s)
  cold+=("$(curl -s -o "$WORK/ci.bin" -w '%{time_total}' "${PD[@]}" "http://127.0.0.1:$PUB_PORT/obj.bin")")
  c1=$(cpu_s "$DAEMON_PID"); n1=$(nginx_cpu_s); g1=$(generated)
  [ "$((g1 - g0))" = 1 ] || { echo "cold round $i did not generate content information ($g0 -> $g1)" >&2; exit 1; }
  pub_cpu+=("$(secs "$c0" "$c1")"); ngx_cpu+=("$(secs "$n0" "$n1")")
done

# The same hashing without the network: the file read straight from the page cache.
t0=$(date +%s.%N)
"$BIN" hash "$WORK/www/obj.bin" --key-file "$WORK/secret" -o "$WORK/ci-file.bin" > /dev/null
t1=$(date +%s.%N)
hash_file_s=$(secs "$t0" "$t1")
cmp -s "$WORK/ci.bin" "$WORK/ci-file.bin" || { echo "publisher CI differs from branchcache hash of the same file" >&2; exit 1; }

enc=$(curl -s -o /dev/null -D - "${PD[@]}" "http://127.0.0.1:$PUB_PORT/obj.bin" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
[ "$enc" = "peerdist" ] || { echo "publisher did not answer peerdist (got '$enc')" >&2; exit 1; }
ci_bytes=$(stat -c %s "$WORK/ci.bin")
"$BIN" inspect "$WORK/ci.bin" > /dev/null

warm=()
for _ in $(seq "$WARM_RUNS"); do
  warm+=("$(curl -s -o /dev/null -w '%{time_total}' "${PD[@]}" "http://127.0.0.1:$PUB_PORT/obj.bin")")
done

direct=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$ORIGIN_PORT/obj.bin")
through=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$PUB_PORT/obj.bin")

python3 - "$SIZE_MIB" "$ci_bytes" "$direct" "$through" "$hash_file_s" \
  "${cold[*]}" "${ossl[*]}" "${pub_cpu[*]}" "${ngx_cpu[*]}" "${warm[@]}" <<'PY'
import statistics, sys
size_mib, ci, direct, through, hash_file = sys.argv[1:6]
cold, ossl, pub_cpu, ngx_cpu = ([float(x) for x in a.split()] for a in sys.argv[6:10])
warm = sorted(float(x) * 1000 for x in sys.argv[10:])
size_mib, ci, hash_file = int(size_mib), int(ci), float(hash_file)
gib = size_mib / 1024
mb = size_mib * 1024 * 1024 / 1e6
ratios = [o / c for o, c in zip(ossl, cold)]
med = statistics.median(ratios)
c, o = statistics.median(cold), statistics.median(ossl)
print(f"cold first peerdist request, {size_mib} MiB (median of {len(cold)} rounds): {c:.2f} s ({mb / c:.0f} MB/s); "
      f"openssl dgst -sha256: {o:.2f} s ({mb / o:.0f} MB/s); publisher is {med:.2f}x openssl "
      f"(target >= 1.5x) {'ok' if med >= 1.5 else 'MISSED'}")
print(f"  rounds: publisher {' '.join(f'{x:.2f}' for x in cold)} s, openssl {' '.join(f'{x:.2f}' for x in ossl)} s, "
      f"ratios {' '.join(f'{x:.2f}' for x in ratios)}")
print(f"  CPU-seconds per GiB during the cold request (median): publisher {statistics.median(pub_cpu) / gib:.2f}, "
      f"nginx (origin) {statistics.median(ngx_cpu) / gib:.2f}; 2 cores give {2 * c / gib:.2f} per GiB in that time")
print(f"  same hashing from the page cache (branchcache hash, no network): {hash_file:.2f} s, {o / hash_file:.2f}x openssl "
      f"(identical content information)")
print(f"warm peerdist request (304 revalidation + cached CI, {ci} B body): "
      f"median {statistics.median(warm):.2f} ms, min {warm[0]:.2f} ms, max {warm[-1]:.2f} ms over {len(warm)}")
print(f"CI overhead: {ci} bytes for {size_mib} MiB = {ci * 1024 / size_mib:.0f} bytes/GiB "
      f"({ci / (size_mib * 1024 * 1024) * 100:.4f} %)")
print(f"identity pass-through: {float(through) / 1e6:.0f} MB/s via publisher vs {float(direct) / 1e6:.0f} MB/s nginx direct")
PY

#!/usr/bin/env bash
# Publisher benchmark: one 1 GiB object served by nginx on loopback, the
# publisher (release build) in front of it.
#
#   benches/publisher.sh            # SIZE_MIB=1024 WARM_RUNS=20 by default
#   BIN=/path/to/branchcache benches/publisher.sh   # use that binary, do not build
#                                   # (unset or target/release/branchcache: cargo build --release first)
#
# Prints, in one run:
#   - cold: time of the first peerdist request (origin read + hashing + CI)
#     next to `openssl dgst -sha256` of the same file (page cache warm);
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

t0=$(date +%s.%N)
openssl dgst -sha256 "$WORK/www/obj.bin" > /dev/null
t1=$(date +%s.%N)
openssl_s=$(echo "$t1 - $t0" | bc -l 2>/dev/null || python3 -c "print($t1 - $t0)")

cold_s=$(curl -s -o "$WORK/ci.bin" -w '%{time_total}' "${PD[@]}" "http://127.0.0.1:$PUB_PORT/obj.bin")
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

python3 - "$SIZE_MIB" "$cold_s" "$openssl_s" "$ci_bytes" "$direct" "$through" "${warm[@]}" <<'PY'
import statistics, sys
size_mib, cold, ossl, ci, direct, through = sys.argv[1:7]
warm = sorted(float(x) * 1000 for x in sys.argv[7:])
size_mib, cold, ossl, ci = int(size_mib), float(cold), float(ossl), int(ci)
mb = size_mib * 1024 * 1024 / 1e6
print(f"cold first peerdist request, {size_mib} MiB: {cold:.2f} s ({mb / cold:.0f} MB/s); "
      f"openssl dgst -sha256: {ossl:.2f} s ({mb / ossl:.0f} MB/s); publisher is {ossl / cold:.2f}x openssl")
print(f"warm peerdist request (304 revalidation + cached CI, {ci} B body): "
      f"median {statistics.median(warm):.2f} ms, min {warm[0]:.2f} ms, max {warm[-1]:.2f} ms over {len(warm)}")
print(f"CI overhead: {ci} bytes for {size_mib} MiB = {ci * 1024 / size_mib:.0f} bytes/GiB "
      f"({ci / (size_mib * 1024 * 1024) * 100:.4f} %)")
print(f"identity pass-through: {float(through) / 1e6:.0f} MB/s via publisher vs {float(direct) / 1e6:.0f} MB/s nginx direct")
PY

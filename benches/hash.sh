#!/usr/bin/env bash
# End-to-end hashing throughput of `branchcache hash` against `openssl dgst` on the same file.
#
# usage: benches/hash.sh [SIZE_MIB]        (default 1024 = 1 GiB; file in $TMPDIR or /tmp)
#        BIN=/path/to/branchcache benches/hash.sh [SIZE_MIB]   (use that binary, do not build;
#        unset or target/release/branchcache: cargo build --release first)
#
# One run, in this order: openssl dgst -sha256, branchcache v1 SHA-256 (all cores, --threads 1),
# openssl dgst -sha512, branchcache v2 (all cores, --threads 1). The file is read once first so
# every command hashes from the page cache. Prints wall time, MB/s (10^6 B/s) by wall clock and
# per CPU-second (user+sys), and the ratios the targets are stated in:
#   v1 all cores >= 1.7x openssl -sha256, v1 --threads 1 >= 0.9x; v2 likewise vs -sha512.
# CPU-heavy: run it once, on a quiet machine if you can, and note the load average it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

size_mib=${1:-1024}
bench_workdir branchcache-hash-bench "${TMPDIR:-/tmp}"
file=$WORK/content.bin
key=$WORK/server.key

command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
printf 'branchcache bench key' >"$key"
# Incompressible, reproducible content: AES-CTR keystream over zeros.
head -c $((size_mib * 1024 * 1024)) /dev/zero |
  openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:branchcache-bench >"$file"
bytes=$(stat -c %s "$file")

bench_bin
cat "$file" >/dev/null # warm the page cache

declare -A wall
TIMEFORMAT='%R %U %S'
measure() { # name cmd...
  local name=$1 t w u s
  shift
  t=$({ time "$@" >/dev/null; } 2>&1 | tail -n 1)
  read -r w u s <<<"$t"
  wall[$name]=$w
  awk -v n="$name" -v b="$bytes" -v w="$w" -v u="$u" -v s="$s" 'BEGIN {
    printf "%-34s %7.2f s  %7.0f MB/s wall  %7.0f MB/s per CPU-second (cpu %.2f s)\n",
      n, w, b / w / 1e6, b / (u + s) / 1e6, u + s }'
}

echo "file: $bytes bytes, $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no), avx2: $(grep -qw avx2 /proc/cpuinfo && echo yes || echo no), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(openssl version), branchcache $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
measure "openssl dgst -sha256" openssl dgst -sha256 "$file"
measure "branchcache hash v1 sha256 (all)" "$BIN" hash "$file" --key-file "$key" --content-version 1
measure "branchcache hash v1 sha256 (1 thr)" "$BIN" hash "$file" --key-file "$key" --content-version 1 --threads 1
measure "openssl dgst -sha512" openssl dgst -sha512 "$file"
measure "branchcache hash v2 (all)" "$BIN" hash "$file" --key-file "$key" --content-version 2
measure "branchcache hash v2 (1 thr)" "$BIN" hash "$file" --key-file "$key" --content-version 2 --threads 1
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

ratio() { # label numerator-run denominator-run target
  awk -v l="$1" -v a="${wall[$3]}" -v b="${wall[$2]}" -v t="$4" 'BEGIN {
    r = a / b; printf "%-44s %5.2fx  (target >= %sx) %s\n", l, r, t, (r >= t ? "ok" : "MISSED") }'
}
echo
ratio "v1 all cores vs openssl -sha256" "branchcache hash v1 sha256 (all)" "openssl dgst -sha256" 1.7
ratio "v1 --threads 1 vs openssl -sha256" "branchcache hash v1 sha256 (1 thr)" "openssl dgst -sha256" 0.9
ratio "v2 all cores vs openssl -sha512" "branchcache hash v2 (all)" "openssl dgst -sha512" 1.7
ratio "v2 --threads 1 vs openssl -sha512" "branchcache hash v2 (1 thr)" "openssl dgst -sha512" 0.9

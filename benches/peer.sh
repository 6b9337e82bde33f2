#!/usr/bin/env bash
# Peer-to-peer benchmark (issue 6): a warm object moves between two daemons
# over MS-PCCRR on loopback, compared with a plain HTTP GET from nginx.
#
#   benches/peer.sh                 # SIZE_MIB=1024 by default
#   BIN=target/release/branchcache benches/peer.sh   # use that binary, no build
#
# Scenario, all real processes (release build), all traffic on 127.0.0.1:
#   nginx ── publisher daemon (peerdist content information)
#              ├── daemon A: [proxy] upstream = publisher, [peer] listener;
#              │   warmed with one download, then holds every block
#              └── daemon B: [proxy] upstream = publisher, peers = [A];
#                  empty store: every block comes from A (GETBLKS, AES-CBC
#                  encrypt on A, decrypt + SHA-256 verify on B)
#
# Prints, in one run:
#   - peer-to-peer: `curl -o /dev/null` of the object through cold B, next to
#     `curl -o /dev/null` straight from nginx (page cache warm); ratio
#     nginx/peer (time of nginx over time of peer), target >= 0.7x; and next
#     to a plain (identity) GET of the same object through the publisher
#     (the issue allows either anchor), ratio publisher/peer;
#   - CPU-seconds (user + sys, from /proc/PID/stat) each daemon spent during
#     the peer transfer, per GiB: A (server: store read, AES-CBC encrypt),
#     B (client: decrypt, SHA-256 verify, store write, serving curl); and the
#     publisher's during its GET. On a shared machine these are far steadier
#     than the wall-clock ratios;
#   - the same object through B again (served from B's store), for context;
#   - B's counters: origin body bytes (must be 0) and peer bytes (must be the
#     object size); the sha256 of a download through B against the file's.
#
# Optional, for profiling: PEER_BENCH_PERF=FILE records `perf record -g` of
# daemons A and B during the peer transfer; PEER_BENCH_DUMP=PREFIX saves both
# daemons' /metrics to PREFIX.a and PREFIX.b.
#
# Origin: nginx (installed from apt when missing), one worker, sendfile, a
# private prefix under a temp dir. Needs curl, sha256sum, python3 (free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SIZE_MIB=${SIZE_MIB:-1024}
TARGET=0.7

bench_tools nginx

bench_workdir bc-peer-bench

ORIGIN_PORT=$(free_port)
PUB_PORT=$(free_port); PUB_ADMIN=$(free_port)
A_PORT=$(free_port); A_PEER=$(free_port); A_ADMIN=$(free_port)
B_PORT=$(free_port); B_ADMIN=$(free_port)

bench_bin --build-only-if-unset

mkdir -p "$WORK/www"
echo "generating ${SIZE_MIB} MiB object…" >&2
SIZE=$((SIZE_MIB * 1024 * 1024))
head -c "$SIZE" /dev/urandom > "$WORK/www/obj.bin"
chmod 644 "$WORK/www/obj.bin"
want_sha=$(sha256sum "$WORK/www/obj.bin" | cut -d' ' -f1)

nginx_start "$WORK/nginx" "worker_processes 1;" 256 "tcp_nopush on;" <<CONF
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; }
CONF

# daemon NAME ADMIN_PORT ROLE_TOML: one daemon with its own store, its log in
# $WORK/NAME.log, its pid in DAEMON_PID.
daemon() {
  bc_daemon "$1" "$2" "max_size = \"$((SIZE_MIB * 2 + 256)) MiB\"" "$3" 2>"$WORK/$1.log"
}

daemon pub "$PUB_ADMIN" "$(publisher_toml "$PUB_PORT" "$ORIGIN_PORT")"
pub_pid=$DAEMON_PID
daemon a "$A_ADMIN" "$(proxy_toml "$A_PORT" "$PUB_PORT")
[peer]
listen = \"127.0.0.1:$A_PEER\"
discovery = false"
a_pid=$DAEMON_PID
daemon b "$B_ADMIN" "$(proxy_toml "$B_PORT" "$PUB_PORT")
peers = [\"127.0.0.1:$A_PEER\"]"
b_pid=$DAEMON_PID

wait_for 200 "http://127.0.0.1:$PUB_ADMIN/readyz" "http://127.0.0.1:$A_ADMIN/readyz" \
  "http://127.0.0.1:$B_ADMIN/readyz" -r 0-0 "http://127.0.0.1:$ORIGIN_PORT/obj.bin" || true

# metric PORT NAME LABELS: the sample's value (0 when absent).
metric() {
  curl -sf "http://127.0.0.1:$1/metrics" \
    | awk -v n="$2" -v l="$3" '$1 == n l { v = $2 } END { print (v == "" ? 0 : v) }'
}

BLOCKS=$(( (SIZE + 65535) / 65536 ))
echo "warming daemon A (origin → publisher → A)…" >&2
curl -sf -o /dev/null "http://127.0.0.1:$A_PORT/obj.bin"
for _ in $(seq 600); do
  [ "$(metric "$A_ADMIN" branchcache_store_blocks '')" -ge "$BLOCKS" ] && break
  sleep 0.1
done
a_blocks=$(metric "$A_ADMIN" branchcache_store_blocks '')
[ "$a_blocks" -ge "$BLOCKS" ] || { echo "daemon A holds $a_blocks of $BLOCKS blocks" >&2; exit 1; }

# cpu_ticks PID: user + sys clock ticks the process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
# thread_ticks PID: "tid name ticks" per thread (names may repeat: summed later).
thread_ticks() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(tr ' ' '_' < "$t/comm")" "$(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)"
  done
}

# Page cache warm for nginx; the anchor GETs first, then the contender.
cat "$WORK/www/obj.bin" > /dev/null
load_before=$(cat /proc/loadavg)
nginx_s=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$ORIGIN_PORT/obj.bin")
pub0=$(cpu_ticks "$pub_pid")
pub_s=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PUB_PORT/obj.bin")
pub1=$(cpu_ticks "$pub_pid")
wan_before=$(metric "$B_ADMIN" branchcache_proxy_wan_bytes_total '{kind="body"}')
a_served_before=$(metric "$A_ADMIN" branchcache_retrieval_bytes_served_total '')
if [ -n "${PEER_BENCH_PERF:-}" ]; then
  # Optional: profile both daemons during the peer transfer (perf report -i FILE).
  perf record -q -F "${PEER_BENCH_PERF_FREQ:-499}" -g -p "$a_pid,$b_pid" -o "$PEER_BENCH_PERF" 2>/dev/null &
  perf_pid=$!
  sleep 0.5
fi
thread_ticks "$a_pid" > "$WORK/a.threads0"; thread_ticks "$b_pid" > "$WORK/b.threads0"
a0=$(cpu_ticks "$a_pid"); b0=$(cpu_ticks "$b_pid")
peer_s=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$B_PORT/obj.bin")
a1=$(cpu_ticks "$a_pid"); b1=$(cpu_ticks "$b_pid")
thread_ticks "$a_pid" > "$WORK/a.threads1"; thread_ticks "$b_pid" > "$WORK/b.threads1"
if [ -n "${PEER_BENCH_PERF:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
warm_s=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$B_PORT/obj.bin")
load_after=$(cat /proc/loadavg)

wan_body=$(metric "$B_ADMIN" branchcache_proxy_wan_bytes_total '{kind="body"}')
peer_bytes=$(metric "$B_ADMIN" branchcache_proxy_served_bytes_total '{source="peer"}')
a_served=$(metric "$A_ADMIN" branchcache_retrieval_bytes_served_total '')
[ -z "${PEER_BENCH_DUMP:-}" ] || { curl -sf "http://127.0.0.1:$B_ADMIN/metrics" > "$PEER_BENCH_DUMP.b"; curl -sf "http://127.0.0.1:$A_ADMIN/metrics" > "$PEER_BENCH_DUMP.a"; }
got_sha=$(curl -sf "http://127.0.0.1:$B_PORT/obj.bin" | sha256sum | cut -d' ' -f1)

python3 - "$SIZE_MIB" "$nginx_s" "$peer_s" "$warm_s" "$wan_body" "$peer_bytes" "$SIZE" \
  "$want_sha" "$got_sha" "$TARGET" "$load_before" "$load_after" "$pub_s" \
  "$((a1 - a0))" "$((b1 - b0))" "$((pub1 - pub0))" "$CLK_TCK" "$wan_before" \
  "$((${a_served%.*} - ${a_served_before%.*}))" "$WORK" <<'PY'
import sys
from collections import defaultdict
(size_mib, nginx, peer, warm, wan, peer_bytes, size, want, got, target,
 lb, la, pub, a_ticks, b_ticks, pub_ticks, clk_tck, wan_before, a_served) = sys.argv[1:20]
nginx, peer, warm, target, pub = float(nginx), float(peer), float(warm), float(target), float(pub)
wan, peer_bytes, size = int(float(wan)), int(float(peer_bytes)), int(size)
wan_before, a_served = int(float(wan_before)), int(a_served)
work = sys.argv[20]

def by_thread(name):
    """CPU ticks per thread name between the two snapshots (threads that
    exited in between are lost; the process totals above include them)."""
    def load(f):
        out = {}
        for line in open(f"{work}/{name}.threads{f}"):
            tid, comm, ticks = line.split()
            out[tid] = (comm, int(ticks))
        return out
    before, after = load(0), load(1)
    sums = defaultdict(int)
    for tid, (comm, ticks) in after.items():
        sums[comm] += ticks - before.get(tid, (comm, 0))[1]
    return sums
gib = size / 2**30
cpu = lambda t: int(t) / int(clk_tck) / gib
mb = size / 1e6
label = f"{int(size_mib) // 1024} GiB" if int(size_mib) % 1024 == 0 else f"{size_mib} MiB"
ratio = nginx / peer
p2p = wan == 0 and wan_before == 0 and peer_bytes == size and a_served >= size
ok = ratio >= target and p2p and want == got
print(f"load average before: {lb}; after: {la}")
print(f"peer-to-peer {label}: {peer:.2f} s ({mb / peer:.0f} MB/s); nginx GET: {nginx:.2f} s "
      f"({mb / nginx:.0f} MB/s); ratio nginx/peer = {ratio:.2f}x (target >= {target}x) "
      f"{'ok' if ok else 'MISSED'}")
print(f"publisher GET (identity, from nginx): {pub:.2f} s ({mb / pub:.0f} MB/s); "
      f"ratio publisher/peer = {pub / peer:.2f}x (target >= {target}x) "
      f"{'ok' if pub / peer >= target and p2p and want == got else 'MISSED'}")
print(f"CPU-seconds per GiB during the peer transfer: A (server) {cpu(a_ticks):.2f}, "
      f"B (client) {cpu(b_ticks):.2f}, A + B {cpu(int(a_ticks) + int(b_ticks)):.2f}; "
      f"publisher during its GET {cpu(pub_ticks):.2f}")
for name, who in (("a", "A"), ("b", "B")):
    parts = sorted(by_thread(name).items(), key=lambda kv: -kv[1])
    print(f"  {who} by thread (CPU-s per GiB): "
          + ", ".join(f"{comm} {cpu(t):.2f}" for comm, t in parts if t > 0))
print(f"through B again (B's store): {warm:.2f} s ({mb / warm:.0f} MB/s); "
      f"ratio nginx/store = {nginx / warm:.2f}x")
print(f"B counters: origin body bytes {wan} (want 0), peer bytes {peer_bytes} (want {size}); "
      f"A served {a_served} plaintext bytes to peers during the transfer (want >= {size}); "
      f"sha256 {'match' if want == got else f'MISMATCH {got} != {want}'}")
sys.exit(0 if (p2p and want == got) else 1)
PY

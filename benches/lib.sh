# shellcheck shell=bash
# Shared setup for the shell benches (proxy.sh, peer.sh, publisher.sh, load.sh,
# hash.sh), so each piece of it is written once. Each script does
#   set -euo pipefail
#   cd "$(dirname "$0")/.."
#   . benches/lib.sh
# and the functions below are safe under `set -euo pipefail`:
#
#   bench_tools PROGRAM...   apt-get installs each PROGRAM (nginx, wrk) missing
#                            from PATH (nginx also counts when /usr/sbin/nginx
#                            exists); sets NGINX to the nginx binary.
#   bench_nofile             raises the open-file limit to 65536 (8192 when the
#                            hard limit is lower), for many connections.
#   bench_bin [--build-only-if-unset]
#                            sets BIN (default target/release/branchcache) and,
#                            when BIN is unset or empty or the default path, runs
#                            `cargo build --release --locked --quiet` first; with
#                            --build-only-if-unset an explicit BIN, the default
#                            path included, never builds (peer.sh's documented
#                            `BIN=target/release/branchcache`: no build).
#   bench_workdir NAME [PARENT]
#                            WORK=$(mktemp -d PARENT/NAME.XXXXXX) (PARENT: /tmp),
#                            mode 755 so nginx workers can read it; pids=(); an
#                            EXIT trap (bench_cleanup) kills every pid in pids,
#                            waits for them and removes WORK.
#   free_port                prints a free TCP port on 127.0.0.1.
#   nginx_start DIR MAIN CONNECTIONS HTTP < BODY
#                            writes DIR.conf and starts nginx with it and prefix
#                            DIR as a background job (daemon off, so it stays
#                            our child; its pid is NGINX_PID and is added to pids). Config: `daemon off;`,
#                            MAIN (main-context directives, e.g. "worker_processes
#                            1;"), error log and pid in DIR, `events { worker_connections
#                            CONNECTIONS; }`, and `http { access_log off; sendfile
#                            on;` HTTP (further http directives, e.g. "tcp_nopush
#                            on;"), the *_temp_path dirs in DIR, `default_type
#                            application/octet-stream;`, then BODY (stdin: server,
#                            upstream, … blocks) `}`.
#   bc_daemon NAME ADMIN_PORT STORE_LINES ROLES
#                            writes $WORK/NAME.toml: [store] path = $WORK/NAME-store
#                            plus STORE_LINES (may be empty), [admin] on
#                            127.0.0.1:ADMIN_PORT, [log] level = "warn", then ROLES
#                            (the role tables); starts `$BIN run` with it in the
#                            background (pid added to pids and left in DAEMON_PID).
#                            Redirect the call's stderr to send the daemon's log
#                            elsewhere.
#   publisher_toml PORT ORIGIN_PORT
#                            prints a [publisher] table for bc_daemon's ROLES:
#                            listen on 127.0.0.1:PORT, upstream the origin at
#                            http://127.0.0.1:ORIGIN_PORT, secret_file $WORK/secret
#                            (more publisher keys may follow it).
#   proxy_toml PORT UPSTREAM_PORT
#                            prints a [proxy] table: listen on 127.0.0.1:PORT,
#                            upstream http://127.0.0.1:UPSTREAM_PORT (more proxy
#                            keys may follow it).
#   wait_for TRIES [-r RANGE] URL [[-r RANGE] URL ...]
#                            polls every 0.1 s until each URL answers 2xx to
#                            `curl -sf` (with `-r RANGE` when given, to probe a
#                            large object by its first byte); returns 1 after
#                            TRIES rounds without all of them answering.

bench_tools() {
  local need=() p
  for p in "$@"; do
    if [ "$p" = nginx ] && [ -x /usr/sbin/nginx ]; then continue; fi
    command -v "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}…" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

bench_nofile() {
  ulimit -n 65536 2>/dev/null || ulimit -n 8192
}

# shellcheck disable=SC2120 # the option is optional: most scripts pass none
bench_bin() {
  local default=target/release/branchcache build=no
  if [ -z "${BIN:-}" ]; then
    BIN=$default
    build=yes
  elif [ "$BIN" = "$default" ] && [ "${1:-}" != --build-only-if-unset ]; then
    build=yes
  fi
  if [ "$build" = yes ]; then
    echo "building release binary…" >&2
    cargo build --release --locked --quiet
  fi
}

bench_workdir() {
  WORK=$(mktemp -d "${2:-/tmp}/$1.XXXXXX")
  chmod 755 "$WORK"
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nginx_start() {
  local dir=$1 main=$2 connections=$3 http=$4 body
  body=$(cat)
  mkdir -p "$dir"
  cat > "$dir.conf" <<CONF
daemon off;
$main
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections $connections; }
http {
  access_log off;
  sendfile on;
  $http
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  default_type application/octet-stream;
$body
}
CONF
  "$NGINX" -p "$dir" -c "$dir.conf" &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
}

bc_daemon() {
  local name=$1 admin=$2 store=$3 roles=$4
  cat > "$WORK/$name.toml" <<CONF
[store]
path = "$WORK/$name-store"
$store
[admin]
listen = "127.0.0.1:$admin"
[log]
level = "warn"
$roles
CONF
  "$BIN" run --config "$WORK/$name.toml" &
  DAEMON_PID=$!
  pids+=("$DAEMON_PID")
}

publisher_toml() {
  printf '[publisher]\nlisten = "127.0.0.1:%s"\nupstream = "http://127.0.0.1:%s"\nsecret_file = "%s"\n' \
    "$1" "$2" "$WORK/secret"
}

proxy_toml() {
  printf '[proxy]\nlisten = "127.0.0.1:%s"\nupstream = "http://127.0.0.1:%s"\n' "$1" "$2"
}

wait_for() {
  local tries=$1 i
  shift
  for ((i = 0; i < tries; i++)); do
    urls_answer "$@" && return 0
    sleep 0.1
  done
  return 1
}

# urls_answer [-r RANGE] URL ...: whether every URL answers now (wait_for's probe).
urls_answer() {
  while [ $# -gt 0 ]; do
    if [ "$1" = -r ]; then
      curl -sf -o /dev/null -r "$2" "$3" || return 1
      shift 3
    else
      curl -sf -o /dev/null "$1" || return 1
      shift
    fi
  done
}

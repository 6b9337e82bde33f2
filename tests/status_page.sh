#!/usr/bin/env bash
# Render the admin status page (http://ADMIN/) in headless Chromium and check
# that the numbers it shows match the daemon's /status JSON.
#
# usage: tests/status_page.sh HOST:PORT
# exit:  0 the page renders and matches, 1 mismatch or no render,
#        77 chromium is missing and cannot be installed (callers skip).
#
# STATUS_PAGE_SCREENSHOT=FILE.png also saves a screenshot.
# Installs Debian's `chromium` package when it is missing (needs root and apt).
# The daemon must be idle while this runs (the page and /status are compared).
set -euo pipefail
admin=${1:?usage: $0 HOST:PORT}

chromium_bin() {
  for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

if ! bin=$(chromium_bin); then
  echo "status_page: chromium not found; installing Debian's chromium package" >&2
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; then
      apt-get update -qq >&2 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 || true
    fi
  fi
  if ! bin=$(chromium_bin); then
    echo "status_page: SKIP: chromium is not installed and could not be installed (need root + apt-get)" >&2
    exit 77
  fi
fi
command -v python3 >/dev/null 2>&1 || { echo "status_page: python3 is required" >&2; exit 1; }

profile=$(mktemp -d)
dom=$(mktemp)
trap 'rm -rf "$profile" "$dom"' EXIT

"$bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --dump-dom "http://$admin/" >"$dom" 2>"$profile/chromium.log" || {
  echo "status_page: chromium failed:" >&2
  tail -20 "$profile/chromium.log" >&2
  exit 1
}

# Optional: STATUS_PAGE_SCREENSHOT=/path/page.png also saves what the page looks like.
if [ -n "${STATUS_PAGE_SCREENSHOT:-}" ]; then
  "$bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1200,1300 \
    --screenshot="$STATUS_PAGE_SCREENSHOT" "http://$admin/" 2>>"$profile/chromium.log" || true
fi

python3 - "$admin" "$dom" <<'PY'
import json, sys, urllib.request
from html.parser import HTMLParser

admin, dom_file = sys.argv[1], sys.argv[2]
dom = open(dom_file, encoding="utf-8").read()
status = json.load(urllib.request.urlopen(f"http://{admin}/status", timeout=10))
raw = urllib.request.urlopen(f"http://{admin}/", timeout=10)
page = raw.read().decode()
csp = raw.headers.get("content-security-policy", "")

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

class Collect(HTMLParser):
    """Elements by id (attributes + text), chart samples, request rows."""
    def __init__(self):
        super().__init__()
        self.ids, self.samples, self.rows, self.stack, self.peers = {}, [], [], [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        el = {"tag": tag, "attrs": a, "text": ""}
        if tag not in VOID:
            self.stack.append(el)
        if "id" in a:
            self.ids[a["id"]] = el
        if tag == "rect" and a.get("class") == "sample":
            self.samples.append(a)
        if tag == "tr" and a.get("class") == "peer":
            self.peers.append(el)
        if tag == "tr" and a.get("class") == "req":
            el["cells"] = []
            self.rows.append(el)
        if tag == "td" and self.rows and self.rows[-1] in self.stack:
            self.rows[-1]["cells"].append(a)
    def handle_endtag(self, tag):
        if not any(el["tag"] == tag for el in self.stack):
            return
        while self.stack:
            el = self.stack.pop()
            if el["tag"] == tag:
                break
    def handle_data(self, data):
        for el in self.stack:
            el["text"] += data

c = Collect()
c.feed(dom)
failures = []
def check(what, got, want):
    if got != want:
        failures.append(f"{what}: page shows {got!r}, /status says {want!r}")

def value(id_):
    el = c.ids.get(id_)
    if el is None:
        failures.append(f"#{id_} missing from the rendered page")
        return None
    return el["attrs"].get("data-value")

def text(id_):
    el = c.ids.get(id_)
    return None if el is None else el["text"].strip()

if 'data-rendered="1"' not in dom:
    failures.append("the page script did not render (body lacks data-rendered)")
check("roles", value("roles"), ",".join(status["roles"]))
st = status["store"]
check("store fill", float(value("store-fill") or "nan"), st["fill_ratio"])
check("store fill text", text("store-fill"), f"{st['fill_ratio'] * 100:.1f} %")
check("store used", int(value("store-used") or -1), st["used_bytes"])
check("store max", int(value("store-max") or -1), st["max_bytes"])
check("store blocks", int(value("store-blocks") or -1), st["blocks"])
hr = status["hit_ratio"]
if hr is None:
    check("hit ratio", value("hit-ratio"), "")
else:
    check("hit ratio", float(value("hit-ratio") or "nan"), hr)
    check("hit ratio text", text("hit-ratio"), f"{hr * 100:.1f} %")
check("WAN saved", int(value("wan-saved") or -1), status["wan"]["saved"])
check("WAN total", int(value("wan-total") or -1), status["wan"]["total"])
check("bytes served", int(value("bytes-served") or -1), status["bytes_served"])
for k in ("store", "peer", "hosted_cache", "origin"):
    check(f"bytes from {k}", int(value(f"src-{k}") or -1), status["bytes_by_source"][k])
for k in ("hit", "partial", "miss", "bypass", "error"):
    check(f"requests {k}", int(value(f"req-{k}") or -1), status["requests"][k])

# Chart: one rect per minute and source, each with the minute's bytes.
hist = status["history"]
check("chart samples", len(c.samples), 4 * len(hist))
got = {(s["data-source"], int(s["data-minutes-ago"])): int(s["data-bytes"]) for s in c.samples}
for m in hist:
    for k, n in m["bytes"].items():
        if got.get((k, m["minutes_ago"])) != n:
            failures.append(f"chart {k} {m['minutes_ago']} min ago: page {got.get((k, m['minutes_ago']))}, /status {n}")
nonzero = sum(1 for v in got.values() if v > 0)

# Recent requests, newest first.
rec = status["recent_requests"]
check("recent request rows", len(c.rows), len(rec))
for row, r in zip(c.rows, rec):
    check("request target", row["attrs"].get("data-target"), r["target"])
    check("request outcome", row["attrs"].get("data-outcome"), r["outcome"])
    cells = {a.get("data-source"): int(a["data-value"]) for a in row["cells"] if "data-source" in a}
    check("request bytes", cells, r["bytes"])

# Peers and the hosted cache: one row each, with their reachability.
book = ([status["hosted_cache"]] if status.get("hosted_cache") else []) + status.get("peers", [])
check("peer rows", len(c.peers), len(book))
for row, p in zip(c.peers, book):
    check("peer address", row["attrs"].get("data-address"), p["address"])
    check("peer role", row["attrs"].get("data-role"), p["role"])
    want = "" if p["reachable"] is None else str(p["reachable"]).lower()
    check(f"peer {p['address']} reachable", row["attrs"].get("data-reachable"), want)

# Self-contained: nothing loaded from elsewhere.
for needle in ('src="http', "href=\"http", "url(http", "@import"):
    if needle in page:
        failures.append(f"page references an external asset ({needle})")
if "default-src 'none'" not in csp:
    failures.append(f"no restrictive Content-Security-Policy: {csp!r}")

if failures:
    print("status_page: FAIL", file=sys.stderr)
    for f in failures:
        print("  " + f, file=sys.stderr)
    sys.exit(1)
print(f"status_page: ok (hit ratio {hr}, {len(rec)} recent requests, {len(c.peers)} peer rows, {nonzero} non-empty chart bars, "
      f"WAN saved {status['wan']['saved']} B)")
PY

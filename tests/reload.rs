//! SIGHUP reloads a real daemon's configuration: the origin URL, the store
//! bound, fixed peers, the hosted cache's address and the log level change
//! without a restart; a broken file changes nothing; a change that needs a
//! restart is reported and left alone. SIGTERM still drains and exits 0.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{content, free_port, http_get, Daemon, Origin};

struct Ports {
    admin: SocketAddr,
    publisher: SocketAddr,
    proxy: SocketAddr,
    peer: SocketAddr,
}

fn config(
    dir: &Path,
    p: &Ports,
    origin: SocketAddr,
    max_size: &str,
    level: &str,
    peers: &str,
    hosted_cache: SocketAddr,
) -> String {
    format!(
        "[store]\npath = {store:?}\nmax_size = \"{max_size}\"\n\
         [admin]\nlisten = \"{admin}\"\n\
         [log]\nlevel = \"{level}\"\n\
         [publisher]\nlisten = \"{publisher}\"\nupstream = \"http://{origin}\"\nsecret_file = {secret:?}\n\
         [proxy]\nlisten = \"{proxy}\"\nupstream = \"http://{publisher}\"\npeers = [{peers}]\n\
         [peer]\nlisten = \"{peer}\"\ndiscovery = false\n\
         [upstream_hosted_cache]\naddress = \"{hosted_cache}\"\noffer = false\n",
        store = dir.join("store"),
        secret = dir.join("secret"),
        admin = p.admin,
        publisher = p.publisher,
        proxy = p.proxy,
        peer = p.peer,
    )
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(admin, "/status").expect("admin answers");
    assert_eq!(code, 200);
    serde_json::from_slice(&body).unwrap()
}

fn metric(admin: SocketAddr, line_start: &str) -> u64 {
    let (_, body) = http_get(admin, "/metrics").expect("admin answers");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Poll `cond` for up to 30 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_applies_what_can_change_and_keeps_the_rest() {
    let (a, b) = (Origin::start(), Origin::start());
    let (on_a, on_b) = (content(300 * 1024, 1), content(200 * 1024 + 3, 2));
    a.put("/obj", on_a.clone());
    b.put("/obj", on_b.clone());
    b.put("/only-b", on_b.clone());
    let dir = tempfile::tempdir().unwrap();
    let port = |_| format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = Ports {
        admin: port(0),
        publisher: port(0),
        proxy: port(0),
        peer: port(0),
    };
    let dead: SocketAddr = port(0);
    let cfg = dir.path().join("branchcache.toml");
    std::fs::write(
        &cfg,
        config(dir.path(), &p, a.addr, "64 MiB", "warn", "", dead),
    )
    .unwrap();
    let d = Daemon::start(&cfg, p.admin);

    // Before: origin A, 64 MiB, no fixed peer, the hosted cache unreachable.
    let (code, body) = http_get(p.proxy, "/obj").unwrap();
    assert_eq!((code, body == on_a), (200, true));
    assert_eq!(http_get(p.proxy, "/only-b").unwrap().0, 404);
    let s = status(p.admin);
    assert_eq!(s["store"]["max_bytes"], 64 << 20);
    assert_eq!(s["peers"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["hosted_cache"]["address"], dead.to_string());
    wait_until("the hosted cache probe", || {
        status(p.admin)["hosted_cache"]["reachable"] == false
    });

    // Reload: origin B, 32 MiB, a fixed peer, the hosted cache now at this
    // daemon's own PCCRR listener (which answers), debug logs.
    let fixed = format!("\"127.0.0.1:{}\"", free_port());
    std::fs::write(
        &cfg,
        config(dir.path(), &p, b.addr, "32 MiB", "debug", &fixed, p.peer),
    )
    .unwrap();
    d.signal("-HUP");
    wait_until("the reload", || {
        metric(p.admin, "branchcache_config_reloads_total{result=\"ok\"}") == 1
    });
    let s = status(p.admin);
    assert_eq!(s["store"]["max_bytes"], 32 << 20, "{s}");
    assert_eq!(
        format!("\"{}\"", s["peers"][0]["address"].as_str().unwrap()),
        fixed
    );
    assert_eq!(s["peers"][0]["configured"], true);
    assert_eq!(s["hosted_cache"]["address"], p.peer.to_string(), "{s}");
    wait_until("the new hosted cache to answer the probe", || {
        status(p.admin)["hosted_cache"]["reachable"] == true
    });
    // The publisher now fronts origin B (a path only B has answers).
    let (code, body) = http_get(p.proxy, "/only-b").unwrap();
    assert_eq!((code, body == on_b), (200, true));
    // Listeners did not move.
    assert_eq!(s["listeners"]["proxy"], p.proxy.to_string());

    // A broken file: rejected, counted, the daemon keeps running as it was.
    std::fs::write(&cfg, "[store\nthis is not toml").unwrap();
    d.signal("-HUP");
    wait_until("the rejected reload", || {
        metric(
            p.admin,
            "branchcache_config_reloads_total{result=\"error\"}",
        ) == 1
    });
    assert_eq!(http_get(p.proxy, "/only-b").unwrap().0, 200);
    assert_eq!(status(p.admin)["store"]["max_bytes"], 32 << 20);

    // A listener change needs a restart: reported, not applied.
    let moved = config(dir.path(), &p, b.addr, "32 MiB", "debug", &fixed, p.peer).replace(
        &format!("listen = \"{}\"", p.proxy),
        &format!("listen = \"127.0.0.1:{}\"", free_port()),
    );
    std::fs::write(&cfg, moved).unwrap();
    d.signal("-HUP");
    wait_until("the restart-needed reload", || {
        metric(
            p.admin,
            "branchcache_config_reloads_total{result=\"restart_needed\"}",
        ) == 1
    });
    assert_eq!(http_get(p.proxy, "/only-b").unwrap().0, 200);

    // SIGTERM: clean exit; then read what it logged.
    let mut d = d;
    d.signal("-TERM");
    let code = d.child.wait().unwrap();
    assert!(code.success(), "{code}");
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    let (before, after) = log
        .split_once("SIGHUP: applied")
        .expect("the reload is logged");
    assert!(
        !before.contains("DEBUG"),
        "debug lines before the reload at level warn"
    );
    assert!(after.contains("DEBUG"), "no debug line after the reload");
    assert!(log.contains("configuration rejected"), "{log}");
    assert!(log.contains("takes effect after a restart"), "{log}");
}

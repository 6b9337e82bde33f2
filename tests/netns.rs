//! Multi-host proof of MS-PCCRD discovery with real daemons in Linux network
//! namespaces (needs root and `ip`; skipped with a message otherwise).
//!
//! ```text
//!   ns sw:  br0 (multicast snooping off)
//!             ├─ veth ── ns a: branchcache [proxy]+[peer]   198.18.0.1
//!             ├─ veth ── ns b: branchcache [proxy]+[peer]   198.18.0.2
//!             ├─ veth ── ns c: branchcache [proxy]+[peer]   198.18.0.3
//!             │            (+ aux0 198.19.0.3: a veth to nowhere, sorted first)
//!             └─ veth ── ns o: branchcache [publisher]      198.18.0.10
//!                              + plain file server on its 127.0.0.1:8000
//! ```
//!
//! A downloads an object through its proxy (origin → publisher → A). B then
//! downloads it with zero origin body bytes: its proxy gets the content
//! information from the publisher, finds A by multicast discovery and fetches
//! every block from A over MS-PCCRR. A is stopped; C downloads from B.
//!
//! The test process's own sockets (the file server's listener, the HTTP
//! clients) are created inside the namespaces by threads that `setns(2)`
//! into them; the daemons run under `ip netns exec`. Every namespace is
//! created here with this process's id in its name and deleted on every
//! exit path (a guard's `Drop`, which also runs when an assertion fails).
//! Addresses are from 198.18.0.0/15 (RFC 2544, for test networks) and exist
//! only inside these namespaces.

use std::convert::Infallible;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchcache::proto::pccrc::{hash_content, server_secret, HashAlgo, Version};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sched::{setns, CloneFlags};

const ORIGIN_IP: &str = "198.18.0.10";
const PUBLISHER_PORT: u16 = 8081;
const FILE_SERVER_PORT: u16 = 8000;
const PROXY_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9090;
/// Bound for every wait below; only reached when something is broken.
const GIVE_UP: Duration = Duration::from_secs(60);

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(cmd: &[&str]) {
    if let Err(e) = run(cmd) {
        panic!("{e}");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The namespaces of one test run; deleted (with their veths) on drop.
struct Lan {
    prefix: String,
    created: Vec<String>,
}

impl Lan {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn add_ns(&mut self, host: &str) {
        let ns = self.ns(host);
        must(&["ip", "netns", "add", &ns]);
        self.created.push(ns.clone());
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    }

    /// `sw` with a bridge, then one namespace per host, each with `eth0`
    /// on the bridge and `addr/24`.
    fn build(tag: &str, hosts: &[(&str, &str)]) -> Lan {
        let mut lan = Lan {
            prefix: format!("bc{}{tag}", std::process::id()),
            created: Vec::new(),
        };
        lan.add_ns("sw");
        let sw = lan.ns("sw");
        must(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (host, addr) in hosts {
            lan.add_ns(host);
            let ns = lan.ns(host);
            let port = format!("p-{host}");
            must(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        lan
    }

    /// A second interface for `host`, `aux0` with `addr/24`, whose other end
    /// is up in `sw` but on no bridge: whatever goes out there reaches nobody.
    /// `aux0` sorts before `eth0`, so a driver that sent Probes only on its
    /// first interface would never be heard.
    fn add_dead_end(&self, host: &str, addr: &str) {
        let sw = self.ns("sw");
        let ns = self.ns(host);
        let port = format!("x-{host}");
        must(&[
            "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "aux0", "netns",
            &ns,
        ]);
        must(&["ip", "-n", &sw, "link", "set", &port, "up"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "aux0",
        ]);
        must(&["ip", "-n", &ns, "link", "set", "aux0", "up"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Run `f` on a thread that has entered network namespace `ns`; sockets it
/// creates stay in that namespace.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// A `branchcache` process in a namespace; killed on drop.
struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(lan: &Lan, host: &'static str, dir: &Path, config: &str) -> Daemon {
        let cfg = dir.join(format!("{host}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join(format!("{host}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &lan.ns(host)])
            .arg(env!("CARGO_BIN_EXE_branchcache"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("BRANCHCACHE_LOG", "info,branchcache::discovery=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            name: host,
            child: Some(child),
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn check_alive(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!(
                "daemon {} exited early ({status}):\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        must(&["kill", "-TERM", &child.id().to_string()]);
        let deadline = Instant::now() + GIVE_UP;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exit status {status}", self.name);
                return;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- {} log tail ---\n{}", self.name, self.log_tail());
            }
        }
    }
}

/// The plain origin: one object, `ETag`, single ranges (with `If-Range`),
/// `If-None-Match` → 304; counts the body bytes it sends.
#[derive(Default)]
struct FileServer {
    data: Bytes,
    body_bytes: AtomicU64,
    requests: AtomicU64,
}

const ETAG: &str = "\"obj-1\"";

fn file_response(st: &FileServer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let h = req.headers();
    let base = Response::builder()
        .header(header::ETAG, ETAG)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if req.uri().path() != "/obj.bin" || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == ETAG) {
        return base.status(304).body(Full::new(Bytes::new())).unwrap();
    }
    let len = st.data.len() as u64;
    let if_range_ok = h.get(header::IF_RANGE).map_or(true, |v| v == ETAG);
    let range = h
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .filter(|_| if_range_ok);
    let (status, a, b) = match range {
        Some((a, b)) => {
            let a: u64 = a.parse().unwrap();
            let b: u64 = if b.is_empty() {
                len - 1
            } else {
                b.parse::<u64>().unwrap().min(len - 1)
            };
            (206, a, b)
        }
        None => (200, 0, len - 1),
    };
    let part = st.data.slice(a as usize..=b as usize);
    let mut resp = base.status(status);
    if status == 206 {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
    }
    if req.method() == Method::HEAD {
        return resp
            .header(header::CONTENT_LENGTH, part.len())
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    st.body_bytes.fetch_add(part.len() as u64, Ordering::SeqCst);
    resp.body(Full::new(part)).unwrap()
}

fn serve_files(listener: std::net::TcpListener, st: Arc<FileServer>) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = file_response(&st, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// One GET over a fresh connection made from inside `ns`.
async fn get(ns: &str, addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), String> {
    let stream = in_ns(ns, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .map_err(|e| format!("connect {addr} in {ns}: {e}"))?;
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header(header::HOST, "files.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(GIVE_UP, tx.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = tokio::time::timeout(GIVE_UP, resp.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

fn admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT))
}

async fn metrics(lan: &Lan, host: &str) -> String {
    let (status, body) = get(&lan.ns(host), admin(), "/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).unwrap()
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn wait_ready(lan: &Lan, d: &mut Daemon) {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        if let Ok((StatusCode::OK, _)) = get(&lan.ns(d.name), admin(), "/readyz").await {
            return;
        }
        d.check_alive();
        assert!(Instant::now() < deadline, "{} never became ready", d.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `host`'s store holds `blocks` blocks (the proxy writes behind).
async fn wait_stored(lan: &Lan, host: &str, blocks: u64) {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let m = metrics(lan, host).await;
        if metric(&m, "branchcache_store_blocks ") >= blocks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never stored {blocks} blocks:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn branch_config(dir: &Path, host: &str, peer: &str) -> String {
    format!(
        "[store]\npath = {:?}\n\
         [admin]\nlisten = \"127.0.0.1:{ADMIN_PORT}\"\n\
         [proxy]\nlisten = \"127.0.0.1:{PROXY_PORT}\"\nupstream = \"http://{ORIGIN_IP}:{PUBLISHER_PORT}\"\n\
         [peer]\n{peer}\n",
        dir.join(format!("store-{host}"))
    )
}

fn content(len: usize) -> Bytes {
    let mut x: u32 = 0x9E37_79B9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Whether this host can run the scenario; says why not.
fn can_run() -> bool {
    if !is_root() {
        eprintln!("skipped: the network-namespace test needs root");
        return false;
    }
    if run(&["ip", "-V"]).is_err() {
        eprintln!("skipped: the network-namespace test needs `ip` (iproute2)");
        return false;
    }
    true
}

/// v1 content information: one segment of 49 blocks. Every branch listens
/// on IPv4 only; C names its LAN interface explicitly (leaving out `aux0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_between_real_daemons_in_network_namespaces() {
    if !can_run() {
        return;
    }
    // 3 MiB + a partial last block.
    let data = content(3 * 1024 * 1024 + 4321);
    let blocks = data.len().div_ceil(64 * 1024) as u64;
    let peer_c = "listen = \"0.0.0.0:8082\"\ninterfaces = [\"eth0\"]";
    scenario("v1", 1, data, blocks, peer_c).await;
}

/// v2 content information: many small segments (one discovery query each,
/// found with v1 Probes for v2 ids). C listens dual-stack (`[::]`), so its
/// discovery runs on IPv4 and IPv6 while A and B answer on IPv4, and takes
/// the default interfaces, `aux0` and `eth0`: its Probes must go out on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_content_and_a_dual_stack_peer_in_network_namespaces() {
    if !can_run() {
        return;
    }
    let data = content(1024 * 1024 + 777);
    let ks = server_secret(HashAlgo::Sha512Trunc, b"segment count only");
    let segments = hash_content(Version::V2, HashAlgo::Sha512Trunc, &ks, &data)
        .segments
        .len() as u64;
    assert!(segments > 4, "want several v2 segments, got {segments}");
    eprintln!("v2: {segments} segments");
    scenario("v2", 2, data, segments, "listen = \"[::]:8082\"").await;
}

/// A warms from the origin, B downloads from A (zero origin body bytes), A
/// stops, C downloads from B. `blocks` is what a full store holds.
async fn scenario(tag: &str, content_version: u8, data: Bytes, blocks: u64, peer_c: &str) {
    let lan = Lan::build(
        tag,
        &[
            ("o", ORIGIN_IP),
            ("a", "198.18.0.1"),
            ("b", "198.18.0.2"),
            ("c", "198.18.0.3"),
        ],
    );
    lan.add_dead_end("c", "198.19.0.3");
    let dir = tempfile::tempdir().unwrap();
    let files = Arc::new(FileServer {
        data: data.clone(),
        ..Default::default()
    });
    let listener = in_ns(&lan.ns("o"), || {
        std::net::TcpListener::bind(("127.0.0.1", FILE_SERVER_PORT)).unwrap()
    });
    serve_files(listener, files.clone());

    let mut publisher = Daemon::start(
        &lan,
        "o",
        dir.path(),
        &format!(
            "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:{ADMIN_PORT}\"\n\
             [publisher]\nlisten = \"{ORIGIN_IP}:{PUBLISHER_PORT}\"\n\
             upstream = \"http://127.0.0.1:{FILE_SERVER_PORT}\"\nsecret_file = {:?}\n\
             content_version = {content_version}\n",
            dir.path().join("store-o"),
            dir.path().join("secret")
        ),
    );
    let v4_only = "listen = \"0.0.0.0:8082\"";
    let mut a = Daemon::start(
        &lan,
        "a",
        dir.path(),
        &branch_config(dir.path(), "a", v4_only),
    );
    let mut b = Daemon::start(
        &lan,
        "b",
        dir.path(),
        &branch_config(dir.path(), "b", v4_only),
    );
    let mut c = Daemon::start(
        &lan,
        "c",
        dir.path(),
        &branch_config(dir.path(), "c", peer_c),
    );
    for d in [&mut publisher, &mut a, &mut b, &mut c] {
        wait_ready(&lan, d).await;
    }
    let proxy = SocketAddr::from(([127, 0, 0, 1], PROXY_PORT));
    if let Some(line) = std::fs::read_to_string(&c.log)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("discovery running"))
    {
        eprintln!("{tag}: C: {line}");
    }

    // 1. A warms its store from the origin (through the publisher).
    let t = Instant::now();
    let (status, body) = get(&lan.ns("a"), proxy, "/obj.bin").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "A's download differs from the object");
    eprintln!("{tag}: A (cold, from the origin): {:?}", t.elapsed());
    wait_stored(&lan, "a", blocks).await;
    let origin_after_a = files.body_bytes.load(Ordering::SeqCst);
    assert!(origin_after_a >= data.len() as u64);

    // 2. B: content information from the publisher (a 304 from the origin),
    // every block from A found by multicast discovery.
    let t = Instant::now();
    let (status, body) = get(&lan.ns("b"), proxy, "/obj.bin").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "B's download differs from the object");
    eprintln!("{tag}: B (from peer A): {:?}", t.elapsed());
    assert_eq!(
        files.body_bytes.load(Ordering::SeqCst),
        origin_after_a,
        "B caused origin body bytes"
    );
    let mb = metrics(&lan, "b").await;
    assert_eq!(
        metric(&mb, "branchcache_proxy_served_bytes_total{source=\"peer\"}"),
        data.len() as u64,
        "{mb}"
    );
    assert_eq!(
        metric(
            &mb,
            "branchcache_proxy_served_bytes_total{source=\"origin\"}"
        ),
        0,
        "{mb}"
    );
    assert!(
        metric(
            &mb,
            "branchcache_discovery_events_total{event=\"peers_found\"}"
        ) >= 1,
        "{mb}"
    );
    let ma = metrics(&lan, "a").await;
    assert!(
        metric(
            &ma,
            "branchcache_discovery_events_total{event=\"replies_sent\"}"
        ) >= 1,
        "{ma}"
    );
    assert_eq!(
        metric(&ma, "branchcache_retrieval_bytes_served_total"),
        data.len() as u64,
        "{ma}"
    );
    wait_stored(&lan, "b", blocks).await;

    // 3. A goes away; C finds B.
    a.stop();
    let t = Instant::now();
    let (status, body) = get(&lan.ns("c"), proxy, "/obj.bin").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "C's download differs from the object");
    eprintln!("{tag}: C (from peer B, A stopped): {:?}", t.elapsed());
    assert_eq!(
        files.body_bytes.load(Ordering::SeqCst),
        origin_after_a,
        "C caused origin body bytes"
    );
    let mc = metrics(&lan, "c").await;
    assert_eq!(
        metric(&mc, "branchcache_proxy_served_bytes_total{source=\"peer\"}"),
        data.len() as u64,
        "{mc}"
    );
    let mb = metrics(&lan, "b").await;
    assert_eq!(
        metric(&mb, "branchcache_retrieval_bytes_served_total"),
        data.len() as u64,
        "{mb}"
    );

    for d in [&mut b, &mut c, &mut publisher] {
        d.stop();
    }
}

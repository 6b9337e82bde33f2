//! Shared helpers for tests that run the real `branchcache` binary as a
//! process: a daemon handle, a plain HTTP/1.1 client, and a small origin
//! (a real hyper server on 127.0.0.1:0) that honours single `Range` requests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

mod ports;

/// A loopback port that was free a moment ago, below the ephemeral range
/// ([`ports`]): for daemons started as processes.
pub fn free_port() -> u16 {
    ports::free_port()
}

/// A daemon process, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub admin: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Send the daemon a signal (`"-TERM"`, `"-HUP"` …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Start `branchcache run --config cfg` and wait until `/readyz` says
    /// ready. Its log (stderr) goes to `cfg` with the extension `log`.
    pub fn start(cfg: &Path, admin: SocketAddr) -> Daemon {
        let log = std::fs::File::create(cfg.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_branchcache"))
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon { child, admin };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_get(admin, "/readyz") {
                return d;
            }
            let log = || std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "daemon never became ready; its log:\n{}",
                log()
            );
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "daemon exited early; its log:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET path` with `Connection: close`: status and body (`None` if the
/// connection fails). Bodies are delimited by the closed connection or by
/// `Content-Length`.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Some((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).ok()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[allow(clippy::too_many_arguments)]
fn write_config(
    dir: &Path,
    name: &str,
    store: &Path,
    admin: SocketAddr,
    publisher: SocketAddr,
    proxy: SocketAddr,
    origin: SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let cfg = dir.join(name);
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = {store:?}\nmax_size = \"64 MiB\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [publisher]\nlisten = \"{publisher}\"\nupstream = \"http://{origin}\"\nsecret_file = {secret:?}\n\
             [proxy]\nlisten = \"{proxy}\"\nupstream = \"http://{publisher}\"\n{extra}\n",
            secret = dir.join("secret"),
        ),
    )
    .unwrap();
    cfg
}

/// Deterministic test content.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A plain origin: `GET`/`HEAD` of stored objects, single `Range`s, an `ETag`.
pub struct Origin {
    pub addr: SocketAddr,
    objects: Arc<Mutex<HashMap<String, Bytes>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Origin {
    pub fn start() -> Origin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let objects: Arc<Mutex<HashMap<String, Bytes>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let objs = objects.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let objs = objs.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let objs = objs.clone();
                        async move { Ok::<_, Infallible>(origin_answer(&objs, req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            objects,
            _runtime: runtime,
        }
    }

    pub fn put(&self, path: &str, data: Vec<u8>) {
        self.objects
            .lock()
            .unwrap()
            .insert(path.to_string(), Bytes::from(data));
    }
}

fn origin_answer<B>(
    objects: &Mutex<HashMap<String, Bytes>>,
    req: Request<B>,
) -> Response<Full<Bytes>> {
    let Some(data) = objects.lock().unwrap().get(req.uri().path()).cloned() else {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"not found")))
            .unwrap();
    };
    let base = Response::builder()
        .header("etag", "\"v1\"")
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream");
    let len = data.len() as u64;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| {
            let a: u64 = a.parse().ok()?;
            let b: u64 = if b.is_empty() {
                len - 1
            } else {
                b.parse::<u64>().ok()?.min(len - 1)
            };
            (a <= b).then_some((a, b))
        });
    let body = |b: Bytes| {
        if req.method() == hyper::Method::HEAD {
            Full::new(Bytes::new())
        } else {
            Full::new(b)
        }
    };
    match range {
        Some((a, b)) => base
            .status(206)
            .header("content-range", format!("bytes {a}-{b}/{len}"))
            .header("content-length", b - a + 1)
            .body(body(data.slice(a as usize..=b as usize)))
            .unwrap(),
        None => base.header("content-length", len).body(body(data)).unwrap(),
    }
}

/// A running origin + daemon (publisher in front of the origin, branch
/// proxy in front of the publisher, one process) in a temporary directory.
pub struct Branch {
    pub origin: Origin,
    pub daemon: Daemon,
    pub proxy: SocketAddr,
    pub publisher: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Appended to every configuration written.
    extra: String,
}

impl Branch {
    /// Start it, with `extra` appended to the daemon's configuration.
    pub fn start(extra: &str) -> Branch {
        let origin = Origin::start();
        let dir = tempfile::tempdir().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let publisher: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = write_config(
            dir.path(),
            "branchcache.toml",
            &dir.path().join("store"),
            admin,
            publisher,
            proxy,
            origin.addr,
            extra,
        );
        let daemon = Daemon::start(&cfg, admin);
        Branch {
            origin,
            daemon,
            proxy,
            publisher,
            dir,
            extra: extra.to_string(),
        }
    }

    /// Write a configuration like the running one but with the store at
    /// `store` (same listeners, origin and server secret); returns its path.
    pub fn config_with_store(&self, name: &str, store: &Path) -> std::path::PathBuf {
        write_config(
            self.dir.path(),
            name,
            store,
            self.daemon.admin,
            self.publisher,
            self.proxy,
            self.origin.addr,
            &self.extra,
        )
    }

    /// SIGTERM the daemon and wait for a clean exit.
    pub fn stop(&mut self) {
        self.daemon.signal("-TERM");
        let status = self.daemon.child.wait().unwrap();
        assert!(status.success(), "daemon exit status {status}");
    }

    /// Start the daemon again with configuration `cfg` (after [`stop`](Self::stop)).
    pub fn restart(&mut self, cfg: &Path) {
        self.daemon = Daemon::start(cfg, self.daemon.admin);
    }

    /// Download `path` through the proxy; panics unless 200.
    pub fn download(&self, path: &str) -> Vec<u8> {
        let (status, body) = http_get(self.proxy, path).expect("proxy answers");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        body
    }

    /// `/status` as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let (status, body) = http_get(self.daemon.admin, "/status").expect("admin answers");
        assert_eq!(status, 200);
        serde_json::from_slice(&body).expect("status is JSON")
    }

    /// Wait until the store holds at least `blocks` blocks (writes are
    /// asynchronous to the client's download).
    pub fn wait_stored_blocks(&self, blocks: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status_json();
            if s["store"]["blocks"].as_u64().unwrap_or(0) >= blocks {
                return;
            }
            assert!(Instant::now() < deadline, "store never filled: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

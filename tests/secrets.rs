//! Secrets never leave the daemon: with logging at `trace`, a publisher and a
//! proxy (real processes) serve an object, and neither their logs nor their
//! `/status` nor `/metrics` contain the server secret or any segment secret
//! (Kp), in hex or base64. The secret file is mode 0600.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use branchcache::proto::pccrc::ContentInfo;
use common::*;

impl Daemon {
    /// SIGTERM, wait, and return everything it logged (stderr).
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut log = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            e.read_to_string(&mut log).unwrap();
        }
        log
    }
}

async fn start(cfg: &std::path::Path, wait_for: std::net::SocketAddr) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(cfg)
        .env("BRANCHCACHE_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(wait_for).await.is_err() {
        assert!(Instant::now() < deadline, "daemon never listened");
        assert!(d.0.try_wait().unwrap().is_none(), "daemon exited early");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    let (status, _, body) = fetch(addr, path).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_status_or_metrics() {
    let origin = Origin::start().await;
    let data = content(3 * MIB + 7, 80);
    origin.put(
        "/s.bin",
        Object {
            data: data.clone(),
            ci: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let port = |_: ()| free_port();
    let (pub_port, pub_admin, proxy_port, proxy_admin) = (port(()), port(()), port(()), port(()));
    let secret_file = dir.path().join("server-secret");
    let pub_cfg = dir.path().join("publisher.toml");
    std::fs::write(
        &pub_cfg,
        format!(
            "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:{pub_admin}\"\n[publisher]\nlisten = \"127.0.0.1:{pub_port}\"\nupstream = \"http://{}\"\nsecret_file = {secret_file:?}\n",
            dir.path().join("pub-store"),
            origin.addr
        ),
    )
    .unwrap();
    let proxy_cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &proxy_cfg,
        format!(
            "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:{proxy_admin}\"\n[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nupstream = \"http://127.0.0.1:{pub_port}\"\n",
            dir.path().join("proxy-store")
        ),
    )
    .unwrap();
    let addr = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let publisher = start(&pub_cfg, addr(pub_port)).await;
    let proxy = start(&proxy_cfg, addr(proxy_port)).await;

    // Download twice (cold, then from the store) and fetch the content
    // information the way a client would, to learn every Kp.
    for _ in 0..2 {
        let (status, _, body) = fetch(addr(proxy_port), "/s.bin").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == data);
    }
    let req = get("/s.bin")
        .header(header::ACCEPT_ENCODING, "peerdist")
        .header("x-p2p-peerdist", "Version=1.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, ci) = send(addr(pub_port), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "peerdist");
    let info = ContentInfo::parse(&ci).unwrap();

    let secret = std::fs::read(&secret_file).unwrap();
    assert_eq!(
        std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mut needles: Vec<String> = vec![
        hex::encode(&secret),
        hex::encode_upper(&secret),
        base64::engine::general_purpose::STANDARD.encode(&secret),
    ];
    for seg in info.segments() {
        let kp = seg.secret();
        needles.push(hex::encode(kp.expose()));
        needles.push(hex::encode_upper(kp.expose()));
        needles.push(base64::engine::general_purpose::STANDARD.encode(kp.expose()));
    }
    assert!(needles.len() >= 6);

    let mut haystacks = vec![
        (
            "proxy /status",
            admin_get(addr(proxy_admin), "/status").await,
        ),
        (
            "proxy /metrics",
            admin_get(addr(proxy_admin), "/metrics").await,
        ),
        (
            "publisher /status",
            admin_get(addr(pub_admin), "/status").await,
        ),
        (
            "publisher /metrics",
            admin_get(addr(pub_admin), "/metrics").await,
        ),
    ];
    haystacks.push(("publisher log", publisher.stop()));
    haystacks.push(("proxy log", proxy.stop()));
    let proxy_log = &haystacks.last().unwrap().1;
    assert!(
        proxy_log.lines().count() > 5,
        "trace logging produced output to search: {proxy_log}"
    );
    for (name, text) in &haystacks {
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{name} contains a secret");
        }
    }
}

//! `kill -9` of the real daemon while it fills its store from concurrent
//! downloads, [`ROUNDS`] times at seeded random moments on the same store.
//! After every kill, `branchcache store verify` (the operator's command) must
//! find nothing bad; at the end a fresh daemon serves every object
//! byte-identical, from whatever survived plus the origin.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Kill/restart rounds (issue 10 asks for at least 50).
const ROUNDS: u64 = 50;
/// Objects downloaded concurrently in each round.
const OBJECTS: u64 = 6;

/// SplitMix64 (seeded kill points, replayable).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_branchcache"))
}

/// Write a config for this round (fresh ports) and start the daemon; wait
/// until its proxy accepts connections.
async fn start(
    dir: &std::path::Path,
    origin: std::net::SocketAddr,
) -> (Daemon, std::net::SocketAddr, std::path::PathBuf) {
    let proxy_port = free_port();
    let admin_port = free_port();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = {:?}\nmax_size = \"64 MiB\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nupstream = \"http://{origin}\"\n[log]\nlevel = \"warn\"\n",
            dir.join("store")
        ),
    )
    .unwrap();
    let mut d = Daemon::run(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "daemon never listened");
        assert!(d.0.try_wait().unwrap().is_none(), "daemon exited early");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (d, addr, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_heavy_writes_never_leaves_a_bad_block() {
    let origin = Origin::start().await;
    let objects: Vec<(String, Bytes)> = (0..OBJECTS)
        .map(|i| {
            let data = content(
                (2 * MIB as u64 + mix(i) % MIB as u64) as usize,
                70 + i as u8,
            );
            let path = format!("/obj{i}.bin");
            origin.put(&path, Object::peerdist(data.clone()));
            (path, data)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut killed_mid_write = 0;
    for round in 0..ROUNDS {
        let (mut daemon, addr, cfg) = start(dir.path(), origin.addr).await;
        let downloads: Vec<_> = objects
            .iter()
            .map(|(path, _)| {
                let path = path.clone();
                // Results are irrelevant: the daemon dies under them.
                tokio::spawn(async move {
                    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                        return;
                    };
                    let Ok((mut tx, conn)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                    else {
                        return;
                    };
                    tokio::spawn(conn);
                    let req = get(&path).body(Full::new(Bytes::new())).unwrap();
                    if let Ok(resp) = tx.send_request(req).await {
                        let _ = resp.into_body().collect().await;
                    }
                })
            })
            .collect();
        let wait = Duration::from_millis(30 + mix(round ^ 0xC0FFEE) % 600);
        tokio::time::sleep(wait).await;
        if daemon.0.try_wait().unwrap().is_none() {
            killed_mid_write += 1;
        }
        daemon.0.kill().unwrap(); // SIGKILL
        daemon.0.wait().unwrap();
        for d in downloads {
            let _ = d.await;
        }
        let out = bin()
            .args(["store", "verify", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round} (killed after {wait:?}): store verify: {text}"
        );
        assert!(text.contains("bad 0 unreadable 0"), "round {round}: {text}");
    }
    assert_eq!(killed_mid_write, ROUNDS, "every kill hit a running daemon");
    // The kills did land among writes: blocks were fetched and kept.
    assert!(origin.body_bytes() > 0);
    let stats = bin()
        .args(["store", "stats", "--config"])
        .arg(dir.path().join("c.toml"))
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(stats["blocks"].as_u64().unwrap() > 0, "{stats}");

    let (daemon, addr, _) = start(dir.path(), origin.addr).await;
    for (path, data) in &objects {
        let (status, _, body) = fetch(addr, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body == *data, "{path}: wrong bytes after {ROUNDS} kills");
    }
    drop(daemon);
}

//! SIGTERM on a real daemon process while a pass-through (identity) body is
//! streaming: the listener closes at once, the running download finishes
//! (within the drain timeout) and the process exits 0. The peerdist path,
//! with a segment fetch in flight and the store checked afterwards, is
//! `tests/shutdown.rs`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{content, free_port, Daemon};
use tokio::io::AsyncWriteExt;

/// An origin that sends `data` as one identity response, 64 KiB every
/// 40 ms: slow enough that SIGTERM lands mid-body.
fn slow_origin(data: Vec<u8>) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let data = data.clone();
            tokio::spawn(async move {
                // Read the request head (small; one read is enough here).
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    data.len()
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for chunk in data.chunks(64 * 1024) {
                    if s.write_all(chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            });
        }
    });
    (addr, rt)
}

#[test]
fn sigterm_lets_a_running_download_finish_and_closes_the_listener() {
    let data = content(3 * 1024 * 1024, 9); // ~48 chunks ≈ 2 s
    let (origin, _rt) = slow_origin(data.clone());
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.path().join("branchcache.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = {:?}\n[admin]\nlisten = \"{admin}\"\n\
             [proxy]\nlisten = \"{proxy}\"\nupstream = \"http://{origin}\"\n",
            dir.path().join("store")
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&cfg, admin);

    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Wait until the body is flowing, then ask the daemon to stop.
    let mut got = vec![0u8; 128 * 1024];
    s.read_exact(&mut got).unwrap();
    d.signal("-TERM");

    // New clients are turned away while the running download goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&proxy, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener still accepts after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.read_to_end(&mut got).unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(got.len() - split, data.len(), "the download was cut short");
    assert!(got[split..] == data[..]);

    let status = d.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

//! SIGTERM to the real daemon while a download is waiting on the origin: the
//! daemon stops accepting, finishes the in-flight response and the segment
//! fetch behind it, flushes the store and exits 0; the store then holds
//! every block of the object.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_fetches_then_flushes_the_store() {
    let origin = Origin::start().await;
    let data = content(3 * MIB + 1, 50);
    origin.put("/slow.bin", Object::peerdist(data.clone()));
    // The body fetch is still running when SIGTERM arrives.
    origin.state.range_delay_ms.store(1500, Ordering::SeqCst);

    let dir = tempfile::tempdir().unwrap();
    let proxy_port = free_port();
    let admin_port = free_port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nupstream = \"http://{}\"\nshutdown_timeout = \"30s\"\n[log]\nlevel = \"warn\"\n",
            dir.path().join("store"),
            origin.addr
        ),
    )
    .unwrap();
    let mut daemon = Daemon::run(&cfg);
    let addr: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "daemon never listened");
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "daemon exited early"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let download = tokio::spawn(async move { fetch(addr, "/slow.bin").await });
    // Wait until the proxy is fetching the body from the origin.
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.state.range_requests.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the proxy never asked for the body"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, _, body) = download.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "in-flight download was cut short");

    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "daemon exit status {exit}");
    // A new connection is refused now.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let store = branchcache::store::Store::open(&dir.path().join("store"), 1 << 30)
        .await
        .unwrap();
    assert_eq!(
        store.stats().blocks,
        data.len().div_ceil(65_536) as u64,
        "fetched blocks were not all flushed to the store"
    );
}

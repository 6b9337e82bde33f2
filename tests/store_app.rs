//! The daemon opens the configured store, exports its metrics on the admin
//! listener, and keeps its contents across a restart.

use std::os::unix::fs::PermissionsExt;

use branchcache::app::App;
use branchcache::config::Config;
use branchcache::proto::pccrc::{segment_id, segment_secret, server_secret, HashAlgo};
use branchcache::store::SegmentMeta;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn daemon_store_is_private_exported_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("cache");
    let toml = format!(
        "[store]\npath = {:?}\nmax_size = \"1 MiB\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        store_dir
    );
    let config = Config::from_toml(&toml, "test").unwrap();

    let data = vec![0x42u8; 4096];
    let algo = HashAlgo::Sha512Trunc;
    let hod = algo.hash(&data);
    let kp = segment_secret(algo, &server_secret(algo, b"k"), &hod);
    let id = segment_id(algo, &kp, &hod);
    let meta = SegmentMeta {
        algo,
        size: 4096,
        block_size: 4096,
        hash_of_data: hod,
        secret: kp,
        block_hashes: Vec::new(),
    };

    let app = App::start(config.clone()).await.unwrap();
    let mode = std::fs::metadata(&store_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    app.store.put_meta(id, meta).await.unwrap();
    app.store
        .put_block(&id, 0, Bytes::from(data.clone()))
        .await
        .unwrap();
    let metrics = get(app.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("branchcache_store_max_bytes 1048576"),
        "{metrics}"
    );
    assert!(metrics.contains("branchcache_store_blocks 1"), "{metrics}");
    app.shutdown().await;

    let app = App::start(config).await.unwrap();
    assert_eq!(
        app.store.get_block(&id, 0).await.unwrap().as_deref(),
        Some(&data[..])
    );
    let metrics = get(app.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("branchcache_store_hits_total 1"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn store_verify_cli_finds_corruption_and_exit_codes_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("cache");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[store]\npath = {store_dir:?}\n")).unwrap();
    let data = vec![7u8; 1000];
    let algo = HashAlgo::Sha512Trunc;
    let hod = algo.hash(&data);
    let kp = segment_secret(algo, &server_secret(algo, b"k"), &hod);
    let id = segment_id(algo, &kp, &hod);
    let meta = SegmentMeta {
        algo,
        size: 1000,
        block_size: 1000,
        hash_of_data: hod,
        secret: kp,
        block_hashes: Vec::new(),
    };
    let store = branchcache::store::Store::open(&store_dir, 1 << 20)
        .await
        .unwrap();
    store.put_meta(id, meta).await.unwrap();
    store.put_block(&id, 0, Bytes::from(data)).await.unwrap();
    store.close().await.unwrap();

    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_branchcache"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["store", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("good 1 bad 0"));

    let file = store_dir.join("data").join(format!("{}.seg", id.to_hex()));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let out = run(&["store", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = run(&["store", "stats"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["blocks"], 0, "the bad block was evicted");
    assert_eq!(stats["segments"], 1);
}

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

//! Faults a branch box meets in real life, against a whole daemon: the store's
//! disk fills up (a real, small tmpfs; needs root to mount, skipped with a
//! message otherwise) and the origin dies in the middle of a body. The client
//! gets correct bytes or a clean error, never wrong bytes, and the store holds
//! nothing that could be served wrong.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A tmpfs mounted at a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a message) when mounting is not possible here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIP: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIP: cannot run mount: {e}");
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn disk_full_still_serves_from_the_origin_and_the_store_recovers_with_space() {
    let Some(fs) = Tmpfs::mount("3m") else {
        return;
    };
    let origin = Origin::start().await;
    let data = content(8 * MIB + 99, 61);
    origin.put("/full.bin", Object::peerdist(data.clone()));
    let toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\n",
        fs.dir.path().join("store"),
        origin.addr
    );
    let app = App::start(Config::from_toml(&toml, "test").unwrap())
        .await
        .unwrap();
    let addr = app.proxy_addr.unwrap();

    // 8 MiB through a 3 MiB disk: every byte still correct.
    for round in 0..2 {
        let (status, _, body) = fetch(addr, "/full.bin").await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        assert!(body == data, "round {round}: wrong bytes with a full disk");
    }
    let m = app.metrics.render();
    assert!(
        metric(&m, "branchcache_store_io_errors_total") > 0,
        "a full disk is counted: {m}"
    );
    let report = app.store.verify_all(|_| {}).await;
    assert_eq!(report.bad, 0, "{report:?}");

    // Space returns: the next download fills the store, the one after is a hit.
    fs.resize("64m");
    let (status, _, body) = fetch(addr, "/full.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    let want = data.len().div_ceil(65_536) as u64;
    for _ in 0..1000 {
        if app.store.stats().blocks >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.store.stats().blocks, want, "{:?}", app.store.stats());
    let wan = origin.body_bytes();
    let (status, _, body) = fetch(addr, "/full.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(origin.body_bytes(), wan, "served from the recovered store");
    app.shutdown().await;
}

/// An origin that answers content information, then dies half way through
/// every range answer (headers promise the whole range, the socket closes).
fn dying_origin(data: Bytes, ci: Bytes) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let data = data.clone();
            let ci = ci.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let range = head
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .map(|r| r.trim().to_string());
                match range {
                    None => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Encoding: peerdist\r\nX-P2P-PeerDist: Version=1.1, ContentLength={}\r\nETag: \"d\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            data.len(),
                            ci.len()
                        );
                        let _ = s.write_all(&ci);
                    }
                    Some(r) => {
                        let (a, b) = r.split_once('-').unwrap();
                        let a: usize = a.parse().unwrap();
                        let b: usize = b.parse::<usize>().unwrap().min(data.len() - 1);
                        let _ = write!(
                            s,
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nETag: \"d\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            data.len(),
                            b + 1 - a
                        );
                        let half = a + (b + 1 - a) / 2;
                        let _ = s.write_all(&data[a..half]);
                    }
                }
                let _ = s.flush();
                // Dropping the socket mid-body is the origin dying.
            });
        }
    });
    addr
}

#[tokio::test]
async fn origin_dying_mid_body_gives_a_clean_error_and_no_poisoned_store_entry() {
    let data = content(3 * MIB + 5, 62);
    let obj = Object::peerdist(data.clone());
    let dying = dying_origin(data.clone(), obj.ci.clone().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let toml = |upstream: std::net::SocketAddr| {
        format!(
            "[store]\npath = {store:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n"
        )
    };
    let app = App::start(Config::from_toml(&toml(dying), "test").unwrap())
        .await
        .unwrap();
    let addr = app.proxy_addr.unwrap();
    let got = send(addr, get("/d.bin").body(Full::new(Bytes::new())).unwrap()).await;
    match got {
        // The status line went out (first block verified), then the body stops short.
        Err(e) => assert!(!e.is_empty()),
        // Or the proxy saw the failure before answering: a clean 5xx, no body bytes of the object.
        Ok((status, _, body)) => {
            assert!(status.is_server_error(), "{status}");
            assert!(body.len() < 1024, "an error body, not object bytes");
        }
    }
    // Whatever reached the store is verified: nothing bad to serve later.
    let report = app.store.verify_all(|_| {}).await;
    assert_eq!(report.bad, 0, "{report:?}");
    app.shutdown().await;

    // The same store behind a healthy origin: correct bytes.
    let origin = Origin::start().await;
    origin.put("/d.bin", obj);
    let app = App::start(Config::from_toml(&toml(origin.addr), "test").unwrap())
        .await
        .unwrap();
    let (status, _, body) = fetch(app.proxy_addr.unwrap(), "/d.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "wrong bytes after an origin died mid-body");
    app.shutdown().await;
}

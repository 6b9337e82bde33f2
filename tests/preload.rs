//! `branchcache preload` warms a real daemon's cache: afterwards a client's
//! download is a hit, served from the store.

mod support;

use std::process::Command;

use support::{content, Branch};

#[test]
fn preload_warms_the_cache_for_paths_and_urls() {
    let b = Branch::start("forward = true");
    let (x, y) = (content(400 * 1024, 21), content(200 * 1024 + 9, 22));
    b.origin.put("/x.bin", x.clone());
    b.origin.put("/y.bin", y.clone());
    let list = b.dir.path().join("warm.txt");
    // A URL through the publisher (forward mode), with a comment and a blank line.
    std::fs::write(
        &list,
        format!("# roll-out\n\nhttp://{}/y.bin  # driver\n", b.publisher),
    )
    .unwrap();
    let proxy = b.proxy.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["preload", "--proxy", &proxy, "/x.bin", "--list"])
        .arg(&list)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("ok    /x.bin  400.0 KiB"), "{stdout}");
    assert!(stdout.contains("preloaded 2 of 2 objects"), "{stdout}");
    // 7 blocks of x, 4 of y.
    b.wait_stored_blocks(7 + 4);

    assert!(b.download("/x.bin") == x);
    let s = b.status_json();
    assert_eq!(s["requests"]["hit"], 1, "{s}");
    assert_eq!(s["recent_requests"][0]["bytes"]["store"], x.len() as u64);

    // A missing object fails the run (exit 1) but not the others.
    let out = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["preload", "--proxy", &proxy, "/missing.bin", "/y.bin"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.contains("FAIL  /missing.bin: proxy answered 404"),
        "{stdout}"
    );
    assert!(stdout.contains("preloaded 1 of 2 objects"), "{stdout}");

    // https cannot be cached through a forward proxy: refused up front.
    let out = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["preload", "--proxy", &proxy, "https://example.com/a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// What `preload`'s progress bar is fed: the object's length from the
/// proxy's `Content-Length` (so the bar shows a percentage), then chunks that
/// add up to exactly that length.
#[derive(Default)]
struct Recorded {
    starts: Vec<Option<u64>>,
    advanced: u64,
}

impl branchcache::preload::Progress for Recorded {
    fn start(&mut self, length: Option<u64>) {
        self.starts.push(length);
    }
    fn advance(&mut self, n: u64) {
        self.advanced += n;
    }
}

#[test]
fn preload_reports_the_length_then_every_byte() {
    let b = Branch::start("");
    let x = content(300 * 1024 + 5, 23);
    b.origin.put("/p.bin", x.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = Recorded::default();
    let done = runtime
        .block_on(branchcache::preload::preload_one(
            &b.proxy.to_string(),
            "/p.bin",
            &mut seen,
        ))
        .unwrap();
    assert_eq!(seen.starts, vec![Some(x.len() as u64)]);
    assert_eq!(seen.advanced, x.len() as u64);
    assert_eq!(done.bytes, x.len() as u64);
}

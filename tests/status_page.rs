//! The admin status page rendered by headless Chromium against a real daemon
//! process: `tests/status_page.sh` dumps the DOM and checks every number it
//! shows against `/status`. Skipped (with a message) only when chromium is
//! missing and cannot be installed.

mod support;

use std::process::Command;

use support::{content, Branch};

#[test]
fn status_page_renders_in_chromium_and_matches_status() {
    // A fixed peer and a hosted cache that are not there: the page shows
    // both as unreachable (downloads fall back to the origin).
    let (dead_peer, dead_hc) = (support::free_port(), support::free_port());
    let b = Branch::start(&format!(
        "peers = [\"127.0.0.1:{dead_peer}\"]\n\
         [upstream_hosted_cache]\naddress = \"127.0.0.1:{dead_hc}\"\noffer = false\n"
    ));
    let data = content(1024 * 1024 + 17, 3);
    b.origin.put("/a.bin", data.clone());
    b.origin
        .put("/small.txt", b"tiny object, passed through".to_vec());
    assert!(b.download("/a.bin") == data);
    b.wait_stored_blocks(17);
    assert!(b.download("/a.bin") == data);
    assert_eq!(b.download("/small.txt"), b"tiny object, passed through");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/status_page.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(b.daemon.admin.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        eprintln!("SKIPPED: chromium is not available and could not be installed: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "status page check failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("status_page: ok"), "{stdout}");
    // The check saw the traffic above, not an empty page.
    assert!(stdout.contains("3 recent requests"), "{stdout}");
    assert!(stdout.contains("2 peer rows"), "{stdout}");
    let s = b.status_json();
    assert_eq!(s["hosted_cache"]["reachable"], false, "{s}");
    assert_eq!(
        s["peers"][0]["address"],
        format!("127.0.0.1:{dead_peer}"),
        "{s}"
    );
    assert!(!stdout.contains(" 0 non-empty chart bars"), "{stdout}");
}

//! `store export` / `store import` through the real binary: a branch daemon
//! caches two objects, its store is exported, the package is imported into
//! an empty store, and a daemon on that store serves both objects without a
//! body byte from the WAN. A damaged package is caught block by block.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{content, Branch};

const A_LEN: usize = 1024 * 1024 + 1; // 16 full blocks + 1
const B_LEN: usize = 300 * 1024; // 4 full blocks + 1
const BLOCKS: u64 = 17 + 5;

fn store_cmd(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .arg("--config")
        .arg(cfg)
        .arg("store")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stats(cfg: &Path) -> serde_json::Value {
    let out = store_cmd(cfg, &["stats"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn exported_store_seeds_an_empty_branch_that_then_serves_without_wan() {
    let mut b = Branch::start("");
    let (a, bb) = (content(A_LEN, 11), content(B_LEN, 12));
    b.origin.put("/a.bin", a.clone());
    b.origin.put("/b.bin", bb.clone());
    assert!(b.download("/a.bin") == a);
    assert!(b.download("/b.bin") == bb);
    b.wait_stored_blocks(BLOCKS);
    b.stop();

    let cfg = b.dir.path().join("branchcache.toml");
    let pkg = b.dir.path().join("branch.bcpkg");
    let pkg_arg = pkg.to_str().unwrap();
    let out = store_cmd(&cfg, &["export", pkg_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains(&format!(
            "exported 2 segments, {BLOCKS} blocks, {} bytes",
            A_LEN + B_LEN
        )),
        "{out:?}"
    );

    // Import into an empty store.
    let cfg2 = b.config_with_store("seeded.toml", &b.dir.path().join("store2"));
    let out = store_cmd(&cfg2, &["import", pkg_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains(&format!(
            "imported 2 segments (0 rejected), {BLOCKS} blocks (0 rejected), {} bytes",
            A_LEN + B_LEN
        )),
        "{out:?}"
    );
    let (s1, s2) = (stats(&cfg), stats(&cfg2));
    assert_eq!(s2["segments"], 2);
    assert_eq!(s2["blocks"], BLOCKS);
    assert_eq!(s1["used_bytes"], s2["used_bytes"]);
    let out = store_cmd(&cfg2, &["verify"]);
    assert!(out.status.success(), "{out:?}");

    // A daemon on the seeded store serves both objects from it.
    b.restart(&cfg2);
    assert!(b.download("/a.bin") == a);
    assert!(b.download("/b.bin") == bb);
    let s = b.status_json();
    assert_eq!(s["requests"]["hit"], 2, "{s}");
    assert_eq!(s["bytes_by_source"]["store"], (A_LEN + B_LEN) as u64, "{s}");
    assert_eq!(s["bytes_by_source"]["origin"], 0, "{s}");
    assert_eq!(s["wan"]["body"], 0, "{s}");
    b.stop();

    // One flipped bit inside a block: that block is rejected, the rest imported.
    let mut bytes = std::fs::read(&pkg).unwrap();
    let needle = &a[200_000..200_064];
    let at = bytes.windows(64).position(|w| w == needle).unwrap();
    bytes[at + 7] ^= 0x01;
    let bad = b.dir.path().join("bad.bcpkg");
    std::fs::write(&bad, &bytes).unwrap();
    let cfg3 = b.config_with_store("damaged.toml", &b.dir.path().join("store3"));
    let out = store_cmd(&cfg3, &["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains(&format!(
            "imported 2 segments (0 rejected), {} blocks (1 rejected)",
            BLOCKS - 1
        )),
        "{out:?}"
    );
    assert_eq!(stats(&cfg3)["blocks"], BLOCKS - 1);
    assert!(store_cmd(&cfg3, &["verify"]).status.success());

    // A truncated package: exit 2 with a clear reason.
    let cut = b.dir.path().join("cut.bcpkg");
    let full = std::fs::read(&pkg).unwrap();
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let cfg4 = b.config_with_store("cut.toml", &b.dir.path().join("store4"));
    let out = store_cmd(&cfg4, &["import", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{out:?}"
    );
}

//! `branchcache status` against a real daemon process: an origin, a publisher
//! and a branch proxy; one cold and one warm download; the report's numbers
//! are what the downloads did.

mod support;

use std::process::Command;

use support::{content, free_port, Branch};

const LEN: usize = 2 * 1024 * 1024 + 333;
/// 32 full 64 KiB blocks and one partial.
const BLOCKS: u64 = 33;

fn status_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .arg("status")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn status_reports_roles_store_hit_ratio_and_bytes_by_source() {
    let b = Branch::start("");
    let data = content(LEN, 7);
    b.origin.put("/big.bin", data.clone());
    assert!(b.download("/big.bin") == data, "cold download differs");
    b.wait_stored_blocks(BLOCKS);
    assert!(b.download("/big.bin") == data, "warm download differs");

    let admin = b.daemon.admin.to_string();
    let out = status_cmd(&["--admin", &admin, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let len = LEN as u64;

    let roles: Vec<&str> = r["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for role in ["admin", "proxy", "publisher"] {
        assert!(roles.contains(&role), "{r}");
    }
    assert_eq!(r["listeners"]["admin"], admin.as_str());
    assert_eq!(r["listeners"]["proxy"], b.proxy.to_string().as_str());
    assert_eq!(r["ready"], true);

    // Cold: every byte from the origin; warm: every byte from the store.
    assert_eq!(r["bytes_by_source"]["origin"], len, "{r}");
    assert_eq!(r["bytes_by_source"]["store"], len, "{r}");
    assert_eq!(r["bytes_by_source"]["peer"], 0);
    assert_eq!(r["bytes_by_source"]["hosted_cache"], 0);
    assert_eq!(r["bytes_served"], 2 * len);
    assert_eq!(r["hit_ratio"], 0.5);
    assert_eq!(r["requests"]["miss"], 1, "{r}");
    assert_eq!(r["requests"]["hit"], 1, "{r}");

    // WAN: the body once, content information twice; saved = served − received.
    let ci = r["wan"]["content_information"].as_u64().unwrap();
    assert!(ci > 0 && ci < 4096, "{r}");
    assert_eq!(r["wan"]["body"], len);
    assert_eq!(r["wan"]["total"], len + ci);
    assert_eq!(r["wan"]["saved"], 2 * len - (len + ci));

    // Store size and fill.
    let used = r["store"]["used_bytes"].as_u64().unwrap();
    assert!(used >= len, "{r}");
    assert_eq!(r["store"]["max_bytes"], 64 * 1024 * 1024);
    assert_eq!(r["store"]["blocks"], BLOCKS);
    assert_eq!(
        r["store"]["fill_ratio"].as_f64().unwrap(),
        used as f64 / (64.0 * 1024.0 * 1024.0)
    );

    // The hour's history holds both downloads; the recent requests both, newest first.
    let hist = r["history"].as_array().unwrap();
    assert_eq!(hist.len(), 60);
    let sum = |src: &str| -> u64 { hist.iter().map(|s| s["bytes"][src].as_u64().unwrap()).sum() };
    assert_eq!(sum("store"), len);
    assert_eq!(sum("origin"), len);
    let recent = r["recent_requests"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{r}");
    assert_eq!(recent[0]["outcome"], "hit");
    assert_eq!(recent[0]["target"], "/big.bin");
    assert_eq!(recent[0]["bytes"]["store"], len);
    assert_eq!(recent[1]["outcome"], "miss");
    assert_eq!(recent[1]["bytes"]["origin"], len);

    // The table says the same in words.
    let out = status_cmd(&["--admin", &admin]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("admin, proxy"), "{table}");
    assert!(
        table.contains("hit ratio       50.0 % of 4.0 MiB served"),
        "{table}"
    );
    assert!(table.contains("hit 1  partial 0  miss 1"), "{table}");
    assert!(table.contains("store         2.0 MiB"), "{table}");
    assert!(table.contains("origin        2.0 MiB"), "{table}");
    assert!(table.contains("of 64.0 MiB"), "{table}");

    // Without --admin the address comes from the configuration file.
    let cfg = b.dir.path().join("branchcache.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["bytes_by_source"], r["bytes_by_source"]);
}

#[test]
fn status_without_a_daemon_fails_with_a_clear_message() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = status_cmd(&["--admin", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn access_log_has_outcome_and_bytes_by_source_but_no_query() {
    let b = Branch::start("[log]\nformat = \"json\"");
    let data = content(200 * 1024, 9);
    b.origin.put("/logged.bin", data.clone());
    assert!(b.download("/logged.bin?token=sekrit-123") == data);
    b.wait_stored_blocks(4);
    assert!(b.download("/logged.bin?token=sekrit-123") == data);
    let log_path = b.dir.path().join("branchcache.log");
    // The line is written when the response body is finished; poll briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines: Vec<serde_json::Value> = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(!log.contains("sekrit-123"), "query string logged:\n{log}");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "proxy request")
            .collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (cold, warm) = (&lines[0]["fields"], &lines[1]["fields"]);
    assert_eq!(cold["outcome"], "miss");
    assert_eq!(cold["origin_bytes"], data.len() as u64);
    assert_eq!(cold["target"], "/logged.bin");
    assert_eq!(warm["outcome"], "hit");
    assert_eq!(warm["store_bytes"], data.len() as u64);
    assert_eq!(warm["origin_bytes"], 0);
    assert_eq!(lines[1]["level"], "INFO");
}

#[test]
fn sighup_with_an_unchanged_file_keeps_the_daemon_running() {
    let b = Branch::start("");
    let pid = b.daemon.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let log_path = b.dir.path().join("branchcache.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("SIGHUP: configuration unchanged")
    {
        assert!(std::time::Instant::now() < deadline, "SIGHUP not logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, _) = support::http_get(b.daemon.admin, "/healthz").unwrap();
    assert_eq!(status, 200);
}

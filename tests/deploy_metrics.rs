//! Every metric the files in deploy/ (alert rules, Grafana dashboard) query is
//! exported by a running daemon, so no panel or alert silently watches
//! nothing. With `promtool` installed (Debian package `prometheus`), the
//! alert rules are also checked.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use support::{http_get, Branch};

/// Sample names a scrape of `/metrics` can return, from its `# TYPE` lines.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if (f.next(), f.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (f.next(), f.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// Every `branchcache_…` identifier in `text`.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("branchcache_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_used_in_deploy_is_exported() {
    // Labelled families appear once they have a series: exercise the daemon
    // first (a cached download, an unreachable origin in forward mode, /status).
    let b = Branch::start("forward = true");
    let data = support::content(300 * 1024, 5);
    b.origin.put("/o.bin", data.clone());
    assert!(b.download("/o.bin") == data);
    let dead = format!("http://127.0.0.1:{}/gone", support::free_port());
    let (status, _) = http_get(b.proxy, &dead).unwrap();
    assert_eq!(status, 502);
    b.status_json();
    let (status, body) = http_get(b.daemon.admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let exported = exported_names(&String::from_utf8(body).unwrap());
    assert!(
        exported.contains("branchcache_proxy_served_bytes_total"),
        "{exported:?}"
    );

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let mut used = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for name in referenced_names(&text) {
            assert!(
                exported.contains(&name),
                "{} uses {name}, which the daemon does not export",
                path.display()
            );
            used += 1;
        }
    }
    assert!(used >= 10, "deploy/ references only {used} metrics");
}

#[test]
fn alert_rules_pass_promtool_when_available() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus-alerts.yml");
    match Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!(
            "SKIPPED promtool check (promtool not installed: {e}); metric names are still checked"
        ),
    }
}

#[test]
fn referenced_names_finds_whole_identifiers() {
    let t = r#"rate(branchcache_a_total{x="y"}[5m]) / branchcache_b and xbranchcache_c"#;
    let names: Vec<String> = referenced_names(t).into_iter().collect();
    assert_eq!(names, ["branchcache_a_total", "branchcache_b"]);
}

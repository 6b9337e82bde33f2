//! docs/CONFIG.md documents every configuration key the parser accepts.
//!
//! The key list comes from the parser itself: an unknown key is rejected with
//! "expected `a` or `b`" / "expected one of `a`, `b`, …", so probing each section with a key that
//! cannot exist enumerates its real keys (no hand-kept list to drift).

use branchcache::config::Config;

const PROBE: &str = "__not_a_key__";

/// The keys the parser lists for `toml` with the probe key in it, or `None`
/// when the probe was not rejected as an unknown field (an untyped section).
fn expected_keys(toml: &str) -> Option<Vec<String>> {
    let err = Config::from_toml(toml, "probe").err()?.to_string();
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, …".
    let list = err
        .split(&format!("unknown field `{PROBE}`, expected "))
        .nth(1)?;
    let list = list.lines().next().unwrap_or("");
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn every_config_key_is_documented() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap();
    let sections = expected_keys(&format!("{PROBE} = 1\n")).expect("top level is typed");
    assert!(sections.iter().any(|s| s == "store"), "{sections:?}");
    let mut checked = 0;
    for section in &sections {
        assert!(
            doc.contains(&format!("`[{section}]`")),
            "section [{section}] missing from docs/CONFIG.md"
        );
        let Some(keys) = expected_keys(&format!("[{section}]\n{PROBE} = 1\n")) else {
            // Reserved, untyped sections (rejected as a whole); documented as such above.
            continue;
        };
        let start = doc
            .find(&format!("## `[{section}]`"))
            .unwrap_or_else(|| panic!("no `## `[{section}]`` heading in docs/CONFIG.md"));
        let body = &doc[start..];
        let body = &body[..body[3..].find("\n## ").map_or(body.len(), |e| e + 3)];
        for key in keys {
            assert!(
                body.contains(&format!("| `{key}` |")),
                "[{section}] {key} is not in its table in docs/CONFIG.md"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} keys found");
}

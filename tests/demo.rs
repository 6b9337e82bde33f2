//! `branchcache demo` as a newcomer runs it: the second download comes from
//! the cache and only content information crosses the "WAN".

use std::process::Command;

/// The `|`-separated fields of the report line starting with `prefix`.
fn fields<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
        .split('|')
        .map(str::trim)
        .collect()
}

#[test]
fn demo_downloads_twice_and_the_second_comes_from_the_store() {
    let out = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["demo", "--size", "3 MiB"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let cold = fields(&stdout, "1st (cold)");
    assert_eq!(
        cold[1].split_whitespace().collect::<Vec<_>>(),
        ["from", "store", "0", "B"],
        "{stdout}"
    );
    assert_eq!(
        cold[2].split_whitespace().collect::<Vec<_>>(),
        ["from", "origin", "3.0", "MiB"],
        "{stdout}"
    );
    let warm = fields(&stdout, "2nd (warm)");
    assert_eq!(
        warm[1].split_whitespace().collect::<Vec<_>>(),
        ["from", "store", "3.0", "MiB"],
        "{stdout}"
    );
    assert_eq!(
        warm[2].split_whitespace().collect::<Vec<_>>(),
        ["from", "origin", "0", "B"],
        "{stdout}"
    );
    // Warm WAN bytes are exactly the content information.
    let wan = warm[3].split_whitespace().collect::<Vec<_>>();
    assert_eq!(wan[0], "WAN");
    assert!(
        warm[3].ends_with(&format!("(content information {} {})", wan[1], wan[2])),
        "{stdout}"
    );
    assert!(stdout.contains("both downloads byte-identical"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["demo", "--size", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

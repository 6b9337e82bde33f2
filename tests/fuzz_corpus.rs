//! Replays every committed fuzz input — `fuzz/corpus/<target>/*` and the crash regressions in
//! `tests/data/regress/<target>/*` — through `branchcache::fuzz::run`, so a plain `cargo test`
//! re-checks what the fuzzer found without cargo-fuzz or a nightly toolchain.

use std::path::{Path, PathBuf};

use branchcache::fuzz;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (target directory, files in it) for every target directory under `base`.
fn target_dirs(base: &Path) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        out.push((dir, files));
    }
    out.sort();
    out
}

fn replay(base: &Path) -> usize {
    let mut replayed = 0;
    for (dir, files) in target_dirs(base) {
        let target = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            fuzz::TARGETS.contains(&target),
            "{} has no harness in branchcache::fuzz::TARGETS",
            dir.display()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // A panic here names the input through the test's output.
            eprintln!("replaying {}", file.display());
            assert_eq!(fuzz::run(target, &data), Some(()));
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn committed_fuzz_corpus_replays_without_panics() {
    let n = replay(&root().join("fuzz/corpus"));
    assert!(n > 0, "fuzz/corpus is empty");
}

#[test]
fn crash_regressions_replay_without_panics() {
    replay(&root().join("tests/data/regress"));
}

#[test]
fn every_target_has_a_cargo_fuzz_binary_and_a_corpus() {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    for t in fuzz::TARGETS {
        assert!(
            root().join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(),
            "fuzz/fuzz_targets/{t}.rs missing"
        );
        assert!(
            manifest.contains(&format!("name = \"{t}\"")),
            "fuzz/Cargo.toml lacks [[bin]] {t}"
        );
        assert!(
            root().join(format!("fuzz/corpus/{t}")).is_dir(),
            "fuzz/corpus/{t} missing"
        );
    }
}

//! `branchcache hash` through the real binary: output bytes, ranges, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use branchcache::proto::pccrc::{
    hash_content, server_secret, ContentInfo, HashAlgo, Version, V1_SEGMENT_SIZE,
};

const KEY: &[u8] = b"\x00\x01branchcache cli test key\xff";

struct Fixture {
    dir: tempfile::TempDir,
    content: Vec<u8>,
}

impl Fixture {
    fn new(len: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..len).map(|i| (i * 131 + i / 251) as u8).collect();
        std::fs::write(dir.path().join("content"), &content).unwrap();
        std::fs::write(dir.path().join("key"), KEY).unwrap();
        Fixture { dir, content }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn hash(&self, extra: &[&str]) -> Output {
        run(&self.path("content"), &self.path("key"), extra)
    }
}

fn run(content: &Path, key: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .arg("hash")
        .arg(content)
        .arg("--key-file")
        .arg(key)
        .args(extra)
        .output()
        .unwrap()
}

fn expected(
    version: Version,
    algo: HashAlgo,
    data: &[u8],
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let ks = server_secret(algo, KEY);
    hash_content(version, algo, &ks, data)
        .encode(range)
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn writes_v1_sha256_content_information_to_stdout() {
    let f = Fixture::new(300_000);
    let out = f.hash(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        out.stdout,
        expected(Version::V1, HashAlgo::Sha256, &f.content, None)
    );
    let info = ContentInfo::parse(&out.stdout).unwrap();
    assert_eq!(info.range(), 0..300_000);
}

#[test]
fn writes_every_version_and_algorithm_to_a_file() {
    let f = Fixture::new(200_001);
    for (v, hash, version, algo) in [
        ("1", "sha384", Version::V1, HashAlgo::Sha384),
        ("1", "sha512", Version::V1, HashAlgo::Sha512),
        ("2", "sha512", Version::V2, HashAlgo::Sha512Trunc),
    ] {
        let out_path = f.path("ci.bin");
        let out = f.hash(&[
            "--content-version",
            v,
            "--hash",
            hash,
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert_eq!(
            std::fs::read(&out_path).unwrap(),
            expected(version, algo, &f.content, None)
        );
    }
    // v2 without --hash uses truncated SHA-512.
    let out = f.hash(&["--content-version", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        out.stdout,
        expected(Version::V2, HashAlgo::Sha512Trunc, &f.content, None)
    );
}

#[test]
fn range_end_is_inclusive() {
    let f = Fixture::new(300_000);
    for (spec, range) in [
        ("1000-1999", 1000..2000),
        ("299999-", 299_999..300_000),
        ("-10", 299_990..300_000),
    ] {
        for (v, version, algo) in [
            ("1", Version::V1, HashAlgo::Sha256),
            ("2", Version::V2, HashAlgo::Sha512Trunc),
        ] {
            let out = f.hash(&["--range", spec, "--content-version", v]);
            assert!(out.status.success(), "{spec}: {}", stderr(&out));
            assert_eq!(
                out.stdout,
                expected(version, algo, &f.content, Some(range.clone()))
            );
            assert_eq!(ContentInfo::parse(&out.stdout).unwrap().range(), range);
        }
    }
}

#[test]
fn one_thread_and_all_threads_agree_across_segments() {
    let f = Fixture::new(V1_SEGMENT_SIZE as usize + 70_000);
    let all = f.hash(&[]);
    let one = f.hash(&["--threads", "1"]);
    assert!(all.status.success() && one.status.success());
    assert_eq!(all.stdout, one.stdout);
    assert_eq!(ContentInfo::parse(&all.stdout).unwrap().segment_count(), 2);
    assert_eq!(
        all.stdout,
        expected(Version::V1, HashAlgo::Sha256, &f.content, None)
    );
}

#[test]
fn bad_inputs_exit_2_with_a_clear_message() {
    let f = Fixture::new(1000);
    std::fs::write(f.path("empty-key"), b"").unwrap();
    std::fs::write(f.path("empty-content"), b"").unwrap();
    let cases: Vec<(Output, &str)> = vec![
        (run(&f.path("missing"), &f.path("key"), &[]), "missing"),
        (
            run(&f.path("content"), &f.path("missing-key"), &[]),
            "key file",
        ),
        (
            run(&f.path("content"), &f.path("empty-key"), &[]),
            "is empty",
        ),
        (
            run(&f.path("empty-content"), &f.path("key"), &[]),
            "empty content",
        ),
        (f.hash(&["--range", "5-2"]), "bad range"),
        (f.hash(&["--range", "abc"]), "bad range"),
        (f.hash(&["--range", "0-1000"]), "outside the file"),
        (f.hash(&["--range", "1000-"]), "outside the file"),
        (
            f.hash(&["--content-version", "2", "--hash", "sha256"]),
            "not valid for content information v2",
        ),
        (f.hash(&["--content-version", "3"]), "invalid value"),
    ];
    for (out, needle) in cases {
        assert_eq!(out.status.code(), Some(2), "{needle}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "wanted {needle:?} in {:?}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

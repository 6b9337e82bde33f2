//! Golden vectors: every `tests/data/pccrc/*.bin` parses to exactly the fields its `.json`
//! lists (computed by `gen_vectors.py` with Python's hashlib/hmac, not by the code under
//! test), through the library and through the real `branchcache inspect` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use branchcache::fuzz;
use branchcache::proto::pccrc::{segment_id, ContentInfo, HashAlgo, Version};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pccrc")
}

/// (name, CI bytes, expected JSON) for every vector.
fn vectors() -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let json: Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}.json: {e}"));
        out.push((name, bytes, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 20,
        "expected the full vector set, found {}",
        out.len()
    );
    out
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

#[test]
fn every_vector_parses_to_its_expected_fields() {
    for (name, bytes, exp) in vectors() {
        let ci = ContentInfo::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ctx = |what: &str| format!("{name}: {what}");
        let version = match exp["version"].as_str().unwrap() {
            "1" => Version::V1,
            "2" => Version::V2,
            v => panic!("{name}: version {v}"),
        };
        assert_eq!(ci.version(), version, "{}", ctx("version"));
        assert_eq!(
            ci.hash_algo().as_str(),
            exp["hash_algorithm"].as_str().unwrap(),
            "{}",
            ctx("hash_algorithm")
        );
        assert_eq!(
            ci.range(),
            u64_of(&exp["range"]["start"])..u64_of(&exp["range"]["end"]),
            "{}",
            ctx("range")
        );
        let segs = exp["segments"].as_array().unwrap();
        assert_eq!(ci.segment_count(), segs.len(), "{}", ctx("segment count"));
        for (i, (s, e)) in ci.segments().zip(segs).enumerate() {
            let ctx = |what: &str| format!("{name} segment {i}: {what}");
            assert_eq!(s.index(), u64_of(&e["index"]), "{}", ctx("index"));
            assert_eq!(s.offset(), u64_of(&e["offset"]), "{}", ctx("offset"));
            assert_eq!(u64::from(s.size()), u64_of(&e["size"]), "{}", ctx("size"));
            assert_eq!(
                u64::from(s.block_size()),
                u64_of(&e["block_size"]),
                "{}",
                ctx("block_size")
            );
            assert_eq!(
                s.hash_of_data().to_hex(),
                e["hash_of_data"],
                "{}",
                ctx("HoD")
            );
            assert_eq!(
                hex::encode(s.secret().expose()),
                e["segment_secret"],
                "{}",
                ctx("Kp")
            );
            assert_eq!(s.id().to_hex(), e["segment_id"], "{}", ctx("HoHoDk"));
            let blocks = e["blocks"].as_array().unwrap();
            match version {
                Version::V1 => {
                    assert_eq!(s.block_count() as usize, blocks.len(), "{}", ctx("cBlocks"));
                    for (j, b) in blocks.iter().enumerate() {
                        let h = s.block_hash(j as u32).unwrap();
                        assert_eq!(h.to_hex(), *b, "{}", ctx(&format!("block {j}")));
                    }
                }
                Version::V2 => {
                    assert!(blocks.is_empty());
                    assert_eq!(s.block_count(), 1);
                    assert_eq!(s.block_hash(0), Some(s.hash_of_data()));
                }
            }
        }
        fuzz::pccrc::check_invariants(&ci);
    }
}

#[test]
fn whole_segment_v1_vectors_have_hod_equal_to_hash_of_block_hashes() {
    // Independent of Python: HoD is H(block hashes) whenever the list covers the segment.
    let mut checked = 0;
    for (name, bytes, _) in vectors() {
        let ci = ContentInfo::parse(&bytes).unwrap();
        if ci.version() != Version::V1 {
            continue;
        }
        for s in ci.segments() {
            if s.block_range(s.block_count() - 1).unwrap().end != s.range().end {
                continue;
            }
            let mut all = Vec::new();
            for j in 0..s.block_count() {
                all.extend_from_slice(s.block_hash(j).unwrap().as_bytes());
            }
            assert_eq!(ci.hash_algo().hash(&all), s.hash_of_data(), "{name}");
            assert_eq!(
                s.id(),
                segment_id(ci.hash_algo(), &s.secret(), &s.hash_of_data())
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} segments checked");
}

#[test]
fn alternative_range_encodings_decode_to_the_same_range() {
    let by_name = |n: &str| {
        vectors()
            .into_iter()
            .find(|v| v.0 == n)
            .unwrap_or_else(|| panic!("vector {n}"))
            .1
    };
    for (a, b) in [
        ("v1_spec_3_2_whole", "v1_spec_3_1_explicit_read"),
        ("v2_spec_3_6_whole", "v2_spec_3_6_explicit_length"),
        (
            "v2_range_to_end_zero_length",
            "v2_range_to_end_explicit_length",
        ),
    ] {
        let (a_bytes, b_bytes) = (by_name(a), by_name(b));
        assert_ne!(a_bytes, b_bytes, "{a} and {b} must differ on the wire");
        let (ca, cb) = (
            ContentInfo::parse(&a_bytes).unwrap(),
            ContentInfo::parse(&b_bytes).unwrap(),
        );
        assert_eq!(ca.range(), cb.range(), "{a} vs {b}");
        assert_eq!(ca.segment_count(), cb.segment_count());
    }
}

#[test]
fn spec_layout_sizes_match_the_published_examples() {
    for (name, len, algo) in [
        ("v1_spec_3_2_whole", 166, HashAlgo::Sha256),
        ("v1_iis_size_99710", 166, HashAlgo::Sha256),
        ("v1_spec_3_4_whole_125mb", 64_354, HashAlgo::Sha256),
        ("v2_spec_3_6_whole", 240, HashAlgo::Sha512Trunc),
        ("v2_spec_3_7_range", 104, HashAlgo::Sha512Trunc),
        ("v2_iis_size_99710", 172, HashAlgo::Sha512Trunc),
    ] {
        let bytes = std::fs::read(data_dir().join(format!("{name}.bin"))).unwrap();
        assert_eq!(bytes.len(), len, "{name}");
        assert_eq!(ContentInfo::parse(&bytes).unwrap().hash_algo(), algo);
    }
    let bytes = std::fs::read(data_dir().join("v1_spec_3_5_range_125mb.bin")).unwrap();
    let ci = ContentInfo::parse(&bytes).unwrap();
    assert_eq!(ci.range(), 102_400..130_023_424);
    assert_eq!(ci.segment(3).unwrap().block_count(), 448);
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_branchcache"))
}

#[test]
fn inspect_json_of_every_vector_matches_the_golden_json() {
    for (name, _, mut exp) in vectors() {
        let out = bin()
            .args(["inspect", "--json"])
            .arg(data_dir().join(format!("{name}.bin")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {:?}", out);
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        exp.as_object_mut().unwrap().remove("manifest");
        assert_eq!(got, exp, "{name}");
    }
}

#[test]
fn inspect_prints_a_human_summary() {
    let out = bin()
        .arg("inspect")
        .arg(data_dir().join("v2_spec_3_7_range.bin"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("content information v2, sha512-trunc, 1 segment(s), 104 bytes"));
    assert!(
        text.contains("range: 102400..112640 (10240 bytes)"),
        "{text}"
    );
    assert!(
        text.contains("segment 1: offset 61440, size 87040"),
        "{text}"
    );
}

#[test]
fn inspect_rejects_bad_input_with_exit_code_2_and_one_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut truncated = std::fs::read(data_dir().join("v1_spec_3_2_whole.bin")).unwrap();
    truncated.truncate(100);
    let cases = [
        (
            "truncated.bin",
            truncated,
            "truncated input: v1 segment table",
        ),
        (
            "version.bin",
            vec![0, 9, 0, 0],
            "unsupported content information version: 0x900",
        ),
    ];
    for (file, bytes, msg) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let out = bin().arg("inspect").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(msg), "{err}");
    }
    let out = bin()
        .args(["inspect", "--json"])
        .arg(dir.path().join("missing.bin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

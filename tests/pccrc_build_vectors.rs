//! The builder reproduces the independent Python golden vectors in
//! `tests/data/pccrc/` byte for byte (v2 through the vectors' explicit
//! segment boundaries), for every vector whose range encoding is the one our
//! encoder emits.

use std::path::Path;

use branchcache::proto::pccrc::{
    hash_content, hash_segment, hash_v2_segments, server_secret, ContentHashes, HashAlgo, Version,
};
use serde_json::Value;

fn content(len: u64) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 251) as u8).collect()
}

/// Vectors that use the alternative (equally valid) explicit encoding of a
/// range that runs to the end of the last listed segment; we write 0 there.
const ALTERNATIVE_ENCODINGS: &[&str] = &[
    "v1_spec_3_1_explicit_read",
    "v1_spec_3_4_whole_125mb",
    "v2_range_to_end_explicit_length",
    "v2_spec_3_6_explicit_length",
];

#[test]
fn builder_output_matches_the_golden_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pccrc");
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "json")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    for name in names {
        if ALTERNATIVE_ENCODINGS.contains(&name.as_str()) {
            skipped.push(name);
            continue;
        }
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let want = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let m = &json["manifest"];
        let len = m["content_length"].as_u64().unwrap();
        let key = hex::decode(m["server_key_hex"].as_str().unwrap()).unwrap();
        let algo = match m["hash_algorithm"].as_str().unwrap() {
            "sha256" => HashAlgo::Sha256,
            "sha384" => HashAlgo::Sha384,
            "sha512" => HashAlgo::Sha512,
            "sha512-trunc" => HashAlgo::Sha512Trunc,
            other => panic!("{name}: algorithm {other}"),
        };
        let ks = server_secret(algo, &key);
        let data = content(len);
        let hashes = match m["version"].as_str().unwrap() {
            "1" => hash_content(Version::V1, algo, &ks, &data),
            "2" => {
                let mut offset = 0u64;
                let mut segments = Vec::new();
                let mut batch = Vec::new();
                for b in m["v2_boundaries"].as_array().unwrap() {
                    let size = b.as_u64().unwrap();
                    let bytes = &data[offset as usize..(offset + size) as usize];
                    segments.push(hash_segment(Version::V2, algo, &ks, offset, bytes));
                    batch.push((offset, bytes));
                    offset += size;
                }
                // The batched path (SIMD lanes where the CPU has them) agrees.
                assert_eq!(hash_v2_segments(algo, &ks, &batch), segments, "{name}");
                ContentHashes {
                    version: Version::V2,
                    algo,
                    total_len: len,
                    segments,
                }
            }
            other => panic!("{name}: version {other}"),
        };
        let r = &m["request_range"];
        let range = r["start"].as_u64().unwrap()..r["end"].as_u64().unwrap();
        let whole = range == (0..len);
        let got = hashes.encode((!whole).then_some(range.clone())).unwrap();
        assert_eq!(hex::encode(&got), hex::encode(&want), "{name}");
        if whole {
            // The explicit whole-object range encodes identically.
            assert_eq!(hashes.encode(Some(range)).unwrap(), want, "{name}");
        }
        checked.push(name);
    }
    assert_eq!(
        skipped.len(),
        ALTERNATIVE_ENCODINGS.len(),
        "skipped {skipped:?}"
    );
    assert!(
        checked.len() >= 15,
        "only {} vectors checked: {checked:?}",
        checked.len()
    );
}

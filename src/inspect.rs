//! `branchcache inspect`: render a content information structure for operators.
//!
//! Two renderings of a parsed [`ContentInfo`]: a human-readable summary and a JSON document
//! whose shape matches the golden vectors in `tests/data/pccrc/*.json` (minus their
//! `manifest`). Segment secrets are printed on purpose: the operator already holds the file.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::proto::pccrc::{ContentInfo, Segment, Version};
use crate::proto::DecodeError;

/// Parse `bytes` and render them: JSON (pretty, trailing newline) when `json`, text otherwise.
pub fn inspect(bytes: &[u8], json: bool) -> Result<String, DecodeError> {
    let ci = ContentInfo::parse(bytes)?;
    Ok(if json {
        let mut out = serde_json::to_string_pretty(&to_json(&ci)).unwrap_or_default();
        out.push('\n');
        out
    } else {
        to_text(&ci)
    })
}

/// The JSON document: `version`, `hash_algorithm`, `range` {`start`, `end`} and `segments`
/// [{`index`, `offset`, `size`, `block_size`, `hash_of_data`, `segment_secret`, `segment_id`,
/// `blocks`}], lower-case hex; `blocks` is empty for v2 (a v2 segment's only block hash is its
/// `hash_of_data`).
pub fn to_json(ci: &ContentInfo<'_>) -> Value {
    let range = ci.range();
    let segments: Vec<Value> = ci.segments().map(|s| segment_json(&s)).collect();
    json!({
        "version": ci.version().as_str(),
        "hash_algorithm": ci.hash_algo().as_str(),
        "range": { "start": range.start, "end": range.end },
        "segments": segments,
    })
}

fn segment_json(s: &Segment<'_>) -> Value {
    let blocks: Vec<String> = match s.version() {
        Version::V1 => (0..s.block_count())
            .filter_map(|j| s.block_hash(j))
            .map(|d| d.to_hex())
            .collect(),
        Version::V2 => Vec::new(),
    };
    json!({
        "index": s.index(),
        "offset": s.offset(),
        "size": s.size(),
        "block_size": s.block_size(),
        "hash_of_data": s.hash_of_data().to_hex(),
        "segment_secret": hex::encode(s.secret().expose()),
        "segment_id": s.id().to_hex(),
        "blocks": blocks,
    })
}

/// The human-readable summary: a header, the range, then one paragraph per segment with its
/// hashes and (v1) one line per block.
pub fn to_text(ci: &ContentInfo<'_>) -> String {
    let range = ci.range();
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored deliberately.
    let _ = writeln!(
        out,
        "content information v{}, {}, {} segment(s), {} bytes",
        ci.version(),
        ci.hash_algo(),
        ci.segment_count(),
        ci.as_bytes().len()
    );
    let _ = writeln!(
        out,
        "range: {}..{} ({} bytes)",
        range.start,
        range.end,
        range.end - range.start
    );
    for s in ci.segments() {
        let _ = writeln!(
            out,
            "segment {}: offset {}, size {}, block size {}, {} block(s)",
            s.index(),
            s.offset(),
            s.size(),
            s.block_size(),
            s.block_count()
        );
        let _ = writeln!(out, "  hash of data:   {}", s.hash_of_data());
        let _ = writeln!(
            out,
            "  segment secret: {}",
            hex::encode(s.secret().expose())
        );
        let _ = writeln!(out, "  segment id:     {}", s.id());
        if s.version() == Version::V1 {
            for j in 0..s.block_count() {
                if let (Some(r), Some(h)) = (s.block_range(j), s.block_hash(j)) {
                    let _ = writeln!(out, "  block {j} [{}..{}): {h}", r.start, r.end);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec::Writer;

    fn v1_sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.u16_le(0x0100)
            .u32_le(0x800C)
            .u32_le(0)
            .u32_le(0)
            .u32_le(1);
        w.u64_le(0).u32_le(70_000).u32_le(65_536);
        w.bytes(&[0xAB; 32]).bytes(&[0xCD; 32]);
        w.u32_le(2).bytes(&[1; 32]).bytes(&[2; 32]);
        w.finish()
    }

    fn v2_sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(0).u8(2).u8(4).u64_be(0).u64_be(0).u32_be(0).u64_be(0);
        w.u8(0)
            .u32_be(68)
            .u32_be(1000)
            .bytes(&[0xEE; 32])
            .bytes(&[0xFF; 32]);
        w.finish()
    }

    #[test]
    fn json_lists_every_field_in_lower_case_hex() {
        let buf = v1_sample();
        let v = to_json(&ContentInfo::parse(&buf).unwrap());
        assert_eq!(v["version"], "1");
        assert_eq!(v["hash_algorithm"], "sha256");
        assert_eq!(v["range"]["start"], 0);
        assert_eq!(v["range"]["end"], 70_000);
        let s = &v["segments"][0];
        assert_eq!(s["size"], 70_000);
        assert_eq!(s["block_size"], 65_536);
        assert_eq!(s["hash_of_data"], "ab".repeat(32));
        assert_eq!(s["segment_secret"], "cd".repeat(32));
        assert_eq!(s["segment_id"].as_str().unwrap().len(), 64);
        assert_eq!(s["blocks"][1], "02".repeat(32));
    }

    #[test]
    fn json_blocks_are_empty_for_v2() {
        let buf = v2_sample();
        let v = to_json(&ContentInfo::parse(&buf).unwrap());
        assert_eq!(v["version"], "2");
        assert_eq!(v["hash_algorithm"], "sha512-trunc");
        assert_eq!(v["segments"][0]["block_size"], 1000);
        assert_eq!(v["segments"][0]["blocks"], json!([]));
    }

    #[test]
    fn text_shows_range_segments_and_blocks() {
        let out = inspect(&v1_sample(), false).unwrap();
        assert!(out.starts_with("content information v1, sha256, 1 segment(s), 166 bytes\n"));
        assert!(out.contains("range: 0..70000 (70000 bytes)"), "{out}");
        assert!(out.contains(&format!("segment secret: {}", "cd".repeat(32))));
        assert!(out.contains(&format!("block 1 [65536..70000): {}", "02".repeat(32))));
    }

    #[test]
    fn rejects_garbage_with_the_decode_error() {
        assert_eq!(
            inspect(b"\x00\x07", true).unwrap_err(),
            DecodeError::Unsupported {
                what: "content information version",
                value: 0x0700
            }
        );
    }
}

//! Fuzz harness for the content information parser ([`ContentInfo::parse`]).

use crate::proto::pccrc::{
    ContentInfo, Version, BLOCK_SIZE, MAX_BLOCKS_PER_SEGMENT, V1_SEGMENT_SIZE, V2_MAX_SEGMENT_SIZE,
};

/// Parse `data`; when it is accepted, walk every accessor and assert [`check_invariants`].
pub fn parse(data: &[u8]) {
    if let Ok(ci) = ContentInfo::parse(data) {
        assert_eq!(ci.as_bytes(), data);
        check_invariants(&ci);
        // The renderings must cope with anything the parser accepts.
        let _ = crate::inspect::to_json(&ci);
        let _ = crate::inspect::to_text(&ci);
    }
}

/// Panic unless `ci` satisfies every invariant a consumer relies on: a non-empty range inside
/// the listed segments, contiguous segments with consecutive indexes, sizes within the
/// version's limits, blocks inside their segment and covering the range, hashes of the right
/// length.
pub fn check_invariants(ci: &ContentInfo<'_>) {
    let range = ci.range();
    let d = ci.hash_algo().digest_len();
    let n = ci.segment_count();
    assert!(range.start < range.end, "empty range {range:?}");
    assert!(n >= 1);
    assert_eq!(ci.segments().count(), n);
    assert!(ci.segment(n).is_none());

    let mut prev: Option<(u64, u64)> = None; // (index, end) of the previous segment
    for (i, s) in ci.segments().enumerate() {
        let seg = s.range();
        assert_eq!(s.version(), ci.version());
        assert!(s.size() > 0);
        assert_eq!(seg.end - seg.start, u64::from(s.size()));
        if let Some((index, end)) = prev {
            assert_eq!(s.offset(), end, "segment {i} not contiguous");
            assert_eq!(s.index(), index + 1);
        }
        prev = Some((s.index(), seg.end));
        if i == 0 {
            assert!(seg.start <= range.start && range.start < seg.end);
        }
        if i + 1 == n {
            assert!(seg.start < range.end && range.end <= seg.end);
        }
        assert_eq!(ci.segment_index_at(s.offset()), Some(i));
        assert_eq!(ci.segment_index_at(seg.end - 1), Some(i));

        match ci.version() {
            Version::V1 => {
                assert!(s.size() <= V1_SEGMENT_SIZE);
                assert_eq!(s.block_size(), BLOCK_SIZE);
                assert_eq!(s.index(), s.offset() / u64::from(V1_SEGMENT_SIZE));
                assert!(s.block_count() <= MAX_BLOCKS_PER_SEGMENT);
            }
            Version::V2 => {
                assert!(s.size() <= V2_MAX_SEGMENT_SIZE);
                assert_eq!(s.block_size(), s.size());
                assert_eq!(s.block_count(), 1);
                assert_eq!(s.block_hash(0), Some(s.hash_of_data()));
            }
        }
        assert!(s.block_count() >= 1);
        assert!(s.block_count() <= s.size().div_ceil(s.block_size()));
        assert_eq!(s.hash_of_data().as_bytes().len(), d);
        assert_eq!(s.secret().expose().len(), d);
        assert_eq!(s.id().as_bytes().len(), d);

        let mut cursor = seg.start;
        for j in 0..s.block_count() {
            let b = s.block_range(j).expect("listed block has a range");
            assert_eq!(b.start, cursor, "block {j} of segment {i} not contiguous");
            assert!(b.start < b.end && b.end <= seg.end);
            assert!(b.end - b.start == u64::from(s.block_size()) || b.end == seg.end);
            assert_eq!(
                s.block_hash(j)
                    .expect("listed block has a hash")
                    .as_bytes()
                    .len(),
                d
            );
            cursor = b.end;
        }
        // The listed blocks reach every byte of the range inside this segment.
        assert!(
            cursor >= range.end.min(seg.end),
            "blocks stop short of the range"
        );
        assert!(s.block_range(s.block_count()).is_none());
        assert!(s.block_hash(s.block_count()).is_none());
    }
}

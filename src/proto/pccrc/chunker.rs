//! Deterministic content-defined chunker that picks v2 segment boundaries.
//!
//! MS-PCCRC only requires `0 < cbSegment ≤ 128 KiB` for v2; Windows uses its
//! (unpublished) deduplication chunker. We use a FastCDC-style gear hash with
//! normalized chunking (Xia et al., USENIX ATC 2016):
//!
//! - the first [`MIN_SEGMENT`] bytes of a segment are never a cut point and are
//!   not hashed (the gear hash only "sees" the last 64 bytes anyway);
//! - up to [`NORMAL_SEGMENT`] bytes a cut needs the [`MASK_SMALL`] bits of the
//!   hash to be zero (harder), after that the fewer [`MASK_LARGE`] bits
//!   (easier), which pulls segment sizes towards the target;
//! - a segment is always cut at [`MAX_SEGMENT`] bytes (131072, the protocol
//!   limit, never exceeded).
//!
//! The gear table is derived in code from [`GEAR_SEED`] with splitmix64.
//! Boundaries are **stable across versions**: changing any parameter here
//! changes every v2 segment id we publish, and with it cross-server dedup of
//! our own farm. `docs/V2-CHUNKING.md` documents the exact parameters and a
//! test pins the boundaries of a fixed input.
//!
//! The chunker is streaming: [`Chunker::push`] may be fed any split of the
//! same bytes and reports the same boundaries.

use super::V2_MAX_SEGMENT_SIZE;

/// Smallest segment the chunker cuts (except the last of a resource).
pub const MIN_SEGMENT: u32 = 32 * 1024;
/// Where the cut condition switches from the hard mask to the easy mask.
pub const NORMAL_SEGMENT: u32 = 64 * 1024;
/// Hard cap: the protocol's largest v2 segment.
pub const MAX_SEGMENT: u32 = V2_MAX_SEGMENT_SIZE;
/// Seed of the splitmix64 sequence that fills the gear table ("branchca").
pub const GEAR_SEED: u64 = 0x6272_616e_6368_6361;
/// Cut mask before [`NORMAL_SEGMENT`]: the top 16 hash bits must be zero.
/// The top bits of a gear hash depend on the last ~64 input bytes.
pub const MASK_SMALL: u64 = !0u64 << (64 - 16);
/// Cut mask from [`NORMAL_SEGMENT`] on: the top 14 hash bits must be zero.
pub const MASK_LARGE: u64 = !0u64 << (64 - 14);

// `scan` tests `hash <= !mask`, which equals `hash & mask == 0` only for masks
// made of top bits.
const _: () = assert!(MASK_SMALL.leading_ones() + MASK_SMALL.trailing_zeros() == 64);
const _: () = assert!(MASK_LARGE.leading_ones() + MASK_LARGE.trailing_zeros() == 64);

/// One step of splitmix64 (Steele, Lea, Flood 2014).
const fn splitmix64(state: u64) -> (u64, u64) {
    let state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (state, z ^ (z >> 31))
}

const fn gear_table(seed: u64) -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state = seed;
    let mut i = 0;
    while i < 256 {
        let (next, value) = splitmix64(state);
        state = next;
        table[i] = value;
        i += 1;
    }
    table
}

/// The gear table: 256 successive splitmix64 outputs from [`GEAR_SEED`].
pub static GEAR: [u64; 256] = gear_table(GEAR_SEED);

/// Streaming boundary finder for v2 segments. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Chunker {
    /// Bytes of the current (not yet cut) segment seen so far.
    len: u32,
    /// Gear hash over the current segment's bytes from [`MIN_SEGMENT`] on.
    hash: u64,
}

impl Chunker {
    /// A chunker at the start of a resource.
    pub const fn new() -> Self {
        Chunker { len: 0, hash: 0 }
    }

    /// Bytes of the segment in progress (fed but not yet cut).
    pub const fn pending(&self) -> u32 {
        self.len
    }

    /// Scan `data`, which continues the stream. Returns the index in `data`
    /// just past the next boundary (the segment in progress ends there and a
    /// new one starts), or `None` if every byte of `data` belongs to the
    /// segment in progress.
    pub fn next_cut(&mut self, data: &[u8]) -> Option<usize> {
        let mut pos = 0usize;
        // Skip the part of the minimum size that needs no hashing.
        if self.len < MIN_SEGMENT {
            let skip = usize_min(MIN_SEGMENT - self.len, data.len());
            pos = skip;
            self.len += skip as u32; // skip ≤ MIN_SEGMENT
            if self.len < MIN_SEGMENT {
                return None;
            }
        }
        let rest = data.get(pos..).unwrap_or(&[]);
        if self.len < NORMAL_SEGMENT {
            let n = usize_min(NORMAL_SEGMENT - self.len, rest.len());
            if let Some(i) = self.scan(rest.get(..n).unwrap_or(&[]), MASK_SMALL) {
                return Some(pos + i);
            }
            pos += n;
        }
        let rest = data.get(pos..).unwrap_or(&[]);
        // Here NORMAL_SEGMENT ≤ len < MAX_SEGMENT, or `data` is used up.
        let n = usize_min(MAX_SEGMENT - self.len, rest.len());
        if let Some(i) = self.scan(rest.get(..n).unwrap_or(&[]), MASK_LARGE) {
            return Some(pos + i);
        }
        pos += n;
        if self.len == MAX_SEGMENT {
            self.reset();
            return Some(pos);
        }
        None
    }

    /// Feed `data` and iterate over the cut positions inside it (indexes into
    /// `data`, each just past the end of a segment, ascending).
    pub fn push<'c, 'd>(&'c mut self, data: &'d [u8]) -> Cuts<'c, 'd> {
        Cuts {
            chunker: self,
            data,
            base: 0,
        }
    }

    /// Gear-hash `data` (all of it lies in the current segment, below the cap),
    /// returning the index just past the first cut point.
    ///
    /// Same result as the byte-at-a-time loop of `docs/V2-CHUNKING.md`, four
    /// bytes per step: with `t` the gear sum of the step's first `k` bytes,
    /// the hash after them is `(hash << k) + t`, so the four hashes to test
    /// depend on the previous step's hash through one shift and add instead
    /// of a chain of four (the loop was latency-bound at ~2 cycles a byte).
    #[inline]
    fn scan(&mut self, data: &[u8], mask: u64) -> Option<usize> {
        // `hash & mask == 0` ⇔ `hash <= !mask`: the masks are top bits (see the
        // const assertions below); one compare-and-branch per position.
        let max = !mask;
        let mut hash = self.hash;
        let mut quads = data.chunks_exact(4);
        let mut done = 0usize;
        for quad in quads.by_ref() {
            let &[b0, b1, b2, b3] = quad else {
                unreachable!("chunks_exact(4) yields 4 bytes")
            };
            let g0 = GEAR[usize::from(b0)];
            let t1 = (g0 << 1).wrapping_add(GEAR[usize::from(b1)]);
            let t2 = (t1 << 1).wrapping_add(GEAR[usize::from(b2)]);
            let t3 = (t2 << 1).wrapping_add(GEAR[usize::from(b3)]);
            if (hash << 1).wrapping_add(g0) <= max {
                return Some(self.cut(done + 1));
            }
            if (hash << 2).wrapping_add(t1) <= max {
                return Some(self.cut(done + 2));
            }
            if (hash << 3).wrapping_add(t2) <= max {
                return Some(self.cut(done + 3));
            }
            hash = (hash << 4).wrapping_add(t3);
            if hash <= max {
                return Some(self.cut(done + 4));
            }
            done += 4;
        }
        for &b in quads.remainder() {
            hash = (hash << 1).wrapping_add(GEAR[usize::from(b)]);
            done += 1;
            if hash <= max {
                return Some(self.cut(done));
            }
        }
        self.hash = hash;
        self.len += data.len() as u32; // callers pass at most MAX_SEGMENT - len bytes
        None
    }

    /// A cut `n` bytes into the scanned data: the next segment starts fresh.
    fn cut(&mut self, n: usize) -> usize {
        self.reset();
        n
    }

    fn reset(&mut self) {
        self.len = 0;
        self.hash = 0;
    }
}

fn usize_min(a: u32, b: usize) -> usize {
    usize::try_from(a).map_or(b, |a| a.min(b))
}

/// Iterator over the cuts in one buffer; see [`Chunker::push`].
#[derive(Debug)]
pub struct Cuts<'c, 'd> {
    chunker: &'c mut Chunker,
    data: &'d [u8],
    base: usize,
}

impl Iterator for Cuts<'_, '_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let rest = self.data.get(self.base..)?;
        if rest.is_empty() {
            return None;
        }
        match self.chunker.next_cut(rest) {
            Some(i) => {
                self.base += i;
                Some(self.base)
            }
            None => {
                self.base = self.data.len();
                None
            }
        }
    }
}

/// Segment lengths of a whole in-memory resource (the last may be short).
pub fn segment_lengths(data: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut chunker = Chunker::new();
    let mut last = 0usize;
    for cut in chunker.push(data) {
        out.push((cut - last) as u32);
        last = cut;
    }
    if last < data.len() {
        out.push((data.len() - last) as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic pseudo-random bytes (splitmix64 stream), no RNG needed.
    pub(crate) fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        let mut state = seed;
        while out.len() < len {
            let (next, v) = splitmix64(state);
            state = next;
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First output of splitmix64 seeded with 0 (Vigna's reference code).
        assert_eq!(splitmix64(0).1, 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn gear_table_is_pinned() {
        // Changing the table changes every v2 segment id: it must never move.
        assert_eq!(GEAR[0], 0xf842_d88b_f6a5_9bd5);
        assert_eq!(GEAR[1], 0xa5d9_86c0_8d2e_664b);
        assert_eq!(GEAR[255], 0xb1d4_d8f1_a90a_a365);
    }

    #[test]
    fn boundaries_of_the_reference_input_are_pinned() {
        // docs/V2-CHUNKING.md: 1 MiB of splitmix64(seed 1) output, little-endian.
        let lens = segment_lengths(&pseudo_random(1, 1 << 20));
        assert_eq!(
            lens,
            [
                40236, 68329, 70237, 51352, 94434, 67145, 76904, 65751, 75668, 38353, 71675, 50135,
                80334, 68184, 76811, 53028
            ]
        );
    }

    /// The byte-at-a-time algorithm exactly as `docs/V2-CHUNKING.md` states it.
    fn reference_segment_lengths(data: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        let (mut len, mut h, mut start) = (0u32, 0u64, 0usize);
        for (i, &b) in data.iter().enumerate() {
            len += 1;
            if len > MIN_SEGMENT {
                h = (h << 1).wrapping_add(GEAR[usize::from(b)]);
                let mask = if len <= NORMAL_SEGMENT {
                    MASK_SMALL
                } else {
                    MASK_LARGE
                };
                if h & mask == 0 || len == MAX_SEGMENT {
                    out.push(len);
                    (len, h, start) = (0, 0, i + 1);
                }
            }
        }
        if start < data.len() {
            out.push(len);
        }
        out
    }

    #[test]
    fn the_unrolled_scan_matches_the_documented_loop() {
        // Low-entropy inputs cut often and at every offset within a 4-byte step.
        for seed in 0..8u64 {
            let mut data = pseudo_random(seed, 3 << 20);
            if seed % 2 == 1 {
                data.iter_mut().for_each(|b| *b &= 0x03);
            }
            assert_eq!(segment_lengths(&data), reference_segment_lengths(&data));
        }
    }

    #[test]
    fn segments_respect_min_and_max() {
        let data = pseudo_random(7, 4 << 20);
        let lens = segment_lengths(&data);
        assert_eq!(
            lens.iter().map(|&l| u64::from(l)).sum::<u64>(),
            data.len() as u64
        );
        let (last, body) = lens.split_last().unwrap();
        assert!(*last > 0 && *last <= MAX_SEGMENT);
        for &l in body {
            assert!(
                (MIN_SEGMENT..=MAX_SEGMENT).contains(&l),
                "segment of {l} bytes"
            );
        }
    }

    #[test]
    fn zeros_are_cut_at_the_hard_maximum() {
        // After 64 zero bytes the gear hash is the constant -GEAR[0], whose top
        // bits are not zero, so only the hard cap cuts.
        let data = vec![0u8; 3 * MAX_SEGMENT as usize + 5];
        assert_eq!(
            segment_lengths(&data),
            [MAX_SEGMENT, MAX_SEGMENT, MAX_SEGMENT, 5]
        );
    }

    #[test]
    fn empty_and_tiny_inputs_have_no_cut() {
        let mut c = Chunker::new();
        assert_eq!(c.push(&[]).count(), 0);
        assert_eq!(c.push(&[1, 2, 3]).count(), 0);
        assert_eq!(c.pending(), 3);
        assert_eq!(segment_lengths(&[]), Vec::<u32>::new());
        assert_eq!(segment_lengths(&[9]), vec![1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn split_feeding_finds_the_same_cuts(seed in any::<u64>(), len in 0usize..600_000, splits in proptest::collection::vec(1usize..200_000, 1..20)) {
            let data = pseudo_random(seed, len);
            let whole = segment_lengths(&data);
            let mut chunker = Chunker::new();
            let mut lens = Vec::new();
            let mut start = 0usize; // start of the segment in progress
            let mut pos = 0usize;
            let mut i = 0;
            while pos < data.len() {
                let n = splits[i % splits.len()].min(data.len() - pos);
                i += 1;
                let piece = &data[pos..pos + n];
                for cut in chunker.push(piece) {
                    lens.push((pos + cut - start) as u32);
                    start = pos + cut;
                }
                pos += n;
            }
            if start < data.len() {
                lens.push((data.len() - start) as u32);
            }
            prop_assert_eq!(lens, whole);
        }

        #[test]
        fn cuts_match_the_documented_loop(seed in any::<u64>(), len in 0usize..700_000, bits in 1u8..=8) {
            let mut data = pseudo_random(seed, len);
            let keep = u8::MAX >> (8 - bits); // fewer distinct bytes: more cuts, more offsets
            data.iter_mut().for_each(|b| *b &= keep);
            prop_assert_eq!(segment_lengths(&data), reference_segment_lengths(&data));
        }
    }
}

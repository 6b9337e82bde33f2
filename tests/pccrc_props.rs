//! Property tests for the content information parser: arbitrary and mutated inputs never
//! panic, and whatever the parser accepts satisfies the invariants consumers rely on
//! (`branchcache::fuzz::pccrc::check_invariants`, the same checks the fuzz target runs).

use std::path::Path;

use branchcache::fuzz;
use branchcache::proto::pccrc::ContentInfo;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const MIB32: u64 = 32 * 1024 * 1024;

/// Small golden vectors (< 1 KiB) used as mutation seeds.
fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pccrc");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("bin"))
        .map(|p| std::fs::read(p).unwrap())
        .filter(|b| b.len() < 1024)
        .collect();
    out.sort();
    assert!(out.len() >= 10);
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Xor(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Xor(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..70)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..70usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let len = buf.len().max(1);
    match m {
        Mutation::Set(i, b) => {
            if let Some(x) = buf.get_mut(i % len) {
                *x = *b;
            }
        }
        Mutation::Xor(i, b) => {
            if let Some(x) = buf.get_mut(i % len) {
                *x ^= *b;
            }
        }
        Mutation::Truncate(i) => buf.truncate(i % len),
        Mutation::Insert(i, v) => {
            let at = i % (buf.len() + 1);
            buf.splice(at..at, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i % len;
            let end = (at + n).min(buf.len());
            if at < end {
                buf.drain(at..end);
            }
        }
    }
}

/// A v1 structure whose fields are drawn near the validity boundaries, so a good share of the
/// generated inputs are accepted and the invariants get exercised.
fn v1_ci() -> impl Strategy<Value = Vec<u8>> {
    let algo = prop_oneof![
        4 => Just((0x800Cu32, 32usize)),
        1 => Just((0x800D, 48)),
        1 => Just((0x800E, 64)),
        1 => any::<u32>().prop_map(|a| (a, 32)),
    ];
    let size = prop_oneof![
        6 => Just(32u32 << 20),
        1 => Just(65_536u32),
        2 => 1..=70_000u32,
        1 => (32u32 << 20) - 5..=(32u32 << 20) + 1,
        1 => Just(0u32),
    ];
    let seg = (
        size,
        prop_oneof![3 => Just(None), 1 => (0..=513u32).prop_map(Some)],
    );
    (
        algo,
        prop_oneof![3 => Just(0u32), 3 => 0..70_000u32, 1 => any::<u32>()],
        prop_oneof![3 => Just(0u32), 3 => 1..70_000u32, 1 => any::<u32>()],
        prop_oneof![
            3 => Just(0u64),
            1 => Just(MIB32),
            1 => Just(u64::MAX - MIB32 + 1),
            1 => any::<u64>(),
        ],
        proptest::collection::vec(seg, 0..4),
        any::<u8>(),
    )
        .prop_map(|((algo, d), off, read, base, segs, fill)| {
            let mut out = Vec::new();
            out.extend_from_slice(&0x0100u16.to_le_bytes());
            out.extend_from_slice(&algo.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&read.to_le_bytes());
            out.extend_from_slice(&(segs.len() as u32).to_le_bytes());
            for (k, (size, _)) in segs.iter().enumerate() {
                let offset = base.wrapping_add(k as u64 * MIB32);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&65_536u32.to_le_bytes());
                out.extend_from_slice(&vec![fill; 2 * d]);
            }
            for (size, blocks) in &segs {
                let n = blocks.unwrap_or(size.div_ceil(65_536));
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&vec![fill.wrapping_add(1); n as usize * d]);
            }
            out
        })
}

/// A v2 structure with fields drawn near the validity boundaries.
fn v2_ci() -> impl Strategy<Value = Vec<u8>> {
    let size = prop_oneof![8 => 1..=131_073u32, 1 => Just(131_072u32), 1 => Just(0u32)];
    let chunk = proptest::collection::vec(size, 0..4);
    (
        prop_oneof![Just(0u64), 0..1_000_000u64, any::<u64>()],
        prop_oneof![Just(0u64), 0..100u64, any::<u64>()],
        prop_oneof![4 => Just(0u32), 2 => 0..70_000u32, 1 => 0..140_000u32],
        prop_oneof![4 => Just(0u64), 2 => 1..300_000u64, 1 => any::<u64>()],
        proptest::collection::vec(chunk, 0..3),
    )
        .prop_map(|(start, index, off, len, chunks)| {
            let mut out = vec![0, 2, 4];
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&off.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            for sizes in chunks {
                out.push(0);
                out.extend_from_slice(&(68 * sizes.len() as u32).to_be_bytes());
                for s in sizes {
                    out.extend_from_slice(&s.to_be_bytes());
                    out.extend_from_slice(&[0x5A; 64]);
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz::pccrc::parse(&data);
    }

    #[test]
    fn arbitrary_tails_after_a_valid_version_never_panic(
        v2 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut data = vec![0, if v2 { 2 } else { 1 }];
        data.extend_from_slice(&tail);
        fuzz::pccrc::parse(&data);
    }

    #[test]
    fn mutated_vectors_never_panic(
        pick in any::<prop::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..5),
    ) {
        let seeds = seeds();
        let mut buf = pick.get(&seeds).clone();
        for m in &muts {
            apply(&mut buf, m);
        }
        fuzz::pccrc::parse(&buf);
    }

    #[test]
    fn accepted_v1_structures_satisfy_the_invariants(buf in v1_ci()) {
        if let Ok(ci) = ContentInfo::parse(&buf) {
            fuzz::pccrc::check_invariants(&ci);
        }
    }

    #[test]
    fn accepted_v2_structures_satisfy_the_invariants(buf in v2_ci()) {
        if let Ok(ci) = ContentInfo::parse(&buf) {
            fuzz::pccrc::check_invariants(&ci);
        }
    }
}

/// The structured generators must actually produce accepted inputs, or the invariant
/// properties above would be vacuous.
#[test]
fn structured_generators_produce_accepted_inputs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for (name, strat) in [("v1", v1_ci().boxed()), ("v2", v2_ci().boxed())] {
        let accepted = (0..400)
            .filter(|_| {
                let buf = strat.new_tree(&mut runner).unwrap().current();
                ContentInfo::parse(&buf).is_ok()
            })
            .count();
        eprintln!("{name}: {accepted}/400 accepted");
        assert!(accepted >= 40, "{name}: only {accepted}/400 accepted");
    }
}

//! Discovery message speed: `cargo bench --bench pccrd` (release) or, reusing the dev build,
//! `cargo bench --bench pccrd --profile dev` (an upper bound).
//!
//! Reports the median per-message time of decoding and encoding the golden Probe/ProbeMatch
//! vectors and of the responder's whole path (`Engine::handle_datagram` for a v1 Probe it can
//! answer, through encoding the ProbeMatch). No criterion: a plain `harness = false` loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use branchcache::proto::pccrc::crypto::SegmentId;
use branchcache::proto::pccrd::engine::{Engine, EngineConfig, LocalSegment, LocalSegments};
use branchcache::proto::pccrd::{Message, Probe, Uuid, Version};

/// Measurements per case; the median is reported.
const ROUNDS: usize = 101;
/// Operations per measurement, so one measurement is well above timer resolution.
const BATCH: u32 = 200;

fn median_per_op(mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            t.elapsed() / BATCH
        })
        .collect();
    samples.sort();
    samples[ROUNDS / 2]
}

fn report(name: &str, bytes: usize, d: Duration) {
    let mbps = bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{name:<40} {:>9.2} µs/msg  {:>7.1} MB/s  ({bytes} B)",
        d.as_secs_f64() * 1e6,
        mbps
    );
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    for name in [
        "probe-v1.xml",
        "probe-v2.xml",
        "probematch-v1.xml",
        "probematch-v2.xml",
        "probe-v1-foreign-prefixes.xml",
    ] {
        let bytes = std::fs::read(format!("{root}/tests/data/pccrd/{name}")).unwrap();
        let msg = Message::decode(&bytes).unwrap();
        report(
            &format!("decode {name}"),
            bytes.len(),
            median_per_op(|| {
                black_box(Message::decode(black_box(&bytes)).unwrap());
            }),
        );
        report(
            &format!("encode {name}"),
            bytes.len(),
            median_per_op(|| {
                black_box(black_box(&msg).encode());
            }),
        );
    }

    // Responder path: a Probe the engine has not seen, rate limit off.
    let id = SegmentId::from_slice(&[7; 32]).unwrap();
    let mut lookup = LocalSegments::new();
    lookup.insert(
        id,
        LocalSegment {
            block_count: 512,
            complete: true,
            age: None,
        },
    );
    let mut n = 0u64;
    let mut e = Engine::new(
        EngineConfig {
            rate_burst: u32::MAX,
            // Remember one MessageID only, so the cycled Probes below are
            // always new to the engine (the answer path, not the dedup hit).
            dedup_capacity: 1,
            max_pending_replies: usize::MAX,
            xaddrs: vec!["127.0.0.1:8082".parse().unwrap()],
            ..EngineConfig::default()
        },
        lookup,
        Box::new(move || {
            n = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
            n
        }),
    );
    let from = "127.0.0.2:3702".parse().unwrap();
    let mut k = 0u128;
    let mut now = Duration::ZERO;
    let probes: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| {
            k += 1;
            Probe {
                message_id: Uuid::new_v4(k.to_le_bytes()).to_uri(),
                version: Version::V1,
                segment_ids: vec![id],
            }
            .encode()
        })
        .collect();
    let mut i = 0usize;
    let d = median_per_op(|| {
        e.handle_datagram(from, &probes[i % probes.len()], now);
        i += 1;
        now += Duration::from_secs(1);
        e.handle_timeout(now);
        while let Some(o) = e.poll_output() {
            black_box(o);
        }
    });
    report("responder: probe in -> probe match out", probes[0].len(), d);
}

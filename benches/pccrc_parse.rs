//! Content information parse speed: `cargo bench --bench pccrc_parse` (release) or, to reuse
//! the dev build, `cargo bench --bench pccrc_parse --profile dev` (an upper bound).
//!
//! Builds synthetic whole-file CIs for a 1 GiB resource (v1: 32 segments × 512 blocks; v2:
//! 8192 segments of 128 KiB) and the 64354-byte MS-PCCRC §3.4 vector, then reports the median
//! time of `ContentInfo::parse` alone and of parse + a walk over every segment and block hash.
//! No criterion: a plain `harness = false` loop keeps the dependency list short.

use std::hint::black_box;
use std::time::{Duration, Instant};

use branchcache::proto::pccrc::ContentInfo;
use branchcache::proto::Writer;

/// Iterations per measurement; enough for a stable median on a shared machine.
const ITERS: usize = 201;
const GIB: u64 = 1 << 30;

fn v1_whole(len: u64) -> Vec<u8> {
    let seg = 32u64 << 20;
    let n = len.div_ceil(seg);
    let mut w = Writer::new();
    w.u16_le(0x0100)
        .u32_le(0x800C)
        .u32_le(0)
        .u32_le(0)
        .u32_le(n as u32);
    for k in 0..n {
        let size = seg.min(len - k * seg) as u32;
        w.u64_le(k * seg).u32_le(size).u32_le(65_536);
        w.bytes(&[0x11; 32]).bytes(&[0x22; 32]);
    }
    for k in 0..n {
        let size = seg.min(len - k * seg);
        let blocks = size.div_ceil(65_536) as u32;
        w.u32_le(blocks);
        for _ in 0..blocks {
            w.bytes(&[0x33; 32]);
        }
    }
    w.finish()
}

fn v2_whole(len: u64) -> Vec<u8> {
    let seg = 131_072u64;
    let n = len.div_ceil(seg);
    let mut w = Writer::new();
    w.u8(0).u8(2).u8(4).u64_be(0).u64_be(0).u32_be(0).u64_be(0);
    w.u8(0).u32_be((n * 68) as u32);
    for k in 0..n {
        w.u32_be(seg.min(len - k * seg) as u32);
        w.bytes(&[0x44; 32]).bytes(&[0x55; 32]);
    }
    w.finish()
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..ITERS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[ITERS / 2]
}

fn walk(ci: &ContentInfo<'_>) -> usize {
    let mut n = 0;
    for s in ci.segments() {
        for j in 0..s.block_count() {
            n += usize::from(s.block_hash(j).map(|d| d.as_bytes()[0]).unwrap_or(0));
        }
    }
    n
}

fn main() {
    let spec = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pccrc/v1_spec_3_4_whole_125mb.bin"
    ))
    .expect("golden vector");
    let cases = [
        ("v1 1 GiB", v1_whole(GIB)),
        ("v2 1 GiB", v2_whole(GIB)),
        ("v1 spec 3.4 (125 MB)", spec),
    ];
    for (name, buf) in &cases {
        let ci = ContentInfo::parse(buf).expect("valid synthetic CI");
        let parse = median(|| {
            black_box(
                ContentInfo::parse(black_box(buf))
                    .map(|c| c.segment_count())
                    .ok(),
            );
        });
        let parse_walk = median(|| {
            let c = ContentInfo::parse(black_box(buf)).expect("valid");
            black_box(walk(&c));
        });
        println!(
            "pccrc_parse {name}: {} segments, {} bytes: parse {:.1} µs, parse+walk all hashes {:.1} µs",
            ci.segment_count(),
            buf.len(),
            parse.as_secs_f64() * 1e6,
            parse_walk.as_secs_f64() * 1e6,
        );
    }
}

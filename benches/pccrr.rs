//! PCCRR speed: `cargo bench --bench pccrr` (release) or, reusing the dev build,
//! `cargo bench --bench pccrr --profile dev` (an upper bound).
//!
//! Reports medians for one 64 KiB block: MSG_BLK encode and decode, AES-128-CBC
//! encrypt (one block alone, and per block of a batch of 8 with the chains
//! interleaved, as the server's encryption thread runs them) and decrypt +
//! SHA-256 verify, and a full GETBLKS round trip over loopback
//! (real hyper `PeerClient` ↔ `RetrievalServer` over `MemorySource`), plus the
//! resulting single-connection block throughput. No criterion: a plain loop.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchcache::metrics::Metrics;
use branchcache::net::serve;
use branchcache::proto::pccrc::{HashAlgo, SegmentId, SegmentSecret};
use branchcache::proto::pccrr::{
    cipher_len, decrypt_and_verify, encrypt_block, encrypt_blocks, Blk, CryptoAlgoId, EncryptJob,
    Response, ENCRYPT_LANES,
};
use branchcache::retrieval::{
    BlockRequest, ClientConfig, MemorySource, PeerClient, RetrievalServer, ServerConfig,
};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// Iterations per CPU measurement; enough for a stable median on a shared machine.
const ITERS: usize = 201;
/// Round trips for the loopback measurement.
const ROUND_TRIPS: usize = 400;
const BLOCK: usize = 65_536;

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

fn report(name: &str, d: Duration, bytes: usize) {
    let mib_s = bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    println!(
        "{name:<40} {:>10.1} µs  {mib_s:>8.0} MiB/s",
        d.as_secs_f64() * 1e6
    );
}

fn main() {
    let plain: Vec<u8> = (0..BLOCK).map(|i| (i * 13) as u8).collect();
    let kp = SegmentSecret::from_slice(&[0x42; 32]).unwrap();
    let id = SegmentId::from_slice(&[0x17; 32]).unwrap();
    let iv = [9u8; 16];
    let hash = HashAlgo::Sha256.hash(&plain);

    let cipher = encrypt_block(CryptoAlgoId::AES_128, &kp, iv, &plain).unwrap();
    let blk = Response::Blk(Blk {
        crypto_algo: CryptoAlgoId::AES_128,
        segment_id: id,
        block_index: 0,
        next_block_index: 0,
        block: &cipher,
        vrf: &[],
        iv: &iv,
    });
    let wire = blk.encode();

    report(
        "MSG_BLK encode (64 KiB)",
        median(|| {
            black_box(blk.encode());
        }),
        BLOCK,
    );
    report(
        "MSG_BLK decode (64 KiB, zero-copy)",
        median(|| {
            black_box(Response::decode(black_box(&wire)).unwrap());
        }),
        BLOCK,
    );
    report(
        "AES-128-CBC encrypt (64 KiB)",
        median(|| {
            black_box(encrypt_block(CryptoAlgoId::AES_128, &kp, iv, &plain).unwrap());
        }),
        BLOCK,
    );
    let plains: Vec<Vec<u8>> = (0..ENCRYPT_LANES)
        .map(|k| plain.iter().map(|b| b ^ k as u8).collect())
        .collect();
    let mut outs: Vec<Vec<u8>> = plains
        .iter()
        .map(|p| vec![0; cipher_len(CryptoAlgoId::AES_128, p.len()).unwrap()])
        .collect();
    let batch = median(|| {
        let mut jobs: Vec<EncryptJob<'_>> = plains
            .iter()
            .zip(outs.iter_mut())
            .map(|(p, out)| EncryptJob { iv, plain: p, out })
            .collect();
        encrypt_blocks(CryptoAlgoId::AES_128, &kp, &mut jobs).unwrap();
        black_box(&jobs);
    });
    report(
        "AES-128-CBC encrypt, per block of 8 batched",
        batch / ENCRYPT_LANES as u32,
        BLOCK,
    );
    report(
        "AES-128-CBC decrypt + SHA-256 verify",
        median(|| {
            black_box(
                decrypt_and_verify(
                    CryptoAlgoId::AES_128,
                    &kp,
                    &iv,
                    &cipher,
                    BLOCK,
                    HashAlgo::Sha256,
                    &hash,
                )
                .unwrap(),
            );
        }),
        BLOCK,
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let source = Arc::new(MemorySource::new());
        source.insert(id, kp, 0, Bytes::from(plain.clone()));
        let server =
            RetrievalServer::new(source, ServerConfig::default(), Arc::new(Metrics::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            move |req, peer| server.clone().handle(req, peer),
            stop.clone(),
        ));
        let client = PeerClient::new(
            ClientConfig {
                request_timeout: Duration::from_secs(30),
                ..ClientConfig::default()
            },
            None,
        );
        let want = BlockRequest {
            segment_id: id,
            index: 0,
            kp,
            expected_len: BLOCK,
            hash_algo: HashAlgo::Sha256,
            expected_hash: hash,
        };
        client.fetch_block(addr, &want).await.unwrap(); // warm the connection
        let mut times = Vec::with_capacity(ROUND_TRIPS);
        let start = Instant::now();
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            black_box(client.fetch_block(addr, &want).await.unwrap());
            times.push(t.elapsed());
        }
        let total = start.elapsed();
        times.sort();
        report(
            "GETBLKS loopback round trip (median)",
            times[ROUND_TRIPS / 2],
            BLOCK,
        );
        report(
            "GETBLKS loopback, sequential, mean",
            total / ROUND_TRIPS as u32,
            BLOCK,
        );
        stop.cancel();
    });
}

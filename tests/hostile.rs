//! Hostile network, daemon level (issue 10, and issue 6's "A serving
//! corrupted blocks"): a branch proxy daemon B (`App::start`, real origin,
//! real listeners on loopback) whose fixed peer (`[proxy] peers`) or
//! `[upstream_hosted_cache]` is a hostile PCCRR server written here. Each
//! behaviour (wrong blocks relayed from a real warm daemon A, truncated
//! bodies and messages, 0xFFFFFFFF length fields, a many-GiB Content-Length,
//! slow-loris trickle, silence) must leave B's client with byte-identical
//! content within a bounded time, allocate nothing by wire count, put the
//! source in the penalty box (a second download does not contact it) and
//! be counted on B's `/metrics`.
//!
//! The listener limits (PCCRR per-client cap, request body size) and path
//! safety (no request or package reaches outside the store directory) are
//! checked against a real daemon process at the end of this file.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use branchcache::proto::pccrr::{
    Blk, BlkList, CryptoAlgoId, NegoResp, ProtVer, Request as PccrrRequest,
    Response as PccrrResponse, RETRIEVAL_PATH,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------ allocations

/// The largest single allocation (or reallocation) any thread of this test
/// binary asked for: a decoder that trusted a 0xFFFFFFFF length field or a
/// client that reserved by Content-Length would show up here even when the
/// kernel's overcommit let the allocation "succeed" without touching RSS.
static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

struct Watching;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only records the requested size.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// No legitimate allocation in these tests comes near this (objects are
/// 1 MiB, PCCRR responses at most 384 KiB); a length taken from the wire
/// (4 GiB, 16 GiB) would.
const ALLOCATION_CEILING: usize = 64 * MIB;

// ------------------------------------------------------------ daemons

/// A daemon from TOML text (store in `dir`).
async fn daemon(dir: &tempfile::TempDir, body: &str) -> App {
    let toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{body}\n",
        dir.path().join("store")
    );
    App::start(Config::from_toml(&toml, "test").unwrap())
        .await
        .unwrap()
}

fn proxy_section(origin: SocketAddr) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{origin}\"\n")
}

/// `GET /metrics` on the admin listener, over a real connection.
async fn scrape(app: &App) -> String {
    let (status, _, body) = fetch(app.admin_addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).unwrap()
}

/// Sum of every sample of `name` whose label set contains all of `labels`.
fn metric_with(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|r| r.starts_with('{'))
                && labels.iter().all(|want| l.contains(want))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ------------------------------------------------------------ the hostile source

/// How the hostile PCCRR server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Relays every request to a real warm daemon and flips a byte inside
    /// each MSG_BLK's block payload.
    WrongBlocks,
    /// BLKLIST claims every block; each MSG_BLK response has an honest
    /// `Content-Length`, half its body, then the connection closes.
    TruncatedBody,
    /// BLKLIST claims every block; each MSG_BLK is cut in half (the HTTP
    /// response itself is complete).
    TruncatedMsg,
    /// BLKLIST claims every block; MSG_BLK says `SizeOfBlock = 0xFFFFFFFF`.
    HugeBlockSize,
    /// MSG_BLKLIST says `BlockRangeCount = 0xFFFFFFFF`.
    HugeRangeCount,
    /// `Content-Length: 16 GiB`, then a stream of zeros.
    HugeContentLength,
    /// A plausible response, one byte every 300 ms.
    SlowLoris,
    /// Reads the request, never answers.
    Silent,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    requests: AtomicU64,
    /// Block payloads tampered with (WrongBlocks).
    flipped: AtomicU64,
}

struct HostilePeer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: CancellationToken,
}

impl HostilePeer {
    async fn start(kind: Hostile, relay: Option<SocketAddr>) -> HostilePeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        let (c, s) = (counts.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok((stream, _)) => stream, Err(_) => return },
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let (c, s) = (c.clone(), s.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = serve_hostile(stream, kind, relay, &c) => {}
                    }
                });
            }
        });
        HostilePeer { addr, counts, stop }
    }

    fn seen(&self) -> (u64, u64) {
        (
            self.counts.connections.load(Ordering::SeqCst),
            self.counts.requests.load(Ordering::SeqCst),
        )
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read one HTTP/1.1 request (head and `Content-Length` body) from `s`,
/// keeping what follows in `buf`; `None` at EOF or on nonsense.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 64 * 1024 || s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if len > 1 << 20 {
        return None;
    }
    while buf.len() < head_end + len {
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(body)
}

fn http_head(len: u64) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes()
}

/// A well-formed answer that claims everything: BLKLIST of every range
/// asked, a MSG_BLK with a block-sized (wrong) ciphertext, NEGO_RESP.
fn plausible_answer(req: &[u8]) -> Vec<u8> {
    match PccrrRequest::decode(req) {
        Ok(PccrrRequest::GetBlkList(m)) => PccrrResponse::BlkList(BlkList {
            crypto_algo: m.crypto_algo,
            segment_id: m.segment_id,
            ranges: m.ranges,
            next_block_index: 0,
        })
        .encode(),
        Ok(PccrrRequest::GetBlks(m)) => {
            let block = vec![0x5a; 65_536 + 16];
            PccrrResponse::Blk(Blk {
                crypto_algo: CryptoAlgoId::AES_128,
                segment_id: m.segment_id,
                block_index: m.ranges[0].index,
                next_block_index: 0,
                block: &block,
                vrf: &[],
                iv: &[7; 16],
            })
            .encode()
        }
        _ => PccrrResponse::NegoResp(NegoResp {
            crypto_algo: CryptoAlgoId::NONE,
            min_version: ProtVer::V1_0,
            max_version: ProtVer::V2_0,
        })
        .encode(),
    }
}

/// Byte offset of a MSG_BLK's block payload within `resp`, and its length.
fn blk_payload(resp: &[u8]) -> Option<(usize, usize)> {
    match PccrrResponse::decode(resp) {
        Ok(PccrrResponse::Blk(b)) if !b.block.is_empty() => Some((
            b.block.as_ptr() as usize - resp.as_ptr() as usize,
            b.block.len(),
        )),
        _ => None,
    }
}

fn set_u32_be(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

async fn serve_hostile(
    mut s: TcpStream,
    kind: Hostile,
    relay: Option<SocketAddr>,
    counts: &Counts,
) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        counts.requests.fetch_add(1, Ordering::SeqCst);
        let mut resp = plausible_answer(&req);
        let is_blk = blk_payload(&resp).is_some();
        match kind {
            Hostile::WrongBlocks => {
                let post = Request::post(RETRIEVAL_PATH)
                    .header(header::HOST, "peer.test")
                    .body(Full::new(Bytes::from(req)))
                    .unwrap();
                let Ok((status, _, body)) = send(relay.unwrap(), post).await else {
                    return;
                };
                assert_eq!(status, StatusCode::OK);
                resp = body.to_vec();
                if let Some((at, len)) = blk_payload(&resp) {
                    resp[at + len / 2] ^= 0xFF;
                    counts.flipped.fetch_add(1, Ordering::SeqCst);
                }
            }
            Hostile::TruncatedBody if is_blk => {
                let mut out = http_head(resp.len() as u64);
                out.extend_from_slice(&resp[..resp.len() / 2]);
                let _ = s.write_all(&out).await;
                return; // closes mid-body
            }
            Hostile::TruncatedMsg if is_blk => resp.truncate(resp.len() / 2),
            Hostile::TruncatedBody | Hostile::TruncatedMsg => {} // an honest-looking BLKLIST
            Hostile::HugeBlockSize => {
                if let Some((at, _)) = blk_payload(&resp) {
                    set_u32_be(&mut resp, at - 4, u32::MAX);
                }
            }
            Hostile::HugeRangeCount => {
                if let Ok(PccrrResponse::BlkList(l)) = PccrrResponse::decode(&resp) {
                    let id = l.segment_id;
                    let at = find(&resp, id.as_bytes()).unwrap() + id.as_bytes().len();
                    set_u32_be(&mut resp, at, u32::MAX);
                }
            }
            Hostile::HugeContentLength => {
                if s.write_all(&http_head(16 << 30)).await.is_err() {
                    return;
                }
                let zeros = vec![0u8; 64 * 1024];
                for _ in 0..128 {
                    if s.write_all(&zeros).await.is_err() {
                        return;
                    }
                }
                let _ = s.read(&mut [0u8; 1]).await; // until the client hangs up
                return;
            }
            Hostile::SlowLoris => {
                let mut out = http_head(resp.len() as u64);
                out.extend_from_slice(&resp);
                for b in out {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if s.write_all(&[b]).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Hostile::Silent => {
                let _ = s.read(&mut [0u8; 1]).await; // until the client hangs up
                return;
            }
        }
        let mut out = http_head(resp.len() as u64);
        out.extend_from_slice(&resp);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------ the cases

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `[proxy] peers = ["hostile"]`
    FixedPeer,
    /// `[upstream_hosted_cache] address = "hostile"`
    HostedCache,
}

/// What B's penalty counter should name for each behaviour.
fn expected_reason(kind: Hostile) -> &'static str {
    match kind {
        Hostile::WrongBlocks => "hash_mismatch",
        Hostile::TruncatedBody | Hostile::HugeContentLength => "http",
        Hostile::TruncatedMsg | Hostile::HugeBlockSize | Hostile::HugeRangeCount => "garbage",
        Hostile::SlowLoris | Hostile::Silent => "timeout",
    }
}

/// Generous bound for one download through B (the machine is shared and
/// noisy): the point is that nothing hangs on the hostile source.
const BOUND: Duration = Duration::from_secs(60);

async fn timed_fetch(addr: SocketAddr, path: &str) -> (StatusCode, Bytes, Duration) {
    let t = Instant::now();
    let (status, _, body) = tokio::time::timeout(BOUND, fetch(addr, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} through B hung for {BOUND:?}"));
    (status, body, t.elapsed())
}

async fn hostile_case(kind: Hostile, role: Role) {
    let seed = 100 + kind as u8 * 2 + role as u8 * 40;
    let origin = Origin::start().await;
    let one = content(MIB, seed);
    let two = content(MIB + 12_345, seed + 1);
    origin.put("/one.bin", Object::peerdist(one.clone()));
    origin.put("/two.bin", Object::peerdist(two.clone()));

    // WrongBlocks: a real daemon A (proxy + peer) that holds both objects.
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = None;
    if kind == Hostile::WrongBlocks {
        let app = daemon(
            &a_dir,
            &format!(
                "{}[peer]\nlisten = \"127.0.0.1:0\"\ndiscovery = false\n",
                proxy_section(origin.addr)
            ),
        )
        .await;
        for (path, data) in [("/one.bin", &one), ("/two.bin", &two)] {
            let (status, _, body) = fetch(app.proxy_addr.unwrap(), path).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body == *data);
        }
        let blocks = (one.len().div_ceil(65_536) + two.len().div_ceil(65_536)) as u64;
        for _ in 0..2000 {
            if app.store.stats().blocks >= blocks {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(app.store.stats().blocks, blocks, "A never warmed");
        a = Some(app);
    }
    let hostile = HostilePeer::start(kind, a.as_ref().and_then(|a| a.peer_addr)).await;
    let wan_before = origin.body_bytes();

    let b_dir = tempfile::tempdir().unwrap();
    let source = match role {
        Role::FixedPeer => format!("peers = [\"{}\"]\n", hostile.addr),
        Role::HostedCache => format!("[upstream_hosted_cache]\naddress = \"{}\"\n", hostile.addr),
    };
    let b = daemon(&b_dir, &format!("{}{source}", proxy_section(origin.addr))).await;
    let b_addr = b.proxy_addr.unwrap();

    let (status, body, took) = timed_fetch(b_addr, "/one.bin").await;
    assert_eq!(status, StatusCode::OK, "{kind:?}/{role:?}");
    assert!(body == one, "{kind:?}/{role:?}: first download differs");
    let (conns, reqs) = hostile.seen();
    assert!(
        reqs >= 1,
        "{kind:?}/{role:?}: B never asked the hostile source"
    );
    if kind == Hostile::WrongBlocks {
        assert!(hostile.counts.flipped.load(Ordering::SeqCst) >= 1);
    }

    // Within the back-off period another object is fetched without a
    // single connection or request to the penalised source.
    let (status, body, took2) = timed_fetch(b_addr, "/two.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == two, "{kind:?}/{role:?}: second download differs");
    assert_eq!(
        hostile.seen(),
        (conns, reqs),
        "{kind:?}/{role:?}: the penalised source was contacted again"
    );

    let m = scrape(&b).await;
    let label = match role {
        Role::FixedPeer => "source=\"peer\"",
        Role::HostedCache => "source=\"hosted_cache\"",
    };
    let reason = format!("reason=\"{}\"", expected_reason(kind));
    assert_eq!(
        metric_with(
            &m,
            "branchcache_retrieval_peer_penalties_total",
            &[label, &reason]
        ),
        1,
        "{kind:?}/{role:?}: one penalty expected:\n{m}"
    );
    // Every byte came from the origin, each exactly once.
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_served_bytes_total{source=\"origin\"}"
        ),
        (one.len() + two.len()) as u64,
        "{m}"
    );
    assert_eq!(
        origin.body_bytes() - wan_before,
        (one.len() + two.len()) as u64
    );
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_CEILING,
        "{kind:?}/{role:?}: an allocation of {largest} bytes"
    );
    eprintln!("{kind:?}/{role:?}: first download {took:?}, second {took2:?}, {reqs} requests on {conns} connections to the hostile source");
    b.shutdown().await;
    if let Some(a) = a {
        a.shutdown().await;
    }
}

macro_rules! hostile_cases {
    ($($name:ident: $kind:ident, $role:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            hostile_case(Hostile::$kind, Role::$role).await;
        }
    )*};
}

hostile_cases! {
    peer_relaying_corrupted_blocks_from_a_real_daemon: WrongBlocks, FixedPeer;
    hosted_cache_relaying_corrupted_blocks_from_a_real_daemon: WrongBlocks, HostedCache;
    peer_closing_mid_body: TruncatedBody, FixedPeer;
    hosted_cache_closing_mid_body: TruncatedBody, HostedCache;
    peer_sending_a_cut_message: TruncatedMsg, FixedPeer;
    hosted_cache_sending_a_cut_message: TruncatedMsg, HostedCache;
    peer_with_a_4_gib_block_size: HugeBlockSize, FixedPeer;
    hosted_cache_with_a_4_gib_block_size: HugeBlockSize, HostedCache;
    peer_with_a_4_billion_range_count: HugeRangeCount, FixedPeer;
    hosted_cache_with_a_4_billion_range_count: HugeRangeCount, HostedCache;
    peer_with_a_16_gib_content_length: HugeContentLength, FixedPeer;
    hosted_cache_with_a_16_gib_content_length: HugeContentLength, HostedCache;
    peer_trickling_one_byte_at_a_time: SlowLoris, FixedPeer;
    hosted_cache_trickling_one_byte_at_a_time: SlowLoris, HostedCache;
    peer_that_never_answers: Silent, FixedPeer;
    hosted_cache_that_never_answers: Silent, HostedCache;
}

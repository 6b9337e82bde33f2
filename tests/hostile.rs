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
    /// Not hostile: a plausible answer to everything (BLKLIST of every
    /// range, a block-sized ciphertext of the wrong bytes). Used as the
    /// offering client of weird-id PCHC offers in the path-safety test.
    Plausible,
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

    /// [`seen`](Self::seen) once it has stopped changing (unchanged for
    /// 300 ms, at most 10 s). A request B sent during a download may reach
    /// this server after the download is over: B dropped it when it gave up
    /// on the source, and on a loaded machine the accept loop takes its
    /// time. Counted late, it would look like a contact after the penalty.
    async fn settled(&self) -> (u64, u64) {
        let mut last = self.seen();
        for _ in 0..33 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.seen();
            if now == last {
                return now;
            }
            last = now;
        }
        last
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
            Hostile::Plausible => {}
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
        Hostile::Plausible => unreachable!("not a hostile case"),
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
    let (conns, reqs) = hostile.settled().await;
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

// ------------------------------------------------------------ a daemon process

/// A `branchcache run` process with every role: proxy (in front of the
/// origin), publisher (in front of the same origin), peer (PCCRR, no
/// discovery), hosted cache (HTTP). Store in `root/store`,
/// publisher secret in `root/secrets/server-secret`; config and log in `etc`.
struct Node {
    proc: Option<Daemon>,
    admin: SocketAddr,
    proxy: SocketAddr,
    peer: SocketAddr,
    publisher: SocketAddr,
    hc: SocketAddr,
    config: std::path::PathBuf,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn start_node(
    root: &std::path::Path,
    etc: &std::path::Path,
    origin: SocketAddr,
    max_active: u32,
) -> Node {
    let [admin, proxy, peer, publisher, hc] = [(); 5].map(|_| loopback(free_port()));
    let config = etc.join("branchcache.toml");
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n[admin]\nlisten = \"{admin}\"\n\
             [proxy]\nlisten = \"{proxy}\"\nupstream = \"http://{origin}\"\n\
             [peer]\nlisten = \"{peer}\"\ndiscovery = false\nmax_active_per_client = {max_active}\n\
             [publisher]\nlisten = \"{publisher}\"\nupstream = \"http://{origin}\"\nsecret_file = {secret:?}\n\
             [hosted_cache]\nlisten_http = \"{hc}\"\nlisten_https = \"\"\nmax_active_per_client = {max_active}\n",
            store = root.join("store"),
            secret = root.join("secrets").join("server-secret"),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(etc.join("daemon.log")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_branchcache"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if status_of(
            &raw(
                admin,
                b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        ) == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "daemon never became ready");
        assert!(d.0.try_wait().unwrap().is_none(), "daemon exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Node {
        proc: Some(d),
        admin,
        proxy,
        peer,
        publisher,
        hc,
        config,
    }
}

impl Node {
    /// The last lines of the daemon's log (for failure messages).
    fn log_tail(&self) -> String {
        let log = self.config.with_file_name("daemon.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM and wait (the store closes cleanly, so the CLI can open it).
    fn stop(&mut self) {
        let Some(mut d) = self.proc.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &d.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn metrics(&self) -> String {
        let resp = raw(
            self.admin,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        String::from_utf8_lossy(&resp).into_owned()
    }

    fn store_cmd(&self, args: &[&std::ffi::OsStr]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_branchcache"))
            .arg("--config")
            .arg(&self.config)
            .arg("store")
            .args(args)
            .output()
            .unwrap()
    }
}

/// Send `bytes` verbatim on a fresh connection (from `from`, when given)
/// and read until the server closes (at most 15 s).
async fn raw_from(from: Option<std::net::IpAddr>, addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let Ok(mut s) = socket.connect(addr).await else {
        return Vec::new();
    };
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    out
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_from(None, addr, bytes).await
}

fn status_of(resp: &[u8]) -> u16 {
    std::str::from_utf8(resp.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The body of a `Content-Length` response.
fn body_of(resp: &[u8]) -> &[u8] {
    find(resp, b"\r\n\r\n").map_or(&[], |p| &resp[p + 4..])
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The first segment of a v1 object, as the proxy plans it.
fn first_segment(data: &Bytes) -> branchcache::fetch::SegmentPlan {
    use branchcache::proto::pccrc::ContentInfo;
    let obj = Object::peerdist(data.clone());
    let ci = ContentInfo::parse(obj.ci.as_ref().unwrap()).unwrap();
    let seg = ci.segments().next().unwrap();
    branchcache::fetch::SegmentPlan::from_segment(&seg, Version::V1, HashAlgo::Sha256)
}

fn get_blk_list(id: branchcache::proto::pccrc::SegmentId, blocks: u32) -> Vec<u8> {
    PccrrRequest::GetBlkList(branchcache::proto::pccrr::GetBlkList {
        crypto_algo: CryptoAlgoId::AES_128,
        segment_id: id,
        ranges: vec![branchcache::proto::pccrr::BlockRange {
            index: 0,
            count: blocks,
        }],
    })
    .encode()
}

/// The block ranges of a BLKLIST answer as `(index, count)`; `None` when the
/// answer is not a BLKLIST.
fn blk_list_ranges(resp: &[u8]) -> Option<Vec<(u32, u32)>> {
    match PccrrResponse::decode(body_of(resp)) {
        Ok(PccrrResponse::BlkList(l)) => {
            Some(l.ranges.iter().map(|r| (r.index, r.count)).collect())
        }
        _ => None,
    }
}

/// Ask `listener` (from `from`) with `ask` until the BLKLIST answer lists
/// exactly the ranges `want` (`&[]`: refused; `&[(0, n)]`: all `n` blocks;
/// the proxy's store writes land in any order, so a prefix or a list with a
/// gap is not yet "all").
async fn wait_listed(
    node: &Node,
    listener: SocketAddr,
    from: Option<std::net::IpAddr>,
    ask: &[u8],
    want: &[(u32, u32)],
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = raw_from(from, listener, ask).await;
        let got = blk_list_ranges(&answer);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listener}: BLKLIST never listed {want:?} (last: {got:?}, status {}; daemon log:\n{})",
            status_of(&answer),
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------ listener limits

/// Hold both of 127.0.0.1's slots at `listener` (`max_active_per_client =
/// 2`) with two uploads that never finish, and wait until its GETBLKLIST is
/// refused (an empty list). An ask sent while the holders are being
/// dispatched can take a slot before the second holder, which then waits out
/// its body without one: such a pair is dropped and a fresh one started.
/// Counts every upload started in `abandoned`.
async fn hold_both_slots(
    node: &Node,
    listener: SocketAddr,
    ask: &[u8],
    abandoned: &mut u64,
) -> Vec<TcpStream> {
    let upload = format!(
        "POST {RETRIEVAL_PATH} HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n\0\0\0\0"
    );
    let mut last = None;
    for _ in 0..10 {
        let mut holders = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(listener).await.unwrap();
            s.write_all(upload.as_bytes()).await.unwrap();
            holders.push(s);
            *abandoned += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let answer = raw(listener, ask).await;
            last = blk_list_ranges(&answer);
            if last.as_deref() == Some(&[][..]) {
                return holders;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(holders);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{listener}: two uploads never held 127.0.0.1's slots (last BLKLIST: {last:?}); daemon log:\n{}",
        node.log_tail()
    );
}

/// Both PCCRR listeners of a real daemon process (`[peer]` and the hosted
/// cache's HTTP listener, `max_active_per_client = 2`): while one client
/// address holds its two slots with uploads that never finish, its next
/// GETBLKLIST is answered with an empty list (counted in
/// `branchcache_retrieval_refusals_total`) and another address is still
/// served in full; the slots come back when the uploads go away. Request
/// bodies over 98 304 bytes (with Content-Length or chunked) get 413, one of
/// exactly 98 304 bytes is read (and refused as garbage, 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pccrr_listeners_cap_each_client_and_refuse_big_bodies() {
    let origin = Origin::start().await;
    let data = content(MIB, 7);
    origin.put("/obj.bin", Object::peerdist(data.clone()));
    let (root, etc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node = start_node(root.path(), etc.path(), origin.addr, 2).await;
    let (status, _, body) = fetch(node.proxy, "/obj.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    let seg = first_segment(&data);
    let ask = post(RETRIEVAL_PATH, &get_blk_list(seg.id, seg.block_count()));
    let other_client = Some(std::net::IpAddr::from([127, 0, 0, 2]));

    let all = [(0, seg.block_count())];
    // Uploads the test started and then dropped (each ends in a body error).
    let mut abandoned = 0;
    for listener in [node.peer, node.hc] {
        wait_listed(&node, listener, None, &ask, &all).await;
        let refusals = metric(
            &node.metrics().await,
            "branchcache_retrieval_refusals_total",
        );
        // 127.0.0.1 is at its cap: empty lists, never an error…
        let holders = hold_both_slots(&node, listener, &ask, &mut abandoned).await;
        // …while another client address is served in full.
        assert_eq!(
            blk_list_ranges(&raw_from(other_client, listener, &ask).await).as_deref(),
            Some(&all[..]),
            "{listener}: the cap is not per client"
        );
        let m = node.metrics().await;
        assert!(
            metric(&m, "branchcache_retrieval_refusals_total") > refusals,
            "{m}"
        );
        drop(holders);
        wait_listed(&node, listener, None, &ask, &all).await;
    }

    let mut chunked = format!(
        "POST {RETRIEVAL_PATH} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..7 {
        chunked.extend_from_slice(b"4000\r\n");
        chunked.extend_from_slice(&[0u8; 0x4000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for listener in [node.peer, node.hc] {
        let over = raw(listener, &post(RETRIEVAL_PATH, &[0u8; 98_305])).await;
        assert_eq!(status_of(&over), 413, "{listener}: 98 305 bytes");
        assert_eq!(
            status_of(&raw(listener, &chunked).await),
            413,
            "{listener}: chunked"
        );
        let at_limit = raw(listener, &post(RETRIEVAL_PATH, &[0u8; 98_304])).await;
        assert_eq!(status_of(&at_limit), 400, "{listener}: 98 304 bytes");
    }
    let m = node.metrics().await;
    assert_eq!(
        metric(
            &m,
            "branchcache_retrieval_requests_total{type=\"invalid\",result=\"body\"}"
        ),
        // Two over-limit bodies per listener, and the abandoned uploads
        // that held (or tried to hold) the slots.
        4 + abandoned,
        "{m}"
    );
    node.stop();
}

/// MS-PCCRD over real UDP sockets: a driver holding one segment gets a
/// flood of valid Probes from 127.0.0.2; at most its burst (plus what the
/// refill adds while the flood lasts) is answered, the rest is counted as
/// `rate_limited`, and a Probe from 127.0.0.3 is still answered.
#[tokio::test]
async fn discovery_rate_limits_probes_per_source_address() {
    use branchcache::discovery::{Discovery, DiscoveryConfig};
    use branchcache::proto::pccrd::engine::{EngineConfig, LocalSegment, LocalSegments};
    use branchcache::proto::pccrd::{Message, Probe, Uuid, Version as PdVersion};
    let id = branchcache::proto::pccrc::SegmentId::from_slice(&[9; 32]).unwrap();
    let engine = EngineConfig {
        endpoint: Uuid::new_v4([1; 16]),
        instance_id: 1,
        xaddrs: vec![loopback(18_001)],
        ..EngineConfig::default()
    };
    let (burst, per_second) = (
        u64::from(engine.rate_burst),
        u64::from(engine.rate_per_second),
    );
    let config = DiscoveryConfig {
        bind: vec![loopback(0)],
        targets: Vec::new(),
        interfaces_v4: Vec::new(),
        interfaces_v6: Vec::new(),
        engine,
    };
    let mut held = LocalSegments::new();
    held.insert(
        id,
        LocalSegment {
            block_count: 1,
            complete: true,
            age: None,
        },
    );
    let metrics = Arc::new(branchcache::metrics::Metrics::new());
    let token = CancellationToken::new();
    let d = Discovery::start(config, held, metrics.clone(), token.clone()).unwrap();
    let target = d.local_addrs()[0];
    let probe = |n: u16| {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&n.to_be_bytes());
        Probe {
            message_id: Uuid::new_v4(b).to_uri(),
            version: PdVersion::V1,
            segment_ids: vec![id],
        }
        .encode()
    };
    const FLOOD: u16 = 200;
    let flood = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let t = Instant::now();
    for n in 0..FLOOD {
        flood.send_to(&probe(n), target).await.unwrap();
    }
    let took = t.elapsed();
    let other = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    other.send_to(&probe(FLOOD), target).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(20), other.recv_from(&mut buf))
        .await
        .expect("the other source's Probe was never answered")
        .unwrap();
    assert!(matches!(
        Message::decode(&buf[..n]),
        Ok(Message::ProbeMatch(_))
    ));
    let stats = d.handle().stats().await.unwrap();
    let admitted = burst + per_second * (took.as_secs() + 1);
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert!(
        stats.replies_scheduled <= admitted + 1,
        "{stats:?} (flood took {took:?})"
    );
    let text = metrics.render();
    assert!(
        metric(
            &text,
            "branchcache_discovery_events_total{event=\"rate_limited\"}"
        ) > 0,
        "{text}"
    );
    token.cancel();
    d.join().await;
}

// ------------------------------------------------------------ path safety

/// Every entry under `root` except `root/store` (the daemon's own
/// directory): relative path → (kind, length, modification time).
fn snapshot(
    root: &std::path::Path,
) -> std::collections::BTreeMap<String, (char, u64, std::time::SystemTime)> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, (char, u64, std::time::SystemTime)>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "store" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.is_symlink() {
                'l'
            } else if meta.is_dir() {
                'd'
            } else {
                'f'
            };
            out.insert(rel, (kind, meta.len(), meta.modified().unwrap()));
            if kind == 'd' {
                walk(root, &path, out);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Request targets that would reach outside a directory if anything mapped
/// them onto the file system.
fn hostile_targets(root: &std::path::Path, origin: SocketAddr) -> Vec<Vec<u8>> {
    let sentinel = root.join("sentinel.txt");
    let abs = sentinel.to_str().unwrap();
    let mut t: Vec<Vec<u8>> = [
        "/../sentinel.txt",
        "/../../sentinel.txt",
        "/../../../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/sentinel.txt",
        "/%2E%2E%2F%2E%2E%2Fsentinel.txt",
        "/..%2f..%2fsentinel.txt",
        "/..%5c..%5csentinel.txt",
        "/..\\..\\sentinel.txt",
        "/store/../sentinel.txt",
        "/store/index.redb",
        "/store/%2e%2e/sentinel.txt",
        "/secrets/server-secret",
        "/sentinel.txt%00.bin",
        "/%00",
        "/%2e%2e%00/sentinel.txt",
        "/status/../../sentinel.txt",
        "/metrics/..%2f..%2fsentinel.txt",
        "/116B50EB-ECE2-41ac-8429-9F9E963361B7/../sentinel.txt",
        "/116B50EB-ECE2-41ac-8429-9F9E963361B7/%2e%2e/%2e%2e/sentinel.txt",
        "*",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    t.push(abs.as_bytes().to_vec());
    t.push(format!("/{abs}").into_bytes());
    t.push(format!("file://{abs}").into_bytes());
    t.push(format!("http://{origin}/../sentinel.txt").into_bytes());
    t.push(format!("http://{origin}/%2e%2e/%2e%2e{abs}").into_bytes());
    t.push(b"/a\0/../sentinel.txt".to_vec());
    t.push(b"\\..\\..\\sentinel.txt".to_vec());
    t
}

/// Segment ids made of path-like bytes, of each length PCCRR allows.
fn weird_ids(root: &std::path::Path) -> Vec<branchcache::proto::pccrc::SegmentId> {
    let abs = root.join("sentinel.txt");
    let pad = |s: &[u8], len: usize| {
        let mut v: Vec<u8> = s.iter().copied().cycle().take(len).collect();
        v.resize(len, b'/');
        v
    };
    [
        pad(b"../", 32),
        pad(b"..\\", 48),
        pad(abs.to_str().unwrap().as_bytes(), 64),
        pad(b"/", 32),
        vec![0; 32],
        vec![b'.'; 32],
        vec![0xFF; 64],
    ]
    .iter()
    .map(|b| branchcache::proto::pccrc::SegmentId::from_slice(b).unwrap())
    .collect()
}

/// A real daemon process (proxy, peer, publisher, hosted cache) whose store
/// lives in `root/store`, next to sentinel files, is sent hostile request
/// targets (`..`, `%2e%2e`, absolute paths and URLs, NUL, backslashes) on
/// every listener with GET, POST and PUT, PCCRR requests and PCHC offers
/// with path-like segment ids (the offers are pulled and replayed), then
/// `store import` gets hostile packages (path-like segment ids, a symlink to
/// a sentinel, a directory) and `store export` existing targets (a file, a
/// directory, a symlink, a planted `.partial` symlink). Nothing outside
/// `root/store` changes except the export targets themselves, and no
/// response carries a sentinel's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_or_package_reaches_outside_the_store_directory() {
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin::start().await;
    let data = content(MIB, 8);
    origin.put("/obj.bin", Object::peerdist(data.clone()));
    let (tmp, etc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = tmp.path();
    let token = format!("SENTINEL-{}-{:?}", std::process::id(), Instant::now());
    std::fs::write(root.join("sentinel.txt"), &token).unwrap();
    std::fs::create_dir(root.join("sibling")).unwrap();
    std::fs::write(root.join("sibling").join("sentinel.txt"), &token).unwrap();
    std::fs::create_dir(root.join("exports")).unwrap();
    let exports = root.join("exports");
    std::fs::write(exports.join("existing.bcpkg"), b"an older package").unwrap();
    std::fs::create_dir(exports.join("a-directory.bcpkg")).unwrap();
    std::fs::write(exports.join("a-directory.bcpkg").join("keep"), &token).unwrap();
    std::fs::write(root.join("link-target.txt"), &token).unwrap();
    std::os::unix::fs::symlink(root.join("link-target.txt"), exports.join("link.bcpkg")).unwrap();
    std::fs::write(root.join("planted-target.txt"), &token).unwrap();
    std::os::unix::fs::symlink(
        root.join("planted-target.txt"),
        exports.join("planted.bcpkg.partial"),
    )
    .unwrap();

    let mut node = start_node(root, etc.path(), origin.addr, 64).await;
    let (status, _, body) = fetch(node.proxy, "/obj.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    let before = snapshot(root);
    assert!(before.contains_key("secrets/server-secret"), "{before:?}");

    // The body of every POST / PUT (the test origin echoes POST bodies, so
    // this is not the sentinel's token).
    const OVERWRITE: &str = "overwritten by a hostile request";
    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();
    // Every listener, every hostile target, three methods.
    let listeners = [
        ("admin", node.admin),
        ("proxy", node.proxy),
        ("peer", node.peer),
        ("publisher", node.publisher),
        ("hosted_cache", node.hc),
    ];
    let mut requests = Vec::new();
    for (name, addr) in listeners {
        for target in hostile_targets(root, origin.addr) {
            for method in ["GET", "POST", "PUT"] {
                let mut req = method.as_bytes().to_vec();
                req.push(b' ');
                req.extend_from_slice(&target);
                req.extend_from_slice(
                    format!(
                        " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{OVERWRITE}",
                        OVERWRITE.len()
                    )
                    .as_bytes(),
                );
                let label = format!("{name} {method} {}", String::from_utf8_lossy(&target));
                requests.push(async move { (label, raw(addr, &req).await) });
            }
        }
    }
    answers.extend(futures_util::future::join_all(requests).await);

    // PCCRR with path-like segment ids on both PCCRR listeners.
    let ids = weird_ids(root);
    for addr in [node.peer, node.hc] {
        for id in &ids {
            let msgs = [
                get_blk_list(*id, 16),
                PccrrRequest::GetBlks(branchcache::proto::pccrr::GetBlks {
                    crypto_algo: CryptoAlgoId::AES_128,
                    segment_id: *id,
                    ranges: vec![branchcache::proto::pccrr::BlockRange {
                        index: u32::MAX - 1,
                        count: 1,
                    }],
                    vrf: &[],
                })
                .encode(),
                PccrrRequest::GetSegList(branchcache::proto::pccrr::GetSegList {
                    crypto_algo: CryptoAlgoId::NONE,
                    request_id: [1; 16],
                    segment_ids: ids.clone(),
                    extensible_blob: Vec::new(),
                })
                .encode(),
            ];
            for m in msgs {
                let resp = raw(addr, &post(RETRIEVAL_PATH, &m)).await;
                assert!(matches!(status_of(&resp), 200 | 400), "{addr}: {resp:?}");
                answers.push((format!("pccrr {addr} {id}"), resp));
            }
        }
    }

    // PCHC v2 offers of those ids: the cache pulls them from a plausible
    // "client" and keeps what it got in its replay store, keyed by id.
    let client = HostilePeer::start(Hostile::Plausible, None).await;
    let offers: Vec<_> = ids
        .iter()
        .filter(|id| id.as_bytes().len() == 32)
        .map(|id| branchcache::proto::pchc::SegmentDescriptor {
            block_size: 65_536,
            segment_size: 2 * 65_536,
            content_tag: *b"hostile-test\0\0\0\0",
            hash_algorithm: branchcache::proto::pchc::OfferHashAlgo::SHA256,
            hohodk: id.as_bytes().try_into().unwrap(),
        })
        .collect();
    branchcache::hosted_cache::OfferClient::new(None)
        .offer_v2(node.hc, client.addr.port(), &offers)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = node.metrics().await;
        let pulls = metric_with(&m, "branchcache_hosted_cache_pulls_total", &[""]);
        if pulls >= offers.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "pulls never finished:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What was pulled is replayed under the same id, from inside the store.
    let replayed = raw(
        node.hc,
        &post(
            RETRIEVAL_PATH,
            &PccrrRequest::GetBlks(branchcache::proto::pccrr::GetBlks {
                crypto_algo: CryptoAlgoId::AES_128,
                segment_id: ids[0],
                ranges: vec![branchcache::proto::pccrr::BlockRange { index: 0, count: 1 }],
                vrf: &[],
            })
            .encode(),
        ),
    )
    .await;
    assert!(blk_payload(body_of(&replayed)).is_some(), "{replayed:?}");
    assert!(
        std::fs::read_dir(root.join("store").join("replay"))
            .unwrap()
            .count()
            > 0
    );
    drop(client);
    node.stop();

    // store import: hostile packages.
    let real = etc.path().join("real.bcpkg");
    let out = node.store_cmd(&[OsStr::new("export"), real.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let pkg = std::fs::read(&real).unwrap();
    // Header (16 bytes), then TAG_SEGMENT, id length, id: swap in path-like ids.
    assert_eq!((pkg[16], pkg[17]), (0x01, 32));
    for (i, id) in ids
        .iter()
        .filter(|id| id.as_bytes().len() == 32)
        .enumerate()
    {
        let mut evil = pkg.clone();
        evil[18..50].copy_from_slice(id.as_bytes());
        let path = etc.path().join(format!("evil-{i}.bcpkg"));
        std::fs::write(&path, &evil).unwrap();
        let out = node.store_cmd(&[OsStr::new("import"), path.as_os_str()]);
        assert_eq!(out.status.code(), Some(1), "segment rejected: {out:?}");
    }
    let link = etc.path().join("symlink.bcpkg");
    std::os::unix::fs::symlink(root.join("sentinel.txt"), &link).unwrap();
    let out = node.store_cmd(&[OsStr::new("import"), link.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "not a package: {out:?}");
    let out = node.store_cmd(&[OsStr::new("import"), root.join("sibling").as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "a directory: {out:?}");

    // store export onto existing paths.
    let existing = exports.join("existing.bcpkg");
    let out = node.store_cmd(&[OsStr::new("export"), existing.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        pkg,
        "replaced by the package"
    );
    assert_eq!(
        std::fs::metadata(&existing).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = node.store_cmd(&[
        OsStr::new("export"),
        exports.join("a-directory.bcpkg").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "onto a directory: {out:?}");
    let link = exports.join("link.bcpkg");
    let out = node.store_cmd(&[OsStr::new("export"), link.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !std::fs::symlink_metadata(&link).unwrap().is_symlink(),
        "the link itself is replaced"
    );
    let planted = exports.join("planted.bcpkg");
    let out = node.store_cmd(&[OsStr::new("export"), planted.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&planted).unwrap(), pkg);

    // Nothing outside the store changed but the export targets; every
    // sentinel still holds its token; no answer carried one.
    let after = snapshot(root);
    let expected_changes = [
        "exports/existing.bcpkg",
        "exports/link.bcpkg",
        "exports/planted.bcpkg",
        "exports/planted.bcpkg.partial",
        "exports", // entries were renamed into it
    ];
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| !expected_changes.contains(&k.as_str()))
        .collect();
    assert!(changed.is_empty(), "changed outside the store: {changed:?}");
    for f in [
        "sentinel.txt",
        "sibling/sentinel.txt",
        "link-target.txt",
        "planted-target.txt",
        "exports/a-directory.bcpkg/keep",
    ] {
        assert_eq!(std::fs::read_to_string(root.join(f)).unwrap(), token, "{f}");
    }
    let secret = std::fs::read(root.join("secrets").join("server-secret")).unwrap();
    for (what, resp) in &answers {
        assert!(
            find(resp, token.as_bytes()).is_none(),
            "{what} returned a sentinel"
        );
        assert!(
            find(resp, b"root:x:0:0").is_none(),
            "{what} returned /etc/passwd"
        );
        assert!(
            find(resp, b"redb").is_none(),
            "{what} returned the store index"
        );
        assert!(
            find(resp, &secret).is_none(),
            "{what} returned the server secret"
        );
    }
    let statuses: std::collections::BTreeMap<u16, usize> =
        answers.iter().fold(Default::default(), |mut m, (_, r)| {
            *m.entry(status_of(r)).or_default() += 1;
            m
        });
    eprintln!(
        "{} hostile requests, answers by status: {statuses:?}",
        answers.len()
    );
}

// ------------------------------------------------------------ a discovered liar

/// A peer found by MS-PCCRD (real discovery drivers over UDP on loopback)
/// that answers with blocks that do not decrypt to the right bytes: the
/// `PeerSource` behind the discovery locator yields nothing from it,
/// penalises it once (counted, and shown in the peer book), and a second
/// fetch during the back-off period never contacts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_peer_serving_wrong_blocks_is_penalised_and_skipped() {
    use branchcache::discovery::{Discovery, DiscoveryConfig, DiscoveryLocator, LocatorOptions};
    use branchcache::fetch::{BlockSource, SourceKind};
    use branchcache::metrics::Metrics;
    use branchcache::proto::pccrd::engine::{EngineConfig, LocalSegment, LocalSegments};
    use branchcache::proto::pccrd::Uuid;
    use branchcache::retrieval::{ClientConfig, PeerClient, PeerSource};
    use futures_util::StreamExt;

    let liar = HostilePeer::start(Hostile::Plausible, None).await;
    let data = content(MIB, 77);
    let plan = Arc::new(first_segment(&data));
    let blocks = plan.block_count();

    // Driver 0 (the liar's host) holds the segment and advertises the
    // liar's PCCRR address; driver 1 is ours.
    let token = CancellationToken::new();
    let config = |i: u8, xaddr: SocketAddr| DiscoveryConfig {
        bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        targets: Vec::new(),
        interfaces_v4: Vec::new(),
        interfaces_v6: Vec::new(),
        engine: EngineConfig {
            endpoint: Uuid::new_v4([i; 16]),
            instance_id: u64::from(i),
            xaddrs: vec![xaddr],
            initial_wait: Duration::from_millis(600),
            retransmit_interval: Duration::from_millis(200),
            ..EngineConfig::default()
        },
    };
    let ours: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let metrics = Arc::new(Metrics::new());
    let drivers: Vec<_> = [(0u8, liar.addr), (1u8, ours)]
        .into_iter()
        .map(|(i, x)| {
            Discovery::start(
                config(i, x),
                LocalSegments::new(),
                Arc::new(Metrics::new()),
                token.clone(),
            )
            .unwrap()
        })
        .collect();
    let udp: Vec<SocketAddr> = drivers.iter().map(|d| d.local_addrs()[0]).collect();
    drivers[0].handle().set_targets(vec![udp[1]]).await.unwrap();
    drivers[1].handle().set_targets(vec![udp[0]]).await.unwrap();
    let id = plan.id;
    drivers[0]
        .handle()
        .update_lookup(move |s| {
            s.insert(
                id,
                LocalSegment {
                    block_count: blocks,
                    complete: true,
                    age: None,
                },
            )
        })
        .await
        .unwrap();

    let locator = DiscoveryLocator::new(
        drivers[1].handle(),
        vec![ours],
        LocatorOptions {
            settle: Duration::from_secs(30),
            ..LocatorOptions::default()
        },
    );
    let source = PeerSource::new(
        SourceKind::Peer,
        Arc::new(locator),
        PeerClient::new(ClientConfig::default(), Some(metrics.clone())),
    )
    .with_metrics(metrics.clone());

    let got: Vec<_> = source.fetch(plan.clone(), 0..blocks).collect().await;
    assert!(got.is_empty(), "a lying peer yielded {} items", got.len());
    let (conns, reqs) = liar.settled().await;
    assert!(reqs >= 1, "the discovered liar was never asked");
    assert!(source.is_penalised(&liar.addr));
    let text = metrics.render();
    assert_eq!(
        metric_with(
            &text,
            "branchcache_retrieval_peer_penalties_total",
            &["source=\"peer\""]
        ),
        1,
        "{text}"
    );
    let book = metrics.peers.snapshot();
    let entry = book
        .iter()
        .find(|p| p.address == liar.addr.to_string())
        .expect("the liar is in the peer book");
    assert!(!entry.configured && entry.penalised && entry.reachable == Some(false));

    // Back-off: the same segment again, the liar is still found by
    // discovery but not contacted.
    let got: Vec<_> = source.fetch(plan, 0..blocks).collect().await;
    assert!(got.is_empty());
    assert_eq!(
        liar.seen(),
        (conns, reqs),
        "the penalised peer was contacted again"
    );
    token.cancel();
    for d in drivers {
        d.join().await;
    }
}

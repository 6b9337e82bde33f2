//! The PCCRR server: a hyper handler for
//! `POST /116B50EB-ECE2-41ac-8429-9F9E963361B7/` over a [`BlockSource`].
//!
//! Per request: check path and method, read the body (≤ 98 304 bytes, with
//! an upload timeout), peek the header (unsupported major → NEGO_RESP),
//! decode, ask the source, encode. GETBLKS answers one block encrypted with
//! Kp under a fresh random IV, or an empty MSG_BLK when the block is not
//! held. The block is encrypted straight into the encoded MSG_BLK, on the
//! encryptor thread (`retrieval/encryptor.rs`), batched with other
//! requests' blocks. A client over its concurrency limit gets empty
//! answers, not an HTTP error (MS-PCCRR §3.2.5.1). Garbage gets `400`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response, StatusCode};

use super::encryptor::Encryptor;
use crate::metrics::Metrics;
use crate::net::{full, Body};
use crate::proto::codec::DecodeError;
use crate::proto::pccrc::{SegmentId, SegmentSecret};
use crate::proto::pccrr::{
    cipher_len, Blk, BlkList, BlockRange, CryptoAlgoId, MessageHeader, MsgType, NegoResp, ProtVer,
    Request as PccrrRequest, Response as PccrrResponse, SegList, IV_LEN, MAX_RANGES,
    MAX_REQUEST_LEN, RETRIEVAL_PATH,
};

/// Concurrent requests one client address may have in flight before it is
/// answered with empty lists (Windows' "Active Client Count" default for a peer).
pub const DEFAULT_MAX_ACTIVE_PER_CLIENT: usize = 64;
/// How long a client may take to send its request body (MS-PCCRR server
/// upload timer, 15 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the retrieval server reads blocks from; the store implements it.
///
/// Only blocks that were verified against their protocol hash may be
/// returned by [`verified_block`](Self::verified_block).
pub trait BlockSource: Send + Sync + 'static {
    /// Kp of a segment we hold blocks of; `None` when the segment is unknown.
    fn segment_secret(&self, id: &SegmentId) -> Option<SegmentSecret>;

    /// The held subset of `wanted`, normalised (sorted, non-overlapping,
    /// adjacent runs merged). Must cost time proportional to what is held,
    /// not to the (client-controlled) width of `wanted`.
    fn present_ranges(&self, id: &SegmentId, wanted: &[BlockRange]) -> Vec<BlockRange>;

    /// The smallest held block index greater than `after`.
    fn next_present_block(&self, id: &SegmentId, after: u32) -> Option<u32> {
        let index = after.checked_add(1)?;
        let count = u32::MAX - index;
        if count == 0 {
            return None;
        }
        self.present_ranges(id, &[BlockRange { index, count }])
            .first()
            .map(|r| r.index)
    }

    /// Whether we hold any of the segment (for GETSEGLIST).
    fn has_segment(&self, id: &SegmentId) -> bool {
        self.segment_secret(id).is_some()
    }

    /// The plaintext of a held, verified block.
    fn verified_block<'a>(&'a self, id: &'a SegmentId, index: u32) -> BoxFuture<'a, Option<Bytes>>;

    /// A block held only as the encrypted MSG_BLK payload another peer sent
    /// (a v2 hosted cache's replay store), served verbatim. Consulted when
    /// the segment's Kp is unknown.
    fn replay_block<'a>(
        &'a self,
        _id: &'a SegmentId,
        _index: u32,
    ) -> BoxFuture<'a, Option<crate::retrieval::RawBlock>> {
        Box::pin(async { None })
    }
}

/// Retrieval server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Cipher for MSG_BLK (AES-128 is what Windows peers typically send).
    pub crypto: CryptoAlgoId,
    /// Honour a client's request for plaintext (CryptoAlgoId 0). Off by
    /// default: the encryption is what keeps blocks from anyone who merely
    /// knows the public segment id.
    pub allow_plaintext: bool,
    /// Per client address; over it, answers are empty.
    pub max_active_per_client: usize,
    /// Lowest protocol version we speak.
    pub min_version: ProtVer,
    /// Highest protocol version we speak.
    pub max_version: ProtVer,
    /// Upload timeout for the request body.
    pub body_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            crypto: CryptoAlgoId::AES_128,
            allow_plaintext: false,
            max_active_per_client: DEFAULT_MAX_ACTIVE_PER_CLIENT,
            min_version: ProtVer::V1_0,
            max_version: ProtVer::V2_0,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The retrieval server; share as `Arc` and call [`handle`](Self::handle)
/// from [`crate::net::serve`].
pub struct RetrievalServer {
    source: Arc<dyn BlockSource>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    active: DashMap<IpAddr, usize>,
    encryptor: Encryptor,
}

impl std::fmt::Debug for RetrievalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievalServer")
            .field("config", &self.config)
            .field("active_clients", &self.active.len())
            .finish_non_exhaustive()
    }
}

/// Decrements the per-client in-flight count when a request ends.
struct ActiveGuard<'a> {
    active: &'a DashMap<IpAddr, usize>,
    ip: IpAddr,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut e) = self.active.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// True for the PCCRR path, case-insensitively, with or without the trailing slash.
pub fn is_retrieval_path(path: &str) -> bool {
    let want = RETRIEVAL_PATH.trim_end_matches('/');
    path.trim_end_matches('/').eq_ignore_ascii_case(want) && path.len() <= RETRIEVAL_PATH.len()
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = code;
    r
}

impl RetrievalServer {
    /// A server over `source`.
    pub fn new(
        source: Arc<dyn BlockSource>,
        config: ServerConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(RetrievalServer {
            source,
            config,
            metrics,
            active: DashMap::new(),
            encryptor: Encryptor::new(),
        })
    }

    fn count(&self, msg_type: &'static str, result: &'static str) {
        self.metrics
            .retrieval_requests
            .get_or_create(&[("type", msg_type), ("result", result)])
            .inc();
    }

    /// Try to register one more in-flight request for `ip`; `None` when the
    /// client is at its limit.
    fn enter(&self, ip: IpAddr) -> Option<ActiveGuard<'_>> {
        let mut n = self.active.entry(ip).or_insert(0);
        if *n >= self.config.max_active_per_client {
            return None;
        }
        *n += 1;
        drop(n);
        Some(ActiveGuard {
            active: &self.active,
            ip,
        })
    }

    /// Answer one HTTP request from `peer`.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !is_retrieval_path(req.uri().path()) {
            self.count("invalid", "not_found");
            return status(StatusCode::NOT_FOUND);
        }
        if req.method() != Method::POST {
            self.count("invalid", "method");
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            return r;
        }
        let guard = self.enter(peer.ip());
        let body = Limited::new(req.into_body(), MAX_REQUEST_LEN);
        let body = match tokio::time::timeout(self.config.body_timeout, body.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "pccrr request body rejected");
                self.count("invalid", "body");
                return status(StatusCode::PAYLOAD_TOO_LARGE);
            }
            Err(_) => {
                self.count("invalid", "timeout");
                return status(StatusCode::REQUEST_TIMEOUT);
            }
        };
        match self.answer(&body, guard.is_none()).await {
            Ok(bytes) => Response::new(full(bytes)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "pccrr request undecodable");
                status(StatusCode::BAD_REQUEST)
            }
        }
    }

    fn nego_resp(&self) -> Vec<u8> {
        PccrrResponse::NegoResp(NegoResp {
            crypto_algo: CryptoAlgoId::NONE,
            min_version: self.config.min_version,
            max_version: self.config.max_version,
        })
        .encode()
    }

    /// The transport-free core of the handler: one request message in, the
    /// encoded response (with transport header) out. `refuse` answers with
    /// empty lists / an empty block (client over its concurrency limit).
    pub async fn answer(&self, body: &[u8], refuse: bool) -> Result<Vec<u8>, DecodeError> {
        let header = match MessageHeader::peek(body) {
            Ok(h) => h,
            Err(e) => {
                self.count("invalid", "bad_request");
                return Err(e);
            }
        };
        if header.msg_size as usize != body.len() {
            // Not even framed as a PCCRR message: garbage, not a version question.
            self.count("invalid", "bad_request");
            return Err(DecodeError::Invalid {
                what: "MsgSize differs from request length",
            });
        }
        let major = header.prot_ver.major();
        if major < self.config.min_version.major() || major > self.config.max_version.major() {
            // SPEC(MS-PCCRR §3.2.5.2): any request with an unsupported major
            // version is answered with NEGO_RESP.
            self.count(header.msg_type.label(), "version");
            return Ok(self.nego_resp());
        }
        let req = match PccrrRequest::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.count(header.msg_type.label(), "bad_request");
                return Err(e);
            }
        };
        let label = req.msg_type().label();
        let refuse = refuse && req.msg_type() != MsgType::NEGO_REQ;
        let (out, result) = match req {
            PccrrRequest::NegoReq(_) => (self.nego_resp(), "ok"),
            PccrrRequest::GetBlkList(m) => {
                let (ranges, next) = if refuse {
                    (Vec::new(), 0)
                } else {
                    self.block_list(&m.segment_id, &m.ranges)
                };
                let result = if ranges.is_empty() { "empty" } else { "ok" };
                let resp = PccrrResponse::BlkList(BlkList {
                    crypto_algo: CryptoAlgoId::NONE,
                    segment_id: m.segment_id,
                    ranges,
                    next_block_index: next,
                });
                (resp.encode(), result)
            }
            PccrrRequest::GetBlks(m) => {
                // first_block is Some: decode guarantees at least one range.
                let index = m.first_block().unwrap_or(0);
                let served = if refuse {
                    None
                } else {
                    self.encrypted_blk(&m.segment_id, index, m.crypto_algo)
                        .await
                };
                let replayed = match (&served, refuse) {
                    (None, false) => self.source.replay_block(&m.segment_id, index).await,
                    _ => None,
                };
                match (served, replayed) {
                    (None, Some(raw)) => {
                        let next = self
                            .source
                            .next_present_block(&m.segment_id, index)
                            .unwrap_or(0);
                        let resp = PccrrResponse::Blk(Blk {
                            crypto_algo: raw.crypto_algo,
                            segment_id: m.segment_id,
                            block_index: index,
                            next_block_index: next,
                            block: &raw.block,
                            vrf: &[],
                            iv: &raw.iv,
                        });
                        self.metrics.retrieval_blocks_served.inc();
                        self.metrics
                            .retrieval_bytes_served
                            .inc_by(raw.block.len() as u64);
                        (resp.encode(), "replayed")
                    }
                    (Some((message, plain_len)), _) => {
                        self.metrics.retrieval_blocks_served.inc();
                        self.metrics.retrieval_bytes_served.inc_by(plain_len as u64);
                        (message, "ok")
                    }
                    (None, None) => (
                        PccrrResponse::Blk(Blk::not_available(m.segment_id, index)).encode(),
                        "empty",
                    ),
                }
            }
            PccrrRequest::GetSegList(m) => {
                let ranges = if refuse {
                    Vec::new()
                } else {
                    let held: Vec<u32> = m
                        .segment_ids
                        .iter()
                        .enumerate()
                        .filter(|(_, id)| self.source.has_segment(id))
                        .map(|(i, _)| i as u32)
                        .collect();
                    runs(held.into_iter())
                };
                let result = if ranges.is_empty() { "empty" } else { "ok" };
                let resp = PccrrResponse::SegList(SegList {
                    crypto_algo: CryptoAlgoId::NONE,
                    request_id: m.request_id,
                    ranges,
                    extensible_blob: Vec::new(),
                });
                (resp.encode(), result)
            }
        };
        if refuse {
            self.metrics.retrieval_refusals.inc();
            self.count(label, "refused");
        } else {
            self.count(label, result);
        }
        Ok(out)
    }

    fn block_list(&self, id: &SegmentId, wanted: &[BlockRange]) -> (Vec<BlockRange>, u32) {
        let mut held = self.source.present_ranges(id, wanted);
        held.truncate(MAX_RANGES);
        // NextBlockIndex: first held block after everything that was asked.
        let last_wanted = wanted
            .iter()
            .filter_map(|r| r.end())
            .max()
            .and_then(|end| end.checked_sub(1));
        let next = last_wanted
            .and_then(|last| self.source.next_present_block(id, last))
            .unwrap_or(0);
        (held, next)
    }

    /// Look up and encrypt block `index`: the encoded MSG_BLK and the
    /// plaintext length, or `None` when the block is not served.
    async fn encrypted_blk(
        &self,
        id: &SegmentId,
        index: u32,
        requested: CryptoAlgoId,
    ) -> Option<(Vec<u8>, usize)> {
        let kp = self.source.segment_secret(id)?;
        let plain = self.source.verified_block(id, index).await?;
        let algo = if requested == CryptoAlgoId::NONE && self.config.allow_plaintext {
            CryptoAlgoId::NONE
        } else {
            self.config.crypto
        };
        let mut iv = [0u8; IV_LEN];
        if algo != CryptoAlgoId::NONE {
            if let Err(e) = getrandom::getrandom(&mut iv) {
                tracing::error!(error = %e, "no randomness for a PCCRR IV; not serving");
                return None;
            }
        }
        let len = match cipher_len(algo, plain.len()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(segment = %id, error = %e, "cannot encrypt block");
                return None;
            }
        };
        let next = self.source.next_present_block(id, index).unwrap_or(0);
        let (mut message, at) = Blk {
            crypto_algo: algo,
            segment_id: *id,
            block_index: index,
            next_block_index: next,
            block: &[],
            vrf: &[],
            iv: if algo == CryptoAlgoId::NONE { &[] } else { &iv },
        }
        .encode_with_block_space(len);
        let plain_len = plain.len();
        if algo == CryptoAlgoId::NONE {
            message.get_mut(at)?.copy_from_slice(&plain);
            return Some((message, plain_len));
        }
        match self
            .encryptor
            .encrypt(algo, kp, iv, plain, message, at)
            .await
        {
            Ok(message) => Some((message, plain_len)),
            Err(e) => {
                tracing::warn!(segment = %id, error = %e, "cannot encrypt block");
                None
            }
        }
    }
}

/// Merge ascending indexes into runs (at most [`MAX_RANGES`]).
pub(crate) fn runs(indexes: impl Iterator<Item = u32>) -> Vec<BlockRange> {
    let mut out: Vec<BlockRange> = Vec::new();
    for i in indexes {
        match out.last_mut() {
            Some(r) if r.end() == Some(i) => r.count += 1,
            _ => {
                if out.len() == MAX_RANGES {
                    break;
                }
                out.push(BlockRange { index: i, count: 1 });
            }
        }
    }
    out
}

/// One segment held by [`MemorySource`]: Kp and the blocks by index.
type MemorySegment = (SegmentSecret, BTreeMap<u32, Bytes>);

/// An in-memory [`BlockSource`] for tests and small deployments.
#[derive(Default)]
pub struct MemorySource {
    segments: RwLock<HashMap<SegmentId, MemorySegment>>,
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.segments.read().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("MemorySource")
            .field("segments", &n)
            .finish()
    }
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hold `data` as block `index` of segment `id` (the caller has verified it).
    pub fn insert(&self, id: SegmentId, kp: SegmentSecret, index: u32, data: Bytes) {
        let mut s = self.segments.write().unwrap_or_else(|e| e.into_inner());
        s.entry(id)
            .or_insert_with(|| (kp, BTreeMap::new()))
            .1
            .insert(index, data);
    }
}

impl BlockSource for MemorySource {
    fn segment_secret(&self, id: &SegmentId) -> Option<SegmentSecret> {
        let s = self.segments.read().unwrap_or_else(|e| e.into_inner());
        s.get(id).map(|(kp, _)| *kp)
    }

    fn present_ranges(&self, id: &SegmentId, wanted: &[BlockRange]) -> Vec<BlockRange> {
        let s = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, blocks)) = s.get(id) else {
            return Vec::new();
        };
        // Iterate what is held (bounded), not what is wanted (client-controlled).
        runs(blocks.keys().copied().filter(|i| {
            wanted
                .iter()
                .any(|r| *i >= r.index && r.end().is_some_and(|end| *i < end))
        }))
    }

    fn next_present_block(&self, id: &SegmentId, after: u32) -> Option<u32> {
        let s = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let (_, blocks) = s.get(id)?;
        blocks
            .range(after.checked_add(1)?..)
            .next()
            .map(|(i, _)| *i)
    }

    fn verified_block<'a>(&'a self, id: &'a SegmentId, index: u32) -> BoxFuture<'a, Option<Bytes>> {
        let s = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let out = s.get(id).and_then(|(_, b)| b.get(&index).cloned());
        Box::pin(std::future::ready(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_path_matching() {
        assert!(is_retrieval_path("/116B50EB-ECE2-41ac-8429-9F9E963361B7/"));
        assert!(is_retrieval_path("/116b50eb-ece2-41ac-8429-9f9e963361b7"));
        assert!(!is_retrieval_path(
            "/116B50EB-ECE2-41ac-8429-9F9E963361B7//"
        ));
        assert!(!is_retrieval_path("/116B50EB-ECE2-41ac-8429-9F9E963361B"));
        assert!(!is_retrieval_path("/"));
    }

    #[test]
    fn runs_merge_adjacent_indexes() {
        let r = runs([0, 1, 2, 5, 7, 8].into_iter());
        assert_eq!(
            r,
            vec![
                BlockRange { index: 0, count: 3 },
                BlockRange { index: 5, count: 1 },
                BlockRange { index: 7, count: 2 },
            ]
        );
        assert_eq!(runs((0..2000).map(|i| i * 2)).len(), MAX_RANGES);
    }

    #[test]
    fn active_count_is_released_when_requests_end() {
        let config = ServerConfig {
            max_active_per_client: 2,
            ..ServerConfig::default()
        };
        let server = RetrievalServer::new(
            Arc::new(MemorySource::new()),
            config,
            Arc::new(Metrics::new()),
        );
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = server.enter(ip).unwrap();
        let b = server.enter(ip).unwrap();
        assert!(server.enter(ip).is_none());
        assert!(server.enter(other).is_some());
        drop(a);
        let c = server.enter(ip).unwrap();
        drop((b, c));
        assert!(server.active.is_empty());
    }

    #[test]
    fn memory_source_lists_only_held_blocks_in_wanted_ranges() {
        let s = MemorySource::new();
        let id = SegmentId::from_slice(&[1; 32]).unwrap();
        let kp = SegmentSecret::from_slice(&[2; 32]).unwrap();
        for i in [0, 1, 2, 10, 11, 500] {
            s.insert(id, kp, i, Bytes::from_static(b"x"));
        }
        let wide = [BlockRange {
            index: 1,
            count: u32::MAX - 1,
        }];
        assert_eq!(
            s.present_ranges(&id, &wide),
            vec![
                BlockRange { index: 1, count: 2 },
                BlockRange {
                    index: 10,
                    count: 2
                },
                BlockRange {
                    index: 500,
                    count: 1
                },
            ]
        );
        assert_eq!(s.next_present_block(&id, 2), Some(10));
        assert_eq!(s.next_present_block(&id, 500), None);
        assert_eq!(s.next_present_block(&id, u32::MAX), None);
    }

    proptest::proptest! {
        #[test]
        fn answer_never_panics_and_only_rejects_with_decode_errors(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            refuse in proptest::prelude::any::<bool>(),
        ) {
            let server = RetrievalServer::new(
                Arc::new(MemorySource::new()),
                ServerConfig::default(),
                Arc::new(Metrics::new()),
            );
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            if let Ok(out) = rt.block_on(server.answer(&body, refuse)) {
                // Whatever we answer must itself be a valid response.
                proptest::prop_assert!(crate::proto::pccrr::Response::decode(&out).is_ok());
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn mutated_valid_requests_get_valid_answers_or_errors(
            which in 0usize..4,
            pos in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            use crate::proto::pccrr::{GetBlkList, GetBlks, GetSegList, NegoReq, Request as Rq};
            let id = SegmentId::from_slice(&[3; 32]).unwrap();
            let kp = SegmentSecret::from_slice(&[4; 32]).unwrap();
            let source = Arc::new(MemorySource::new());
            source.insert(id, kp, 0, Bytes::from_static(&[7; 100]));
            source.insert(id, kp, 1, Bytes::from_static(&[8; 100]));
            let server = RetrievalServer::new(source, ServerConfig::default(), Arc::new(Metrics::new()));
            let ranges = vec![BlockRange { index: 0, count: 2 }];
            let mut body = match which {
                0 => Rq::NegoReq(NegoReq { crypto_algo: CryptoAlgoId::NONE, min_version: ProtVer::V1_0, max_version: ProtVer::V2_0 }).encode(),
                1 => Rq::GetBlkList(GetBlkList { crypto_algo: CryptoAlgoId::AES_128, segment_id: id, ranges }).encode(),
                2 => Rq::GetBlks(GetBlks { crypto_algo: CryptoAlgoId::AES_128, segment_id: id, ranges, vrf: &[] }).encode(),
                _ => Rq::GetSegList(GetSegList { crypto_algo: CryptoAlgoId::NONE, request_id: [0; 16], segment_ids: vec![id], extensible_blob: vec![] }).encode(),
            };
            let i = pos.index(body.len());
            body[i] = byte;
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            if let Ok(out) = rt.block_on(server.answer(&body, false)) {
                proptest::prop_assert!(crate::proto::pccrr::Response::decode(&out).is_ok());
            }
        }
    }
}

//! [`PeerClient`]: fetch blocks and block lists from a PCCRR peer (or a
//! hosted cache) over HTTP, decrypt and verify before returning.
//!
//! The HTTP/1.1 exchanges go through the small pooled client in `http1.rs`
//! (one write, reads straight into the buffer the block is decrypted in).
//!
//! Every exchange (connect, send, receive) runs under one per-request
//! timeout. Errors are typed so the caller can tell a slow peer from a
//! lying one from one that simply lacks the block
//! ([`RetrievalError::penalise`]).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;

use super::http1::Http1Pool;

use crate::bufpool::PooledBuf;
use crate::metrics::Metrics;
use crate::proto::codec::DecodeError;
use crate::proto::pccrc::{hash_v1_blocks, Digest, HashAlgo, SegmentId, SegmentSecret};
use crate::proto::pccrr::{
    decrypt_alternative_and_verify, decrypt_block_in_place, reencrypt_in_place, BlkList,
    BlockCryptoError, BlockRange, CryptoAlgoId, GetBlkList, GetBlks, KeyReading, NegoReq, NegoResp,
    ProtVer, Request, Response, IV_LEN, MAX_RESPONSE_MSG_LEN, RETRIEVAL_PATH,
};

/// Default per-request timeout (MS-PCCRR client request timer: 2 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled connections kept per peer: as many as [`PeerSource`] runs
/// requests to one peer at once, so a bulk transfer reuses its connections
/// (with 4, most of 32 concurrent GETBLKS opened a fresh TCP connection:
/// ~1 000 TIME_WAIT sockets per 128 MiB on loopback). Idle ones close after
/// [`POOL_IDLE_TIMEOUT`].
///
/// [`PeerSource`]: super::source::PeerSource
const POOL_IDLE_PER_HOST: usize = super::source::MAX_REQUESTS_PER_PEER;
/// How long an idle pooled connection to a peer is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a PCCRR exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// No complete answer within the request timeout.
    #[error("peer {peer}: no answer within {after:?}")]
    Timeout {
        /// The peer.
        peer: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The HTTP exchange failed (connection refused, reset, …).
    #[error("peer {peer}: {source}")]
    Http {
        /// The peer.
        peer: SocketAddr,
        /// The transport error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The peer answered with a non-200 status.
    #[error("peer {peer}: HTTP status {status}")]
    Status {
        /// The peer.
        peer: SocketAddr,
        /// The status.
        status: StatusCode,
    },
    /// The answer did not decode as a PCCRR response.
    #[error("peer {peer}: undecodable response: {source}")]
    Garbage {
        /// The peer.
        peer: SocketAddr,
        /// What was wrong.
        source: DecodeError,
    },
    /// A well-formed answer that does not answer the question (wrong type,
    /// segment or block index).
    #[error("peer {peer}: unexpected response: {what}")]
    Unexpected {
        /// The peer.
        peer: SocketAddr,
        /// What did not match.
        what: &'static str,
    },
    /// The peer answered NEGO_RESP: it does not speak our version.
    #[error("peer {peer}: unsupported protocol version (peer speaks {min}..{max})")]
    Version {
        /// The peer.
        peer: SocketAddr,
        /// Peer's lowest version.
        min: ProtVer,
        /// Peer's highest version.
        max: ProtVer,
    },
    /// The peer does not have the block (or is overloaded).
    #[error("peer {peer}: block not available")]
    NotAvailable {
        /// The peer.
        peer: SocketAddr,
    },
    /// The block decrypted, but to bytes whose hash is wrong.
    #[error("peer {peer}: block hash mismatch")]
    HashMismatch {
        /// The peer.
        peer: SocketAddr,
    },
    /// The block could not be decrypted (bad length, IV, algorithm).
    #[error("peer {peer}: {source}")]
    Crypto {
        /// The peer.
        peer: SocketAddr,
        /// The crypto error.
        source: BlockCryptoError,
    },
}

impl RetrievalError {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RetrievalError::Timeout { .. } => "timeout",
            RetrievalError::Http { .. } => "http",
            RetrievalError::Status { .. } => "status",
            RetrievalError::Garbage { .. } => "garbage",
            RetrievalError::Unexpected { .. } => "unexpected",
            RetrievalError::Version { .. } => "version",
            RetrievalError::NotAvailable { .. } => "not_available",
            RetrievalError::HashMismatch { .. } => "hash_mismatch",
            RetrievalError::Crypto { .. } => "crypto",
        }
    }

    /// True when the peer misbehaved or failed and should be penalised;
    /// false when it merely lacks the block.
    pub fn penalise(&self) -> bool {
        !matches!(self, RetrievalError::NotAvailable { .. })
    }

    /// The peer the error is about.
    pub fn peer(&self) -> SocketAddr {
        match self {
            RetrievalError::Timeout { peer, .. }
            | RetrievalError::Http { peer, .. }
            | RetrievalError::Status { peer, .. }
            | RetrievalError::Garbage { peer, .. }
            | RetrievalError::Unexpected { peer, .. }
            | RetrievalError::Version { peer, .. }
            | RetrievalError::NotAvailable { peer }
            | RetrievalError::HashMismatch { peer }
            | RetrievalError::Crypto { peer, .. } => *peer,
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bound on one whole exchange (connect, send, receive).
    pub request_timeout: Duration,
    /// The cipher we ask for (peers may ignore it).
    pub crypto: CryptoAlgoId,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            crypto: CryptoAlgoId::AES_128,
        }
    }
}

/// Everything needed to ask for and verify one block (v1) or segment (v2,
/// block 0).
#[derive(Debug, Clone)]
pub struct BlockRequest {
    /// `HoHoDk`.
    pub segment_id: SegmentId,
    /// Block index within the segment.
    pub index: u32,
    /// Kp from the content information.
    pub kp: SegmentSecret,
    /// Plaintext length promised by the content information.
    pub expected_len: usize,
    /// Hash algorithm of the content information.
    pub hash_algo: HashAlgo,
    /// Block hash (v1) or HoD (v2) from the content information.
    pub expected_hash: Digest,
}

/// A verified block.
#[derive(Debug, Clone)]
pub struct FetchedBlock {
    /// Plaintext, hash-checked.
    pub data: Bytes,
    /// The peer's hint: next block it holds, 0 if none.
    pub next_block_index: u32,
    /// Which key reading decrypted it (see `PROTOCOL.md` §5.7).
    pub key_reading: KeyReading,
}

/// A block a peer sent, decrypted with the usual key reading (leading bytes
/// of Kp) but **not yet hash-checked**: the half-way point of
/// [`PeerClient::fetch_block`] for callers that check many blocks in one
/// multi-buffer pass ([`PeerClient::verify_blocks`]). Its bytes must not be
/// used before that check.
#[derive(Debug)]
pub struct Unverified {
    /// The peer that sent it.
    pub peer: SocketAddr,
    want: BlockRequest,
    /// The response message, its block field decrypted in place.
    message: Bytes,
    at: BlkAt,
}

impl Unverified {
    /// The block index it claims to be.
    pub fn index(&self) -> u32 {
        self.want.index
    }

    /// The decrypted payload (pad included).
    fn payload(&self) -> &[u8] {
        self.message.get(self.at.block.clone()).unwrap_or_default()
    }

    /// The decrypted block: the payload's first `expected_len` bytes.
    fn plain(&self) -> &[u8] {
        self.payload()
            .get(..self.want.expected_len)
            .unwrap_or_default()
    }
}

/// Where a MSG_BLK's fields are in its response message.
#[derive(Debug)]
struct BlkAt {
    crypto_algo: CryptoAlgoId,
    iv: Vec<u8>,
    /// The block field's byte range in the message.
    block: std::ops::Range<usize>,
    next_block_index: u32,
}

/// A MSG_BLK payload exactly as a peer sent it (a v2 hosted cache cannot
/// decrypt it: it keeps and replays these bytes, PROTOCOL.md §8.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBlock {
    /// The cipher the sender used (`NONE`: plaintext).
    pub crypto_algo: CryptoAlgoId,
    /// The IV (16 bytes, or empty for plaintext).
    pub iv: Vec<u8>,
    /// Ciphertext (or plaintext), never empty.
    pub block: Bytes,
}

impl RawBlock {
    /// Sanity checks a hosted cache can make without the key: a non-empty
    /// block no longer than `max_plain + 16` (PKCS#7 pad), whole AES blocks
    /// and a 16-byte IV when encrypted, no longer than `max_plain` when plain.
    pub fn plausible(&self, max_plain: usize) -> Result<(), &'static str> {
        if self.block.is_empty() {
            return Err("empty block");
        }
        if self.crypto_algo == CryptoAlgoId::NONE {
            if self.block.len() > max_plain {
                return Err("plaintext block longer than its segment allows");
            }
            return Ok(());
        }
        if self.crypto_algo.key_len().is_none() {
            return Err("unknown cipher");
        }
        if self.iv.len() != IV_LEN {
            return Err("IV is not 16 bytes");
        }
        if self.block.len() % 16 != 0 {
            return Err("ciphertext is not whole AES blocks");
        }
        if self.block.len() > max_plain.saturating_add(16) {
            return Err("ciphertext longer than its segment allows");
        }
        Ok(())
    }
}

/// A PCCRR client with a connection pool; cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    http: Arc<Http1Pool>,
    config: ClientConfig,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client; pass metrics to count requests by type and result.
    pub fn new(config: ClientConfig, metrics: Option<Arc<Metrics>>) -> Self {
        let http = Arc::new(Http1Pool::new(POOL_IDLE_PER_HOST, POOL_IDLE_TIMEOUT));
        PeerClient {
            http,
            config,
            metrics,
        }
    }

    /// The metrics this client counts into, if any.
    pub(crate) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    fn count<T>(&self, msg_type: &'static str, r: &Result<T, RetrievalError>) {
        if let Some(m) = &self.metrics {
            let result = r.as_ref().map(|_| "ok").unwrap_or_else(|e| e.kind());
            m.retrieval_client_requests
                .get_or_create(&[("type", msg_type), ("result", result)])
                .inc();
        }
    }

    /// POST one request, return the response (checked: 200, size-bounded):
    /// the read buffer and where the body is in it, so a block can be
    /// decrypted where it lies.
    async fn exchange(
        &self,
        peer: SocketAddr,
        body: Vec<u8>,
    ) -> Result<(PooledBuf, Range<usize>), RetrievalError> {
        let after = self.config.request_timeout;
        let work = async {
            let resp = self
                .http
                .post(peer, RETRIEVAL_PATH, &body, 4 + MAX_RESPONSE_MSG_LEN)
                .await
                .map_err(|e| RetrievalError::Http {
                    peer,
                    source: Box::new(e),
                })?;
            if resp.status != 200 {
                return Err(RetrievalError::Status {
                    peer,
                    status: StatusCode::from_u16(resp.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                });
            }
            Ok((resp.buf, resp.body))
        };
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| RetrievalError::Timeout { peer, after })?
    }

    /// Ask `peer` for its version range (MSG_NEGO_REQ).
    pub async fn negotiate(&self, peer: SocketAddr) -> Result<NegoResp, RetrievalError> {
        let req = Request::NegoReq(NegoReq {
            crypto_algo: CryptoAlgoId::NONE,
            min_version: ProtVer::V1_0,
            max_version: ProtVer::V2_0,
        });
        let r = async {
            let (buf, at) = self.exchange(peer, req.encode()).await?;
            match Response::decode(buf.get(at).unwrap_or_default()) {
                Ok(Response::NegoResp(n)) => Ok(n),
                Ok(_) => Err(RetrievalError::Unexpected {
                    peer,
                    what: "not a NEGO_RESP",
                }),
                Err(source) => Err(RetrievalError::Garbage { peer, source }),
            }
        }
        .await;
        self.count("nego_req", &r);
        r
    }

    /// Ask `peer` which of `ranges` of a segment it holds (MSG_GETBLKLIST).
    pub async fn block_list(
        &self,
        peer: SocketAddr,
        segment_id: SegmentId,
        ranges: Vec<BlockRange>,
    ) -> Result<BlkList, RetrievalError> {
        let req = Request::GetBlkList(GetBlkList {
            crypto_algo: self.config.crypto,
            segment_id,
            ranges,
        });
        let r = async {
            let (buf, at) = self.exchange(peer, req.encode()).await?;
            match Response::decode(buf.get(at).unwrap_or_default()) {
                Ok(Response::BlkList(l)) if l.segment_id == segment_id => Ok(l),
                Ok(Response::BlkList(_)) => Err(RetrievalError::Unexpected {
                    peer,
                    what: "BLKLIST for another segment",
                }),
                Ok(Response::NegoResp(n)) => Err(RetrievalError::Version {
                    peer,
                    min: n.min_version,
                    max: n.max_version,
                }),
                Ok(_) => Err(RetrievalError::Unexpected {
                    peer,
                    what: "not a BLKLIST",
                }),
                Err(source) => Err(RetrievalError::Garbage { peer, source }),
            }
        }
        .await;
        self.count("getblklist", &r);
        r
    }

    /// One MSG_GETBLKS exchange: the whole response message and where its
    /// BLK payload is (checked to be for `segment_id` / `index` and not "not
    /// available"). Shared by the verifying and the replaying fetch.
    async fn get_blk(
        &self,
        peer: SocketAddr,
        segment_id: SegmentId,
        index: u32,
    ) -> Result<(PooledBuf, BlkAt), RetrievalError> {
        let req = Request::GetBlks(GetBlks {
            crypto_algo: self.config.crypto,
            segment_id,
            ranges: vec![BlockRange { index, count: 1 }],
            vrf: &[],
        });
        let (body, at) = self.exchange(peer, req.encode()).await?;
        let blk = match Response::decode(body.get(at).unwrap_or_default()) {
            Ok(Response::Blk(b)) => b,
            Ok(Response::NegoResp(n)) => {
                return Err(RetrievalError::Version {
                    peer,
                    min: n.min_version,
                    max: n.max_version,
                })
            }
            Ok(_) => {
                return Err(RetrievalError::Unexpected {
                    peer,
                    what: "not a BLK",
                })
            }
            Err(source) => return Err(RetrievalError::Garbage { peer, source }),
        };
        if blk.segment_id != segment_id {
            return Err(RetrievalError::Unexpected {
                peer,
                what: "BLK for another segment",
            });
        }
        if blk.block_index != index {
            return Err(RetrievalError::Unexpected {
                peer,
                what: "BLK for another block index",
            });
        }
        if blk.is_not_available() {
            return Err(RetrievalError::NotAvailable { peer });
        }
        // The decoded block field borrows from `body`: its offset there.
        let start = (blk.block.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let block = start..start.saturating_add(blk.block.len());
        if body.get(block.clone()) != Some(blk.block) {
            return Err(RetrievalError::Unexpected {
                peer,
                what: "BLK block field outside the message",
            });
        }
        let at = BlkAt {
            crypto_algo: blk.crypto_algo,
            iv: blk.iv.to_vec(),
            block,
            next_block_index: blk.next_block_index,
        };
        Ok((body, at))
    }

    /// Fetch one block from `peer` (MSG_GETBLKS) without decrypting it, for
    /// a v2 hosted cache that never learns Kp. Only [`RawBlock::plausible`]
    /// is checked here (against `max_plain`, the block's length bound); the
    /// downloading client verifies the hash end to end.
    pub async fn fetch_raw_block(
        &self,
        peer: SocketAddr,
        segment_id: SegmentId,
        index: u32,
        max_plain: usize,
    ) -> Result<RawBlock, RetrievalError> {
        let r = async {
            let (body, at) = self.get_blk(peer, segment_id, index).await?;
            let raw = RawBlock {
                crypto_algo: at.crypto_algo,
                iv: at.iv,
                block: Bytes::from_owner(body).slice(at.block),
            };
            raw.plausible(max_plain)
                .map_err(|what| RetrievalError::Unexpected { peer, what })?;
            Ok(raw)
        }
        .await;
        self.count("getblks_raw", &r);
        r
    }

    /// Fetch one block from `peer` (MSG_GETBLKS) and decrypt it, without
    /// checking its hash: pass the result to [`verify_blocks`](Self::verify_blocks)
    /// (with others, to hash them side by side). Errors are counted here,
    /// the verdict on the block there.
    pub async fn fetch_unverified(
        &self,
        peer: SocketAddr,
        want: &BlockRequest,
    ) -> Result<Unverified, RetrievalError> {
        let r = async {
            let (mut body, at) = self.get_blk(peer, want.segment_id, want.index).await?;
            let payload = body
                .get_mut(at.block.clone())
                .ok_or(RetrievalError::Unexpected {
                    peer,
                    what: "BLK block field outside the message",
                })?;
            decrypt_block_in_place(at.crypto_algo, &want.kp, &at.iv, payload, want.expected_len)
                .map_err(|source| RetrievalError::Crypto { peer, source })?;
            Ok(Unverified {
                peer,
                want: want.clone(),
                message: Bytes::from_owner(body),
                at,
            })
        }
        .await;
        if r.is_err() {
            self.count("getblks", &r);
        }
        r
    }

    /// Check blocks from [`fetch_unverified`](Self::fetch_unverified)
    /// against their expected hashes, in order: the SHA-256 ones in one
    /// multi-buffer pass ([`hash_v1_blocks`]: 16 AVX-512 lanes, about half
    /// the CPU per byte of one SHA-NI stream). A block whose hash is wrong
    /// gets the alternative key reading (as in
    /// [`decrypt_and_verify`](crate::proto::pccrr::decrypt_and_verify))
    /// before it is declared a [`RetrievalError::HashMismatch`].
    pub fn verify_blocks(
        &self,
        blocks: Vec<Unverified>,
    ) -> Vec<Result<FetchedBlock, RetrievalError>> {
        let sha256: Vec<&[u8]> = blocks
            .iter()
            .filter(|b| b.want.hash_algo == HashAlgo::Sha256)
            .map(|b| b.plain())
            .collect();
        let mut sha256 = hash_v1_blocks(HashAlgo::Sha256, &sha256).into_iter();
        let hashes: Vec<Option<Digest>> = blocks
            .iter()
            .map(|b| match b.want.hash_algo {
                HashAlgo::Sha256 => sha256.next(),
                other => Some(other.hash(b.plain())),
            })
            .collect();
        blocks
            .into_iter()
            .zip(hashes)
            .map(|(b, hash)| {
                let r = Self::verdict(b, hash);
                self.count("getblks", &r);
                r
            })
            .collect()
    }

    /// One block's verdict given the hash of its usual-reading plaintext.
    fn verdict(b: Unverified, hash: Option<Digest>) -> Result<FetchedBlock, RetrievalError> {
        let peer = b.peer;
        let want = &b.want;
        if hash.as_ref() == Some(&want.expected_hash) && b.plain().len() == want.expected_len {
            let start = b.at.block.start;
            return Ok(FetchedBlock {
                data: b.message.slice(start..start + want.expected_len),
                next_block_index: b.at.next_block_index,
                key_reading: KeyReading::Truncated,
            });
        }
        let crypto = |source| RetrievalError::Crypto { peer, source };
        // Rare: the block was decrypted in place, so rebuild the ciphertext
        // (CBC-encrypting it again under the same reading) to try the other.
        let mut cipher = b.payload().to_vec();
        reencrypt_in_place(b.at.crypto_algo, &want.kp, &b.at.iv, &mut cipher).map_err(crypto)?;
        let (plain, key_reading) = decrypt_alternative_and_verify(
            b.at.crypto_algo,
            &want.kp,
            &b.at.iv,
            &cipher,
            want.expected_len,
            want.hash_algo,
            &want.expected_hash,
        )
        .map_err(|e| match e {
            BlockCryptoError::HashMismatch => RetrievalError::HashMismatch { peer },
            source => RetrievalError::Crypto { peer, source },
        })?;
        Ok(FetchedBlock {
            data: Bytes::from(plain),
            next_block_index: b.at.next_block_index,
            key_reading,
        })
    }

    /// Fetch one block from `peer` (MSG_GETBLKS), decrypt it and check its
    /// hash. Only verified bytes are returned.
    pub async fn fetch_block(
        &self,
        peer: SocketAddr,
        want: &BlockRequest,
    ) -> Result<FetchedBlock, RetrievalError> {
        let fetched = self.fetch_unverified(peer, want).await?;
        self.verify_blocks(vec![fetched])
            .pop()
            .unwrap_or(Err(RetrievalError::Unexpected {
                peer,
                what: "no verdict",
            }))
    }
}

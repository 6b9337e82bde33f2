//! MS-PCCRR messages: one Rust type per message, `encode()` and total `decode()`.
//!
//! Layout (`PROTOCOL.md` §5.2–§5.5), all integers big-endian:
//! - `MESSAGE_HEADER` (16 bytes): `ProtVer` · `MsgType` · `MsgSize` · `CryptoAlgoId`.
//! - Requests are the bare message; responses are prefixed by a 4-byte
//!   `TRANSPORT_RESPONSE_HEADER` whose `Size` must equal `MsgSize`.
//! - Variable fields are zero-padded so the next field starts 4-aligned
//!   relative to the message header; the last field is never padded by our
//!   encoder, and decoders tolerate 0–3 trailing pad bytes.
//!
//! Decoders check every count against the bytes actually present before
//! allocating, bound every size, and borrow block / VRF / IV bytes from the
//! input instead of copying them.

use std::fmt;
use std::ops::Range;

use crate::proto::codec::{DecodeError, Reader, Writer};
use crate::proto::pccrc::SegmentId;

/// The URL path a PCCRR server answers (`POST`); matched case-insensitively,
/// with or without the trailing slash.
pub const RETRIEVAL_PATH: &str = "/116B50EB-ECE2-41ac-8429-9F9E963361B7/";

/// Size of `MESSAGE_HEADER`, the smallest possible message.
pub const MIN_MSG_LEN: usize = 16;
/// Largest request message (MS-PCCRR §2.1).
pub const MAX_REQUEST_LEN: usize = 98_304;
/// Largest response `MsgSize` (MS-PCCRR §2.1).
pub const MAX_RESPONSE_MSG_LEN: usize = 393_216;
/// Largest `SizeOfBlock` in MSG_BLK: a whole v2 segment (128 KiB) plus one
/// AES block of PKCS#7 padding.
pub const MAX_BLOCK_LEN: usize = 131_072 + 16;
/// Most entries in a BLOCK_RANGE / SEGMENT_RANGE array (MS-PCCRR §2.2.3).
pub const MAX_RANGES: usize = 256;
/// Highest protocol major version whose message layouts this build knows.
pub const MAX_KNOWN_MAJOR: u16 = 2;
/// The only IV length AES-CBC uses.
pub const IV_LEN: usize = 16;
/// Bytes of a `BLOCK_RANGE` on the wire.
const RANGE_LEN: usize = 8;
/// Smallest SegmentID field group (size field + 32-byte ID); caps the
/// allocation for GETSEGLIST's ID array.
const MIN_SEGMENT_ID_GROUP: usize = 4 + 32;

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $konst:ident = $val:expr => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            $($(#[$vm])* pub const $konst: $name = $name($val);)*

            /// The name of a known value, `None` for values this build does not know.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($label),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!(stringify!($name), "({:#010x})"), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_enum!(
    /// `MsgType` (MS-PCCRR §2.2.3). Unknown values survive and print as hex.
    MsgType {
        /// MSG_NEGO_REQ.
        NEGO_REQ = 0 => "NEGO_REQ",
        /// MSG_NEGO_RESP.
        NEGO_RESP = 1 => "NEGO_RESP",
        /// MSG_GETBLKLIST.
        GETBLKLIST = 2 => "GETBLKLIST",
        /// MSG_GETBLKS.
        GETBLKS = 3 => "GETBLKS",
        /// MSG_BLKLIST.
        BLKLIST = 4 => "BLKLIST",
        /// MSG_BLK.
        BLK = 5 => "BLK",
        /// MSG_GETSEGLIST (protocol 2.0).
        GETSEGLIST = 6 => "GETSEGLIST",
        /// MSG_SEGLIST (protocol 2.0).
        SEGLIST = 7 => "SEGLIST",
    }
);

impl MsgType {
    /// The `ProtVer` a message of this type carries: the version that
    /// introduced the type, not the negotiated one.
    // SPEC(MS-PCCRR §2.2.3): ProtVer is fixed per message type (0–5 → 1.0, 6–7 → 2.0).
    pub const fn prot_ver(self) -> ProtVer {
        if self.0 >= 6 {
            ProtVer::V2_0
        } else {
            ProtVer::V1_0
        }
    }

    /// A stable lower-case label for metrics (`getblks`, …, `unknown`).
    pub const fn label(self) -> &'static str {
        match self.0 {
            0 => "nego_req",
            1 => "nego_resp",
            2 => "getblklist",
            3 => "getblks",
            4 => "blklist",
            5 => "blk",
            6 => "getseglist",
            7 => "seglist",
            _ => "unknown",
        }
    }
}

wire_enum!(
    /// `CryptoAlgoId` (MS-PCCRR §2.2.3). Unknown values survive and print as hex.
    CryptoAlgoId {
        /// No encryption: the block travels in plain text.
        NONE = 0 => "NONE",
        /// AES-128-CBC.
        AES_128 = 1 => "AES_128",
        /// AES-192-CBC.
        AES_192 = 2 => "AES_192",
        /// AES-256-CBC.
        AES_256 = 3 => "AES_256",
    }
);

impl CryptoAlgoId {
    /// AES key length in bytes; `Some(0)` for `NONE`, `None` for unknown ids.
    pub const fn key_len(self) -> Option<usize> {
        match self.0 {
            0 => Some(0),
            1 => Some(16),
            2 => Some(24),
            3 => Some(32),
            _ => None,
        }
    }
}

/// `ProtVer`: on the wire minor (u16 BE) then major (u16 BE), so as a
/// big-endian u32 the major version is the low 16 bits.
// SPEC(MS-PCCRR §2.2.3.1): version bytes are minor-first; 1.0 = 00 00 00 01.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtVer(pub u32);

impl ProtVer {
    /// Version 1.0 (message types 0–5).
    pub const V1_0: ProtVer = ProtVer::new(1, 0);
    /// Version 2.0 (message types 6–7).
    pub const V2_0: ProtVer = ProtVer::new(2, 0);

    /// Build from major and minor.
    pub const fn new(major: u16, minor: u16) -> Self {
        ProtVer(((minor as u32) << 16) | major as u32)
    }

    /// Major version.
    pub const fn major(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }

    /// Minor version.
    pub const fn minor(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

impl fmt::Debug for ProtVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

impl fmt::Display for ProtVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Version negotiation (MS-PCCRR §3.1.5): the highest major version both
/// ranges contain, or `None` (no common major: the client drops the reply).
/// Only majors are compared; each side then uses its own highest minor
/// within the returned major.
pub fn negotiate(
    client_min: ProtVer,
    client_max: ProtVer,
    server_min: ProtVer,
    server_max: ProtVer,
) -> Option<u16> {
    let lo = client_min.major().max(server_min.major());
    let hi = client_max.major().min(server_max.major());
    (lo <= hi).then_some(hi)
}

/// The 16-byte `MESSAGE_HEADER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Protocol version of the message type.
    pub prot_ver: ProtVer,
    /// Message type.
    pub msg_type: MsgType,
    /// Message length including this header (excluding the transport header).
    pub msg_size: u32,
    /// Requests: the client's preference; MSG_BLK: what was used.
    pub crypto_algo: CryptoAlgoId,
}

impl MessageHeader {
    /// Parse the header at the start of a request message (no transport
    /// header). Lets a server check the version before a full decode.
    pub fn peek(buf: &[u8]) -> Result<Self, DecodeError> {
        Self::read(&mut Reader::new(buf))
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MessageHeader {
            prot_ver: ProtVer(r.u32_be("ProtVer")?),
            msg_type: MsgType(r.u32_be("MsgType")?),
            msg_size: r.u32_be("MsgSize")?,
            crypto_algo: CryptoAlgoId(r.u32_be("CryptoAlgoId")?),
        })
    }
}

/// A `BLOCK_RANGE` / `SEGMENT_RANGE`: `count` items starting at `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRange {
    /// First index.
    pub index: u32,
    /// Number of items (≥ 1 on the wire).
    pub count: u32,
}

impl BlockRange {
    /// One past the last index, `None` on overflow.
    pub fn end(&self) -> Option<u32> {
        self.index.checked_add(self.count)
    }
}

/// Units of the ages in an [`ExtensibleBlob`].
pub mod age_units {
    /// Seconds.
    pub const SECONDS: u8 = 1;
    /// Tenths of a second.
    pub const DECISECONDS: u8 = 2;
    /// Hundredths of a second (what the spec says senders SHOULD use).
    pub const CENTISECONDS: u8 = 3;
    /// Milliseconds.
    pub const MILLISECONDS: u8 = 4;
}

/// One `ENCODED_SEGMENT_AGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentAge {
    /// Index relative to the segment list the blob travels with.
    pub segment_index: u8,
    /// Age in [`ExtensibleBlob::units`]; 24 bits on the wire.
    pub age: u32,
}

/// Largest age an `ENCODED_SEGMENT_AGE` can carry (24 bits).
pub const MAX_SEGMENT_AGE: u32 = 0x00FF_FFFF;

/// Extensible blob version 1 (MS-PCCRR §2.2.6.1): segment ages. Also used by
/// PCCRD v2 `SegmentAges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensibleBlob {
    /// One of [`age_units`].
    pub units: u8,
    /// At most 255 ages.
    pub ages: Vec<SegmentAge>,
}

impl ExtensibleBlob {
    /// Decode following the spec's validation order: size ≥ 4, version 1,
    /// units 1..=4, size ≥ 4·(count+1). Bytes past the ages are ignored.
    /// On error the caller discards the blob, not the message.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u16_be("ExtensibleBlobVersion")?;
        if version != 1 {
            return Err(DecodeError::Unsupported {
                what: "ExtensibleBlobVersion",
                value: version.into(),
            });
        }
        let units = r.u8("SegmentAgeUnits")?;
        if !(age_units::SECONDS..=age_units::MILLISECONDS).contains(&units) {
            return Err(DecodeError::Unsupported {
                what: "SegmentAgeUnits",
                value: units.into(),
            });
        }
        let count = r.u8("SegmentAgeCount")?;
        let mut ages = Vec::with_capacity(count.into());
        for _ in 0..count {
            let [segment_index, low, mid, high] = r.array::<4>("ENCODED_SEGMENT_AGE")?;
            ages.push(SegmentAge {
                segment_index,
                age: u32::from_le_bytes([low, mid, high, 0]),
            });
        }
        Ok(ExtensibleBlob { units, ages })
    }

    /// Encode. Ages above [`MAX_SEGMENT_AGE`] saturate; more than 255 ages
    /// are cut to the first 255.
    pub fn encode(&self) -> Vec<u8> {
        let ages = self.ages.get(..255).unwrap_or(&self.ages);
        let mut w = Writer::with_capacity(4 + 4 * ages.len());
        w.u16_be(1).u8(self.units).u8(ages.len() as u8);
        for a in ages {
            let [low, mid, high, _] = a.age.min(MAX_SEGMENT_AGE).to_le_bytes();
            w.u8(a.segment_index).u8(low).u8(mid).u8(high);
        }
        w.finish()
    }
}

/// MSG_NEGO_REQ: the client's supported version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegoReq {
    /// Header `CryptoAlgoId` (client preference; meaningless here).
    pub crypto_algo: CryptoAlgoId,
    /// Lowest supported version.
    pub min_version: ProtVer,
    /// Highest supported version.
    pub max_version: ProtVer,
}

/// MSG_NEGO_RESP: the server's supported version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegoResp {
    /// Header `CryptoAlgoId`.
    pub crypto_algo: CryptoAlgoId,
    /// Lowest supported version.
    pub min_version: ProtVer,
    /// Highest supported version.
    pub max_version: ProtVer,
}

/// MSG_GETBLKLIST: which of these blocks of a segment do you hold?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetBlkList {
    /// Client's cipher preference.
    pub crypto_algo: CryptoAlgoId,
    /// `HoHoDk` (32, 48 or 64 bytes).
    pub segment_id: SegmentId,
    /// Needed ranges, 1..=256.
    pub ranges: Vec<BlockRange>,
}

/// MSG_BLKLIST: the held subset of a GETBLKLIST's ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkList {
    /// Header `CryptoAlgoId`.
    pub crypto_algo: CryptoAlgoId,
    /// Segment the list is about.
    pub segment_id: SegmentId,
    /// Held ranges, 0..=256 (0: none, or the server is overloaded).
    pub ranges: Vec<BlockRange>,
    /// First held block after the listed ones, 0 if none.
    pub next_block_index: u32,
}

/// MSG_GETBLKS: send me this block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetBlks<'a> {
    /// Client's cipher preference.
    pub crypto_algo: CryptoAlgoId,
    /// `HoHoDk`.
    pub segment_id: SegmentId,
    /// Requested ranges, 1..=256.
    // SPEC(MS-PCCRR §3.2.4.2.2): a client MUST ask for exactly one block; a
    // server given more serves the lowest index ([`GetBlks::first_block`]).
    pub ranges: Vec<BlockRange>,
    /// `DataForVrfBlock` (SHOULD be empty).
    pub vrf: &'a [u8],
}

impl GetBlks<'_> {
    /// The block a server answers with: the smallest requested index.
    pub fn first_block(&self) -> Option<u32> {
        self.ranges.iter().map(|r| r.index).min()
    }
}

/// MSG_BLK: one (usually encrypted) block, or "not available" when `block`
/// is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blk<'a> {
    /// The cipher actually used (NONE for plaintext and for "not available").
    pub crypto_algo: CryptoAlgoId,
    /// Segment the block belongs to.
    pub segment_id: SegmentId,
    /// Index of this block.
    pub block_index: u32,
    /// Next block the server holds, 0 if none.
    pub next_block_index: u32,
    /// Ciphertext (or plaintext for NONE), at most [`MAX_BLOCK_LEN`]; empty = not available.
    pub block: &'a [u8],
    /// `VrfBlock` (normally empty).
    pub vrf: &'a [u8],
    /// IV: empty or 16 bytes.
    // SPEC(MS-PCCRR §2.2.4.3): the IV comes *after* the ciphertext.
    pub iv: &'a [u8],
}

impl<'a> Blk<'a> {
    /// The message [`Response::encode`] makes of this MSG_BLK, except that
    /// the block field is `block_len` zero bytes (`self.block` is ignored),
    /// and the byte range of that field in the message: a sender encrypts
    /// straight into it instead of encrypting into a buffer and copying
    /// that into the message. Does not validate `block_len`.
    pub fn encode_with_block_space(&self, block_len: usize) -> (Vec<u8>, Range<usize>) {
        let mut w = Writer::with_capacity(4 + 96 + self.segment_id.as_bytes().len() + block_len);
        w.u32_be(0);
        let at = write_blk(&mut w, self, BlockField::Space(block_len));
        let msg_len = (w.len() - 4) as u32;
        w.patch_u32_be(0, msg_len);
        w.patch_u32_be(12, msg_len);
        (w.finish(), at)
    }

    /// An empty MSG_BLK meaning "I do not have this block" (also the answer
    /// of an overloaded server).
    pub fn not_available(segment_id: SegmentId, block_index: u32) -> Self {
        Blk {
            crypto_algo: CryptoAlgoId::NONE,
            segment_id,
            block_index,
            next_block_index: 0,
            block: &[],
            vrf: &[],
            iv: &[],
        }
    }

    /// True when the server does not have the block.
    pub fn is_not_available(&self) -> bool {
        self.block.is_empty()
    }
}

/// MSG_GETSEGLIST (2.0, hosted cache): which of these segments do you hold?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSegList {
    /// Client's cipher preference.
    pub crypto_algo: CryptoAlgoId,
    /// Unique per outstanding request; echoed in SEGLIST.
    pub request_id: [u8; 16],
    /// Segment ids asked about (at least one).
    pub segment_ids: Vec<SegmentId>,
    /// Raw extensible blob bytes (may be empty); see [`ExtensibleBlob`].
    pub extensible_blob: Vec<u8>,
}

/// MSG_SEGLIST (2.0): held segments as ranges of indexes into the
/// request's id array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegList {
    /// Header `CryptoAlgoId`.
    pub crypto_algo: CryptoAlgoId,
    /// The request's `RequestID`.
    pub request_id: [u8; 16],
    /// Held segments, 0..=256 ranges.
    pub ranges: Vec<BlockRange>,
    /// Raw extensible blob bytes (may be empty); see [`ExtensibleBlob`].
    pub extensible_blob: Vec<u8>,
}

impl GetSegList {
    /// The decoded blob, or `None` when empty or invalid (discard the blob,
    /// keep the message).
    pub fn ages(&self) -> Option<ExtensibleBlob> {
        ExtensibleBlob::decode(&self.extensible_blob).ok()
    }
}

impl SegList {
    /// The decoded blob, or `None` when empty or invalid (discard the blob,
    /// keep the message).
    pub fn ages(&self) -> Option<ExtensibleBlob> {
        ExtensibleBlob::decode(&self.extensible_blob).ok()
    }
}

/// A request message (client → server); no transport header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// MSG_NEGO_REQ.
    NegoReq(NegoReq),
    /// MSG_GETBLKLIST.
    GetBlkList(GetBlkList),
    /// MSG_GETBLKS.
    GetBlks(GetBlks<'a>),
    /// MSG_GETSEGLIST.
    GetSegList(GetSegList),
}

/// A response message (server → client), encoded with the 4-byte transport
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// MSG_NEGO_RESP.
    NegoResp(NegoResp),
    /// MSG_BLKLIST.
    BlkList(BlkList),
    /// MSG_BLK.
    Blk(Blk<'a>),
    /// MSG_SEGLIST.
    SegList(SegList),
}

// ---------------------------------------------------------------- helpers

fn read_segment_id(r: &mut Reader<'_>) -> Result<SegmentId, DecodeError> {
    let len = r.u32_be("SizeOfSegmentID")?;
    if !matches!(len, 32 | 48 | 64) {
        return Err(DecodeError::Unsupported {
            what: "SizeOfSegmentID",
            value: len.into(),
        });
    }
    let id = r.take(len as usize, "SegmentID")?;
    // 32/48/64 are multiples of 4: no padding follows.
    SegmentId::from_slice(id).ok_or(DecodeError::Invalid { what: "SegmentID" })
}

fn write_segment_id(w: &mut Writer, id: &SegmentId) {
    w.u32_be(id.as_bytes().len() as u32)
        .bytes(id.as_bytes())
        .pad_to(4);
}

/// Read a u32 count and that many ranges; `min` is 0 or 1.
fn read_ranges(
    r: &mut Reader<'_>,
    what: &'static str,
    min: usize,
) -> Result<Vec<BlockRange>, DecodeError> {
    let count = r.u32_be(what)? as usize;
    if count < min {
        return Err(DecodeError::Invalid { what });
    }
    if count > MAX_RANGES {
        return Err(DecodeError::LimitExceeded {
            what,
            max: MAX_RANGES as u64,
        });
    }
    if count.saturating_mul(RANGE_LEN) > r.remaining() {
        return Err(DecodeError::Truncated {
            what: "range array",
        });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let range = BlockRange {
            index: r.u32_be("range Index")?,
            count: r.u32_be("range Count")?,
        };
        if range.count == 0 {
            return Err(DecodeError::Invalid {
                what: "range Count is 0",
            });
        }
        if range.end().is_none() {
            return Err(DecodeError::Invalid {
                what: "range Index + Count overflows",
            });
        }
        out.push(range);
    }
    Ok(out)
}

fn write_ranges(w: &mut Writer, ranges: &[BlockRange]) {
    w.u32_be(ranges.len() as u32);
    for r in ranges {
        w.u32_be(r.index).u32_be(r.count);
    }
}

/// A u32 size, then that many bytes, then pad to 4 unless `last`.
fn read_sized<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    max: usize,
    last: bool,
) -> Result<&'a [u8], DecodeError> {
    let len = r.u32_be(what)? as usize;
    if len > max {
        return Err(DecodeError::LimitExceeded {
            what,
            max: max as u64,
        });
    }
    let out = r.take(len, what)?;
    if !last {
        r.align_to(4, "ZeroPad")?;
    }
    Ok(out)
}

/// What goes into MSG_BLK's block field.
enum BlockField<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// This many zero bytes, to be overwritten in place.
    Space(usize),
}

/// MSG_BLK after the transport header; returns the block field's range.
fn write_blk(w: &mut Writer, m: &Blk<'_>, block: BlockField<'_>) -> Range<usize> {
    begin(w, MsgType::BLK, m.crypto_algo);
    write_segment_id(w, &m.segment_id);
    w.u32_be(m.block_index).u32_be(m.next_block_index);
    // The transport header is 4 bytes, so alignment relative to
    // the writer start equals alignment relative to the message.
    let start = w.len() + 4;
    match block {
        BlockField::Bytes(b) => write_sized(w, b, false),
        BlockField::Space(n) => {
            w.u32_be(n as u32).zeros(n).pad_to(4);
        }
    }
    let end = start
        + match block {
            BlockField::Bytes(b) => b.len(),
            BlockField::Space(n) => n,
        };
    write_sized(w, m.vrf, false);
    write_sized(w, m.iv, true);
    start..end
}

fn write_sized(w: &mut Writer, bytes: &[u8], last: bool) {
    w.u32_be(bytes.len() as u32).bytes(bytes);
    if !last {
        w.pad_to(4);
    }
}

/// After the last field: 0–3 pad bytes are tolerated, more are an error.
fn finish(r: &Reader<'_>, what: &'static str) -> Result<(), DecodeError> {
    if r.remaining() <= 3 {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes { what })
    }
}

fn check_version(h: &MessageHeader) -> Result<(), DecodeError> {
    // Senders put the version that introduced the type (1.0 for 0–5, 2.0 for
    // 6–7). Be liberal: accept any minor, and a 1.0 type labelled with a later
    // major we know (a client stamping its negotiated version); reject a type
    // labelled older than the version that introduced it, or newer than we know.
    let major = h.prot_ver.major();
    if major < h.msg_type.prot_ver().major() || major > MAX_KNOWN_MAJOR {
        return Err(DecodeError::Unsupported {
            what: "ProtVer for message type",
            value: h.prot_ver.0.into(),
        });
    }
    Ok(())
}

/// Starts a message: header with a MsgSize placeholder at `base + 8`.
fn begin(w: &mut Writer, msg_type: MsgType, crypto_algo: CryptoAlgoId) {
    w.u32_be(msg_type.prot_ver().0)
        .u32_be(msg_type.0)
        .u32_be(0)
        .u32_be(crypto_algo.0);
}

// ------------------------------------------------------------- requests

impl<'a> Request<'a> {
    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Request::NegoReq(_) => MsgType::NEGO_REQ,
            Request::GetBlkList(_) => MsgType::GETBLKLIST,
            Request::GetBlks(_) => MsgType::GETBLKS,
            Request::GetSegList(_) => MsgType::GETSEGLIST,
        }
    }

    /// Decode a whole request body. Checks `16 ≤ len ≤ 98 304`,
    /// `MsgSize == len`, the ProtVer major for the type, every count and
    /// size, and tolerates 0–3 trailing pad bytes.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < MIN_MSG_LEN {
            return Err(DecodeError::Truncated {
                what: "MESSAGE_HEADER",
            });
        }
        if buf.len() > MAX_REQUEST_LEN {
            return Err(DecodeError::LimitExceeded {
                what: "request length",
                max: MAX_REQUEST_LEN as u64,
            });
        }
        let mut r = Reader::new(buf);
        let h = MessageHeader::read(&mut r)?;
        if h.msg_size as usize != buf.len() {
            return Err(DecodeError::Invalid {
                what: "MsgSize differs from request length",
            });
        }
        check_version(&h)?;
        let crypto_algo = h.crypto_algo;
        let req = match h.msg_type {
            MsgType::NEGO_REQ => Request::NegoReq(NegoReq {
                crypto_algo,
                min_version: ProtVer(r.u32_be("MinSupportedProtocolVersion")?),
                max_version: ProtVer(r.u32_be("MaxSupportedProtocolVersion")?),
            }),
            MsgType::GETBLKLIST => Request::GetBlkList(GetBlkList {
                crypto_algo,
                segment_id: read_segment_id(&mut r)?,
                ranges: read_ranges(&mut r, "NeededBlocksRangeCount", 1)?,
            }),
            MsgType::GETBLKS => Request::GetBlks(GetBlks {
                crypto_algo,
                segment_id: read_segment_id(&mut r)?,
                ranges: read_ranges(&mut r, "ReqBlockRangeCount", 1)?,
                vrf: read_sized(&mut r, "SizeOfDataForVrfBlock", MAX_REQUEST_LEN, true)?,
            }),
            MsgType::GETSEGLIST => {
                let request_id = r.array::<16>("RequestID")?;
                let count = r.u32_be("CountOfSegmentIDs")? as usize;
                if count == 0 {
                    return Err(DecodeError::Invalid {
                        what: "CountOfSegmentIDs is 0",
                    });
                }
                if count > r.remaining() / MIN_SEGMENT_ID_GROUP {
                    return Err(DecodeError::Truncated {
                        what: "SegmentID array",
                    });
                }
                let mut segment_ids = Vec::with_capacity(count);
                for _ in 0..count {
                    segment_ids.push(read_segment_id(&mut r)?);
                }
                let blob = read_sized(&mut r, "SizeOfExtensibleBlob", MAX_REQUEST_LEN, true)?;
                Request::GetSegList(GetSegList {
                    crypto_algo,
                    request_id,
                    segment_ids,
                    extensible_blob: blob.to_vec(),
                })
            }
            other => {
                return Err(DecodeError::Unsupported {
                    what: "request MsgType",
                    value: other.0.into(),
                })
            }
        };
        finish(&r, "request message")?;
        Ok(req)
    }

    /// Encode (no transport header, no trailing pad). Does not validate:
    /// counts and sizes are the caller's to keep within the protocol bounds.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        match self {
            Request::NegoReq(m) => {
                begin(&mut w, MsgType::NEGO_REQ, m.crypto_algo);
                w.u32_be(m.min_version.0).u32_be(m.max_version.0);
            }
            Request::GetBlkList(m) => {
                begin(&mut w, MsgType::GETBLKLIST, m.crypto_algo);
                write_segment_id(&mut w, &m.segment_id);
                write_ranges(&mut w, &m.ranges);
            }
            Request::GetBlks(m) => {
                begin(&mut w, MsgType::GETBLKS, m.crypto_algo);
                write_segment_id(&mut w, &m.segment_id);
                write_ranges(&mut w, &m.ranges);
                write_sized(&mut w, m.vrf, true);
            }
            Request::GetSegList(m) => {
                begin(&mut w, MsgType::GETSEGLIST, m.crypto_algo);
                w.bytes(&m.request_id);
                w.u32_be(m.segment_ids.len() as u32);
                for id in &m.segment_ids {
                    write_segment_id(&mut w, id);
                }
                write_sized(&mut w, &m.extensible_blob, true);
            }
        }
        let len = w.len() as u32;
        w.patch_u32_be(8, len);
        w.finish()
    }
}

// ------------------------------------------------------------ responses

impl<'a> Response<'a> {
    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Response::NegoResp(_) => MsgType::NEGO_RESP,
            Response::BlkList(_) => MsgType::BLKLIST,
            Response::Blk(_) => MsgType::BLK,
            Response::SegList(_) => MsgType::SEGLIST,
        }
    }

    /// Decode a whole response body: transport header `Size`, then the
    /// message. Checks `Size == MsgSize == len − 4`, `16 ≤ MsgSize ≤ 393 216`,
    /// the ProtVer major for the type, every count and size, and tolerates
    /// 0–3 trailing pad bytes inside the message.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut outer = Reader::new(buf);
        let size = outer.u32_be("TRANSPORT_RESPONSE_HEADER")? as usize;
        if size < MIN_MSG_LEN {
            return Err(DecodeError::Invalid {
                what: "transport Size below message header",
            });
        }
        if size > MAX_RESPONSE_MSG_LEN {
            return Err(DecodeError::LimitExceeded {
                what: "response MsgSize",
                max: MAX_RESPONSE_MSG_LEN as u64,
            });
        }
        let mut r = outer.sub(size, "response message")?;
        outer.expect_empty("response message")?;
        let h = MessageHeader::read(&mut r)?;
        if h.msg_size as usize != size {
            return Err(DecodeError::Invalid {
                what: "MsgSize differs from transport Size",
            });
        }
        check_version(&h)?;
        let crypto_algo = h.crypto_algo;
        let resp = match h.msg_type {
            MsgType::NEGO_RESP => Response::NegoResp(NegoResp {
                crypto_algo,
                min_version: ProtVer(r.u32_be("MinSupportedProtocolVersion")?),
                max_version: ProtVer(r.u32_be("MaxSupportedProtocolVersion")?),
            }),
            MsgType::BLKLIST => Response::BlkList(BlkList {
                crypto_algo,
                segment_id: read_segment_id(&mut r)?,
                ranges: read_ranges(&mut r, "BlockRangeCount", 0)?,
                next_block_index: r.u32_be("NextBlockIndex")?,
            }),
            MsgType::BLK => {
                let segment_id = read_segment_id(&mut r)?;
                let block_index = r.u32_be("BlockIndex")?;
                let next_block_index = r.u32_be("NextBlockIndex")?;
                let block = read_sized(&mut r, "SizeOfBlock", MAX_BLOCK_LEN, false)?;
                let vrf = read_sized(&mut r, "SizeOfVrfBlock", MAX_RESPONSE_MSG_LEN, false)?;
                let iv = read_sized(&mut r, "SizeOfIVBlock", IV_LEN, true)?;
                if !(iv.is_empty() || iv.len() == IV_LEN) {
                    return Err(DecodeError::Invalid {
                        what: "SizeOfIVBlock is neither 0 nor 16",
                    });
                }
                Response::Blk(Blk {
                    crypto_algo,
                    segment_id,
                    block_index,
                    next_block_index,
                    block,
                    vrf,
                    iv,
                })
            }
            MsgType::SEGLIST => Response::SegList(SegList {
                crypto_algo,
                request_id: r.array::<16>("RequestID")?,
                ranges: read_ranges(&mut r, "SegmentRangeCount", 0)?,
                extensible_blob: read_sized(
                    &mut r,
                    "SizeOfExtensibleBlob",
                    MAX_RESPONSE_MSG_LEN,
                    true,
                )?
                .to_vec(),
            }),
            other => {
                return Err(DecodeError::Unsupported {
                    what: "response MsgType",
                    value: other.0.into(),
                })
            }
        };
        finish(&r, "response message")?;
        Ok(resp)
    }

    /// Encode with the 4-byte transport header (no trailing pad). Does not
    /// validate: counts and sizes are the caller's to keep within bounds.
    pub fn encode(&self) -> Vec<u8> {
        let cap = match self {
            Response::Blk(b) => 4 + 96 + b.segment_id.as_bytes().len() + b.block.len(),
            _ => 128,
        };
        let mut w = Writer::with_capacity(cap);
        w.u32_be(0);
        match self {
            Response::NegoResp(m) => {
                begin(&mut w, MsgType::NEGO_RESP, m.crypto_algo);
                w.u32_be(m.min_version.0).u32_be(m.max_version.0);
            }
            Response::BlkList(m) => {
                begin(&mut w, MsgType::BLKLIST, m.crypto_algo);
                write_segment_id(&mut w, &m.segment_id);
                write_ranges(&mut w, &m.ranges);
                w.u32_be(m.next_block_index);
            }
            Response::Blk(m) => {
                write_blk(&mut w, m, BlockField::Bytes(m.block));
            }
            Response::SegList(m) => {
                begin(&mut w, MsgType::SEGLIST, m.crypto_algo);
                w.bytes(&m.request_id);
                write_ranges(&mut w, &m.ranges);
                write_sized(&mut w, &m.extensible_blob, true);
            }
        }
        let msg_len = (w.len() - 4) as u32;
        w.patch_u32_be(0, msg_len);
        w.patch_u32_be(12, msg_len);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(fill: u8, len: usize) -> SegmentId {
        SegmentId::from_slice(&vec![fill; len]).unwrap()
    }

    #[test]
    fn blk_with_block_space_filled_in_place_equals_encode() {
        for len in [0usize, 1, 3, 4, 15, 16, 17, 65_552] {
            let block: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            for iv in [&[][..], &[9u8; 16][..]] {
                let m = Blk {
                    crypto_algo: CryptoAlgoId::AES_128,
                    segment_id: sid(0x33, 32),
                    block_index: 5,
                    next_block_index: 6,
                    block: &block,
                    vrf: &[],
                    iv,
                };
                let want = Response::Blk(m.clone()).encode();
                let (mut got, at) = m.encode_with_block_space(len);
                assert_eq!(at.len(), len);
                got[at].copy_from_slice(&block);
                assert_eq!(got, want, "block of {len} bytes");
            }
        }
    }

    #[test]
    fn protver_wire_bytes_are_minor_then_major() {
        assert_eq!(ProtVer::V1_0.0.to_be_bytes(), [0, 0, 0, 1]);
        assert_eq!(ProtVer::V2_0.0.to_be_bytes(), [0, 0, 0, 2]);
        let v = ProtVer::new(1, 3);
        assert_eq!(v.0.to_be_bytes(), [0, 3, 0, 1]);
        assert_eq!((v.major(), v.minor()), (1, 3));
        assert_eq!(format!("{v}"), "1.3");
    }

    #[test]
    fn unknown_wire_values_print_as_hex() {
        assert_eq!(format!("{:?}", MsgType(9)), "MsgType(0x00000009)");
        assert_eq!(format!("{:?}", MsgType::BLK), "BLK");
        assert_eq!(format!("{}", CryptoAlgoId(7)), "CryptoAlgoId(0x00000007)");
        assert_eq!(CryptoAlgoId(7).key_len(), None);
        assert_eq!(CryptoAlgoId::AES_192.key_len(), Some(24));
    }

    #[test]
    fn negotiate_picks_highest_common_major() {
        let v = |m| ProtVer::new(m, 0);
        assert_eq!(negotiate(v(1), v(2), v(1), v(2)), Some(2));
        assert_eq!(negotiate(v(1), v(1), v(1), v(2)), Some(1));
        assert_eq!(negotiate(v(1), v(3), ProtVer::new(2, 5), v(2)), Some(2));
        assert_eq!(negotiate(v(3), v(4), v(1), v(2)), None);
    }

    #[test]
    fn getblks_for_32_byte_id_is_68_bytes() {
        let req = Request::GetBlks(GetBlks {
            crypto_algo: CryptoAlgoId::AES_128,
            segment_id: sid(0xAB, 32),
            ranges: vec![BlockRange { index: 7, count: 1 }],
            vrf: &[],
        });
        let bytes = req.encode();
        assert_eq!(bytes.len(), 68);
        assert_eq!(
            &bytes[..16],
            &[0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 68, 0, 0, 0, 1]
        );
        assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn seglist_types_carry_protver_2() {
        let req = Request::GetSegList(GetSegList {
            crypto_algo: CryptoAlgoId::NONE,
            request_id: [1; 16],
            segment_ids: vec![sid(1, 32), sid(2, 64)],
            extensible_blob: vec![],
        });
        let bytes = req.encode();
        assert_eq!(&bytes[..4], &[0, 0, 0, 2]);
        assert_eq!(Request::decode(&bytes).unwrap(), req);
        let mut wrong = bytes.clone();
        wrong[3] = 1;
        assert!(matches!(
            Request::decode(&wrong),
            Err(DecodeError::Unsupported { .. })
        ));
    }

    #[test]
    fn getblks_labelled_2_0_is_accepted_but_3_0_is_not() {
        let mut bytes = Request::GetBlks(GetBlks {
            crypto_algo: CryptoAlgoId::AES_128,
            segment_id: sid(1, 32),
            ranges: vec![BlockRange { index: 0, count: 1 }],
            vrf: &[],
        })
        .encode();
        bytes[..4].copy_from_slice(&ProtVer::new(2, 0).0.to_be_bytes());
        assert!(Request::decode(&bytes).is_ok());
        bytes[..4].copy_from_slice(&ProtVer::new(3, 0).0.to_be_bytes());
        assert!(matches!(
            Request::decode(&bytes),
            Err(DecodeError::Unsupported { .. })
        ));
    }

    #[test]
    fn blk_pads_block_but_not_iv() {
        let block = [9u8; 5];
        let iv = [3u8; 16];
        let resp = Response::Blk(Blk {
            crypto_algo: CryptoAlgoId::NONE,
            segment_id: sid(1, 32),
            block_index: 2,
            next_block_index: 3,
            block: &block,
            vrf: &[],
            iv: &iv,
        });
        let bytes = resp.encode();
        // 4 + 16 + 36 + 8 + (4+5+3) + 4 + (4+16)
        assert_eq!(bytes.len(), 4 + 16 + 36 + 8 + 12 + 4 + 20);
        assert_eq!(&bytes[bytes.len() - 16..], &iv);
        assert_eq!(Response::decode(&bytes).unwrap(), resp);
    }

    #[test]
    fn tolerates_up_to_three_trailing_pad_bytes() {
        let req = Request::GetBlkList(GetBlkList {
            crypto_algo: CryptoAlgoId::AES_128,
            segment_id: sid(5, 48),
            ranges: vec![BlockRange {
                index: 0,
                count: 512,
            }],
        });
        let mut bytes = req.encode();
        for pad in 1..=4u32 {
            bytes.push(0);
            let len = bytes.len() as u32;
            bytes[8..12].copy_from_slice(&len.to_be_bytes());
            let got = Request::decode(&bytes);
            if pad <= 3 {
                assert_eq!(got.unwrap(), req);
            } else {
                assert!(matches!(got, Err(DecodeError::TrailingBytes { .. })));
            }
        }
    }

    #[test]
    fn rejects_bad_segment_id_length() {
        let req = Request::GetBlkList(GetBlkList {
            crypto_algo: CryptoAlgoId::AES_128,
            segment_id: sid(5, 36),
            ranges: vec![BlockRange { index: 0, count: 1 }],
        });
        assert_eq!(
            Request::decode(&req.encode()).unwrap_err(),
            DecodeError::Unsupported {
                what: "SizeOfSegmentID",
                value: 36
            }
        );
    }

    #[test]
    fn rejects_zero_and_too_many_ranges() {
        let mk = |ranges: Vec<BlockRange>| {
            Request::GetBlkList(GetBlkList {
                crypto_algo: CryptoAlgoId::AES_128,
                segment_id: sid(5, 32),
                ranges,
            })
            .encode()
        };
        assert!(matches!(
            Request::decode(&mk(vec![])),
            Err(DecodeError::Invalid { .. })
        ));
        let many = vec![BlockRange { index: 0, count: 1 }; 257];
        assert!(matches!(
            Request::decode(&mk(many)),
            Err(DecodeError::LimitExceeded { max: 256, .. })
        ));
        assert!(matches!(
            Request::decode(&mk(vec![BlockRange { index: 1, count: 0 }])),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn rejects_msgsize_mismatch_and_oversize() {
        let mut bytes = Request::NegoReq(NegoReq {
            crypto_algo: CryptoAlgoId::NONE,
            min_version: ProtVer::V1_0,
            max_version: ProtVer::V2_0,
        })
        .encode();
        assert_eq!(bytes.len(), 24);
        bytes[11] = 28;
        assert!(matches!(
            Request::decode(&bytes),
            Err(DecodeError::Invalid { .. })
        ));
        let big = vec![0u8; MAX_REQUEST_LEN + 1];
        assert!(matches!(
            Request::decode(&big),
            Err(DecodeError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn response_transport_size_must_match_msgsize() {
        let resp = Response::NegoResp(NegoResp {
            crypto_algo: CryptoAlgoId::NONE,
            min_version: ProtVer::V1_0,
            max_version: ProtVer::V2_0,
        });
        let bytes = resp.encode();
        assert_eq!(bytes.len(), 28);
        assert_eq!(&bytes[..4], &[0, 0, 0, 24]);
        assert_eq!(Response::decode(&bytes).unwrap(), resp);
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Response::decode(&extra).is_err());
        let mut bad = bytes.clone();
        bad[15] = 20;
        assert!(matches!(
            Response::decode(&bad),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn rejects_oversized_block_and_odd_iv() {
        let big = vec![0u8; MAX_BLOCK_LEN + 16];
        let mk = |block: &[u8], iv: &[u8]| {
            Response::Blk(Blk {
                crypto_algo: CryptoAlgoId::AES_128,
                segment_id: sid(1, 32),
                block_index: 0,
                next_block_index: 0,
                block,
                vrf: &[],
                iv,
            })
            .encode()
        };
        assert!(matches!(
            Response::decode(&mk(&big, &[0; 16])),
            Err(DecodeError::LimitExceeded { .. })
        ));
        assert!(Response::decode(&mk(&[1; 16], &[0; 8])).is_err());
        assert!(Response::decode(&mk(&[1; 16], &[0; 16])).is_ok());
    }

    #[test]
    fn extensible_blob_matches_spec_example() {
        let bytes = hex::decode("000103020060ea000260ea00").unwrap();
        let blob = ExtensibleBlob::decode(&bytes).unwrap();
        assert_eq!(blob.units, age_units::CENTISECONDS);
        assert_eq!(
            blob.ages,
            vec![
                SegmentAge {
                    segment_index: 0,
                    age: 60000
                },
                SegmentAge {
                    segment_index: 2,
                    age: 60000
                }
            ]
        );
        assert_eq!(blob.encode(), bytes);
        assert!(ExtensibleBlob::decode(&[0, 2, 3, 0]).is_err());
        assert!(ExtensibleBlob::decode(&[0, 1, 5, 0]).is_err());
        assert!(ExtensibleBlob::decode(&[0, 1, 3, 1]).is_err());
    }

    #[test]
    fn getseglist_id_count_beyond_input_is_truncated_not_allocated() {
        let mut w = Writer::new();
        w.u32_be(ProtVer::V2_0.0)
            .u32_be(6)
            .u32_be(36)
            .u32_be(1)
            .bytes(&[0; 16])
            .u32_be(u32::MAX);
        let bytes = w.finish();
        assert_eq!(
            Request::decode(&bytes).unwrap_err(),
            DecodeError::Truncated {
                what: "SegmentID array"
            }
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn segment_id() -> impl Strategy<Value = SegmentId> {
        prop_oneof![Just(32usize), Just(48), Just(64)]
            .prop_flat_map(|n| vec(any::<u8>(), n))
            .prop_map(|b| SegmentId::from_slice(&b).unwrap())
    }

    fn range() -> impl Strategy<Value = BlockRange> {
        (0u32..1_000_000, 1u32..1_000).prop_map(|(index, count)| BlockRange { index, count })
    }

    fn algo() -> impl Strategy<Value = CryptoAlgoId> {
        any::<u32>().prop_map(CryptoAlgoId)
    }

    fn blob() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..64)
    }

    proptest! {
        #[test]
        fn nego_round_trips(a in algo(), min in any::<u32>(), max in any::<u32>()) {
            let req = Request::NegoReq(NegoReq { crypto_algo: a, min_version: ProtVer(min), max_version: ProtVer(max) });
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
            let resp = Response::NegoResp(NegoResp { crypto_algo: a, min_version: ProtVer(min), max_version: ProtVer(max) });
            let bytes = resp.encode();
            prop_assert_eq!(Response::decode(&bytes).unwrap(), resp);
        }

        #[test]
        fn getblklist_round_trips(a in algo(), id in segment_id(), ranges in vec(range(), 1..=MAX_RANGES)) {
            let req = Request::GetBlkList(GetBlkList { crypto_algo: a, segment_id: id, ranges });
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
        }

        #[test]
        fn getblks_round_trips(a in algo(), id in segment_id(), ranges in vec(range(), 1..4), vrf in blob()) {
            let req = Request::GetBlks(GetBlks { crypto_algo: a, segment_id: id, ranges, vrf: &vrf });
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
        }

        #[test]
        fn getseglist_round_trips(a in algo(), rid in any::<[u8; 16]>(), ids in vec(segment_id(), 1..8), b in blob()) {
            let req = Request::GetSegList(GetSegList { crypto_algo: a, request_id: rid, segment_ids: ids, extensible_blob: b });
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
        }

        #[test]
        fn blklist_round_trips(a in algo(), id in segment_id(), ranges in vec(range(), 0..=MAX_RANGES), next in any::<u32>()) {
            let resp = Response::BlkList(BlkList { crypto_algo: a, segment_id: id, ranges, next_block_index: next });
            let bytes = resp.encode();
            prop_assert_eq!(Response::decode(&bytes).unwrap(), resp);
        }

        #[test]
        fn blk_round_trips(
            a in algo(), id in segment_id(), idx in any::<u32>(), next in any::<u32>(),
            block in vec(any::<u8>(), 0..2048), vrf in blob(), with_iv in any::<bool>(), iv in any::<[u8; 16]>(),
        ) {
            let iv: &[u8] = if with_iv { &iv } else { &[] };
            let resp = Response::Blk(Blk { crypto_algo: a, segment_id: id, block_index: idx, next_block_index: next, block: &block, vrf: &vrf, iv });
            let bytes = resp.encode();
            prop_assert_eq!(Response::decode(&bytes).unwrap(), resp);
        }

        #[test]
        fn seglist_round_trips(a in algo(), rid in any::<[u8; 16]>(), ranges in vec(range(), 0..16), b in blob()) {
            let resp = Response::SegList(SegList { crypto_algo: a, request_id: rid, ranges, extensible_blob: b });
            let bytes = resp.encode();
            prop_assert_eq!(Response::decode(&bytes).unwrap(), resp);
        }

        #[test]
        fn extensible_blob_round_trips(units in 1u8..=4, ages in vec((any::<u8>(), 0u32..=MAX_SEGMENT_AGE), 0..255)) {
            let blob = ExtensibleBlob { units, ages: ages.into_iter().map(|(segment_index, age)| SegmentAge { segment_index, age }).collect() };
            let bytes = blob.encode();
            prop_assert_eq!(ExtensibleBlob::decode(&bytes).unwrap(), blob);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
            let _ = ExtensibleBlob::decode(&bytes);
            let _ = MessageHeader::peek(&bytes);
        }

        #[test]
        fn mutated_valid_messages_never_panic(
            ranges in vec(range(), 1..4), pos in any::<proptest::sample::Index>(), byte in any::<u8>(), cut in any::<proptest::sample::Index>(),
        ) {
            let id = SegmentId::from_slice(&[7; 32]).unwrap();
            let block = [1u8; 40];
            let iv = [2u8; 16];
            for mut bytes in [
                Request::GetBlks(GetBlks { crypto_algo: CryptoAlgoId::AES_128, segment_id: id, ranges: ranges.clone(), vrf: &[] }).encode(),
                Response::Blk(Blk { crypto_algo: CryptoAlgoId::AES_128, segment_id: id, block_index: 0, next_block_index: 0, block: &block, vrf: &[], iv: &iv }).encode(),
            ] {
                let i = pos.index(bytes.len());
                bytes[i] = byte;
                let n = cut.index(bytes.len() + 1);
                let _ = Request::decode(&bytes[..n]);
                let _ = Response::decode(&bytes[..n]);
                let _ = Request::decode(&bytes);
                let _ = Response::decode(&bytes);
            }
        }
    }
}

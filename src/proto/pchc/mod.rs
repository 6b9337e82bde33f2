//! Hosted cache protocol (MS-PCHC) v1.0 and v2.0: offer messages and responses.
//!
//! A client offers segments to a hosted cache with one request message per
//! HTTP POST; the hosted cache answers with a 5-byte response. Integers are
//! big-endian ([`PROTOCOL.md` §8.2]) except the content information embedded in
//! SEGMENT_INFO, which is a PCCRC v1 structure and stays little-endian.
//!
//! ```text
//! MESSAGE_HEADER (8)          minor u8 · major u8 · type u16 BE · padding [4]
//! CONNECTION_INFORMATION (8)  port u16 BE · padding [6]
//! INITIAL_OFFER  (v1, type 1) hash = HoHoDk (32 | 48 | 64, rest of the body)
//! SEGMENT_INFO   (v1, type 2) content tag [16] · PCCRC v1 CI with one segment
//! BATCHED_OFFER  (v2, type 3) 1..=128 × SegmentDescriptor (59 bytes, unaligned)
//! response                    size u32 BE (= 1) · code u8 (0 OK, 1 INTERESTED)
//! ```
//!
//! [`verify_segment_info`] does the checks of §8.6 on a SEGMENT_INFO before
//! the hosted cache trusts any of it.
//!
//! [`PROTOCOL.md` §8.2]: ../../../shared/docs/PROTOCOL.md

mod verify;

pub use verify::{encode_segment_info_ci, verify_segment_info, OfferError, VerifiedSegment};

use std::fmt;

use super::codec::{DecodeError, Reader, Writer};
use super::pccrc::{HashAlgo, SegmentId, BLOCK_SIZE, V1_SEGMENT_SIZE, V2_MAX_SEGMENT_SIZE};

/// URL path of the v2.0 offer endpoint (plain HTTP).
// SPEC(MS-PCHC §2.1): the v2 GUID is lower-case, the v1 GUID upper-case; HTTP.sys
// matches paths case-insensitively, so servers must too (see `path_version`).
pub const V2_PATH: &str = "/0131501b-d67f-491b-9a40-c4bf27bcb4d4";
/// URL path of the v1.0 offer endpoint (HTTPS).
pub const V1_PATH: &str = "/C574AC30-5794-4AEE-B1BB-6651C5315029";

/// Length of MESSAGE_HEADER.
pub const HEADER_LEN: usize = 8;
/// Length of CONNECTION_INFORMATION.
pub const CONNECTION_INFO_LEN: usize = 8;
/// Bytes before the type-specific part of every request.
pub const PREFIX_LEN: usize = HEADER_LEN + CONNECTION_INFO_LEN;
/// Length of a ContentTag.
pub const CONTENT_TAG_LEN: usize = 16;
/// Length of one BATCHED_OFFER SegmentDescriptor on the wire (unaligned).
pub const SEGMENT_DESCRIPTOR_LEN: usize = 4 + 4 + 2 + CONTENT_TAG_LEN + 1 + 32;
/// Most descriptors one BATCHED_OFFER may carry (MS-PCHC §2.2.1.5).
pub const MAX_BATCHED_DESCRIPTORS: usize = 128;
/// Largest embedded content information: one SHA-512 segment with 512 blocks.
/// (18-byte header, 16 + 2·64 description, 4 + 512·64 block list.)
pub const MAX_SEGMENT_INFO_CI_LEN: usize = 18 + (16 + 2 * 64) + (4 + 512 * 64);
/// Smallest embedded content information: header, one SHA-256 description, an
/// empty block list count.
pub const MIN_SEGMENT_INFO_CI_LEN: usize = 18 + (16 + 2 * 32) + 4;
/// Largest request of any type; HTTP servers cap request bodies at this.
pub const MAX_REQUEST_LEN: usize = PREFIX_LEN + CONTENT_TAG_LEN + MAX_SEGMENT_INFO_CI_LEN;
/// Length of an encoded response (size u32 + code u8).
pub const RESPONSE_LEN: usize = 5;

/// The protocol version a hosted-cache URL implies; also MESSAGE_HEADER's major byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Major(pub u8);

impl Major {
    /// PCHC 1.0 (Windows 7, HTTPS).
    pub const V1: Major = Major(1);
    /// PCHC 2.0 (Windows 8 and later, HTTP).
    pub const V2: Major = Major(2);

    /// `v1`, `v2` or the hex value, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Major::V1 => "v1",
            Major::V2 => "v2",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for Major {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Major::V1 => f.write_str("V1"),
            Major::V2 => f.write_str("V2"),
            Major(v) => write!(f, "Major({v:#04x})"),
        }
    }
}

/// Which protocol version an offer URL path selects, if it is one of ours.
///
/// Case-insensitive, with or without one trailing slash, as HTTP.sys matches.
pub fn path_version(path: &str) -> Option<Major> {
    let p = path.strip_suffix('/').unwrap_or(path);
    if p.eq_ignore_ascii_case(V2_PATH) {
        Some(Major::V2)
    } else if p.eq_ignore_ascii_case(V1_PATH) {
        Some(Major::V1)
    } else {
        None
    }
}

/// MESSAGE_HEADER `Type`. Unknown values survive decoding of the header and
/// print as hex; full request decoding rejects them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType(pub u16);

impl MessageType {
    /// INITIAL_OFFER (v1 only).
    pub const INITIAL_OFFER: MessageType = MessageType(1);
    /// SEGMENT_INFO (v1 only).
    pub const SEGMENT_INFO: MessageType = MessageType(2);
    /// BATCHED_OFFER (v2 only).
    pub const BATCHED_OFFER: MessageType = MessageType(3);

    /// The only protocol version this type may be sent with.
    pub fn major(self) -> Option<Major> {
        match self {
            MessageType::INITIAL_OFFER | MessageType::SEGMENT_INFO => Some(Major::V1),
            MessageType::BATCHED_OFFER => Some(Major::V2),
            _ => None,
        }
    }

    /// Stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::INITIAL_OFFER => "initial_offer",
            MessageType::SEGMENT_INFO => "segment_info",
            MessageType::BATCHED_OFFER => "batched_offer",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            "unknown" => write!(f, "MessageType({:#06x})", self.0),
            s => f.write_str(s),
        }
    }
}

/// MESSAGE_HEADER: 8 bytes, the last 4 of which are padding (ignored, sent as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// `MinorVersion`, 0 in every known version; other values are kept.
    pub minor: u8,
    /// `MajorVersion`, 1 or 2.
    pub major: Major,
    /// `Type`.
    pub msg_type: MessageType,
}

impl MessageHeader {
    /// The canonical header for `msg_type` (minor 0, the type's own major).
    pub fn for_type(msg_type: MessageType) -> Self {
        MessageHeader {
            minor: 0,
            major: msg_type.major().unwrap_or(Major(0)),
            msg_type,
        }
    }

    /// Decode the 8 header bytes; any version and type value is accepted here.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // SPEC(MS-PCHC §2.2.1.1): minor comes first, then major — the same
        // minor-first order as every other PeerDist version field.
        let minor = r.u8("pchc MESSAGE_HEADER.MinorVersion")?;
        let major = Major(r.u8("pchc MESSAGE_HEADER.MajorVersion")?);
        let msg_type = MessageType(r.u16_be("pchc MESSAGE_HEADER.Type")?);
        r.skip(4, "pchc MESSAGE_HEADER.Padding")?;
        Ok(MessageHeader {
            minor,
            major,
            msg_type,
        })
    }

    /// Append the 8 header bytes.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.minor)
            .u8(self.major.0)
            .u16_be(self.msg_type.0)
            .bytes(&[0; 4]);
    }
}

/// CONNECTION_INFORMATION: the port of the offering client's PCCRR server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInformation {
    /// TCP port the hosted cache connects back to (on the client's own address).
    pub port: u16,
}

impl ConnectionInformation {
    /// Decode the 8 bytes (port + 6 ignored padding bytes).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let port = r.u16_be("pchc CONNECTION_INFORMATION.Port")?;
        r.skip(6, "pchc CONNECTION_INFORMATION.Padding")?;
        Ok(ConnectionInformation { port })
    }

    /// Append the 8 bytes.
    pub fn encode(&self, w: &mut Writer) {
        w.u16_be(self.port).bytes(&[0; 6]);
    }
}

/// INITIAL_OFFER body: the offered segment's HoHoDk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialOffer {
    /// HoHoDk of the offered segment: 32, 48 or 64 bytes.
    pub hash: SegmentId,
}

/// SEGMENT_INFO body: a content tag and the segment's content information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo<'a> {
    /// Opaque tag from the client's higher layer (statistics only).
    pub content_tag: [u8; CONTENT_TAG_LEN],
    /// The embedded PCCRC v1 content information (little-endian), which must
    /// describe exactly one segment. Checked by [`verify_segment_info`].
    pub content_info: &'a [u8],
}

/// `SegmentDescriptor.HashAlgorithm` of a BATCHED_OFFER.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OfferHashAlgo(pub u8);

impl OfferHashAlgo {
    /// SHA-256 (v1 content).
    pub const SHA256: OfferHashAlgo = OfferHashAlgo(1);
    /// SHA-512 truncated to 32 bytes (v2 content).
    pub const SHA512_TRUNC: OfferHashAlgo = OfferHashAlgo(4);

    /// The algorithm, if known.
    pub fn algo(self) -> Option<HashAlgo> {
        match self {
            OfferHashAlgo::SHA256 => Some(HashAlgo::Sha256),
            OfferHashAlgo::SHA512_TRUNC => Some(HashAlgo::Sha512Trunc),
            _ => None,
        }
    }
}

impl fmt::Debug for OfferHashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.algo() {
            Some(a) => write!(f, "OfferHashAlgo({a})"),
            None => write!(f, "OfferHashAlgo({:#04x})", self.0),
        }
    }
}

/// One segment of a BATCHED_OFFER (59 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentDescriptor {
    /// `BlockSize`: 65536 for v1 content, the segment size for v2 content.
    pub block_size: u32,
    /// `SegmentSize`: bytes in the segment.
    pub segment_size: u32,
    /// `ContentTag` (`SizeOfContentTag` must be 16).
    pub content_tag: [u8; CONTENT_TAG_LEN],
    /// `HashAlgorithm`: 1 (SHA-256) or 4 (truncated SHA-512).
    pub hash_algorithm: OfferHashAlgo,
    /// `SegmentHoHoDk`: the segment id, always 32 bytes here.
    pub hohodk: [u8; 32],
}

impl SegmentDescriptor {
    /// The offered segment id.
    pub fn segment_id(&self) -> SegmentId {
        SegmentId::from_slice(&self.hohodk).expect("32 bytes is a valid digest length")
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let block_size = r.u32_be("pchc SegmentDescriptor.BlockSize")?;
        let segment_size = r.u32_be("pchc SegmentDescriptor.SegmentSize")?;
        let tag_len = r.u16_be("pchc SegmentDescriptor.SizeOfContentTag")?;
        if usize::from(tag_len) != CONTENT_TAG_LEN {
            return Err(DecodeError::Unsupported {
                what: "pchc SegmentDescriptor.SizeOfContentTag",
                value: u64::from(tag_len),
            });
        }
        let content_tag = r.array("pchc SegmentDescriptor.ContentTag")?;
        let hash_algorithm = OfferHashAlgo(r.u8("pchc SegmentDescriptor.HashAlgorithm")?);
        if hash_algorithm.algo().is_none() {
            return Err(DecodeError::Unsupported {
                what: "pchc SegmentDescriptor.HashAlgorithm",
                value: u64::from(hash_algorithm.0),
            });
        }
        let hohodk = r.array("pchc SegmentDescriptor.SegmentHoHoDk")?;
        if segment_size == 0 {
            return Err(DecodeError::Invalid {
                what: "pchc SegmentDescriptor.SegmentSize is zero",
            });
        }
        if block_size == 0 || block_size > segment_size.max(BLOCK_SIZE) {
            return Err(DecodeError::Invalid {
                what: "pchc SegmentDescriptor.BlockSize not in 1..=max(SegmentSize, 65536)",
            });
        }
        let max_segment = if hash_algorithm == OfferHashAlgo::SHA512_TRUNC {
            V2_MAX_SEGMENT_SIZE
        } else {
            V1_SEGMENT_SIZE
        };
        if segment_size > max_segment {
            return Err(DecodeError::LimitExceeded {
                what: "pchc SegmentDescriptor.SegmentSize",
                max: u64::from(max_segment),
            });
        }
        Ok(SegmentDescriptor {
            block_size,
            segment_size,
            content_tag,
            hash_algorithm,
            hohodk,
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.u32_be(self.block_size)
            .u32_be(self.segment_size)
            .u16_be(CONTENT_TAG_LEN as u16)
            .bytes(&self.content_tag)
            .u8(self.hash_algorithm.0)
            .bytes(&self.hohodk);
    }
}

/// BATCHED_OFFER body: 1..=128 segment descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchedOffer {
    /// The offered segments, in wire order.
    pub descriptors: Vec<SegmentDescriptor>,
}

/// The type-specific part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody<'a> {
    /// v1 INITIAL_OFFER.
    InitialOffer(InitialOffer),
    /// v1 SEGMENT_INFO.
    SegmentInfo(SegmentInfo<'a>),
    /// v2 BATCHED_OFFER.
    BatchedOffer(BatchedOffer),
}

impl RequestBody<'_> {
    /// The MESSAGE_HEADER type this body is sent with.
    pub fn msg_type(&self) -> MessageType {
        match self {
            RequestBody::InitialOffer(_) => MessageType::INITIAL_OFFER,
            RequestBody::SegmentInfo(_) => MessageType::SEGMENT_INFO,
            RequestBody::BatchedOffer(_) => MessageType::BATCHED_OFFER,
        }
    }
}

/// One PCHC request message (the whole body of one HTTP POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// MESSAGE_HEADER; its major and type agree with `body` after decoding.
    pub header: MessageHeader,
    /// The client's PCCRR port.
    pub connection: ConnectionInformation,
    /// The message proper.
    pub body: RequestBody<'a>,
}

impl<'a> Request<'a> {
    /// A request with the canonical header for `body` (minor 0).
    pub fn new(port: u16, body: RequestBody<'a>) -> Self {
        Request {
            header: MessageHeader::for_type(body.msg_type()),
            connection: ConnectionInformation { port },
            body,
        }
    }

    /// Decode a whole request. Rejects unknown types, a major version that does
    /// not belong to the type, bad lengths and trailing bytes.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() > MAX_REQUEST_LEN {
            return Err(DecodeError::LimitExceeded {
                what: "pchc request length",
                max: MAX_REQUEST_LEN as u64,
            });
        }
        let mut r = Reader::new(buf);
        let header = MessageHeader::decode(&mut r)?;
        let expected = header.msg_type.major().ok_or(DecodeError::Unsupported {
            what: "pchc MESSAGE_HEADER.Type",
            value: u64::from(header.msg_type.0),
        })?;
        // SPEC(MS-PCHC §2.2.1.1): INITIAL_OFFER and SEGMENT_INFO exist only in
        // 1.0, BATCHED_OFFER only in 2.0; a mismatch is a malformed message.
        if header.major != expected {
            return Err(DecodeError::Unsupported {
                what: "pchc MESSAGE_HEADER.MajorVersion for this message type",
                value: u64::from(header.major.0),
            });
        }
        let connection = ConnectionInformation::decode(&mut r)?;
        let body = match header.msg_type {
            MessageType::INITIAL_OFFER => {
                // SPEC(MS-PCHC §2.2.1.3): the hash has no length field; its
                // length is whatever the message has left.
                let hash = r.rest();
                if !matches!(hash.len(), 32 | 48 | 64) {
                    return Err(DecodeError::Invalid {
                        what: "pchc INITIAL_OFFER.Hash length (must be 32, 48 or 64)",
                    });
                }
                r.skip(hash.len(), "pchc INITIAL_OFFER.Hash")?;
                let hash = SegmentId::from_slice(hash).ok_or(DecodeError::Invalid {
                    what: "pchc INITIAL_OFFER.Hash length",
                })?;
                RequestBody::InitialOffer(InitialOffer { hash })
            }
            MessageType::SEGMENT_INFO => {
                let content_tag = r.array("pchc SEGMENT_INFO.ContentTag")?;
                let content_info = r.rest();
                if content_info.len() < MIN_SEGMENT_INFO_CI_LEN {
                    return Err(DecodeError::Truncated {
                        what: "pchc SEGMENT_INFO.SegmentInfo",
                    });
                }
                // MAX_REQUEST_LEN already bounds it; checked again so the
                // limit holds if the constants ever drift apart.
                if content_info.len() > MAX_SEGMENT_INFO_CI_LEN {
                    return Err(DecodeError::LimitExceeded {
                        what: "pchc SEGMENT_INFO.SegmentInfo length",
                        max: MAX_SEGMENT_INFO_CI_LEN as u64,
                    });
                }
                r.skip(content_info.len(), "pchc SEGMENT_INFO.SegmentInfo")?;
                RequestBody::SegmentInfo(SegmentInfo {
                    content_tag,
                    content_info,
                })
            }
            _ => {
                let len = r.remaining();
                if len == 0 {
                    return Err(DecodeError::Truncated {
                        what: "pchc BATCHED_OFFER.SegmentDescriptors (at least one)",
                    });
                }
                if len % SEGMENT_DESCRIPTOR_LEN != 0 {
                    return Err(DecodeError::Invalid {
                        what: "pchc BATCHED_OFFER length is not a whole number of descriptors",
                    });
                }
                let count = len / SEGMENT_DESCRIPTOR_LEN;
                if count > MAX_BATCHED_DESCRIPTORS {
                    return Err(DecodeError::LimitExceeded {
                        what: "pchc BATCHED_OFFER descriptor count",
                        max: MAX_BATCHED_DESCRIPTORS as u64,
                    });
                }
                let mut descriptors = Vec::with_capacity(count);
                for _ in 0..count {
                    descriptors.push(SegmentDescriptor::decode(&mut r)?);
                }
                RequestBody::BatchedOffer(BatchedOffer { descriptors })
            }
        };
        r.expect_empty("pchc request")?;
        Ok(Request {
            header,
            connection,
            body,
        })
    }

    /// Encode the request as sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let body_len = match &self.body {
            RequestBody::InitialOffer(o) => o.hash.as_bytes().len(),
            RequestBody::SegmentInfo(s) => CONTENT_TAG_LEN + s.content_info.len(),
            RequestBody::BatchedOffer(b) => b.descriptors.len() * SEGMENT_DESCRIPTOR_LEN,
        };
        let mut w = Writer::with_capacity(PREFIX_LEN + body_len);
        self.header.encode(&mut w);
        self.connection.encode(&mut w);
        match &self.body {
            RequestBody::InitialOffer(o) => {
                w.bytes(o.hash.as_bytes());
            }
            RequestBody::SegmentInfo(s) => {
                w.bytes(&s.content_tag).bytes(s.content_info);
            }
            RequestBody::BatchedOffer(b) => {
                for d in &b.descriptors {
                    d.encode(&mut w);
                }
            }
        }
        w.finish()
    }
}

/// Response `ResponseCode`. Unknown values survive and print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub u8);

impl ResponseCode {
    /// The hosted cache accepted the message (and needs nothing more).
    pub const OK: ResponseCode = ResponseCode(0);
    /// The hosted cache wants the segment's SEGMENT_INFO.
    pub const INTERESTED: ResponseCode = ResponseCode(1);

    /// Stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseCode::OK => "ok",
            ResponseCode::INTERESTED => "interested",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            "unknown" => write!(f, "ResponseCode({:#04x})", self.0),
            s => f.write_str(s),
        }
    }
}

/// The hosted cache's answer: `Size` u32 BE (= 1) then the code byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The response code.
    pub code: ResponseCode,
}

impl Response {
    /// `OK`.
    pub const OK: Response = Response {
        code: ResponseCode::OK,
    };
    /// `INTERESTED`.
    pub const INTERESTED: Response = Response {
        code: ResponseCode::INTERESTED,
    };

    /// Decode the 5 response bytes; `Size` must be 1 and nothing may follow.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let size = r.u32_be("pchc RESPONSE.Size")?;
        if size != 1 {
            return Err(DecodeError::Unsupported {
                what: "pchc RESPONSE.Size (must be 1)",
                value: u64::from(size),
            });
        }
        let code = ResponseCode(r.u8("pchc RESPONSE.ResponseCode")?);
        r.expect_empty("pchc RESPONSE")?;
        Ok(Response { code })
    }

    /// The 5 response bytes.
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let [a, b, c, d] = 1u32.to_be_bytes();
        [a, b, c, d, self.code.0]
    }
}

#[cfg(test)]
mod tests;

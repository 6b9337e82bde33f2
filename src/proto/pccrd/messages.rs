//! WS-Discovery Probe and ProbeMatch for PeerDist, v1 and v2: exact-bytes
//! encoders and namespace-aware, bounded decoders.
//!
//! Output uses the literal prefixes `soap`, `wsa`, `wsd` and `PeerDist`, no
//! attributes on a ProbeMatch `<wsd:Scopes>` and no self-closing tags in the
//! PeerDist parts, because iPXE (and so possibly other third-party clients)
//! match those as literal substrings (PROTOCOL.md §6.2, §11.19).

use core::fmt;
// `core::net` holds plain address values (no sockets), so it keeps the core pure.
use core::net::SocketAddr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use quick_xml::escape::escape;

use super::ages::SegmentAges;
use super::xml::{self, BodyKind, Envelope};
use super::{
    ACTION_PROBE, ACTION_PROBE_MATCHES, MATCH_BY_STRCMP0, MATCH_BY_V2, MAX_IDS_PER_PROBE,
    MAX_MESSAGE_SIZE, NS_PEERDIST, NS_SOAP, NS_WSA, NS_WSD, TO_ANONYMOUS, TO_DISCOVERY,
};
use crate::proto::codec::{DecodeError, Reader, Writer};
use crate::proto::pccrc::crypto::SegmentId;

/// Longest URI (MessageID, RelatesTo, endpoint address) accepted.
pub const MAX_URI_LEN: usize = 256;

/// Most XAddrs kept from one ProbeMatch; a host has a handful of addresses.
pub const MAX_XADDRS: usize = 16;

/// The segment-id size every v2 Probe carries (`SegmentHashSize`).
pub const V2_SEGMENT_ID_SIZE: u16 = 32;

/// Largest v2 availability bitmap: 2 bits for each of at most 255 ids.
pub const MAX_BITMAP_LEN: usize = (MAX_IDS_PER_PROBE * 2).div_ceil(8);

/// A 16-byte UUID, formatted as `urn:uuid:xxxxxxxx-xxxx-…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A version-4 (random) UUID from 16 caller-supplied random bytes; the
    /// version and variant bits are set as RFC 4122 requires.
    pub fn new_v4(mut random: [u8; 16]) -> Self {
        random[6] = (random[6] & 0x0F) | 0x40;
        random[8] = (random[8] & 0x3F) | 0x80;
        Uuid(random)
    }

    /// The `urn:uuid:` URI of this UUID.
    pub fn to_uri(&self) -> Uri {
        Uri(format!("urn:uuid:{self}"))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        let (a, rest) = h.split_at(8);
        let (b, rest) = rest.split_at(4);
        let (c, rest) = rest.split_at(4);
        let (d, e) = rest.split_at(4);
        write!(f, "{a}-{b}-{c}-{d}-{e}")
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// A URI from a WS-Addressing field (MessageID, RelatesTo, endpoint Address):
/// non-empty, at most [`MAX_URI_LEN`] bytes, no surrounding whitespace.
/// Compared as exact strings, as WS-Addressing does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uri(String);

impl Uri {
    /// Validate and wrap a URI text.
    pub fn new(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= MAX_URI_LEN && s.trim() == s;
        ok.then(|| Uri(s.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({})", self.0)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Uuid> for Uri {
    fn from(u: Uuid) -> Self {
        u.to_uri()
    }
}

/// Discovery message format version (follows the content information version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// v1: upper-case hex scopes, `PeerDist:PeerDistData`, BlockCount replies.
    V1,
    /// v2: base64 id blob, `PeerDist:PeerDistDataV2`, bitmap + SegmentAges replies.
    V2,
}

/// A Probe: "who holds these segments?" (multicast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `wsa:MessageID`, echoed by answers in `wsa:RelatesTo`.
    pub message_id: Uri,
    /// Message format.
    pub version: Version,
    /// Requested segment ids (HoHoDk), 1..=[`MAX_IDS_PER_PROBE`]; v2 ids are 32 bytes.
    pub segment_ids: Vec<SegmentId>,
}

/// `wsd:AppSequence`: lets receivers order messages from one responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppSequence {
    /// Changes whenever the service restarts (Windows 7: boot time in Unix seconds).
    pub instance_id: u64,
    /// Starts at 1, increments per message sent.
    pub message_number: u64,
}

/// One segment a v1 responder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct V1Scope {
    /// The segment id (echoed from the Probe).
    pub id: SegmentId,
    /// Blocks of the segment the responder holds.
    pub block_count: u32,
}

/// What a v2 responder holds of one requested segment (2 bits on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    /// Nothing (`00`).
    None,
    /// Some blocks (`10`).
    Partial,
    /// The whole segment (`11`).
    Full,
}

impl Availability {
    const fn bits(self) -> u8 {
        match self {
            Availability::None => 0b00,
            Availability::Partial => 0b10,
            Availability::Full => 0b11,
        }
    }

    const fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => Availability::None,
            0b10 => Availability::Partial,
            // SPEC(MS-PCCRD §2.2.3.3): `01` ("has all" without "has some") is
            // contradictory; read it as Full, since having all implies some.
            _ => Availability::Full,
        }
    }
}

/// The v2 ProbeMatch Scopes bitmap: 2 bits per *requested* id, in request order.
// SPEC(MS-PCCRD §2.2.3.3): the bit order inside a byte is not stated and the
// only example is all-ones; we assume MSB-first (entry 0 in bits 7..6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AvailabilityBitmap {
    bytes: Vec<u8>,
}

impl AvailabilityBitmap {
    /// Pack entries MSB-first; unused trailing bits are zero. At most
    /// [`MAX_IDS_PER_PROBE`] entries are packed.
    pub fn from_entries(entries: &[Availability]) -> Self {
        let entries = entries.get(..MAX_IDS_PER_PROBE).unwrap_or(entries);
        let mut bytes = vec![0u8; (entries.len() * 2).div_ceil(8)];
        for (i, a) in entries.iter().enumerate() {
            if let Some(b) = bytes.get_mut(i / 4) {
                *b |= a.bits() << (6 - 2 * (i % 4));
            }
        }
        AvailabilityBitmap { bytes }
    }

    /// Wrap raw bitmap bytes (at most [`MAX_BITMAP_LEN`]).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() <= MAX_BITMAP_LEN).then(|| AvailabilityBitmap {
            bytes: bytes.to_vec(),
        })
    }

    /// Availability of requested id `i` (None past the end).
    pub fn get(&self, i: usize) -> Availability {
        match self.bytes.get(i / 4) {
            Some(b) => Availability::from_bits(b >> (6 - 2 * (i % 4))),
            None => Availability::None,
        }
    }

    /// Number of 2-bit slots (4 per byte; the wire does not say how many are used).
    pub fn slots(&self) -> usize {
        self.bytes.len() * 4
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The version-specific part of a ProbeMatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchBody {
    /// v1: the held subset of the requested ids with their block counts.
    V1(Vec<V1Scope>),
    /// v2: availability of every requested id, plus optional segment ages.
    V2 {
        /// 2 bits per requested id, in request order.
        availability: AvailabilityBitmap,
        /// Ages of held segments; `None` when absent or undecodable (the
        /// spec discards a bad blob, not the message).
        ages: Option<SegmentAges>,
    },
}

/// A ProbeMatch: a responder's unicast answer to a Probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeMatch {
    /// This message's own `wsa:MessageID`.
    pub message_id: Uri,
    /// The MessageID of the Probe being answered.
    pub relates_to: Uri,
    /// The responder's message sequence.
    pub app_sequence: AppSequence,
    /// The responder's stable endpoint address (`urn:uuid:` of the service).
    pub endpoint: Uri,
    /// Where the responder serves MS-PCCRR (`ip:port`, no scheme, no path).
    pub xaddrs: Vec<SocketAddr>,
    /// v1 or v2 payload.
    pub body: MatchBody,
}

/// Either discovery message, as received from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A Probe.
    Probe(Probe),
    /// A ProbeMatch.
    ProbeMatch(ProbeMatch),
}

impl Message {
    /// Decode a datagram as a Probe or a ProbeMatch (dispatching on `wsa:Action`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env = parse_limited(bytes)?;
        match env.action.as_deref() {
            Some(ACTION_PROBE) => Probe::from_envelope(env).map(Message::Probe),
            Some(ACTION_PROBE_MATCHES) => ProbeMatch::from_envelope(env).map(Message::ProbeMatch),
            _ => Err(DecodeError::Invalid {
                what: "wsa:Action is neither Probe nor ProbeMatches",
            }),
        }
    }

    /// Encode whichever message this is.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Probe(p) => p.encode(),
            Message::ProbeMatch(m) => m.encode(),
        }
    }
}

fn parse_limited(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::LimitExceeded {
            what: "discovery message size",
            max: MAX_MESSAGE_SIZE as u64,
        });
    }
    xml::parse(bytes)
}

const XML_DECL: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;

fn open_envelope(out: &mut String) {
    out.push_str(XML_DECL);
    out.push_str(r#"<soap:Envelope xmlns:soap=""#);
    out.push_str(NS_SOAP);
    out.push_str(r#"" xmlns:wsa=""#);
    out.push_str(NS_WSA);
    out.push_str(r#"" xmlns:wsd=""#);
    out.push_str(NS_WSD);
    out.push_str(r#"" xmlns:PeerDist=""#);
    out.push_str(NS_PEERDIST);
    out.push_str(r#""><soap:Header>"#);
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(text));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn types_text(v: Version) -> &'static str {
    match v {
        Version::V1 => "PeerDist:PeerDistData",
        Version::V2 => "PeerDist:PeerDistDataV2",
    }
}

fn upper_hex_ids<'a>(ids: impl Iterator<Item = &'a SegmentId>) -> String {
    let mut s = String::new();
    for id in ids {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&hex::encode_upper(id.as_bytes()));
    }
    s
}

fn require<T>(v: Option<T>, what: &'static str) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::Invalid { what })
}

fn uri(v: Option<String>, what: &'static str) -> Result<Uri, DecodeError> {
    Uri::new(&require(v, what)?).ok_or(DecodeError::Invalid { what })
}

fn limit(what: &'static str) -> DecodeError {
    DecodeError::LimitExceeded {
        what,
        max: MAX_IDS_PER_PROBE as u64,
    }
}

/// Decode one upper-case hex token; lower-case is rejected.
// SPEC(MS-PCCRD §2.2.3.3, PROTOCOL.md §11.17): scope matching is a
// case-sensitive string compare and every implementation emits upper-case, so
// a lower-case id could never match: reject it instead of silently folding.
fn upper_hex(token: &str, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    if !token
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return Err(DecodeError::Invalid { what });
    }
    hex::decode(token).map_err(|_| DecodeError::Invalid { what })
}

/// A v1 scope token: upper-case hex of a 32-, 48- or 64-byte id.
fn v1_id(token: &str) -> Result<SegmentId, DecodeError> {
    if !matches!(token.len(), 64 | 96 | 128) {
        return Err(DecodeError::Invalid {
            what: "v1 scope length (must be 64, 96 or 128 hex digits)",
        });
    }
    let bytes = upper_hex(token, "v1 scope (upper-case hex)")?;
    SegmentId::from_slice(&bytes).ok_or(DecodeError::Invalid { what: "v1 scope" })
}

fn base64_field(text: &str, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let compact: String = text.split_ascii_whitespace().collect();
    BASE64
        .decode(compact.as_bytes())
        .map_err(|_| DecodeError::Invalid { what })
}

impl Probe {
    /// Encode exactly as PROTOCOL.md §6.3 shows: literal prefixes, `MatchBy`
    /// on Scopes, upper-case hex (v1) or one base64 blob (v2).
    ///
    /// Ids past [`MAX_IDS_PER_PROBE`] are not encoded; the engine splits
    /// larger queries into several Probes. v2 ids must be 32 bytes (the
    /// engine only builds v2 Probes from v2 content information).
    pub fn encode(&self) -> Vec<u8> {
        let ids = self.segment_ids.get(..MAX_IDS_PER_PROBE);
        let ids = ids.unwrap_or(&self.segment_ids);
        let mut out = String::with_capacity(900 + 66 * ids.len());
        open_envelope(&mut out);
        element(&mut out, "wsa:To", TO_DISCOVERY);
        element(&mut out, "wsa:Action", ACTION_PROBE);
        element(&mut out, "wsa:MessageID", self.message_id.as_str());
        out.push_str("</soap:Header><soap:Body><wsd:Probe>");
        element(&mut out, "wsd:Types", types_text(self.version));
        let (match_by, scopes) = match self.version {
            Version::V1 => (MATCH_BY_STRCMP0, upper_hex_ids(ids.iter())),
            Version::V2 => {
                let mut w = Writer::with_capacity(3 + 32 * ids.len());
                w.u16_be(V2_SEGMENT_ID_SIZE).u8(ids.len() as u8);
                for id in ids {
                    w.bytes(id.as_bytes());
                }
                (MATCH_BY_V2, BASE64.encode(w.finish()))
            }
        };
        out.push_str(r#"<wsd:Scopes MatchBy=""#);
        out.push_str(match_by);
        out.push_str(r#"">"#);
        out.push_str(&scopes);
        out.push_str("</wsd:Scopes></wsd:Probe></soap:Body></soap:Envelope>");
        out.into_bytes()
    }

    /// Decode a Probe (namespace-aware, bounded, case-sensitive hex).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env = parse_limited(bytes)?;
        if env.action.as_deref() != Some(ACTION_PROBE) {
            return Err(DecodeError::Invalid {
                what: "wsa:Action is not Probe",
            });
        }
        Self::from_envelope(env)
    }

    fn from_envelope(env: Envelope) -> Result<Self, DecodeError> {
        if env.body != Some(BodyKind::Probe) {
            return Err(DecodeError::Invalid {
                what: "body is not wsd:Probe",
            });
        }
        let message_id = uri(env.message_id, "wsa:MessageID")?;
        let types = require(env.types, "wsd:Types")?;
        // v2 wins when both are listed: the scopes format decides, and a
        // v2 MatchBy is the tie-breaker below.
        let version = match (types.v1, types.v2) {
            (_, true) if env.match_by.as_deref() != Some(MATCH_BY_STRCMP0) => Version::V2,
            (true, _) => Version::V1,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "wsd:Types names no PeerDist type",
                })
            }
        };
        let scopes = require(env.scopes, "wsd:Scopes")?;
        let segment_ids = match version {
            Version::V1 => {
                match env.match_by.as_deref() {
                    None | Some(MATCH_BY_STRCMP0) => {}
                    Some(_) => {
                        return Err(DecodeError::Invalid {
                            what: "v1 Scopes MatchBy",
                        })
                    }
                }
                let mut ids = Vec::new();
                for token in scopes.split_ascii_whitespace() {
                    if ids.len() == MAX_IDS_PER_PROBE {
                        return Err(limit("v1 Probe scope count"));
                    }
                    ids.push(v1_id(token)?);
                }
                ids
            }
            Version::V2 => {
                if env.match_by.as_deref() != Some(MATCH_BY_V2) {
                    return Err(DecodeError::Invalid {
                        what: "v2 Scopes MatchBy",
                    });
                }
                let blob = base64_field(&scopes, "v2 Probe scopes base64")?;
                let mut r = Reader::new(&blob);
                let size = r.u16_be("SegmentHashSize")?;
                if size != V2_SEGMENT_ID_SIZE {
                    return Err(DecodeError::Unsupported {
                        what: "SegmentHashSize",
                        value: size.into(),
                    });
                }
                let count = r.u8("SegmentHashCount")?;
                let mut ids = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let id = r.take(usize::from(size), "v2 Probe HoHoDk")?;
                    ids.push(SegmentId::from_slice(id).ok_or(DecodeError::Invalid {
                        what: "v2 Probe HoHoDk",
                    })?);
                }
                r.expect_empty("v2 Probe scopes")?;
                ids
            }
        };
        if segment_ids.is_empty() {
            return Err(DecodeError::Invalid {
                what: "Probe without segment ids",
            });
        }
        Ok(Probe {
            message_id,
            version,
            segment_ids,
        })
    }
}

fn format_xaddr(a: &SocketAddr) -> String {
    // SPEC(MS-PCCRD §2.2.3.8): XAddrs is `ip:port` without scheme or path;
    // the IPv6 form is undocumented, `[addr]:port` is SocketAddr's Display.
    match a {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// Parse the XAddrs list leniently: `ip:port` tokens, also tolerating an
/// `http://ip:port/...` URL; other tokens are skipped.
fn parse_xaddrs(text: &str) -> Result<Vec<SocketAddr>, DecodeError> {
    let mut out = Vec::new();
    for token in text.split_ascii_whitespace() {
        let hostport = token
            .strip_prefix("http://")
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .unwrap_or(token);
        if let Ok(a) = hostport.parse::<SocketAddr>() {
            if out.len() == MAX_XADDRS {
                return Err(DecodeError::LimitExceeded {
                    what: "wsd:XAddrs count",
                    max: MAX_XADDRS as u64,
                });
            }
            out.push(a);
        }
    }
    Ok(out)
}

fn parse_u64(v: Option<String>, what: &'static str) -> Result<u64, DecodeError> {
    let s = require(v, what)?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::Invalid { what });
    }
    s.parse().map_err(|_| DecodeError::Invalid { what })
}

impl ProbeMatch {
    /// Encode exactly as PROTOCOL.md §6.4 shows (no attributes on
    /// `<wsd:Scopes>`, explicit open/close tags in the PeerDist part).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(1500);
        open_envelope(&mut out);
        element(&mut out, "wsa:To", TO_ANONYMOUS);
        element(&mut out, "wsa:Action", ACTION_PROBE_MATCHES);
        element(&mut out, "wsa:MessageID", self.message_id.as_str());
        element(&mut out, "wsa:RelatesTo", self.relates_to.as_str());
        out.push_str(&format!(
            r#"<wsd:AppSequence InstanceId="{}" MessageNumber="{}"/>"#,
            self.app_sequence.instance_id, self.app_sequence.message_number
        ));
        out.push_str("</soap:Header><soap:Body><wsd:ProbeMatches><wsd:ProbeMatch>");
        out.push_str("<wsa:EndpointReference>");
        element(&mut out, "wsa:Address", self.endpoint.as_str());
        out.push_str("</wsa:EndpointReference>");
        let (version, scopes, metadata) = match &self.body {
            MatchBody::V1(scopes) => {
                let scopes = scopes.get(..MAX_IDS_PER_PROBE).unwrap_or(scopes);
                (
                    Version::V1,
                    upper_hex_ids(scopes.iter().map(|s| &s.id)),
                    "1",
                )
            }
            MatchBody::V2 { availability, .. } => {
                (Version::V2, BASE64.encode(availability.as_bytes()), "2")
            }
        };
        element(&mut out, "wsd:Types", types_text(version));
        element(&mut out, "wsd:Scopes", &scopes);
        let xaddrs: Vec<String> = self
            .xaddrs
            .iter()
            .take(MAX_XADDRS)
            .map(format_xaddr)
            .collect();
        element(&mut out, "wsd:XAddrs", &xaddrs.join(" "));
        element(&mut out, "wsd:MetadataVersion", metadata);
        out.push_str("<PeerDist:PeerDistData>");
        match &self.body {
            MatchBody::V1(scopes) => {
                let scopes = scopes.get(..MAX_IDS_PER_PROBE).unwrap_or(scopes);
                let mut counts = String::with_capacity(8 * scopes.len());
                for s in scopes {
                    // SPEC(MS-PCCRD §2.2.3.9): 8 hex digits per count; the
                    // spec's 4-digit prose example is wrong (§4.3, iPXE).
                    counts.push_str(&format!("{:08X}", s.block_count));
                }
                element(&mut out, "PeerDist:BlockCount", &counts);
            }
            MatchBody::V2 { ages, .. } => {
                if let Some(ages) = ages {
                    element(
                        &mut out,
                        "PeerDist:SegmentAges",
                        &BASE64.encode(ages.encode()),
                    );
                }
            }
        }
        out.push_str("</PeerDist:PeerDistData>");
        out.push_str("</wsd:ProbeMatch></wsd:ProbeMatches></soap:Body></soap:Envelope>");
        out.into_bytes()
    }

    /// Decode a ProbeMatch (namespace-aware, bounded, case-sensitive hex).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env = parse_limited(bytes)?;
        if env.action.as_deref() != Some(ACTION_PROBE_MATCHES) {
            return Err(DecodeError::Invalid {
                what: "wsa:Action is not ProbeMatches",
            });
        }
        Self::from_envelope(env)
    }

    fn from_envelope(env: Envelope) -> Result<Self, DecodeError> {
        if env.body != Some(BodyKind::ProbeMatch) {
            return Err(DecodeError::Invalid {
                what: "body is not wsd:ProbeMatches/wsd:ProbeMatch",
            });
        }
        let message_id = uri(env.message_id, "wsa:MessageID")?;
        let relates_to = uri(env.relates_to, "wsa:RelatesTo")?;
        let (instance, number) = require(env.app_sequence, "wsd:AppSequence")?;
        let app_sequence = AppSequence {
            instance_id: parse_u64(instance, "AppSequence InstanceId")?,
            message_number: parse_u64(number, "AppSequence MessageNumber")?,
        };
        let endpoint = uri(env.endpoint, "wsa:EndpointReference/wsa:Address")?;
        let xaddrs = parse_xaddrs(env.xaddrs.as_deref().unwrap_or(""))?;
        let types = require(env.types, "wsd:Types")?;
        let scopes = env.scopes.unwrap_or_default();
        let body = if types.v2 && !types.v1 {
            let bitmap = base64_field(&scopes, "v2 ProbeMatch scopes base64")?;
            let availability =
                AvailabilityBitmap::from_bytes(&bitmap).ok_or(DecodeError::LimitExceeded {
                    what: "v2 availability bitmap length",
                    max: MAX_BITMAP_LEN as u64,
                })?;
            // SPEC(MS-PCCRR §2.2.6.1 via MS-PCCRD): a bad SegmentAges blob is
            // discarded, not the message.
            let ages = env
                .segment_ages
                .and_then(|t| base64_field(&t, "SegmentAges base64").ok())
                .and_then(|b| SegmentAges::decode(&b).ok());
            MatchBody::V2 { availability, ages }
        } else if types.v1 {
            let mut ids = Vec::new();
            for token in scopes.split_ascii_whitespace() {
                if ids.len() == MAX_IDS_PER_PROBE {
                    return Err(limit("v1 ProbeMatch scope count"));
                }
                ids.push(v1_id(token)?);
            }
            let counts = env.block_count.unwrap_or_default();
            if counts.len() != 8 * ids.len() {
                return Err(DecodeError::Invalid {
                    what: "BlockCount must have 8 hex digits per scope",
                });
            }
            let mut scopes = Vec::with_capacity(ids.len());
            for (i, id) in ids.into_iter().enumerate() {
                let digits = counts
                    .get(8 * i..8 * i + 8)
                    .ok_or(DecodeError::Invalid { what: "BlockCount" })?;
                let raw = upper_hex(digits, "BlockCount (upper-case hex)")?;
                let block_count = u32::from_be_bytes(
                    raw.try_into()
                        .map_err(|_| DecodeError::Invalid { what: "BlockCount" })?,
                );
                scopes.push(V1Scope { id, block_count });
            }
            MatchBody::V1(scopes)
        } else {
            return Err(DecodeError::Invalid {
                what: "wsd:Types names no PeerDist type",
            });
        };
        Ok(ProbeMatch {
            message_id,
            relates_to,
            app_sequence,
            endpoint,
            xaddrs,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrd::ages::{age_units, SegmentAge};
    use proptest::prelude::*;

    const PROBE_V1: &[u8] = include_bytes!("../../../tests/data/pccrd/probe-v1.xml");
    const PROBE_V2: &[u8] = include_bytes!("../../../tests/data/pccrd/probe-v2.xml");
    const MATCH_V1: &[u8] = include_bytes!("../../../tests/data/pccrd/probematch-v1.xml");
    const MATCH_V2: &[u8] = include_bytes!("../../../tests/data/pccrd/probematch-v2.xml");
    const SPEC_MATCH_V2: &[u8] =
        include_bytes!("../../../tests/data/pccrd/probematch-v2-spec-2.2.2.2.xml");
    const FOREIGN: &[u8] =
        include_bytes!("../../../tests/data/pccrd/probe-v1-foreign-prefixes.xml");

    fn ramp(start: u8, step: u8) -> SegmentId {
        let b: Vec<u8> = (0..32u8)
            .map(|i| start.wrapping_add(i.wrapping_mul(step)))
            .collect();
        SegmentId::from_slice(&b).unwrap()
    }

    fn id1() -> SegmentId {
        ramp(0, 1)
    }

    fn id2() -> SegmentId {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = 0xFF - 0x11 * (i % 16) as u8;
        }
        SegmentId::from_slice(&b).unwrap()
    }

    fn uuid(base: u8) -> Uri {
        let b: [u8; 16] = core::array::from_fn(|i| base + i as u8);
        Uuid::new_v4(b).to_uri()
    }

    fn spec_v2_id(first: u8, second: u8) -> SegmentId {
        let mut b = hex::decode("29011a0100000000301d1a0100000000410041004400790067004d004d003100")
            .unwrap();
        b[0] = first;
        b[1] = second;
        SegmentId::from_slice(&b).unwrap()
    }

    fn probe_v1() -> Probe {
        Probe {
            message_id: uuid(0),
            version: Version::V1,
            segment_ids: vec![id1(), id2()],
        }
    }

    fn match_v1() -> ProbeMatch {
        ProbeMatch {
            message_id: uuid(0x10),
            relates_to: uuid(0),
            app_sequence: AppSequence {
                instance_id: 1_764_046_505,
                message_number: 1,
            },
            endpoint: uuid(0x20),
            xaddrs: vec!["157.59.141.183:54321".parse().unwrap()],
            body: MatchBody::V1(vec![V1Scope {
                id: id2(),
                block_count: 42,
            }]),
        }
    }

    fn match_v2() -> ProbeMatch {
        ProbeMatch {
            message_id: uuid(0x10),
            relates_to: uuid(0),
            app_sequence: AppSequence {
                instance_id: 1_764_046_505,
                message_number: 2,
            },
            endpoint: uuid(0x20),
            xaddrs: vec![
                "10.0.0.7:80".parse().unwrap(),
                "[fe80::1]:8082".parse().unwrap(),
            ],
            body: MatchBody::V2 {
                availability: AvailabilityBitmap::from_entries(&[Availability::Full; 40]),
                ages: Some(SegmentAges {
                    units: age_units::CENTISECONDS,
                    ages: vec![
                        SegmentAge {
                            segment_index: 0,
                            age: 60000,
                        },
                        SegmentAge {
                            segment_index: 2,
                            age: 60000,
                        },
                    ],
                }),
            },
        }
    }

    #[test]
    fn uuid_urn_sets_version_and_variant() {
        assert_eq!(
            uuid(0).as_str(),
            "urn:uuid:00010203-0405-4607-8809-0a0b0c0d0e0f"
        );
    }

    #[test]
    fn v1_probe_encodes_to_golden_bytes_and_back() {
        let p = probe_v1();
        assert_eq!(
            String::from_utf8(p.encode()).unwrap(),
            std::str::from_utf8(PROBE_V1).unwrap()
        );
        assert_eq!(Probe::decode(PROBE_V1).unwrap(), p);
        assert_eq!(Message::decode(PROBE_V1).unwrap(), Message::Probe(p));
    }

    #[test]
    fn v2_probe_encodes_spec_example_scopes() {
        let p = Probe {
            message_id: uuid(0),
            version: Version::V2,
            segment_ids: vec![spec_v2_id(0x23, 0xbe), spec_v2_id(0x23, 0xbe)],
        };
        assert_eq!(
            String::from_utf8(p.encode()).unwrap(),
            std::str::from_utf8(PROBE_V2).unwrap()
        );
        assert_eq!(Probe::decode(PROBE_V2).unwrap(), p);
    }

    #[test]
    fn v1_probematch_encodes_to_golden_bytes_and_back() {
        let m = match_v1();
        let text = String::from_utf8(m.encode()).unwrap();
        assert_eq!(text, std::str::from_utf8(MATCH_V1).unwrap());
        // The literal substrings iPXE's matcher looks for.
        for needle in [
            "<wsd:Scopes>",
            "</wsd:Scopes>",
            "<wsd:XAddrs>",
            "</wsd:XAddrs>",
            "<PeerDist:BlockCount>0000002A</PeerDist:BlockCount>",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        assert_eq!(ProbeMatch::decode(MATCH_V1).unwrap(), m);
    }

    #[test]
    fn v2_probematch_encodes_to_golden_bytes_and_back() {
        let m = match_v2();
        assert_eq!(
            String::from_utf8(m.encode()).unwrap(),
            std::str::from_utf8(MATCH_V2).unwrap()
        );
        assert_eq!(ProbeMatch::decode(MATCH_V2).unwrap(), m);
    }

    #[test]
    fn decodes_the_spec_v2_probematch_example_with_its_whitespace() {
        let m = ProbeMatch::decode(SPEC_MATCH_V2).unwrap();
        assert_eq!(
            m.relates_to.as_str(),
            "urn:uuid:91528b47-b96d-4e30-981f-308c0586926f"
        );
        assert_eq!(
            m.app_sequence,
            AppSequence {
                instance_id: 1_218_765_447,
                message_number: 4
            }
        );
        assert_eq!(m.xaddrs, vec!["157.59.141.183:54321".parse().unwrap()]);
        match m.body {
            MatchBody::V2 { availability, ages } => {
                assert_eq!(availability.slots(), 40);
                assert!((0..40).all(|i| availability.get(i) == Availability::Full));
                assert_eq!(ages.unwrap().ages.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decode_matches_namespaces_not_prefixes() {
        assert_eq!(Probe::decode(FOREIGN).unwrap(), probe_v1());
    }

    #[test]
    fn decode_rejects_right_prefix_bound_to_wrong_namespace() {
        let bad = String::from_utf8(PROBE_V1.to_vec()).unwrap().replace(
            "xmlns:wsd=\"http://schemas.xmlsoap.org/ws/2005/04/discovery\"",
            "xmlns:wsd=\"urn:not-discovery\"",
        );
        assert!(Probe::decode(bad.as_bytes()).is_err());
    }

    #[test]
    fn decode_rejects_lower_case_hex_scope() {
        let bad = String::from_utf8(PROBE_V1.to_vec())
            .unwrap()
            .replace("0A0B0C", "0a0b0c");
        assert_eq!(
            Probe::decode(bad.as_bytes()).unwrap_err(),
            DecodeError::Invalid {
                what: "v1 scope (upper-case hex)"
            }
        );
    }

    #[test]
    fn decode_rejects_four_digit_block_counts() {
        let bad = String::from_utf8(MATCH_V1.to_vec())
            .unwrap()
            .replace(">0000002A<", ">002A<");
        assert!(ProbeMatch::decode(bad.as_bytes()).is_err());
    }

    #[test]
    fn decode_rejects_oversized_datagram() {
        let mut big = PROBE_V1.to_vec();
        big.resize(MAX_MESSAGE_SIZE + 1, b' ');
        assert!(matches!(
            Probe::decode(&big),
            Err(DecodeError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn decode_rejects_doctype_and_wrong_root() {
        let dtd = b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><x/>";
        assert!(Message::decode(dtd).is_err());
        assert!(Message::decode(b"<Envelope/>").is_err());
        assert!(Message::decode(b"").is_err());
    }

    #[test]
    fn decode_rejects_markup_inside_a_text_field() {
        let bad = String::from_utf8(PROBE_V1.to_vec())
            .unwrap()
            .replace("strcmp0\">", "strcmp0\"><x/>");
        assert_eq!(
            Probe::decode(bad.as_bytes()).unwrap_err(),
            DecodeError::Invalid {
                what: "element inside a text-only field"
            }
        );
    }

    #[test]
    fn decode_rejects_too_many_v1_ids() {
        let p = Probe {
            segment_ids: vec![id1(); MAX_IDS_PER_PROBE],
            ..probe_v1()
        };
        let text = String::from_utf8(p.encode()).unwrap();
        assert_eq!(
            Probe::decode(text.as_bytes()).unwrap().segment_ids.len(),
            255
        );
        let one_more = text.replace(
            "</wsd:Scopes>",
            &format!(" {}</wsd:Scopes>", hex::encode_upper(id1().as_bytes())),
        );
        assert!(matches!(
            Probe::decode(one_more.as_bytes()),
            Err(DecodeError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn relates_to_with_markup_is_escaped_and_round_trips() {
        let mut m = match_v1();
        m.relates_to = Uri::new("urn:x:<a>&\"b\"").unwrap();
        let bytes = m.encode();
        assert!(!String::from_utf8_lossy(&bytes).contains("<a>"));
        assert_eq!(ProbeMatch::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn bad_segment_ages_blob_is_dropped_not_the_message() {
        let bad = String::from_utf8(MATCH_V2.to_vec())
            .unwrap()
            .replace("AAEDAgBg6gACYOoA", "AAIDAA==");
        match ProbeMatch::decode(bad.as_bytes()).unwrap().body {
            MatchBody::V2 { ages, .. } => assert_eq!(ages, None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bitmap_packs_first_entry_in_high_bits() {
        let b = AvailabilityBitmap::from_entries(&[
            Availability::Full,
            Availability::None,
            Availability::Partial,
            Availability::None,
            Availability::Full,
        ]);
        assert_eq!(b.as_bytes(), &[0b1100_1000, 0b1100_0000]);
        assert_eq!(b.get(2), Availability::Partial);
        assert_eq!(b.get(4), Availability::Full);
        assert_eq!(b.get(99), Availability::None);
    }

    fn arb_id() -> impl Strategy<Value = SegmentId> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 32),
            proptest::collection::vec(any::<u8>(), 48),
            proptest::collection::vec(any::<u8>(), 64),
        ]
        .prop_map(|b| SegmentId::from_slice(&b).unwrap())
    }

    fn arb_id32() -> impl Strategy<Value = SegmentId> {
        proptest::collection::vec(any::<u8>(), 32).prop_map(|b| SegmentId::from_slice(&b).unwrap())
    }

    fn arb_uri() -> impl Strategy<Value = Uri> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(|b| Uuid::new_v4(b).to_uri()),
            "[a-z]{1,8}:[!-~]{1,40}".prop_map(|s| Uri::new(&s).unwrap()),
        ]
    }

    fn arb_probe() -> impl Strategy<Value = Probe> {
        (
            arb_uri(),
            prop_oneof![
                proptest::collection::vec(arb_id(), 1..20).prop_map(|v| (Version::V1, v)),
                proptest::collection::vec(arb_id32(), 1..20).prop_map(|v| (Version::V2, v)),
            ],
        )
            .prop_map(|(message_id, (version, segment_ids))| Probe {
                message_id,
                version,
                segment_ids,
            })
    }

    fn arb_availability() -> impl Strategy<Value = Availability> {
        prop_oneof![
            Just(Availability::None),
            Just(Availability::Partial),
            Just(Availability::Full)
        ]
    }

    fn arb_body() -> impl Strategy<Value = MatchBody> {
        let ages = proptest::option::of(
            (
                1u8..=4,
                proptest::collection::vec((any::<u8>(), 0..=0x00FF_FFFFu32), 0..10),
            )
                .prop_map(|(u, a)| SegmentAges {
                    units: u,
                    ages: a
                        .into_iter()
                        .map(|(segment_index, age)| SegmentAge { segment_index, age })
                        .collect(),
                }),
        );
        prop_oneof![
            proptest::collection::vec((arb_id(), any::<u32>()), 0..10).prop_map(|v| {
                MatchBody::V1(
                    v.into_iter()
                        .map(|(id, block_count)| V1Scope { id, block_count })
                        .collect(),
                )
            }),
            (proptest::collection::vec(arb_availability(), 0..40), ages).prop_map(|(a, ages)| {
                MatchBody::V2 {
                    availability: AvailabilityBitmap::from_entries(&a),
                    ages,
                }
            }),
        ]
    }

    fn arb_match() -> impl Strategy<Value = ProbeMatch> {
        (
            arb_uri(),
            arb_uri(),
            any::<(u64, u64)>(),
            arb_uri(),
            proptest::collection::vec(any::<SocketAddr>(), 0..4),
            arb_body(),
        )
            .prop_map(|(message_id, relates_to, (i, n), endpoint, xaddrs, body)| {
                ProbeMatch {
                    message_id,
                    relates_to,
                    app_sequence: AppSequence {
                        instance_id: i,
                        message_number: n,
                    },
                    endpoint,
                    // IPv6 scope ids and flow info are not carried in XAddrs.
                    xaddrs: xaddrs
                        .into_iter()
                        .map(|a| SocketAddr::new(a.ip(), a.port()))
                        .collect(),
                    body,
                }
            })
    }

    proptest! {
        #[test]
        fn probe_round_trips(p in arb_probe()) {
            prop_assert_eq!(Probe::decode(&p.encode()).unwrap(), p.clone());
            prop_assert_eq!(Message::decode(&p.encode()).unwrap(), Message::Probe(p));
        }

        #[test]
        fn probematch_round_trips(m in arb_match()) {
            prop_assert_eq!(ProbeMatch::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode(&b);
        }

        #[test]
        fn mutated_golden_messages_never_panic(
            which in 0usize..5,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut b = [PROBE_V1, PROBE_V2, MATCH_V1, MATCH_V2, FOREIGN][which].to_vec();
            for (at, v) in edits {
                let i = at % b.len();
                b[i] = v;
            }
            let _ = Message::decode(&b);
        }
    }
}

//! MS-PCCRD: PeerDist discovery over WS-Discovery (April 2005) and SOAP-over-UDP.
//!
//! - [`messages`]: Probe / ProbeMatch, v1 and v2, exact-bytes encode and
//!   namespace-aware bounded decode (quick-xml).
//! - [`ages`]: the Extensible Blob v1 (SegmentAges) carried by v2 ProbeMatches,
//!   shared with MS-PCCRR.
//! - [`engine`]: the sans-IO discovery state machine (prober and responder);
//!   the UDP driver lives in `crate::discovery`.
//!
//! Facts and their sources: `PROTOCOL.md` §6 and §11 items 17–20.

pub mod ages;
pub mod engine;
pub mod messages;
mod xml;

pub use ages::{SegmentAge, SegmentAges};
pub use messages::{
    AppSequence, Availability, AvailabilityBitmap, MatchBody, Message, Probe, ProbeMatch, Uri,
    Uuid, V1Scope, Version,
};

/// SOAP 1.2 envelope namespace (prefix `soap`).
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing 2004/08 namespace (prefix `wsa`).
pub const NS_WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WS-Discovery 2005/04 namespace (prefix `wsd`).
pub const NS_WSD: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
/// PeerDist discovery namespace (prefix `PeerDist`).
pub const NS_PEERDIST: &str = "http://schemas.microsoft.com/p2p/2007/09/PeerDistributionDiscovery";

/// `wsa:To` of a multicast Probe.
pub const TO_DISCOVERY: &str = "urn:schemas-xmlsoap-org:ws:2005:04:discovery";
/// `wsa:To` of a unicast ProbeMatch.
pub const TO_ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// `wsa:Action` of a Probe.
pub const ACTION_PROBE: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe";
/// `wsa:Action` of a ProbeMatch.
pub const ACTION_PROBE_MATCHES: &str =
    "http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches";
/// `MatchBy` of a v1 Probe's Scopes (case-sensitive string compare).
pub const MATCH_BY_STRCMP0: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery/strcmp0";
/// `MatchBy` of a v2 Probe's Scopes.
pub const MATCH_BY_V2: &str = "http://schemas.microsoft.com/p2p/2010/05/PeerDistV2MatchingRule";

/// Largest datagram accepted: the IPv4 UDP payload maximum rounded up;
/// anything larger cannot be one SOAP-over-UDP message (PROTOCOL.md §6.1).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Most segment ids in one Probe or ProbeMatch: the v2 count is a u8, and v1
/// gets the same cap so both versions have one bound.
pub const MAX_IDS_PER_PROBE: usize = 255;

/// UDP port of WS-Discovery.
pub const DISCOVERY_PORT: u16 = 3702;

//! PeerDist HTTP negotiation (MS-PCCRTP): the header logic both ends share.
//!
//! Server side: [`decide`] reads a request's `Accept-Encoding`,
//! `X-P2P-PeerDist` and `X-P2P-PeerDistEx` and returns a [`Decision`] —
//! either PeerDist with the content-information version to build and the
//! encoding version to echo, or identity with a [`IdentityReason`].
//! [`response_eligible`] applies the response-side conditions (status 200, a
//! validator, `min_size`; for a body of unknown length, through
//! [`BodyBounds::check`] as it arrives) and [`response_peerdist_value`] builds the response's
//! `X-P2P-PeerDist` value.
//!
//! Client side (the branch proxy): [`CLIENT_ACCEPT_ENCODING`],
//! [`CLIENT_PEERDIST`], [`client_peerdist_ex`], [`MISSING_DATA_PEERDIST`] are
//! the request values to send; [`parse_response`] says whether an answer is
//! PeerDist-encoded and what identity length it announces.
//!
//! Grammar (PROTOCOL.md §7.1): comma-separated `name=value` parameters,
//! optional white space around commas and `=`, names case-insensitive,
//! unknown parameters ignored, versions `major.minor` compared as two
//! integers. Everything here is total: any string in, a value out.

use std::fmt;
use std::ops::Range;

use http::header::{HeaderName, ACCEPT_ENCODING, CONTENT_ENCODING, RANGE};
use http::{HeaderMap, Method};

/// `X-P2P-PeerDist` (lower case, as `http` stores names).
pub const X_P2P_PEERDIST: HeaderName = HeaderName::from_static("x-p2p-peerdist");
/// `X-P2P-PeerDistEx`.
pub const X_P2P_PEERDIST_EX: HeaderName = HeaderName::from_static("x-p2p-peerdistex");

/// The content-coding token, compared case-insensitively.
pub const PEERDIST_TOKEN: &str = "peerdist";

/// Client: the `Accept-Encoding` value of a content-information request.
pub const CLIENT_ACCEPT_ENCODING: &str = "peerdist";
/// Client: the `X-P2P-PeerDist` value of a content-information request
/// (encoding version 1.1, as Windows 8+ and iPXE send).
pub const CLIENT_PEERDIST: &str = "Version=1.1";
/// Client: the `X-P2P-PeerDist` value of a missing-data (range) request.
/// Never combine it with `peerdist` in `Accept-Encoding` (PROTOCOL.md §11.21).
pub const MISSING_DATA_PEERDIST: &str = "Version=1.1, MissingDataRequest=true";

/// Client: the `X-P2P-PeerDistEx` value announcing which CI versions we can parse.
pub const fn client_peerdist_ex(max: CiVersion) -> &'static str {
    match max {
        CiVersion::V1 => "MinContentInformation=1.0, MaxContentInformation=1.0",
        CiVersion::V2 => "MinContentInformation=1.0, MaxContentInformation=2.0",
    }
}

/// A `major.minor` protocol version, compared as two integers (1.23 > 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtoVersion {
    /// Major part.
    pub major: u32,
    /// Minor part.
    pub minor: u32,
}

impl ProtoVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        ProtoVersion { major, minor }
    }

    /// Parse `major.minor`: ASCII digits only, no spaces, both parts present.
    pub fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.split_once('.')?;
        Some(ProtoVersion {
            major: parse_digits(major)?,
            minor: parse_digits(minor)?,
        })
    }
}

impl fmt::Display for ProtoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Content information version (negotiated by `X-P2P-PeerDistEx`, PROTOCOL.md §11.22):
/// the parser's [`Version`](crate::proto::pccrc::Version) under its HTTP-layer name.
pub use crate::proto::pccrc::Version as CiVersion;

/// The version as it appears in `MinContentInformation` / `MaxContentInformation`.
pub const fn ci_proto_version(v: CiVersion) -> ProtoVersion {
    match v {
        CiVersion::V1 => ProtoVersion::new(1, 0),
        CiVersion::V2 => ProtoVersion::new(2, 0),
    }
}

/// PeerDist *encoding* version (`X-P2P-PeerDist: Version=`), distinct from the CI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodingVersion {
    /// Vista / Windows 7 clients; Windows 2008 R2 servers always answer this.
    V1_0,
    /// Windows 8+ and iPXE; may carry `X-P2P-PeerDistEx`.
    V1_1,
}

impl EncodingVersion {
    /// `"1.0"` or `"1.1"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EncodingVersion::V1_0 => "1.0",
            EncodingVersion::V1_1 => "1.1",
        }
    }
}

/// The parameters of one `X-P2P-PeerDist` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDistParams {
    /// `Version=` (absent → `None`).
    pub version: Option<ProtoVersion>,
    /// `MissingDataRequest=` (absent → `None`).
    pub missing_data_request: Option<bool>,
    /// `ContentLength=` (responses only).
    pub content_length: Option<u64>,
}

/// The parameters of one `X-P2P-PeerDistEx` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDistExParams {
    /// `MinContentInformation=`.
    pub min_content_information: Option<ProtoVersion>,
    /// `MaxContentInformation=`.
    pub max_content_information: Option<ProtoVersion>,
    /// `HashRequest=` (client asks the server to generate the CI now).
    pub hash_request: Option<bool>,
    /// `MakeHashRequest=` (server invites a hash request).
    pub make_hash_request: Option<bool>,
}

/// A header value that breaks the grammar of a known parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A known parameter has a value that does not parse.
    #[error("{header}: invalid value for {param}")]
    BadValue {
        /// Which header.
        header: &'static str,
        /// Which parameter.
        param: &'static str,
    },
    /// A known parameter occurs twice with different values.
    #[error("{header}: {param} given twice with different values")]
    Conflict {
        /// Which header.
        header: &'static str,
        /// Which parameter.
        param: &'static str,
    },
    /// The header value is not visible ASCII / UTF-8.
    #[error("{header}: value is not text")]
    NotText {
        /// Which header.
        header: &'static str,
    },
}

/// Split a parameter list into trimmed `(name, value)` pairs; elements
/// without `=` yield an empty value, empty elements are skipped.
fn params(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (p, ""),
        })
}

fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Store a parsed parameter, rejecting a second, different occurrence.
fn set<T: PartialEq>(
    slot: &mut Option<T>,
    parsed: Option<T>,
    header: &'static str,
    param: &'static str,
) -> Result<(), HeaderError> {
    let v = parsed.ok_or(HeaderError::BadValue { header, param })?;
    match slot {
        Some(old) if *old != v => Err(HeaderError::Conflict { header, param }),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// Parse one or more `X-P2P-PeerDist` values (several header lines are one list).
pub fn parse_peerdist<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<PeerDistParams, HeaderError> {
    const H: &str = "X-P2P-PeerDist";
    let mut out = PeerDistParams::default();
    for value in values {
        for (name, v) in params(value) {
            if name.eq_ignore_ascii_case("Version") {
                set(&mut out.version, ProtoVersion::parse(v), H, "Version")?;
            } else if name.eq_ignore_ascii_case("MissingDataRequest") {
                set(
                    &mut out.missing_data_request,
                    parse_bool(v),
                    H,
                    "MissingDataRequest",
                )?;
            } else if name.eq_ignore_ascii_case("ContentLength") {
                set(
                    &mut out.content_length,
                    parse_digits_u64(v),
                    H,
                    "ContentLength",
                )?;
            }
        }
    }
    Ok(out)
}

/// Parse one or more `X-P2P-PeerDistEx` values.
pub fn parse_peerdist_ex<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<PeerDistExParams, HeaderError> {
    const H: &str = "X-P2P-PeerDistEx";
    let mut out = PeerDistExParams::default();
    for value in values {
        for (name, v) in params(value) {
            if name.eq_ignore_ascii_case("MinContentInformation") {
                set(
                    &mut out.min_content_information,
                    ProtoVersion::parse(v),
                    H,
                    "MinContentInformation",
                )?;
            } else if name.eq_ignore_ascii_case("MaxContentInformation") {
                set(
                    &mut out.max_content_information,
                    ProtoVersion::parse(v),
                    H,
                    "MaxContentInformation",
                )?;
            } else if name.eq_ignore_ascii_case("HashRequest") {
                set(&mut out.hash_request, parse_bool(v), H, "HashRequest")?;
            } else if name.eq_ignore_ascii_case("MakeHashRequest") {
                set(
                    &mut out.make_hash_request,
                    parse_bool(v),
                    H,
                    "MakeHashRequest",
                )?;
            }
        }
    }
    Ok(out)
}

fn parse_digits_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Does this `Accept-Encoding` list (one or more header values) accept
/// `peerdist`? The token is case-insensitive; `q=0` (or `0.0`…) refuses it; a
/// malformed `q` refuses it too. A bare `*` does **not** count: a CI body is
/// only useful to a client that asked for it by name.
pub fn accepts_peerdist<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    let mut accepted = false;
    for value in values {
        for element in value.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if !coding.eq_ignore_ascii_case(PEERDIST_TOKEN) {
                continue;
            }
            let mut q_ok = true;
            for p in parts {
                if let Some((n, v)) = p.split_once('=') {
                    if n.trim().eq_ignore_ascii_case("q") {
                        q_ok = qvalue_positive(v.trim());
                    }
                }
            }
            // The most specific statement is the last one; a later `peerdist;q=0`
            // withdraws an earlier acceptance.
            accepted = q_ok;
        }
    }
    accepted
}

/// RFC 9110 §12.4.2 qvalue: `0[.ddd]` or `1[.000]`; true when > 0.
fn qvalue_positive(v: &str) -> bool {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match int {
        "1" => frac.bytes().all(|b| b == b'0'),
        "0" => frac.bytes().any(|b| b != b'0'),
        _ => false,
    }
}

/// Which CI versions the server may produce and which it prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPolicy {
    /// The configured `content_version`: `V1` builds only v1; `V2` builds v2
    /// when the client allows it and falls back to v1 otherwise.
    pub preferred: CiVersion,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        ServerPolicy {
            preferred: CiVersion::V1,
        }
    }
}

/// Why a request is answered with identity content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityReason {
    /// Not a GET (Windows only uses peerdist on GET).
    Method,
    /// `Accept-Encoding` does not name `peerdist` (or refuses it with `q=0`).
    NotAccepted,
    /// `X-P2P-PeerDist` is missing.
    NoPeerDistHeader,
    /// `X-P2P-PeerDist` or `X-P2P-PeerDistEx` does not parse (e.g. `MissingDataRequest=maybe`).
    BadHeader,
    /// `X-P2P-PeerDist` has no `Version` or a major version other than 1.
    UnsupportedVersion,
    /// `MissingDataRequest=true`: a raw-bytes fetch, never combined with peerdist.
    MissingDataRequest,
    /// `X-P2P-PeerDistEx` allows no CI version we produce.
    NoCommonCiVersion,
    /// The request has several ranges or an unparsable `Range`.
    UnsupportedRange,
    /// The origin's answer is not `200 OK`.
    Status,
    /// The origin's answer has neither a strong `ETag` nor `Last-Modified`.
    NoValidator,
    /// The entity is smaller than `min_size` (Windows passes these through);
    /// without a `Content-Length`, known once the body ended before `min_size` bytes.
    TooSmall,
    /// The entity has no validator and is too large to hash per request;
    /// without a `Content-Length`, known once more than `max_unvalidated_size` bytes arrived.
    TooLargeUnvalidated,
    /// The request is conditional (`If-None-Match`, `If-Modified-Since`, …):
    /// the origin answers it (usually 304), content information would not help.
    Conditional,
    /// The origin's answer already has a `Content-Encoding` (we hash identity bytes only).
    ContentEncoded,
}

impl IdentityReason {
    /// Stable snake-case label for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            IdentityReason::Method => "method",
            IdentityReason::NotAccepted => "not_accepted",
            IdentityReason::NoPeerDistHeader => "no_peerdist_header",
            IdentityReason::BadHeader => "bad_header",
            IdentityReason::UnsupportedVersion => "unsupported_version",
            IdentityReason::MissingDataRequest => "missing_data_request",
            IdentityReason::NoCommonCiVersion => "no_common_ci_version",
            IdentityReason::UnsupportedRange => "unsupported_range",
            IdentityReason::Status => "status",
            IdentityReason::NoValidator => "no_validator",
            IdentityReason::TooSmall => "too_small",
            IdentityReason::TooLargeUnvalidated => "too_large_unvalidated",
            IdentityReason::Conditional => "conditional",
            IdentityReason::ContentEncoded => "content_encoded",
        }
    }
}

impl fmt::Display for IdentityReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's answer to a request, before looking at the origin's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer with `Content-Encoding: peerdist`.
    PeerDist {
        /// CI version to build.
        ci_version: CiVersion,
        /// Encoding version to echo in `X-P2P-PeerDist: Version=`.
        encoding_version: EncodingVersion,
        /// The single byte range the client asked for (`None`: the whole entity).
        range: Option<ByteRange>,
        /// The client sent `HashRequest=true` (informational: we always hash on demand).
        hash_request: bool,
    },
    /// Answer with the origin's identity content, unchanged.
    Identity(IdentityReason),
}

impl Decision {
    /// True for [`Decision::PeerDist`].
    pub fn is_peerdist(&self) -> bool {
        matches!(self, Decision::PeerDist { .. })
    }
}

/// Collect a header's values as text; non-text values are an error.
fn texts<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Vec<&'h str>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect()
}

/// Request headers that make a request conditional (RFC 9110 §13.1).
const CONDITIONAL_HEADERS: [HeaderName; 5] = [
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
];

/// Server decision (PROTOCOL.md §7.2) from the request alone.
///
/// PeerDist only when the method is GET, `Accept-Encoding` names
/// `peerdist`, `X-P2P-PeerDist` parses with major version 1 and
/// `MissingDataRequest` is not `true`, and `X-P2P-PeerDistEx` (if present)
/// allows a CI version the policy produces. Conditional requests are left to
/// the origin (identity, usually a 304). A `Range` with a single range is
/// carried in the decision (the CI then covers exactly that range); several
/// ranges → identity.
pub fn decide(method: &Method, headers: &HeaderMap, policy: ServerPolicy) -> Decision {
    use IdentityReason as R;
    if method != Method::GET {
        return Decision::Identity(R::Method);
    }
    if CONDITIONAL_HEADERS.iter().any(|h| headers.contains_key(h)) {
        return Decision::Identity(R::Conditional);
    }
    match texts(headers, &ACCEPT_ENCODING) {
        Some(v) if accepts_peerdist(v.iter().copied()) => {}
        _ => return Decision::Identity(R::NotAccepted),
    }
    let pd_values = match texts(headers, &X_P2P_PEERDIST) {
        None => return Decision::Identity(R::BadHeader),
        Some(v) if v.is_empty() => return Decision::Identity(R::NoPeerDistHeader),
        Some(v) => v,
    };
    let pd = match parse_peerdist(pd_values.iter().copied()) {
        Ok(pd) => pd,
        Err(_) => return Decision::Identity(R::BadHeader),
    };
    let encoding_version = match pd.version {
        Some(v) if v.major == 1 && v.minor == 0 => EncodingVersion::V1_0,
        Some(v) if v.major == 1 => EncodingVersion::V1_1,
        _ => return Decision::Identity(R::UnsupportedVersion),
    };
    // SPEC(MS-PCCRTP §2.2.3): MissingDataRequest marks a raw-bytes fetch and
    // MUST NOT accompany Accept-Encoding: peerdist; such a request gets identity.
    if pd.missing_data_request == Some(true) {
        return Decision::Identity(R::MissingDataRequest);
    }
    let ex = match texts(headers, &X_P2P_PEERDIST_EX) {
        None => return Decision::Identity(R::BadHeader),
        Some(v) if v.is_empty() => None,
        Some(v) => match parse_peerdist_ex(v.iter().copied()) {
            Ok(ex) => Some(ex),
            Err(_) => return Decision::Identity(R::BadHeader),
        },
    };
    let (ci_version, hash_request) = match &ex {
        // No PeerDistEx ⇒ v1 (PROTOCOL.md §11.22).
        None => (CiVersion::V1, false),
        Some(ex) => match choose_ci_version(ex, policy) {
            Some(v) => (v, ex.hash_request == Some(true)),
            None => return Decision::Identity(R::NoCommonCiVersion),
        },
    };
    let range = match texts(headers, &RANGE) {
        None => return Decision::Identity(R::UnsupportedRange),
        Some(v) if v.is_empty() => None,
        Some(v) if v.len() == 1 => match ByteRange::parse(v[0]) {
            Some(r) => Some(r),
            None => return Decision::Identity(R::UnsupportedRange),
        },
        Some(_) => return Decision::Identity(R::UnsupportedRange),
    };
    Decision::PeerDist {
        ci_version,
        encoding_version,
        range,
        hash_request,
    }
}

/// Pick the CI version from a client's `[Min, Max]` and the server policy.
/// Only 1.0 and 2.0 exist; a window containing neither (or Min > Max) → `None`.
pub fn choose_ci_version(ex: &PeerDistExParams, policy: ServerPolicy) -> Option<CiVersion> {
    let v1 = ci_proto_version(CiVersion::V1);
    // Absent bounds default to 1.0: a PeerDistEx without them is a v1 client.
    let min = ex.min_content_information.unwrap_or(v1);
    let max = ex.max_content_information.unwrap_or(min.max(v1));
    if min > max {
        return None;
    }
    let allowed = |v: CiVersion| (min..=max).contains(&ci_proto_version(v));
    let order: &[CiVersion] = match policy.preferred {
        CiVersion::V2 => &[CiVersion::V2, CiVersion::V1],
        CiVersion::V1 => &[CiVersion::V1],
    };
    order.iter().copied().find(|&v| allowed(v))
}

/// Response-side conditions for a PeerDist answer (PROTOCOL.md §7.2, §7.3):
/// status 200, an entity of at least `min_size` bytes, and a validator (or,
/// without one, an entity no larger than `max_unvalidated`, to be hashed for
/// this request only).
///
/// `entity_len` is the length the answer's framing announces (`Content-Length`);
/// it is checked here. Without one (chunked or close-delimited) the length is
/// only learnt as the body arrives: the returned [`BodyBounds`] then decide,
/// byte count by byte count, whether the answer still qualifies.
pub fn response_eligible(
    status: u16,
    has_validator: bool,
    entity_len: Option<u64>,
    min_size: u64,
    max_unvalidated: u64,
) -> Result<BodyBounds, IdentityReason> {
    if status != 200 {
        return Err(IdentityReason::Status);
    }
    let max = if has_validator {
        u64::MAX
    } else {
        max_unvalidated
    };
    match entity_len {
        Some(len) if len < min_size => Err(IdentityReason::TooSmall),
        Some(len) if len > max => Err(IdentityReason::TooLargeUnvalidated),
        // Checked: the body's length is the framing's business from here on.
        Some(_) => Ok(BodyBounds {
            min: 0,
            max: u64::MAX,
        }),
        None => Ok(BodyBounds { min: min_size, max }),
    }
}

/// The size conditions a body of an eligible answer must still meet as it
/// streams in (only non-trivial when the answer announced no length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyBounds {
    /// Fewer bytes than this in the whole body: identity ([`IdentityReason::TooSmall`]).
    min: u64,
    /// More bytes than this: identity ([`IdentityReason::TooLargeUnvalidated`]).
    max: u64,
}

/// Where a streaming body stands against its [`BodyBounds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyVerdict {
    /// Not decided yet: fewer than `min_size` bytes so far. Keep them (at
    /// most `min_size`): if the body ends now they are the identity answer.
    Undecided,
    /// The body qualifies so far: hash it.
    Eligible,
    /// The body does not qualify.
    Identity(IdentityReason),
}

impl BodyBounds {
    /// The verdict once `received` body bytes arrived; `ended`: that is the
    /// whole body. The same answer as [`response_eligible`] gives for an
    /// announced length of `received`: `TooSmall` is only known at the end,
    /// `TooLargeUnvalidated` is only reported past `min`.
    pub fn check(&self, received: u64, ended: bool) -> BodyVerdict {
        if received < self.min {
            if ended {
                BodyVerdict::Identity(IdentityReason::TooSmall)
            } else {
                BodyVerdict::Undecided
            }
        } else if received > self.max {
            BodyVerdict::Identity(IdentityReason::TooLargeUnvalidated)
        } else {
            BodyVerdict::Eligible
        }
    }
}

/// The response's `X-P2P-PeerDist` value: `Version=1.1, ContentLength=N`,
/// where N is the identity length of the full entity.
pub fn response_peerdist_value(encoding: EncodingVersion, content_length: u64) -> String {
    format!(
        "Version={}, ContentLength={content_length}",
        encoding.as_str()
    )
}

/// What a client learns from a response's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    /// `Content-Encoding: peerdist`: the body is content information.
    pub is_peerdist: bool,
    /// `X-P2P-PeerDist: ContentLength=` (identity length of the full entity), if given and valid.
    pub content_length: Option<u64>,
    /// `X-P2P-PeerDistEx: MakeHashRequest=true`: the server invites a hash request.
    pub make_hash_request: bool,
}

/// Client: classify a response by its headers.
pub fn parse_response(headers: &HeaderMap) -> ResponseInfo {
    let is_peerdist = headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|c| c.trim().eq_ignore_ascii_case(PEERDIST_TOKEN))
        })
    });
    let content_length = texts(headers, &X_P2P_PEERDIST)
        .and_then(|v| parse_peerdist(v.iter().copied()).ok())
        .and_then(|p| p.content_length);
    let make_hash_request = texts(headers, &X_P2P_PEERDIST_EX)
        .and_then(|v| parse_peerdist_ex(v.iter().copied()).ok())
        .and_then(|p| p.make_hash_request)
        .unwrap_or(false);
    ResponseInfo {
        is_peerdist,
        content_length,
        make_hash_request,
    }
}

/// One `Range: bytes=…` range as the client wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive end).
    FromTo(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parse a `Range` header value holding exactly one byte range; several
    /// ranges, other units or malformed values → `None`.
    pub fn parse(value: &str) -> Option<ByteRange> {
        let (unit, spec) = value.trim().split_once('=')?;
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return None;
        }
        let spec = spec.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (true, true) => None,
            (true, false) => parse_digits_u64(b).map(ByteRange::Suffix),
            (false, true) => parse_digits_u64(a).map(ByteRange::From),
            (false, false) => {
                let (a, b) = (parse_digits_u64(a)?, parse_digits_u64(b)?);
                (a <= b).then_some(ByteRange::FromTo(a, b))
            }
        }
    }

    /// The half-open byte range within an entity of `len` bytes, clamped to it;
    /// `None` when unsatisfiable (RFC 9110 §14.1.1).
    pub fn resolve(self, len: u64) -> Option<Range<u64>> {
        let r = match self {
            ByteRange::FromTo(a, b) => a..b.saturating_add(1).min(len),
            ByteRange::From(a) => a..len,
            ByteRange::Suffix(n) => len.saturating_sub(n)..len,
        };
        (r.start < r.end).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn decide_get(pairs: &[(&str, &str)]) -> Decision {
        decide(&Method::GET, &req(pairs), ServerPolicy::default())
    }

    fn decide_v2(pairs: &[(&str, &str)]) -> Decision {
        decide(
            &Method::GET,
            &req(pairs),
            ServerPolicy {
                preferred: CiVersion::V2,
            },
        )
    }

    fn ci(d: &Decision) -> Option<CiVersion> {
        match d {
            Decision::PeerDist { ci_version, .. } => Some(*ci_version),
            Decision::Identity(_) => None,
        }
    }

    #[test]
    fn windows7_request_gets_v1_and_encoding_1_0() {
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.0"),
        ]);
        assert_eq!(
            d,
            Decision::PeerDist {
                ci_version: CiVersion::V1,
                encoding_version: EncodingVersion::V1_0,
                range: None,
                hash_request: false
            }
        );
    }

    #[test]
    fn win8_request_gets_v1_under_default_policy_and_v2_when_preferred() {
        let h = [
            ("accept-encoding", "gzip, deflate, peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
            (
                "x-p2p-peerdistex",
                "MinContentInformation=1.0, MaxContentInformation=2.0",
            ),
        ];
        assert_eq!(ci(&decide_get(&h)), Some(CiVersion::V1));
        assert_eq!(ci(&decide_v2(&h)), Some(CiVersion::V2));
        match decide_v2(&h) {
            Decision::PeerDist {
                encoding_version, ..
            } => assert_eq!(encoding_version, EncodingVersion::V1_1),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn no_peerdistex_means_v1_even_when_v2_preferred() {
        let d = decide_v2(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
        ]);
        assert_eq!(ci(&d), Some(CiVersion::V1));
    }

    #[test]
    fn v2_only_client_with_v1_policy_gets_identity() {
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
            (
                "x-p2p-peerdistex",
                "MinContentInformation=2.0, MaxContentInformation=2.0",
            ),
        ]);
        assert_eq!(d, Decision::Identity(IdentityReason::NoCommonCiVersion));
    }

    #[test]
    fn peerdistex_range_outside_known_versions_gets_identity() {
        for ex in [
            "MinContentInformation=3.0, MaxContentInformation=4.0",
            "MinContentInformation=2.0, MaxContentInformation=1.0",
            "MinContentInformation=1.1, MaxContentInformation=1.9",
            "MinContentInformation=0.0, MaxContentInformation=0.9",
        ] {
            let d = decide_v2(&[
                ("accept-encoding", "peerdist"),
                ("x-p2p-peerdist", "Version=1.1"),
                ("x-p2p-peerdistex", ex),
            ]);
            assert_eq!(
                d,
                Decision::Identity(IdentityReason::NoCommonCiVersion),
                "{ex}"
            );
        }
    }

    #[test]
    fn garbage_peerdistex_version_gets_identity() {
        let d = decide_v2(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
            ("x-p2p-peerdistex", "MinContentInformation=abc"),
        ]);
        assert_eq!(d, Decision::Identity(IdentityReason::BadHeader));
    }

    #[test]
    fn garbage_version_gets_identity() {
        for v in [
            "Version=999.999",
            "Version=2.0",
            "Version=abc",
            "Version=",
            "Foo=1",
        ] {
            let d = decide_get(&[("accept-encoding", "peerdist"), ("x-p2p-peerdist", v)]);
            assert!(matches!(d, Decision::Identity(_)), "{v}: {d:?}");
        }
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=999.999"),
        ]);
        assert_eq!(d, Decision::Identity(IdentityReason::UnsupportedVersion));
    }

    #[test]
    fn bad_missing_data_request_gets_identity_and_false_is_accepted() {
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.0, MissingDataRequest=garbage"),
        ]);
        assert_eq!(d, Decision::Identity(IdentityReason::BadHeader));
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.0,MissingDataRequest=false"),
        ]);
        assert!(d.is_peerdist(), "{d:?}");
    }

    #[test]
    fn missing_data_request_true_gets_identity() {
        // The MS test suite's form, without a space after the comma.
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.0,MissingDataRequest=true"),
        ]);
        assert_eq!(d, Decision::Identity(IdentityReason::MissingDataRequest));
    }

    #[test]
    fn missing_headers_and_non_get_get_identity() {
        assert_eq!(
            decide_get(&[("x-p2p-peerdist", "Version=1.1")]),
            Decision::Identity(IdentityReason::NotAccepted)
        );
        assert_eq!(
            decide_get(&[("accept-encoding", "peerdist")]),
            Decision::Identity(IdentityReason::NoPeerDistHeader)
        );
        let h = req(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
        ]);
        assert_eq!(
            decide(&Method::HEAD, &h, ServerPolicy::default()),
            Decision::Identity(IdentityReason::Method)
        );
    }

    #[test]
    fn accept_encoding_token_is_case_insensitive_and_honours_q() {
        assert!(accepts_peerdist(["PeerDist"]));
        assert!(accepts_peerdist(["gzip;q=1.0, peerdist;q=0.5"]));
        assert!(accepts_peerdist(["gzip", "peerdist"]));
        assert!(accepts_peerdist(["peerdist; q=1"]));
        assert!(!accepts_peerdist(["peerdist;q=0"]));
        assert!(!accepts_peerdist(["peerdist;q=0.000"]));
        assert!(!accepts_peerdist(["peerdist;q=abc"]));
        assert!(!accepts_peerdist(["peerdist;q=1.5"]));
        assert!(!accepts_peerdist(["*"]));
        assert!(!accepts_peerdist(["gzip, peerdistx"]));
        assert!(!accepts_peerdist(["peerdist", "peerdist;q=0"]));
        assert!(!accepts_peerdist([""]));
    }

    #[test]
    fn peerdist_params_parse_leniently() {
        let p =
            parse_peerdist([" Version = 1.1 ,  ContentLength=12345 , Unknown=x, junk"]).unwrap();
        assert_eq!(p.version, Some(ProtoVersion::new(1, 1)));
        assert_eq!(p.content_length, Some(12345));
        assert_eq!(p.missing_data_request, None);
        assert!(parse_peerdist(["ContentLength=-1"]).is_err());
        assert!(parse_peerdist(["Version=1.0, Version=1.1"]).is_err());
        assert!(parse_peerdist(["Version=1.0, Version=1.0"]).is_ok());
    }

    #[test]
    fn versions_compare_as_integers() {
        assert!(ProtoVersion::parse("1.23").unwrap() > ProtoVersion::parse("1.3").unwrap());
        assert_eq!(ProtoVersion::parse("1"), None);
        assert_eq!(ProtoVersion::parse("1. 0"), None);
        assert_eq!(ProtoVersion::parse("+1.0"), None);
        assert_eq!(ProtoVersion::parse("99999999999.0"), None);
    }

    #[test]
    fn hash_request_is_reported() {
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
            (
                "x-p2p-peerdistex",
                "MinContentInformation=1.0, MaxContentInformation=2.0, HashRequest=true",
            ),
        ]);
        assert!(matches!(
            d,
            Decision::PeerDist {
                hash_request: true,
                ..
            }
        ));
    }

    #[test]
    fn conditional_request_gets_identity() {
        let d = decide_get(&[
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
            ("if-none-match", "\"abc\""),
        ]);
        assert_eq!(d, Decision::Identity(IdentityReason::Conditional));
    }

    #[test]
    fn single_range_is_carried_and_multi_range_gets_identity() {
        let base = [
            ("accept-encoding", "peerdist"),
            ("x-p2p-peerdist", "Version=1.1"),
        ];
        let mut h = base.to_vec();
        h.push(("range", "bytes=100-199"));
        assert!(matches!(
            decide_get(&h),
            Decision::PeerDist {
                range: Some(ByteRange::FromTo(100, 199)),
                ..
            }
        ));
        let mut h = base.to_vec();
        h.push(("range", "bytes=0-1,5-9"));
        assert_eq!(
            decide_get(&h),
            Decision::Identity(IdentityReason::UnsupportedRange)
        );
    }

    #[test]
    fn byte_ranges_resolve_against_length() {
        assert_eq!(
            ByteRange::parse("bytes=0-9").unwrap().resolve(100),
            Some(0..10)
        );
        assert_eq!(
            ByteRange::parse("bytes=90-").unwrap().resolve(100),
            Some(90..100)
        );
        assert_eq!(
            ByteRange::parse("bytes=-10").unwrap().resolve(100),
            Some(90..100)
        );
        assert_eq!(
            ByteRange::parse("bytes=-1000").unwrap().resolve(100),
            Some(0..100)
        );
        assert_eq!(
            ByteRange::parse("bytes=50-5000").unwrap().resolve(100),
            Some(50..100)
        );
        assert_eq!(ByteRange::parse("bytes=100-").unwrap().resolve(100), None);
        assert_eq!(ByteRange::parse("bytes=-0").unwrap().resolve(100), None);
        assert_eq!(ByteRange::parse("bytes=9-0"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::parse("bytes=-"), None);
    }

    #[test]
    fn response_conditions_follow_windows() {
        let known = BodyBounds {
            min: 0,
            max: u64::MAX,
        };
        assert_eq!(
            response_eligible(200, true, Some(65536), 65536, 0),
            Ok(known)
        );
        assert_eq!(
            response_eligible(206, true, Some(1 << 20), 65536, 0),
            Err(IdentityReason::Status)
        );
        assert_eq!(
            response_eligible(206, true, None, 65536, 0),
            Err(IdentityReason::Status)
        );
        assert_eq!(
            response_eligible(200, true, Some(65535), 65536, 0),
            Err(IdentityReason::TooSmall)
        );
        assert_eq!(
            response_eligible(200, false, Some(1 << 20), 65536, 1 << 19),
            Err(IdentityReason::TooLargeUnvalidated)
        );
        assert_eq!(
            response_eligible(200, false, Some(1 << 19), 65536, 1 << 19),
            Ok(known)
        );
        // Below min_size and above max_unvalidated: too small wins, as in Windows.
        assert_eq!(
            response_eligible(200, false, Some(100), 1000, 10),
            Err(IdentityReason::TooSmall)
        );
        // An announced, checked length leaves nothing to check on the body.
        assert_eq!(known.check(0, false), BodyVerdict::Eligible);
        assert_eq!(known.check(u64::MAX, true), BodyVerdict::Eligible);
    }

    #[test]
    fn unknown_length_with_validator_is_decided_at_min_size() {
        let b = response_eligible(200, true, None, 65536, 0).unwrap();
        assert_eq!(b.check(0, false), BodyVerdict::Undecided);
        assert_eq!(b.check(65535, false), BodyVerdict::Undecided);
        assert_eq!(
            b.check(65535, true),
            BodyVerdict::Identity(IdentityReason::TooSmall)
        );
        assert_eq!(
            b.check(0, true),
            BodyVerdict::Identity(IdentityReason::TooSmall)
        );
        assert_eq!(b.check(65536, false), BodyVerdict::Eligible);
        assert_eq!(b.check(65536, true), BodyVerdict::Eligible);
        // max_unvalidated does not apply with a validator.
        assert_eq!(b.check(u64::MAX, false), BodyVerdict::Eligible);
    }

    #[test]
    fn unknown_length_without_validator_is_bounded_while_streaming() {
        let b = response_eligible(200, false, None, 65536, 1 << 20).unwrap();
        assert_eq!(b.check(1000, false), BodyVerdict::Undecided);
        assert_eq!(
            b.check(1000, true),
            BodyVerdict::Identity(IdentityReason::TooSmall)
        );
        assert_eq!(b.check(1 << 20, false), BodyVerdict::Eligible);
        assert_eq!(b.check(1 << 20, true), BodyVerdict::Eligible);
        assert_eq!(
            b.check((1 << 20) + 1, false),
            BodyVerdict::Identity(IdentityReason::TooLargeUnvalidated)
        );
        // min_size above max_unvalidated: every streaming body gets the
        // reason an announced length of the same size gets.
        let b = response_eligible(200, false, None, 1000, 10).unwrap();
        for (n, ended) in [
            (0, true),
            (11, true),
            (999, true),
            (1000, true),
            (5000, false),
        ] {
            let want = match response_eligible(200, false, Some(n), 1000, 10) {
                Ok(_) => BodyVerdict::Eligible,
                Err(r) => BodyVerdict::Identity(r),
            };
            assert_eq!(b.check(n, ended), want, "{n} bytes");
        }
        assert_eq!(b.check(999, false), BodyVerdict::Undecided);
    }

    #[test]
    fn response_value_round_trips_through_client_parser() {
        let v = response_peerdist_value(EncodingVersion::V1_1, 40 << 20);
        assert_eq!(v, "Version=1.1, ContentLength=41943040");
        let h = req(&[
            ("content-encoding", "PeerDist"),
            ("x-p2p-peerdist", &v),
            ("x-p2p-peerdistex", "MakeHashRequest=true"),
        ]);
        assert_eq!(
            parse_response(&h),
            ResponseInfo {
                is_peerdist: true,
                content_length: Some(40 << 20),
                make_hash_request: true,
            }
        );
        assert!(!parse_response(&req(&[("content-encoding", "gzip")])).is_peerdist);
    }

    #[test]
    fn client_request_values_are_accepted_by_our_server() {
        let d = decide_v2(&[
            ("accept-encoding", CLIENT_ACCEPT_ENCODING),
            ("x-p2p-peerdist", CLIENT_PEERDIST),
            ("x-p2p-peerdistex", client_peerdist_ex(CiVersion::V2)),
        ]);
        assert_eq!(ci(&d), Some(CiVersion::V2));
        let d = decide_v2(&[
            ("accept-encoding", CLIENT_ACCEPT_ENCODING),
            ("x-p2p-peerdist", CLIENT_PEERDIST),
            ("x-p2p-peerdistex", client_peerdist_ex(CiVersion::V1)),
        ]);
        assert_eq!(ci(&d), Some(CiVersion::V1));
        let p = parse_peerdist([MISSING_DATA_PEERDIST]).unwrap();
        assert_eq!(p.missing_data_request, Some(true));
    }

    proptest! {
        #[test]
        fn arbitrary_header_strings_never_panic(
            ae in ".{0,64}", pd in ".{0,64}", ex in ".{0,64}", range in ".{0,32}"
        ) {
            let _ = accepts_peerdist([ae.as_str()]);
            let _ = parse_peerdist([pd.as_str()]);
            let _ = parse_peerdist_ex([ex.as_str()]);
            let _ = ByteRange::parse(&range).map(|r| r.resolve(1000));
            let mut h = HeaderMap::new();
            for (n, v) in [("accept-encoding", &ae), ("x-p2p-peerdist", &pd),
                           ("x-p2p-peerdistex", &ex), ("range", &range)] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(HeaderName::from_static(n), v);
                }
            }
            let _ = decide(&Method::GET, &h, ServerPolicy { preferred: CiVersion::V2 });
            let _ = parse_response(&h);
        }

        #[test]
        fn structured_peerdist_headers_never_panic(
            ver in "[0-9.]{0,6}", mdr in "(true|false|TRUE|x|)", n in any::<u64>()
        ) {
            let v = format!("Version={ver}, MissingDataRequest={mdr}, ContentLength={n}");
            let _ = decide_get(&[("accept-encoding", "peerdist"), ("x-p2p-peerdist", &v)]);
        }

        /// A body of unknown length ends with the verdict its length would
        /// have got when announced, and is never cut off while it may still
        /// qualify.
        #[test]
        fn streaming_verdict_matches_announced_length(
            n in 0u64..4096, min in 0u64..4096, max in 0u64..4096, validator in any::<bool>()
        ) {
            let announced = response_eligible(200, validator, Some(n), min, max);
            let b = response_eligible(200, validator, None, min, max).unwrap();
            let want = match announced {
                Ok(_) => BodyVerdict::Eligible,
                Err(r) => BodyVerdict::Identity(r),
            };
            prop_assert_eq!(b.check(n, true), want);
            if announced.is_ok() {
                for k in 0..=n {
                    prop_assert_ne!(b.check(k, false), BodyVerdict::Identity(IdentityReason::TooLargeUnvalidated));
                }
            }
        }
    }
}

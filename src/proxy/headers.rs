//! Header handling for the proxy: `Via`, the client's single `Range`, and
//! the PeerDist request headers (hop-by-hop removal is
//! [`crate::net::strip_hop_by_hop`], shared with the publisher).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Our `Via` entry (RFC 9110 §7.6.3): protocol version and a pseudonym.
pub const VIA: &str = "1.1 branchcache";

/// `Accept-Encoding` sent when asking an origin for content information.
pub const PEERDIST_ACCEPT_ENCODING: &str = "peerdist";
/// `X-P2P-PeerDist` sent when asking for content information (MS-PCCRTP 1.1).
pub const PEERDIST_VERSION: &str = "Version=1.1";
/// `X-P2P-PeerDistEx` sent with it: we parse content information v1 and v2.
pub const PEERDIST_EX: &str = "MinContentInformation=1.0, MaxContentInformation=2.0";

/// Append our entry to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {VIA}"),
        _ => VIA.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, v);
    }
}

/// Whether a comma-separated header lists `token` (case-insensitive), with a
/// non-zero q-value.
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name_ok = parts
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(token));
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name_ok && !q_zero
        })
}

/// `ContentLength=N` from a response's `X-P2P-PeerDist` (MS-PCCRTP; lenient
/// grammar: comma-separated `name=value`, optional spaces).
pub fn peerdist_content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("x-p2p-peerdist")?
        .to_str()
        .ok()?
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("contentlength"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// A client's `Range` header, as far as the proxy serves it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` or `bytes=a-` (`last` inclusive, `None` = to the end).
    From {
        /// First byte.
        first: u64,
        /// Last byte, inclusive.
        last: Option<u64>,
    },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parse a single byte range; `None` for anything else (multi-range,
    /// other units, garbage) — those pass through to the origin.
    pub fn parse(v: &str) -> Option<ByteRange> {
        let spec = v.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return b.parse().ok().map(ByteRange::Suffix);
        }
        let first = a.parse().ok()?;
        let last = if b.is_empty() {
            None
        } else {
            let last: u64 = b.parse().ok()?;
            if last < first {
                return None;
            }
            Some(last)
        };
        Some(ByteRange::From { first, last })
    }

    /// The byte range (end exclusive) within an object of `len` bytes, or
    /// `None` when unsatisfiable (RFC 9110 §14.1.2).
    pub fn resolve(self, len: u64) -> Option<std::ops::Range<u64>> {
        match self {
            ByteRange::From { first, last } => {
                if first >= len {
                    return None;
                }
                let end = last.map_or(len, |l| l.saturating_add(1).min(len));
                Some(first..end)
            }
            ByteRange::Suffix(n) => {
                if n == 0 || len == 0 {
                    return None;
                }
                Some(len.saturating_sub(n)..len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_is_appended() {
        let mut h = HeaderMap::new();
        add_via(&mut h);
        assert_eq!(h[header::VIA], VIA);
        h.insert(header::VIA, "1.0 fred".parse().unwrap());
        add_via(&mut h);
        assert_eq!(h[header::VIA], "1.0 fred, 1.1 branchcache");
    }

    #[test]
    fn token_listing_honours_case_and_q_zero() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, "gzip, PeerDist".parse().unwrap());
        assert!(lists_token(&h, &header::ACCEPT_ENCODING, "peerdist"));
        h.insert(
            header::ACCEPT_ENCODING,
            "gzip, peerdist;q=0".parse().unwrap(),
        );
        assert!(!lists_token(&h, &header::ACCEPT_ENCODING, "peerdist"));
        h.insert(header::ACCEPT_ENCODING, "peerdistx".parse().unwrap());
        assert!(!lists_token(&h, &header::ACCEPT_ENCODING, "peerdist"));
    }

    #[test]
    fn peerdist_content_length_is_read_leniently() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-p2p-peerdist",
            "Version=1.1, ContentLength=99710".parse().unwrap(),
        );
        assert_eq!(peerdist_content_length(&h), Some(99_710));
        h.insert(
            "x-p2p-peerdist",
            "Version=1.0,ContentLength= 5".parse().unwrap(),
        );
        assert_eq!(peerdist_content_length(&h), Some(5));
        h.insert("x-p2p-peerdist", "Version=1.1".parse().unwrap());
        assert_eq!(peerdist_content_length(&h), None);
    }

    #[test]
    fn single_ranges_parse_and_resolve() {
        let r = ByteRange::parse("bytes=10-19").unwrap();
        assert_eq!(r.resolve(100), Some(10..20));
        assert_eq!(r.resolve(15), Some(10..15));
        assert_eq!(r.resolve(10), None);
        assert_eq!(ByteRange::parse("bytes=5-").unwrap().resolve(8), Some(5..8));
        assert_eq!(ByteRange::parse("bytes=-3").unwrap().resolve(8), Some(5..8));
        assert_eq!(
            ByteRange::parse("bytes=-30").unwrap().resolve(8),
            Some(0..8)
        );
        assert_eq!(ByteRange::parse("bytes=-0").unwrap().resolve(8), None);
        assert_eq!(ByteRange::parse("bytes=0-1,5-6"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::parse("bytes=9-3"), None);
        assert_eq!(ByteRange::parse("bytes=a-3"), None);
    }
}

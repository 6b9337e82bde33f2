//! `branchcache preload`: warm a branch cache by downloading objects through
//! its proxy (and discarding the bodies), e.g. before a roll-out.
//!
//! A target is either a path (`/files/x.iso`, for a proxy in reverse mode:
//! sent as an origin-form request) or an `http://` URL (for a proxy with
//! `forward = true`: sent in absolute form). `https://` URLs are refused: a
//! forward proxy only tunnels them (`CONNECT`) and cannot cache them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::{Request, StatusCode};

/// Longest time one object may take (connect to last body byte).
pub const OBJECT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why one target could not be preloaded.
#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    /// The target is neither a path nor an `http://` URL.
    #[error("{0:?} is not a path (/…) or an http:// URL")]
    BadTarget(String),
    /// `https://` cannot be cached through a forward proxy.
    #[error("{0:?}: https URLs are tunnelled (CONNECT) by a forward proxy and cannot be cached; use the proxy in reverse mode with a path")]
    Https(String),
    /// Connecting to or talking to the proxy failed.
    #[error("{target}: {reason}")]
    Http {
        /// The target.
        target: String,
        /// What failed.
        reason: String,
    },
    /// The proxy answered with an error status.
    #[error("{target}: proxy answered {status}")]
    Status {
        /// The target.
        target: String,
        /// The status.
        status: StatusCode,
    },
    /// The object took longer than [`OBJECT_TIMEOUT`].
    #[error("{0}: timed out")]
    Timeout(String),
}

/// One object downloaded through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preloaded {
    /// Body bytes received.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Check a target and return the request URI to send to the proxy.
pub fn request_uri(target: &str) -> Result<hyper::Uri, PreloadError> {
    let t = target.trim();
    if t.starts_with("https://") {
        return Err(PreloadError::Https(t.to_string()));
    }
    let ok = t.starts_with('/') || t.starts_with("http://");
    let uri: hyper::Uri = t
        .parse()
        .ok()
        .filter(|_| ok)
        .ok_or_else(|| PreloadError::BadTarget(t.to_string()))?;
    if t.starts_with("http://") && uri.authority().is_none() {
        return Err(PreloadError::BadTarget(t.to_string()));
    }
    Ok(uri)
}

/// Targets from a list file: one per line; blank lines and `#` comments skipped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(a, _)| a).trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a caller sees of one download while it runs (the CLI draws a
/// progress bar from it).
pub trait Progress {
    /// The response headers arrived; `length` is the body's
    /// `Content-Length` when the proxy sent one.
    fn start(&mut self, length: Option<u64>);
    /// `n` more body bytes arrived.
    fn advance(&mut self, n: u64);
}

/// GET `target` through the proxy at `proxy` (`HOST:PORT`) and discard the
/// body, reporting the length and each chunk to `progress`. A body shorter
/// than its `Content-Length` is an error (hyper reports it).
pub async fn preload_one(
    proxy: &str,
    target: &str,
    progress: &mut impl Progress,
) -> Result<Preloaded, PreloadError> {
    let uri = request_uri(target)?;
    let http = |reason: String| PreloadError::Http {
        target: target.to_string(),
        reason,
    };
    let start = Instant::now();
    let work = async {
        let stream = tokio::net::TcpStream::connect(proxy)
            .await
            .map_err(|e| http(format!("cannot connect to the proxy at {proxy}: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| http(format!("handshake: {e}")))?;
        let conn = tokio::spawn(conn);
        let host = uri
            .authority()
            .map_or_else(|| proxy.to_string(), |a| a.to_string());
        let req = Request::get(uri.clone())
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("branchcache-preload/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(format!("request: {e}")))?;
        if !resp.status().is_success() {
            conn.abort();
            return Err(PreloadError::Status {
                target: target.to_string(),
                status: resp.status(),
            });
        }
        let length = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        progress.start(length);
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while !body.is_end_stream() {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.map_err(|e| http(format!("body: {e}")))?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
                progress.advance(data.len() as u64);
            }
        }
        drop(sender);
        conn.abort();
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(OBJECT_TIMEOUT, work)
        .await
        .map_err(|_| PreloadError::Timeout(target.to_string()))??;
    Ok(Preloaded {
        bytes,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_paths_or_http_urls() {
        assert_eq!(request_uri("/a/b.iso").unwrap().path(), "/a/b.iso");
        let u = request_uri("http://hq.example:8081/x?y=1").unwrap();
        assert_eq!(u.authority().unwrap().as_str(), "hq.example:8081");
        assert!(matches!(
            request_uri("https://hq/x"),
            Err(PreloadError::Https(_))
        ));
        assert!(matches!(
            request_uri("files/x"),
            Err(PreloadError::BadTarget(_))
        ));
        assert!(matches!(
            request_uri("ftp://x/y"),
            Err(PreloadError::BadTarget(_))
        ));
    }

    #[test]
    fn list_skips_blank_lines_and_comments() {
        let l = parse_list("# roll-out\n/a.iso\n\n  http://hq/b.msi   # driver\n#/c\n");
        assert_eq!(l, ["/a.iso", "http://hq/b.msi"]);
    }
}

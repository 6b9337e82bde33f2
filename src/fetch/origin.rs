//! The origin as a block source: plain `Range` GETs for runs of missing
//! blocks (MS-PCCRTP missing-data requests), and the shared HTTP(S) client
//! the proxy uses towards origins.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;

use crate::net::idle::IdleTimeout;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Block, BlockSource, SegmentPlan, SourceError, SourceKind};
use crate::metrics::Metrics;

/// Request body type sent to origins.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// Header value sent on missing-data range requests (MS-PCCRTP; purely
/// statistical for the server, and never combined with peerdist encoding).
pub const MISSING_DATA_REQUEST: &str = "Version=1.1, MissingDataRequest=true";

/// Idle origin connections kept per host: enough for the parallel range fetches.
const POOL_IDLE_PER_HOST: usize = 32;

/// How long an idle origin connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the origin client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA file could not be read or holds no certificate.
    #[error("cannot load extra CA file {path}: {reason}")]
    ExtraCa {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// An origin's response body, ended with a `TimedOut` error when the origin
/// sends nothing for the client's `body_idle_timeout`.
pub type OriginBody = IdleTimeout<Incoming>;

/// HTTP(S) client towards origins (webpki roots plus optional extra CAs),
/// with connect, response-header and body idle timeouts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OriginClient {
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    response_timeout: Duration,
    body_idle_timeout: Duration,
}

impl OriginClient {
    /// Build a client; `extra_ca_file` adds PEM certificates to the trusted
    /// roots. Every response body it returns fails after `body_idle_timeout`
    /// without a frame, so a stalled origin ends a fetch, a pass-through or a
    /// content-information read instead of holding it forever.
    pub fn new(
        extra_ca_file: Option<&Path>,
        connect_timeout: Duration,
        response_timeout: Duration,
        body_idle_timeout: Duration,
    ) -> Result<OriginClient, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca_file {
            let err = |reason: String| ClientError::ExtraCa {
                path: path.to_path_buf(),
                reason,
            };
            for cert in crate::net::pem_certificates(path).map_err(err)? {
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(OriginClient {
            client,
            response_timeout,
            body_idle_timeout,
        })
    }

    /// Send `req`; errors are classified as connect failures or timeouts.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<OriginBody>, SourceError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(SourceError::Timeout { what: "origin" }),
            Ok(Err(e)) => {
                if e.is_connect() {
                    let detail = std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| s.to_string());
                    Err(SourceError::Connect {
                        what: "origin",
                        detail,
                    })
                } else {
                    Err(SourceError::Body {
                        what: "origin",
                        detail: e.to_string(),
                    })
                }
            }
            Ok(Ok(resp)) => {
                let idle = self.body_idle_timeout;
                Ok(resp.map(|body| IdleTimeout::new(body, idle)))
            }
        }
    }
}

/// An empty request body.
pub fn empty_body() -> UpstreamBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The origin as a [`BlockSource`] for one object: `Range` GETs of `uri`
/// with the client's end-to-end headers (authorization, cookies …) and
/// `If-Range` pinned to the validator the content information came with.
#[derive(Debug, Clone)]
pub struct OriginRanges {
    inner: Arc<RangesInner>,
}

#[derive(Debug)]
struct RangesInner {
    client: OriginClient,
    uri: Uri,
    headers: HeaderMap,
    metrics: Arc<Metrics>,
}

impl OriginRanges {
    /// A source for `uri`. `headers` are sent on every range request after
    /// the proxy sets `Range`, `If-Range`, `Accept-Encoding` and `X-P2P-PeerDist`.
    pub fn new(
        client: OriginClient,
        uri: Uri,
        mut headers: HeaderMap,
        validator: Option<HeaderValue>,
        metrics: Arc<Metrics>,
    ) -> OriginRanges {
        for name in [
            header::RANGE,
            header::IF_RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::ACCEPT_ENCODING,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
        headers.remove("x-p2p-peerdist");
        headers.remove("x-p2p-peerdistex");
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        headers.insert(
            "x-p2p-peerdist",
            HeaderValue::from_static(MISSING_DATA_REQUEST),
        );
        if let Some(v) = validator {
            headers.insert(header::IF_RANGE, v);
        }
        OriginRanges {
            inner: Arc::new(RangesInner {
                client,
                uri,
                headers,
                metrics,
            }),
        }
    }
}

impl RangesInner {
    async fn open(&self, bytes: &Range<u64>) -> Result<(OriginBody, u64), SourceError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .body(empty_body())
            .map_err(|e| SourceError::Connect {
                what: "origin",
                detail: e.to_string(),
            })?;
        *req.headers_mut() = self.headers.clone();
        let range = format!("bytes={}-{}", bytes.start, bytes.end - 1);
        req.headers_mut().insert(
            header::RANGE,
            HeaderValue::from_str(&range).expect("digits and dashes are a valid header value"),
        );
        let resp = self.client.send(req).await?;
        let skip = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(bytes.start) {
                    return Err(SourceError::Status {
                        what: "origin",
                        status: 206,
                    });
                }
                0
            }
            // The origin ignored Range: read from the start and skip.
            StatusCode::OK => bytes.start,
            other => {
                return Err(SourceError::Status {
                    what: "origin",
                    status: other.as_u16(),
                })
            }
        };
        Ok((resp.into_body(), skip))
    }
}

/// First byte of a `Content-Range: bytes a-b/n` value.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

struct RangeRead {
    source: Arc<RangesInner>,
    seg: Arc<SegmentPlan>,
    next: u32,
    end: u32,
    body: Option<OriginBody>,
    skip: u64,
    buf: BytesMut,
}

impl RangeRead {
    async fn next_block(&mut self) -> Result<Block, SourceError> {
        let want = self
            .seg
            .block_len(self.next)
            .ok_or(SourceError::NotFound { what: "origin" })?;
        if self.body.is_none() {
            let first = self
                .seg
                .block_range(self.next)
                .ok_or(SourceError::NotFound { what: "origin" })?;
            let last = self
                .seg
                .block_range(self.end - 1)
                .ok_or(SourceError::NotFound { what: "origin" })?;
            let (body, skip) = self.source.open(&(first.start..last.end)).await?;
            self.body = Some(body);
            self.skip = skip;
        }
        let body = self.body.as_mut().expect("opened above");
        while self.buf.len() < want {
            let frame = match body.frame().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(SourceError::Timeout { what: "origin" })
                }
                Some(Err(e)) => {
                    return Err(SourceError::Body {
                        what: "origin",
                        detail: e.to_string(),
                    })
                }
                None => {
                    return Err(SourceError::Body {
                        what: "origin",
                        detail: "end of body".to_string(),
                    })
                }
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            self.source
                .metrics
                .proxy_wan_bytes
                .get_or_create(&[("kind", "body")])
                .inc_by(data.len() as u64);
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                let _ = data.split_to(n);
            }
            self.buf.extend_from_slice(&data);
        }
        let data = self.buf.split_to(want).freeze();
        let block = Block {
            index: self.next,
            data,
        };
        self.next += 1;
        Ok(block)
    }
}

impl BlockSource for OriginRanges {
    fn kind(&self) -> SourceKind {
        SourceKind::Origin
    }

    fn fetch(
        &self,
        seg: Arc<SegmentPlan>,
        blocks: Range<u32>,
    ) -> BoxStream<'static, Result<Block, SourceError>> {
        let state = RangeRead {
            source: self.inner.clone(),
            seg,
            next: blocks.start,
            end: blocks.end,
            body: None,
            skip: 0,
            buf: BytesMut::new(),
        };
        stream::unfold(state, |mut st| async move {
            if st.next >= st.end {
                return None;
            }
            let item = st.next_block().await;
            if item.is_err() {
                st.next = st.end;
            }
            Some((item, st))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_parses_the_first_byte() {
        assert_eq!(content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(content_range_start("bytes x-1/2"), None);
    }
}

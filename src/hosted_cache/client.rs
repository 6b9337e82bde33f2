//! The offering side of MS-PCHC, for a branch node that uses a hosted cache:
//! v2 BATCHED_OFFERs over HTTP, and the v1 INITIAL_OFFER → SEGMENT_INFO
//! exchange over HTTPS. One connection per message, each bounded by
//! [`OFFER_TIMEOUT`]; no client authentication (SPNEGO is not supported).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::proto::pccrc::SegmentId;
use crate::proto::pchc::{
    BatchedOffer, InitialOffer, Request, RequestBody, Response, ResponseCode, SegmentDescriptor,
    SegmentInfo, CONTENT_TAG_LEN, MAX_BATCHED_DESCRIPTORS, RESPONSE_LEN, V1_PATH, V2_PATH,
};
use crate::proto::DecodeError;

/// Bound on one offer exchange (connect, TLS, request, response).
// SPEC(MS-PCHC §3.1.2): the client's request timer expires a message after
// 10–15 s; we use the upper end.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an offer did not get a PCHC response.
#[derive(Debug, thiserror::Error)]
pub enum OfferClientError {
    /// TCP connect or TLS handshake failed.
    #[error("hosted cache {addr}: connect: {source}")]
    Connect {
        /// The hosted cache.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("hosted cache {addr}: http: {source}")]
    Http {
        /// The hosted cache.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The hosted cache answered with a non-200 status.
    #[error("hosted cache {addr}: HTTP {status}")]
    Status {
        /// The hosted cache.
        addr: SocketAddr,
        /// The status.
        status: StatusCode,
    },
    /// The body is not a PCHC response.
    #[error("hosted cache {addr}: bad response: {source}")]
    Garbage {
        /// The hosted cache.
        addr: SocketAddr,
        /// Why.
        source: DecodeError,
    },
    /// The hosted cache answered a message with a code the protocol does not allow.
    #[error("hosted cache {addr}: unexpected response code {code:?}")]
    Unexpected {
        /// The hosted cache.
        addr: SocketAddr,
        /// The code.
        code: ResponseCode,
    },
    /// [`OFFER_TIMEOUT`] passed.
    #[error("hosted cache {addr}: timed out")]
    Timeout {
        /// The hosted cache.
        addr: SocketAddr,
    },
    /// v1 offers need a TLS client configuration.
    #[error("no TLS configuration for PCHC v1")]
    NoTls,
}

impl OfferClientError {
    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OfferClientError::Connect { .. } => "connect",
            OfferClientError::Http { .. } => "http",
            OfferClientError::Status { .. } => "status",
            OfferClientError::Garbage { .. } => "garbage",
            OfferClientError::Unexpected { .. } => "unexpected",
            OfferClientError::Timeout { .. } => "timeout",
            OfferClientError::NoTls => "no_tls",
        }
    }
}

/// Offers segments to one hosted cache.
#[derive(Clone)]
pub struct OfferClient {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for OfferClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferClient")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl OfferClient {
    /// A client; `tls` is needed only for v1 offers (it must trust the
    /// hosted cache's certificate).
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        OfferClient { tls }
    }

    /// v2: offer `descriptors` in BATCHED_OFFERs of at most 128, telling the
    /// hosted cache to pull from our PCCRR `port`. Every message must be
    /// answered OK.
    pub async fn offer_v2(
        &self,
        hc: SocketAddr,
        port: u16,
        descriptors: &[SegmentDescriptor],
    ) -> Result<(), OfferClientError> {
        for chunk in descriptors.chunks(MAX_BATCHED_DESCRIPTORS) {
            let body = Request::new(
                port,
                RequestBody::BatchedOffer(BatchedOffer {
                    descriptors: chunk.to_vec(),
                }),
            )
            .encode();
            let r = self.post(hc, None, V2_PATH, body).await?;
            expect_ok(hc, r)?;
        }
        Ok(())
    }

    /// v1: INITIAL_OFFER for `id`; if the hosted cache is INTERESTED, send
    /// the SEGMENT_INFO (`content_info`: a one-segment v1 CI). Returns the
    /// code of the INITIAL_OFFER (OK = it already had the hash information).
    pub async fn offer_v1(
        &self,
        hc: SocketAddr,
        server_name: &ServerName<'static>,
        port: u16,
        id: SegmentId,
        content_tag: [u8; CONTENT_TAG_LEN],
        content_info: &[u8],
    ) -> Result<ResponseCode, OfferClientError> {
        let offer =
            Request::new(port, RequestBody::InitialOffer(InitialOffer { hash: id })).encode();
        let first = self.post(hc, Some(server_name), V1_PATH, offer).await?;
        match first.code {
            ResponseCode::OK => return Ok(ResponseCode::OK),
            ResponseCode::INTERESTED => {}
            code => return Err(OfferClientError::Unexpected { addr: hc, code }),
        }
        let info = Request::new(
            port,
            RequestBody::SegmentInfo(SegmentInfo {
                content_tag,
                content_info,
            }),
        )
        .encode();
        let r = self.post(hc, Some(server_name), V1_PATH, info).await?;
        expect_ok(hc, r)?;
        Ok(ResponseCode::INTERESTED)
    }

    async fn post(
        &self,
        hc: SocketAddr,
        tls_name: Option<&ServerName<'static>>,
        path: &'static str,
        body: Vec<u8>,
    ) -> Result<Response, OfferClientError> {
        let exchange = async {
            let tcp = TcpStream::connect(hc)
                .await
                .map_err(|source| OfferClientError::Connect { addr: hc, source })?;
            let _ = tcp.set_nodelay(true);
            match tls_name {
                None => exchange(hc, TokioIo::new(tcp), path, body).await,
                Some(name) => {
                    let config = self.tls.clone().ok_or(OfferClientError::NoTls)?;
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|source| OfferClientError::Connect { addr: hc, source })?;
                    exchange(hc, TokioIo::new(tls), path, body).await
                }
            }
        };
        tokio::time::timeout(OFFER_TIMEOUT, exchange)
            .await
            .map_err(|_| OfferClientError::Timeout { addr: hc })?
    }
}

fn expect_ok(hc: SocketAddr, r: Response) -> Result<(), OfferClientError> {
    if r.code == ResponseCode::OK {
        Ok(())
    } else {
        Err(OfferClientError::Unexpected {
            addr: hc,
            code: r.code,
        })
    }
}

async fn exchange<S>(
    hc: SocketAddr,
    io: TokioIo<S>,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Response, OfferClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |source| OfferClientError::Http { addr: hc, source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http_err)?;
    let conn = tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, hc.to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("a static path and a socket-address Host always make a valid request");
    let resp = sender.send_request(req).await.map_err(http_err)?;
    if resp.status() != StatusCode::OK {
        conn.abort();
        return Err(OfferClientError::Status {
            addr: hc,
            status: resp.status(),
        });
    }
    // A PCHC response is 5 bytes; anything much longer is not one.
    let bytes = Limited::new(resp.into_body(), RESPONSE_LEN * 16)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(source) => OfferClientError::Http {
                addr: hc,
                source: *source,
            },
            Err(_) => OfferClientError::Garbage {
                addr: hc,
                source: DecodeError::LimitExceeded {
                    what: "pchc response body",
                    max: (RESPONSE_LEN * 16) as u64,
                },
            },
        })?
        .to_bytes();
    conn.abort();
    Response::decode(&bytes).map_err(|source| OfferClientError::Garbage { addr: hc, source })
}

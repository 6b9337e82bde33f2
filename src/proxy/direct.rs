//! Fresh store hits answered on the socket ([`crate::net::direct`]).
//!
//! A GET whose content information is remembered and fresh (RFC 9111) is
//! answered here: the same checks, headers, body stream and accounting as
//! [`Proxy::handle`] (shared code: [`Proxy::upstream_request`],
//! [`bypass_reason`], [`Proxy::prepare_body`], [`Guard`]), written straight
//! to the connection instead of through hyper's dispatcher. Everything
//! else — misses, revalidations, bypasses, errors to answer, a body that
//! cannot start — is declined before anything is written, and hyper's path
//! answers it from scratch.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use tokio::net::TcpStream;

use super::{bypass_reason, not_modified_headers, CacheOutcome, Guard, Proxy};
use crate::net::direct::{write_body, write_head, Answered, DirectPath};
use crate::proxy::headers::ByteRange;

/// Most body bytes gathered into one `writev`.
const WRITE_BATCH: usize = 512 * 1024;

/// The proxy's [`DirectPath`]: fresh hits.
#[derive(Debug, Clone)]
pub struct DirectHits(pub Proxy);

impl DirectPath for DirectHits {
    fn answer<'a>(
        &'a self,
        req: Parts,
        peer: SocketAddr,
        out: &'a mut TcpStream,
        closing: bool,
    ) -> BoxFuture<'a, Answered> {
        Box::pin(self.0.answer_direct(req, peer, out, closing))
    }
}

impl Proxy {
    async fn answer_direct(
        &self,
        mut parts: Parts,
        peer: SocketAddr,
        out: &mut TcpStream,
        closing: bool,
    ) -> Answered {
        let Some(fresh) = self.inner.fresh.as_ref() else {
            return Answered::Declined;
        };
        if parts.method != Method::GET {
            return Answered::Declined;
        }
        let display = crate::activity::display_target(&parts.uri);
        if self.upstream_request(&mut parts).is_err() || bypass_reason(&parts).is_some() {
            return Answered::Declined;
        }
        let Some(entry) = fresh.get(&parts.uri.to_string()) else {
            return Answered::Declined;
        };
        let now = SystemTime::now();
        if !entry.is_fresh(&parts.headers, now) {
            return Answered::Declined;
        }
        let age = entry.age(now).as_secs();
        if entry.not_modified_for(&parts.headers) {
            self.freshness("fresh");
            self.inner.metrics.proxy_direct_responses.inc();
            let mut guard = Guard::new(self.inner.metrics.clone(), Method::GET, peer, display);
            guard.outcome = CacheOutcome::Hit;
            let headers = not_modified_headers(&entry, age);
            return match write_head(out, StatusCode::NOT_MODIFIED, &headers, closing, &[]).await {
                Ok(()) => Answered::Done,
                Err(_) => Answered::Broken,
            };
        }
        let client_range = parts
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ByteRange::parse);
        let mut headers = entry.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(age));
        let Ok(body) = self
            .prepare_body(
                &parts,
                entry.segments.clone(),
                entry.total,
                headers,
                client_range,
            )
            .await
        else {
            return Answered::Declined;
        };
        self.freshness("fresh");
        self.inner.metrics.proxy_direct_responses.inc();
        let mut guard = Guard::new(self.inner.metrics.clone(), Method::GET, peer, display);
        guard.planned = true;
        let mut left = body.len;
        let first = match body.first {
            Some(chunk) => {
                guard.served(chunk.source, chunk.data.len());
                left = left.saturating_sub(chunk.data.len() as u64);
                chunk.data
            }
            None => Bytes::new(),
        };
        if write_head(out, body.status, &body.headers, closing, &first)
            .await
            .is_err()
        {
            return Answered::Broken;
        }
        drop(first);
        let mut rest = body.rest;
        let mut batch: Vec<Bytes> = Vec::new();
        while left > 0 {
            // Wait for one chunk, then take what is ready at once (blocks
            // read ahead from the page cache), up to WRITE_BATCH bytes.
            let mut next = rest.next().await;
            let mut batched = 0usize;
            loop {
                match next {
                    Some(Ok(chunk)) => {
                        guard.served(chunk.source, chunk.data.len());
                        left = left.saturating_sub(chunk.data.len() as u64);
                        batched += chunk.data.len();
                        batch.push(chunk.data);
                    }
                    Some(Err(e)) => {
                        guard.body_failed(&e);
                        return Answered::Broken;
                    }
                    None => {
                        guard.failed = true;
                        tracing::warn!(%peer, "segment stream ended before the announced length");
                        return Answered::Broken;
                    }
                }
                if left == 0 || batched >= WRITE_BATCH {
                    break;
                }
                match rest.next().now_or_never() {
                    Some(n) => next = n,
                    None => break,
                }
            }
            if write_body(out, &mut batch).await.is_err() {
                return Answered::Broken;
            }
        }
        Answered::Done
    }
}

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

use super::freshness::Entry;
use super::{
    bypass_reason, identity_headers, not_modified_headers, to_upstream, CacheOutcome, Guard, Proxy,
};
use crate::fetch::SourceKind;
use crate::net::direct::{
    write_body, write_cached_head, write_head, Answered, CachedHead, DirectPath,
};
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
    /// The whole body of `entry` if it is one block the store can hand over
    /// without waiting (verified when stored, CRC-checked when read).
    fn whole_block_now(&self, entry: &Entry) -> Option<Bytes> {
        let [seg] = &*entry.segments else {
            return None;
        };
        if seg.block_count() != 1 || seg.block_range(0) != Some(0..entry.total) {
            return None;
        }
        let data = self
            .inner
            .planner
            .store()
            .get_run_now(seg, 0, 1)?
            .into_iter()
            .next()?;
        (data.len() as u64 == entry.total).then_some(data)
    }

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
        // The upstream URL's text is the freshness key. The request head
        // itself is made the upstream one only when a body stream needs it:
        // the decisions below read end-to-end headers only (a hop-by-hop
        // `Upgrade` left in place can only make this path decline).
        let Some(key) = self.fresh_key(&parts.uri) else {
            return Answered::Declined;
        };
        if bypass_reason(&parts).is_some() {
            return Answered::Declined;
        }
        let Some(entry) = fresh.get(&key) else {
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
        if client_range.is_none() {
            if let Some(data) = self.whole_block_now(&entry) {
                // A whole one-block object the store hands over at once
                // (kept in memory, or in the page cache): no body stream.
                let head = entry.whole_answer_head(|h| {
                    let mut h = h.clone();
                    identity_headers(&mut h, StatusCode::OK, &(0..entry.total), entry.total);
                    CachedHead::new(StatusCode::OK, &h)
                });
                self.freshness("fresh");
                self.inner.metrics.proxy_direct_responses.inc();
                let mut guard = Guard::new(self.inner.metrics.clone(), Method::GET, peer, display);
                guard.planned = true;
                guard.served(SourceKind::Store, data.len());
                return match write_cached_head(out, head, age, closing, &data).await {
                    Ok(()) => Answered::Done,
                    Err(_) => Answered::Broken,
                };
            }
        }
        let Ok(target) = self.target(&parts.uri) else {
            return Answered::Declined;
        };
        let mut headers = entry.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(age));
        to_upstream(&mut parts, target);
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

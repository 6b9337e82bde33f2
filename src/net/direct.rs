//! HTTP/1.1 requests answered on the socket itself, before hyper sees the
//! connection: the proxy's fresh store hits.
//!
//! hyper serves every request well, but a small store hit spends more CPU
//! in generic machinery (dispatcher, boxed body, per-frame polling) than in
//! the kernel; nginx answers the same hit with a handful of syscalls. A
//! [`DirectPath`] gets each parsed request head first and either answers it
//! completely (status line, headers and body written here) or declines; on
//! the first decline the connection, with every byte read and not
//! consumed, goes to hyper for the rest of its life ([`Prefixed`]). So a
//! request is answered either wholly by the direct path or wholly by hyper.
//!
//! Only plain requests are candidates: HTTP/1.1, no request body, no
//! `Expect`, no `Connection` options other than `keep-alive`; anything
//! else (including HTTP/2's preface, malformed or oversized heads) goes to
//! hyper, which also owns the error answers. The listener's [`Limits`]
//! hold here too: a head must arrive complete within
//! `header_read_timeout` (idle keep-alive included) and within
//! `max_header_bytes`, else hyper gets the bytes and refuses them.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Limits;

/// Most header fields a direct request may have; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Initial read buffer; grows up to the listener's header limit.
const READ_CHUNK: usize = 8 * 1024;

/// What a [`DirectPath`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Not this path's to answer; nothing was written. hyper gets the
    /// connection, starting with this request.
    Declined,
    /// The complete response was written; the connection may carry on.
    Done,
    /// The response could not be completed (client gone, or the body
    /// failed after the head was sent): close the connection.
    Broken,
}

/// Answers some requests directly on the connection.
pub trait DirectPath: Send + Sync + 'static {
    /// Answer `req` (head only; candidates carry no body) from `peer` on
    /// `out`, or decline without writing anything. `closing`: the listener
    /// is shutting down, so the response should say `connection: close`.
    fn answer<'a>(
        &'a self,
        req: Parts,
        peer: SocketAddr,
        out: &'a mut TcpStream,
        closing: bool,
    ) -> BoxFuture<'a, Answered>;
}

/// A connection with the bytes already read from it.
#[derive(Debug)]
pub struct Prefixed {
    read: BytesMut,
    stream: TcpStream,
}

impl Prefixed {
    /// `stream`, whose next bytes are `read`.
    pub fn new(read: BytesMut, stream: TcpStream) -> Prefixed {
        Prefixed { read, stream }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serve the requests at the head of `stream` with `direct` while it
/// answers them. `Some`: hand the connection to hyper; `None`: it is done
/// (closed by the client, broken, timed out, or shutting down).
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    direct: &dyn DirectPath,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Option<Prefixed> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // One timer and one shutdown waiter per connection, re-armed per head
    // (not a new timer-wheel entry and waiter-list entry per read).
    let deadline = tokio::time::sleep(limits.header_read_timeout);
    let cancelled = shutdown.cancelled();
    tokio::pin!(deadline, cancelled);
    loop {
        // A complete head, or a reason to stop or hand over.
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + limits.header_read_timeout);
        let (req, head_len) = loop {
            match parse_head(&buf) {
                Head::Complete(req, len) => break (req, len),
                Head::Other => return Some(Prefixed::new(buf, stream)),
                Head::Partial if buf.len() >= limits.max_header_bytes => {
                    return Some(Prefixed::new(buf, stream));
                }
                Head::Partial => {}
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                // Idle between requests: close at shutdown; mid-head, finish
                // reading (the deadline bounds it).
                _ = &mut cancelled, if buf.is_empty() => return None,
                _ = &mut deadline => return None,
                r = stream.read_buf(&mut buf) => r,
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let closing = shutdown.is_cancelled();
        match direct.answer(req, peer, &mut stream, closing).await {
            Answered::Declined => return Some(Prefixed::new(buf, stream)),
            Answered::Broken => return None,
            Answered::Done => {
                buf.advance(head_len);
                if closing {
                    return None;
                }
            }
        }
    }
}

// A transient return value, moved once: boxing `Parts` would only add an
// allocation per request on the path this module exists to make cheap.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A candidate request and the length of its head.
    Complete(Parts, usize),
    /// More bytes needed.
    Partial,
    /// Not a candidate (or not valid): hyper's to answer.
    Other,
}

/// Parse one request head from the front of `buf`.
fn parse_head(buf: &[u8]) -> Head {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    };
    if req.version != Some(1) {
        return Head::Other;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Head::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Other;
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for f in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) else {
            return Head::Other;
        };
        headers.append(name, value);
    }
    if !plain_request(&headers) {
        return Head::Other;
    }
    let Ok(req) = Request::builder()
        .method(method)
        .uri(path)
        .version(Version::HTTP_11)
        .body(())
    else {
        return Head::Other;
    };
    let (mut parts, ()) = req.into_parts();
    parts.headers = headers;
    Head::Complete(parts, len)
}

/// No body, no `Expect`, no connection options but `keep-alive`.
fn plain_request(h: &HeaderMap) -> bool {
    if h.contains_key(header::TRANSFER_ENCODING) || h.contains_key(header::EXPECT) {
        return false;
    }
    if h.get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes() != b"0")
    {
        return false;
    }
    h.get_all(header::CONNECTION).iter().all(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .all(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
        })
    })
}

/// Write a response head (`date` added, `connection: close` when
/// `closing`) followed by `body` with as few syscalls as possible.
pub async fn write_head(
    out: &mut TcpStream,
    status: StatusCode,
    headers: &HeaderMap,
    closing: bool,
    body: &[u8],
) -> io::Result<()> {
    let mut head = Vec::with_capacity(256 + headers.len() * 48);
    push_head(&mut head, status, headers, None);
    push_tail(
        &mut head,
        None,
        !headers.contains_key(header::DATE),
        closing,
    );
    write_all_three(out, &head, &[], body).await
}

/// A response head prepared once and answered many times with
/// [`write_cached_head`]: the status line and `headers` without any `age`,
/// recording whether they carry a `date`.
#[derive(Debug, Clone)]
pub struct CachedHead {
    bytes: Vec<u8>,
    has_date: bool,
}

impl CachedHead {
    /// The head for `status` and `headers` (an `age` among them is left out:
    /// [`write_cached_head`] writes the current one).
    pub fn new(status: StatusCode, headers: &HeaderMap) -> CachedHead {
        let mut bytes = Vec::with_capacity(64 + headers.len() * 48);
        push_head(&mut bytes, status, headers, Some(&header::AGE));
        CachedHead {
            bytes,
            has_date: headers.contains_key(header::DATE),
        }
    }
}

/// Write `head` with `age` (and `date` unless it has one, `connection:
/// close` when `closing`) followed by `body`: one `writev` in the usual
/// case, with nothing to format but the two changing fields.
pub async fn write_cached_head(
    out: &mut TcpStream,
    head: &CachedHead,
    age: u64,
    closing: bool,
    body: &[u8],
) -> io::Result<()> {
    let mut tail = Vec::with_capacity(96);
    push_tail(&mut tail, Some(age), !head.has_date, closing);
    write_all_three(out, &head.bytes, &tail, body).await
}

/// Append the status line and the header fields (but `skip`).
fn push_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    skip: Option<&HeaderName>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if Some(name) != skip {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Append the fields that change per answer and the blank line ending the head.
fn push_tail(out: &mut Vec<u8>, age: Option<u64>, date: bool, closing: bool) {
    if let Some(age) = age {
        out.extend_from_slice(b"age: ");
        out.extend_from_slice(itoa_u64(age, &mut [0u8; 20]));
        out.extend_from_slice(b"\r\n");
    }
    if date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

/// Append the current IMF-fixdate, formatted once per second per thread
/// (as hyper does).
fn push_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

/// Write `a`, `b` then `c`, gathering what is left of them into each `writev`.
async fn write_all_three(out: &mut TcpStream, a: &[u8], b: &[u8], c: &[u8]) -> io::Result<()> {
    let mut parts = [a, b, c];
    while parts.iter().any(|p| !p.is_empty()) {
        let [a, b, c] = parts;
        let mut n = out
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for p in &mut parts {
            let k = n.min(p.len());
            *p = p.get(k..).unwrap_or_default();
            n -= k;
        }
    }
    Ok(())
}

/// Write body chunks, as many per `writev` as the socket takes. Few large
/// writes matter on loopback and in VMs: every write can wake the reader,
/// and a wake-up costs more than copying a 64 KiB block.
pub async fn write_body(out: &mut TcpStream, chunks: &mut Vec<Bytes>) -> io::Result<()> {
    let mut first = 0usize;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks
            .get(first..)
            .unwrap_or_default()
            .iter()
            .map(|c| IoSlice::new(c))
            .collect();
        let mut n = out.write_vectored(&slices).await?;
        drop(slices);
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(c) = chunks.get_mut(first) else {
                break;
            };
            if n >= c.len() {
                n -= c.len();
                first += 1;
            } else {
                c.advance(n);
                n = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

/// Shared handle to a direct path.
pub type SharedDirect = Arc<dyn DirectPath>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Response;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::net::tests::read_to_close;
    use crate::net::{full, serve_on, Front, DRAIN_TIMEOUT};

    /// Answers `GET /direct…` itself with `direct <path>`; declines the rest.
    struct Echo;

    impl DirectPath for Echo {
        fn answer<'a>(
            &'a self,
            req: Parts,
            _peer: SocketAddr,
            out: &'a mut TcpStream,
            closing: bool,
        ) -> BoxFuture<'a, Answered> {
            Box::pin(async move {
                if req.method != Method::GET || !req.uri.path().starts_with("/direct") {
                    return Answered::Declined;
                }
                let body = format!("direct {}", req.uri.path());
                let mut h = HeaderMap::new();
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                match write_head(out, StatusCode::OK, &h, closing, body.as_bytes()).await {
                    Ok(()) => Answered::Done,
                    Err(_) => Answered::Broken,
                }
            })
        }
    }

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_on(
            listener,
            Front::Direct(Arc::new(Echo)),
            |req: Request<hyper::body::Incoming>, _peer| async move {
                use http_body_util::BodyExt;
                let (parts, body) = req.into_parts();
                let n = body.collect().await.map_or(0, |b| b.to_bytes().len());
                let text = format!("hyper {} {} {n}", parts.method, parts.uri.path());
                Response::new(full(text))
            },
            limits,
            stop.clone(),
            DRAIN_TIMEOUT,
        ));
        (addr, stop)
    }

    /// Bodies of the responses in `raw`, in order (every response has a
    /// Content-Length).
    fn bodies(raw: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = raw;
        while let Some(end) = rest.find("\r\n\r\n") {
            let head = &rest[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            let body_start = end + 4;
            out.push(rest[body_start..body_start + len].to_string());
            rest = &rest[body_start + len..];
        }
        out
    }

    mod parse {
        use super::super::{parse_head, Head};
        use proptest::prelude::*;

        proptest! {
            /// Any bytes: an answer, never a panic; a head never longer
            /// than the input.
            #[test]
            fn parse_head_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                if let Head::Complete(_, len) = parse_head(&bytes) {
                    prop_assert!(len <= bytes.len());
                }
            }

            /// A plain GET with arbitrary extra fields is a candidate with
            /// its exact head length; every strict prefix is partial;
            /// trailing bytes (a pipelined request) are not consumed.
            #[test]
            fn plain_gets_parse_with_their_exact_length(
                path in "/[a-z0-9/._-]{0,40}",
                fields in proptest::collection::vec(("x-[a-z]{1,10}", "[ -~&&[^:]]{0,20}"), 0..8),
                trailing in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let mut head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
                for (n, v) in &fields {
                    head.push_str(&format!("{n}: {}\r\n", v.trim()));
                }
                head.push_str("\r\n");
                let mut bytes = head.clone().into_bytes();
                bytes.extend_from_slice(&trailing);
                match parse_head(&bytes) {
                    Head::Complete(parts, len) => {
                        prop_assert_eq!(len, head.len());
                        prop_assert_eq!(parts.uri.path(), path.as_str());
                        prop_assert_eq!(parts.method, http::Method::GET);
                    }
                    _ => prop_assert!(false, "not a candidate: {head:?}"),
                }
                for cut in 0..head.len() {
                    prop_assert!(matches!(parse_head(&bytes[..cut]), Head::Partial), "cut {cut}");
                }
            }
        }
    }

    #[test]
    fn itoa_writes_decimal() {
        for n in [0u64, 7, 10, 99, 3600, 1_000_000_007, u64::MAX] {
            assert_eq!(itoa_u64(n, &mut [0u8; 20]), n.to_string().as_bytes());
        }
    }

    #[tokio::test]
    async fn cached_heads_carry_the_current_age_date_and_connection_and_a_big_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::AGE, HeaderValue::from_static("999"));
        let mut dated = h.clone();
        dated.insert(
            header::DATE,
            HeaderValue::from_static("Sun, 29 Nov 2026 00:00:00 GMT"),
        );
        let plain = CachedHead::new(StatusCode::OK, &h);
        let with_date = CachedHead::new(StatusCode::PARTIAL_CONTENT, &dated);
        // Bigger than a socket buffer: the writes come back partial.
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            write_cached_head(&mut s, &plain, 42, false, b"abc")
                .await
                .unwrap();
            write_cached_head(&mut s, &with_date, 0, true, &sent)
                .await
                .unwrap();
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let first_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let first = std::str::from_utf8(&got[..first_end]).unwrap();
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(
            first.contains("\r\ncontent-type: text/plain\r\n"),
            "{first}"
        );
        assert!(first.contains("\r\nage: 42\r\n"), "{first}");
        assert!(
            !first.contains("999"),
            "the stored age is replaced: {first}"
        );
        assert!(first.contains("\r\ndate: "), "{first}");
        assert!(!first.contains("connection"), "{first}");
        assert_eq!(&got[first_end..first_end + 3], b"abc");
        let rest = &got[first_end + 3..];
        let second_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let second = std::str::from_utf8(&rest[..second_end]).unwrap();
        assert!(
            second.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{second}"
        );
        assert!(second.contains("\r\nage: 0\r\n"), "{second}");
        assert_eq!(second.matches("date: ").count(), 1, "{second}");
        assert!(
            second.contains("date: Sun, 29 Nov 2026 00:00:00 GMT\r\n"),
            "{second}"
        );
        assert!(second.contains("\r\nconnection: close\r\n"), "{second}");
        assert!(rest[second_end..] == body[..], "body differs");
    }

    #[tokio::test]
    async fn write_body_delivers_every_chunk_in_order_through_partial_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sizes = [1usize, 65_536, 0, 300_000, 7, 1_000_000, 65_536, 3];
        let chunks: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>()))
            .collect();
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut batch = chunks;
            write_body(&mut s, &mut batch).await.unwrap();
            assert!(batch.is_empty());
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // A slow reader: the socket fills, so writes come back partial.
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() % 65_536 < 4096 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        writer.await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_across_the_hand_over() {
        let (addr, _stop) = start(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Two direct answers, then one for hyper (which keeps the
        // connection, including the request after it), all in one write.
        s.write_all(
            b"GET /direct/a HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /direct/b HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              GET /direct/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let raw = read_to_close(&mut s).await;
        assert_eq!(
            bodies(&raw),
            [
                "direct /direct/a",
                "direct /direct/b",
                "hyper POST /p 5",
                "hyper GET /direct/c 0"
            ],
            "{raw}"
        );
        assert!(
            raw.contains("\r\ndate: "),
            "direct answers carry a date: {raw}"
        );
    }

    #[tokio::test]
    async fn a_head_split_over_many_writes_is_still_answered_directly() {
        let (addr, _stop) = start(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for part in [
            &b"GET /dir"[..],
            b"ect/x HTTP/1.1\r\nHo",
            b"st: x\r\n",
            b"\r\n",
        ] {
            s.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.ends_with("direct /direct/x"), "{got}");
    }

    #[tokio::test]
    async fn requests_that_are_not_plain_go_to_hyper() {
        let (addr, _stop) = start(Limits::default()).await;
        for req in [
            // HTTP/1.0, a body, Expect, a connection option, chunked.
            &b"GET /direct/a HTTP/1.0\r\n\r\n"[..],
            b"GET /direct/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            b"GET /direct/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            b"GET /direct/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /direct/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req).await.unwrap();
            let raw = read_to_close(&mut s).await;
            assert!(
                raw.contains("hyper GET /direct/a"),
                "{}: {raw}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[tokio::test]
    async fn malformed_and_oversized_heads_get_hypers_refusal() {
        let (addr, _stop) = start(Limits {
            max_header_bytes: 8192,
            ..Limits::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /direct/a HTTP/1.1\r\nBad Header\r\n\r\n")
            .await
            .unwrap();
        let raw = read_to_close(&mut s).await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");

        let mut s = TcpStream::connect(addr).await.unwrap();
        let big = format!(
            "GET /direct/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        // The server may close before reading it all.
        let _ = s.write_all(big.as_bytes()).await;
        let raw = read_to_close(&mut s).await;
        assert!(!raw.contains("direct /direct/a"), "{raw}");
        assert!(raw.is_empty() || raw.starts_with("HTTP/1.1 431"), "{raw}");
    }

    #[tokio::test]
    async fn idle_and_trickling_connections_are_closed_at_the_header_deadline() {
        let (addr, _stop) = start(Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        // Idle after one answered request.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /direct/a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let raw = read_to_close(&mut s).await;
        assert_eq!(bodies(&raw), ["direct /direct/a"]);
        // A head that never completes.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /direct/a HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let raw = read_to_close(&mut s).await;
        assert!(!raw.contains("direct /direct/a"), "{raw}");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_direct_connections_and_the_listener() {
        let (addr, stop) = start(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /direct/a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("direct /direct/a"));
        stop.cancel();
        // The idle keep-alive connection is closed without waiting for the
        // header deadline (30 s).
        let rest = read_to_close(&mut s).await;
        assert!(rest.is_empty(), "{rest}");
        let mut refused = false;
        for _ in 0..50 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "listener still accepting after shutdown");
    }
}

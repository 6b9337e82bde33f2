//! A small HTTP/1.1 client for PCCRR's POSTs, with a pool of kept-alive
//! connections per peer.
//!
//! Each exchange runs on the calling task: one write of the request, reads
//! straight into the buffer the caller keeps (the MSG_BLK is then decrypted
//! where it lies). No connection task, no channel between tasks, no copy of
//! the body: with one POST per 64 KiB block these were a large part of a
//! bulk peer transfer's CPU in `hyper_util`'s pooled client.
//!
//! Responses are framed by `Content-Length`, `Transfer-Encoding: chunked`
//! or the end of the connection; interim (1xx) responses are skipped. The
//! head is bounded ([`MAX_HEAD`]), the body by the caller's limit; anything
//! else is an error. A connection goes back to the pool only after a
//! complete, well-framed answer that does not ask to close. A pooled
//! connection the peer closed meanwhile fails before any answer byte: the
//! request (PCCRR requests are idempotent) is then sent once more on a new
//! connection. The pool is bounded per peer and in peers, and idle
//! connections older than the idle timeout are dropped when met.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bufpool::{BufPool, PooledBuf};

/// Longest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers parsed in one response head.
const MAX_HEADERS: usize = 64;
/// Most peers with idle connections kept.
const MAX_POOLED_PEERS: usize = 256;
/// First read's buffer: a whole MSG_BLK of a 64 KiB block and its head.
const FIRST_READ: usize = 80 * 1024;
/// Response buffers kept for reuse: a bulk peer transfer has up to 32
/// exchanges per peer in flight and their blocks queued for the store.
const POOLED_RESPONSES: usize = 128;

/// Recycled response buffers. One fresh 80 KiB allocation per 64 KiB block
/// faulted zeroed pages in (2 MiB at a time with transparent huge pages):
/// 6 % of the receiving daemon's samples in a 1 GiB peer transfer.
fn response_pool() -> &'static Arc<BufPool> {
    static POOL: LazyLock<Arc<BufPool>> =
        LazyLock::new(|| BufPool::new(FIRST_READ, POOLED_RESPONSES));
    &POOL
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The answer is not well-formed HTTP/1.x (or breaks a bound).
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    /// The body is longer than the caller's limit.
    #[error("response body over {0} bytes")]
    TooLarge(usize),
}

/// A response: status and the whole buffer with the body's range in it.
#[derive(Debug)]
pub struct Http1Response {
    /// Status code.
    pub status: u16,
    /// The read buffer (recycled when dropped); the body is `buf[body]`.
    pub buf: PooledBuf,
    /// Where the body is in `buf`.
    pub body: Range<usize>,
}

/// Idle connections by peer.
#[derive(Debug)]
pub struct Http1Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    max_idle_per_peer: usize,
    idle_timeout: Duration,
}

impl Http1Pool {
    /// A pool keeping at most `max_idle_per_peer` idle connections to a
    /// peer, each at most `idle_timeout`.
    pub fn new(max_idle_per_peer: usize, idle_timeout: Duration) -> Self {
        Http1Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_peer,
            idle_timeout,
        }
    }

    fn checkout(&self, peer: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&peer)?;
        let now = Instant::now();
        while let Some((stream, since)) = list.pop() {
            if now.duration_since(since) < self.idle_timeout {
                return Some(stream);
            }
        }
        idle.remove(&peer);
        None
    }

    fn checkin(&self, peer: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !idle.contains_key(&peer) && idle.len() >= MAX_POOLED_PEERS {
            let timeout = self.idle_timeout;
            idle.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) < timeout);
                !list.is_empty()
            });
            if idle.len() >= MAX_POOLED_PEERS {
                return;
            }
        }
        let list = idle.entry(peer).or_default();
        let timeout = self.idle_timeout;
        list.retain(|(_, since)| now.duration_since(*since) < timeout);
        if list.len() < self.max_idle_per_peer {
            list.push((stream, now));
        }
    }

    /// POST `body` to `path` on `peer`; the body of the answer must not
    /// exceed `limit` bytes. The caller bounds the whole call in time.
    pub async fn post(
        &self,
        peer: SocketAddr,
        path: &str,
        body: &[u8],
        limit: usize,
    ) -> Result<Http1Response, Http1Error> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {peer}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        if let Some(mut stream) = self.checkout(peer) {
            match exchange(&mut stream, &request, limit).await {
                Ok((resp, keep)) => {
                    if keep {
                        self.checkin(peer, stream);
                    }
                    return Ok(resp);
                }
                // Closed by the peer while idle: nothing was answered.
                Err(Attempt::Stale) => {}
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        let mut stream = TcpStream::connect(peer).await?;
        stream.set_nodelay(true)?;
        match exchange(&mut stream, &request, limit).await {
            Ok((resp, keep)) => {
                if keep {
                    self.checkin(peer, stream);
                }
                Ok(resp)
            }
            Err(Attempt::Stale) => Err(Http1Error::Io(io::ErrorKind::UnexpectedEof.into())),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }
}

/// How one attempt failed.
enum Attempt {
    /// The connection failed before any byte of an answer.
    Stale,
    /// Anything else.
    Failed(Http1Error),
}

impl From<Http1Error> for Attempt {
    fn from(e: Http1Error) -> Self {
        Attempt::Failed(e)
    }
}

/// Read more into `buf`'s spare capacity (growing it by at least `want`
/// when full); `Ok(0)` at the end of the stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    if buf.len() == buf.capacity() {
        buf.reserve(want.max(4096));
    }
    stream.read_buf(buf).await
}

/// One request and its answer on `stream`: the response and whether the
/// connection may be reused.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    limit: usize,
) -> Result<(Http1Response, bool), Attempt> {
    if stream.write_all(request).await.is_err() {
        return Err(Attempt::Stale);
    }
    let mut pooled = response_pool().take_empty();
    let buf: &mut Vec<u8> = &mut pooled;
    let mut start = 0usize;
    loop {
        // Read until a complete head is in buf[start..].
        let (status, head_len, framing, keep) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp
                .parse(buf.get(start..).unwrap_or_default())
                .map_err(|_| Http1Error::Malformed("bad response head"))?;
            if let httparse::Status::Complete(n) = parsed {
                let status = resp.code.ok_or(Http1Error::Malformed("no status"))?;
                let (framing, keep) = framing(&resp)?;
                break (status, n, framing, keep);
            }
            if buf.len() - start > MAX_HEAD {
                return Err(Http1Error::Malformed("response head too long").into());
            }
            match read_more(stream, buf, 4096).await {
                Ok(0) if buf.is_empty() => return Err(Attempt::Stale),
                Err(_) if buf.is_empty() => return Err(Attempt::Stale),
                Ok(0) => return Err(Http1Error::Malformed("connection closed in the head").into()),
                Ok(_) => {}
                Err(e) => return Err(Http1Error::Io(e).into()),
            }
        };
        let body_start = start + head_len;
        if (100..200).contains(&status) {
            // Interim answer (100 Continue, …): the real one follows.
            start = body_start;
            continue;
        }
        let (body, keep) = match framing {
            Framing::Length(n) => {
                if n > limit {
                    return Err(Http1Error::TooLarge(limit).into());
                }
                let end = body_start + n;
                if buf.capacity() < end {
                    buf.reserve_exact(end - buf.len());
                }
                while buf.len() < end {
                    let got = stream.read_buf(&mut *buf).await.map_err(Http1Error::Io)?;
                    if got == 0 {
                        return Err(Http1Error::Malformed("connection closed in the body").into());
                    }
                }
                // Bytes past the body answer nothing we asked: do not reuse
                // a connection that carries them.
                let keep = keep && buf.len() == end;
                (body_start..end, keep)
            }
            Framing::Chunked => {
                let body = read_chunked(stream, buf, body_start, limit).await?;
                (body, keep)
            }
            Framing::UntilClose => {
                loop {
                    if buf.len() - body_start > limit {
                        return Err(Http1Error::TooLarge(limit).into());
                    }
                    let n = read_more(stream, buf, 16 * 1024)
                        .await
                        .map_err(Http1Error::Io)?;
                    if n == 0 {
                        break;
                    }
                }
                (body_start..buf.len(), false)
            }
        };
        return Ok((
            Http1Response {
                status,
                buf: pooled,
                body,
            },
            keep,
        ));
    }
}

/// How a response body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The body framing and whether the connection stays open afterwards.
fn framing(resp: &httparse::Response<'_, '_>) -> Result<(Framing, bool), Http1Error> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = resp.version != Some(1);
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Http1Error::Malformed("header value is not text"))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| Http1Error::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Http1Error::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(Http1Error::Malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && resp.version == Some(0) {
                    close = false;
                }
            }
        }
    }
    let code = resp.code.unwrap_or(0);
    if code == 204 || code == 304 || (100..200).contains(&code) {
        return Ok((Framing::Length(0), !close));
    }
    match (chunked, length) {
        (true, Some(_)) => Err(Http1Error::Malformed(
            "both Content-Length and Transfer-Encoding",
        )),
        (true, None) => Ok((Framing::Chunked, !close)),
        (false, Some(n)) => Ok((Framing::Length(n), !close)),
        (false, None) => Ok((Framing::UntilClose, false)),
    }
}

/// Decode a chunked body that starts at `buf[at..]` (reading more as
/// needed) into a fresh range at the end of `buf`; trailers are skipped.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    at: usize,
    limit: usize,
) -> Result<Range<usize>, Attempt> {
    let mut raw = buf.split_off(at);
    let mut pos = 0usize;
    let mut body: Vec<u8> = Vec::new();
    loop {
        // A chunk-size line.
        let line_end = loop {
            if let Some(i) = raw
                .get(pos..)
                .and_then(|r| r.windows(2).position(|w| w == b"\r\n"))
            {
                break pos + i;
            }
            if raw.len() - pos > 1024 {
                return Err(Http1Error::Malformed("chunk size line too long").into());
            }
            if read_more(stream, &mut raw, 16 * 1024)
                .await
                .map_err(Http1Error::Io)?
                == 0
            {
                return Err(Http1Error::Malformed("connection closed in a chunk").into());
            }
        };
        let line = raw.get(pos..line_end).unwrap_or_default();
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
            .ok_or(Http1Error::Malformed("bad chunk size"))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                if let Some(i) = raw
                    .get(pos..)
                    .and_then(|r| r.windows(2).position(|w| w == b"\r\n"))
                {
                    if i == 0 {
                        let start = buf.len();
                        buf.extend_from_slice(&body);
                        return Ok(start..buf.len());
                    }
                    pos += i + 2;
                    continue;
                }
                if raw.len() - pos > MAX_HEAD {
                    return Err(Http1Error::Malformed("trailers too long").into());
                }
                if read_more(stream, &mut raw, 1024)
                    .await
                    .map_err(Http1Error::Io)?
                    == 0
                {
                    return Err(Http1Error::Malformed("connection closed in trailers").into());
                }
            }
        }
        if body.len().saturating_add(size) > limit {
            return Err(Http1Error::TooLarge(limit).into());
        }
        let need = pos.saturating_add(size).saturating_add(2);
        while raw.len() < need {
            let missing = need - raw.len();
            if read_more(stream, &mut raw, missing)
                .await
                .map_err(Http1Error::Io)?
                == 0
            {
                return Err(Http1Error::Malformed("connection closed in a chunk").into());
            }
        }
        body.extend_from_slice(raw.get(pos..pos + size).unwrap_or_default());
        if raw.get(pos + size..need) != Some(b"\r\n") {
            return Err(Http1Error::Malformed("chunk not followed by CRLF").into());
        }
        pos = need;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on each connection with the next
    /// of `answers` (raw bytes), then closes the connection when told.
    async fn server(answers: Vec<(&'static [u8], bool)>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                loop {
                    // Read one request (head + Content-Length body).
                    let mut req = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let complete = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break false;
                        }
                        req.extend_from_slice(&chunk[..n]);
                        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&req[..i]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map(|v| v.trim().parse().unwrap())
                                .unwrap_or(0);
                            if req.len() >= i + 4 + len {
                                break true;
                            }
                        }
                    };
                    if !complete {
                        break;
                    }
                    let Some((answer, close)) = answers.next() else {
                        return;
                    };
                    s.write_all(answer).await.unwrap();
                    if close {
                        break;
                    }
                }
            }
        });
        addr
    }

    fn pool() -> Http1Pool {
        Http1Pool::new(4, Duration::from_secs(30))
    }

    fn body(r: &Http1Response) -> &[u8] {
        &r.buf[r.body.clone()]
    }

    #[tokio::test]
    async fn content_length_answers_reuse_the_connection() {
        let addr = server(vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", false),
        ])
        .await;
        let p = pool();
        let r = p.post(addr, "/x", b"req", 100).await.unwrap();
        assert_eq!((r.status, body(&r)), (200, &b"hello"[..]));
        assert_eq!(p.idle.lock().unwrap().get(&addr).map(Vec::len), Some(1));
        let r = p.post(addr, "/x", b"req", 100).await.unwrap();
        assert_eq!(body(&r), b"abc");
        // Taken from the pool and put back: still one connection.
        assert_eq!(p.idle.lock().unwrap().get(&addr).map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn chunked_interim_and_status_are_understood() {
        let addr = server(vec![
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", false),
        ])
        .await;
        let p = pool();
        let r = p.post(addr, "/x", b"", 100).await.unwrap();
        assert_eq!((r.status, body(&r)), (200, &b"wikipedia"[..]));
        let r = p.post(addr, "/x", b"", 100).await.unwrap();
        assert_eq!((r.status, body(&r)), (503, &b""[..]));
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_by_the_peer_is_replaced() {
        // Answer, then close: the pooled connection is dead, the next
        // request goes out once more on a new one.
        let addr = server(vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb", false),
        ])
        .await;
        let p = pool();
        assert_eq!(body(&p.post(addr, "/x", b"", 10).await.unwrap()), b"a");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(body(&p.post(addr, "/x", b"", 10).await.unwrap()), b"b");
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close_are_not_pooled() {
        let addr = server(vec![(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true)]).await;
        let p = pool();
        let r = p.post(addr, "/x", b"", 100).await.unwrap();
        assert_eq!(body(&r), b"until the end");
        assert!(p.idle.lock().unwrap().get(&addr).is_none());
        let addr = server(vec![(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            true,
        )])
        .await;
        assert_eq!(body(&p.post(addr, "/x", b"", 100).await.unwrap()), b"ok");
        assert!(p.idle.lock().unwrap().get(&addr).is_none());
    }

    #[tokio::test]
    async fn hostile_answers_are_errors() {
        let cases: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
        ];
        for (i, answer) in cases.into_iter().enumerate() {
            let addr = server(vec![(answer, true)]).await;
            let r = pool().post(addr, "/x", b"", 100).await;
            assert!(r.is_err(), "case {i}: {r:?}");
        }
        // A head without an end, longer than the bound.
        let long: &'static [u8] = Box::leak(
            [
                &b"HTTP/1.1 200 OK\r\n"[..],
                &b"X: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n".repeat(1000),
            ]
            .concat()
            .into_boxed_slice(),
        );
        let addr = server(vec![(long, false)]).await;
        let r = pool().post(addr, "/x", b"", 100).await;
        assert!(
            matches!(r, Err(Http1Error::Malformed(_))),
            "long head: {r:?}"
        );
    }
}

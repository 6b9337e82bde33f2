//! `branchcache demo`: the quickest way to see the product work.
//!
//! On loopback, in one process: an origin serving a generated file, a
//! publisher in front of it (content information), and a branch proxy in
//! front of the publisher, each with its own store in a temporary directory.
//! The file is downloaded twice through the proxy; the report says what came
//! from where (WAN vs store bytes) and how long each download took. Nothing
//! listens beyond 127.0.0.1 and the directory is removed afterwards.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{App, StartError};
use crate::config::{Config, ConfigError};
use crate::fetch::SourceKind;
use crate::metrics::Metrics;
use crate::net::{full, Body};
use crate::status::human_bytes;

/// Longest wait for the first download's blocks to reach the proxy's store.
const STORE_WAIT: Duration = Duration::from_secs(30);
/// Longest a demo download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest demo file (it is held in memory).
pub const MAX_DEMO_SIZE: u64 = 1 << 30;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temporary directory or a socket could not be set up.
    #[error("demo setup: {0}")]
    Setup(#[from] std::io::Error),
    /// A generated configuration was rejected (a bug).
    #[error("demo config: {0}")]
    Config(#[from] ConfigError),
    /// A role did not start.
    #[error("demo start: {0}")]
    Start(#[from] StartError),
    /// A download through the proxy failed or was wrong.
    #[error("download {n}: {reason}")]
    Download {
        /// 1 (cold) or 2 (warm).
        n: u32,
        /// What went wrong.
        reason: String,
    },
    /// The demo size is 0 or larger than [`MAX_DEMO_SIZE`].
    #[error("size must be between 1 byte and {}", human_bytes(MAX_DEMO_SIZE))]
    Size,
}

/// One download through the proxy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Download {
    /// Wall time from request to the last body byte.
    pub elapsed: Duration,
    /// Body bytes from the proxy's store.
    pub from_store: u64,
    /// Body bytes the proxy fetched from the origin (through the publisher).
    pub from_origin: u64,
    /// Bytes received over the "WAN" (origin bodies and content information).
    pub wan_bytes: u64,
    /// Of which content information.
    pub content_information: u64,
}

/// What the demo measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// Size of the generated file.
    pub size: u64,
    /// Where the origin, publisher and proxy listened.
    pub origin: SocketAddr,
    /// Publisher address.
    pub publisher: SocketAddr,
    /// Proxy address.
    pub proxy: SocketAddr,
    /// The cold download.
    pub cold: Download,
    /// The warm download.
    pub warm: Download,
}

impl DemoReport {
    /// The human-readable account `branchcache demo` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "origin     http://{}/demo.bin  ({} of generated data)",
            self.origin,
            human_bytes(self.size)
        );
        let _ = writeln!(
            s,
            "publisher  http://{}  (answers Accept-Encoding: peerdist with content information)",
            self.publisher
        );
        let _ = writeln!(
            s,
            "proxy      http://{}  (the branch cache clients talk to)",
            self.proxy
        );
        let _ = writeln!(s);
        for (name, d) in [("1st (cold)", &self.cold), ("2nd (warm)", &self.warm)] {
            let _ = writeln!(
                s,
                "{name} download: {} in {:.3} s  | from store {:>10} | from origin {:>10} | WAN {:>10} (content information {})",
                human_bytes(self.size),
                d.elapsed.as_secs_f64(),
                human_bytes(d.from_store),
                human_bytes(d.from_origin),
                human_bytes(d.wan_bytes),
                human_bytes(d.content_information),
            );
        }
        let saved = (self.cold.wan_bytes.saturating_sub(self.warm.wan_bytes)) as f64
            / self.cold.wan_bytes.max(1) as f64;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "both downloads byte-identical to the origin's file; the warm one crossed the WAN with {} instead of {} ({:.2} % saved)",
            human_bytes(self.warm.wan_bytes),
            human_bytes(self.cold.wan_bytes),
            saved * 100.0
        );
        s
    }
}

/// Run the demo with a file of `size` bytes in a fresh directory under `tmp`.
pub async fn run(size: u64, tmp: &Path) -> Result<DemoReport, DemoError> {
    if size == 0 || size > MAX_DEMO_SIZE {
        return Err(DemoError::Size);
    }
    let dir = tmp.join(format!(
        "branchcache-demo-{}-{}",
        std::process::id(),
        crate::activity::unix_ms_now()
    ));
    tokio::fs::create_dir_all(&dir).await?;
    let result = run_in(size, &dir).await;
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the demo directory");
    }
    result
}

async fn run_in(size: u64, dir: &Path) -> Result<DemoReport, DemoError> {
    let data = Bytes::from(generate(size));
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let origin = listener.local_addr()?;
    let origin_task = tokio::spawn(crate::net::serve(
        listener,
        {
            let data = data.clone();
            move |req, _| {
                let data = data.clone();
                async move { origin_answer(&data, &req) }
            }
        },
        stop.child_token(),
    ));

    let toml = |store: PathBuf, role: String| {
        format!(
            "[store]\npath = {store:?}\nmax_size = \"2 GiB\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{role}"
        )
    };
    let publisher = App::start(Config::from_toml(
        &toml(
            dir.join("hq-store"),
            format!(
                "[publisher]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{origin}\"\nsecret_file = {:?}\n",
                dir.join("server-secret")
            ),
        ),
        "<demo publisher>",
    )?)
    .await?;
    let publisher_addr = publisher
        .publisher_addr
        .ok_or_else(|| std::io::Error::other("publisher did not bind"))?;
    let proxy = App::start(Config::from_toml(
        &toml(
            dir.join("branch-store"),
            format!("[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{publisher_addr}\"\n"),
        ),
        "<demo proxy>",
    )?)
    .await?;
    let proxy_addr = proxy
        .proxy_addr
        .ok_or_else(|| std::io::Error::other("proxy did not bind"))?;

    let outcome = async {
        let cold = download(1, proxy_addr, &data, &proxy.metrics).await?;
        let blocks = size.div_ceil(u64::from(crate::proto::pccrc::BLOCK_SIZE));
        let deadline = Instant::now() + STORE_WAIT;
        while proxy.store.stats().blocks < blocks && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let warm = download(2, proxy_addr, &data, &proxy.metrics).await?;
        Ok::<_, DemoError>((cold, warm))
    }
    .await;
    proxy.shutdown().await;
    publisher.shutdown().await;
    stop.cancel();
    let _ = origin_task.await;
    let (cold, warm) = outcome?;
    Ok(DemoReport {
        size,
        origin,
        publisher: publisher_addr,
        proxy: proxy_addr,
        cold,
        warm,
    })
}

/// Deterministic, incompressible-looking bytes.
fn generate(size: u64) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

/// The origin: `GET`/`HEAD /demo.bin`, single byte ranges, a strong `ETag`.
fn origin_answer<B>(data: &Bytes, req: &Request<B>) -> Response<Body> {
    let builder = Response::builder();
    if req.uri().path() != "/demo.bin" || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return builder
            .status(StatusCode::NOT_FOUND)
            .body(full("not found\n"))
            .expect("static response");
    }
    let len = data.len() as u64;
    let builder = builder
        .header("etag", "\"demo-1\"")
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream");
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| {
            let a: u64 = a.trim().parse().ok()?;
            let b: u64 = match b.trim() {
                "" => len.checked_sub(1)?,
                b => b.parse::<u64>().ok()?.min(len.checked_sub(1)?),
            };
            (a <= b).then_some((a, b))
        });
    let head = req.method() == Method::HEAD;
    let (builder, body) = match range {
        Some((a, b)) => (
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {a}-{b}/{len}"))
                .header("content-length", b - a + 1),
            data.slice(a as usize..=b as usize),
        ),
        None => (builder.header("content-length", len), data.clone()),
    };
    builder
        .body(full(if head { Bytes::new() } else { body }))
        .expect("valid response")
}

/// Counter values read before and after a download.
fn counters(m: &Metrics) -> [u64; 4] {
    let served = |k: SourceKind| m.proxy_served_bytes.get(k.as_str());
    let wan = |k: &'static str| m.proxy_wan_bytes.get_or_create(&[("kind", k)]).get();
    [
        served(SourceKind::Store),
        served(SourceKind::Origin),
        wan("body") + wan("content_information") + wan("passthrough"),
        wan("content_information"),
    ]
}

async fn download(
    n: u32,
    proxy: SocketAddr,
    expected: &Bytes,
    metrics: &Arc<Metrics>,
) -> Result<Download, DemoError> {
    let fail = |reason: String| DemoError::Download { n, reason };
    let before = counters(metrics);
    let start = Instant::now();
    let body = tokio::time::timeout(DOWNLOAD_TIMEOUT, async {
        let stream = tokio::net::TcpStream::connect(proxy)
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(format!("handshake: {e}")))?;
        let conn = tokio::spawn(conn);
        let req = Request::get("/demo.bin")
            .header("host", proxy.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(format!("request: {e}")))?;
        if resp.status() != StatusCode::OK {
            return Err(fail(format!("proxy answered {}", resp.status())));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(format!("body: {e}")))?
            .to_bytes();
        drop(sender);
        conn.abort();
        Ok(body)
    })
    .await
    .map_err(|_| fail(format!("no answer within {DOWNLOAD_TIMEOUT:?}")))??;
    let elapsed = start.elapsed();
    if body != *expected {
        return Err(fail(format!(
            "{} bytes received differ from the origin's {} bytes",
            body.len(),
            expected.len()
        )));
    }
    // The proxy counts a body's bytes as it sends them; the last chunk may be
    // counted just after the client saw it. Give it a moment to settle.
    let mut after = counters(metrics);
    let settle = Instant::now() + Duration::from_secs(2);
    while after[0] + after[1] < before[0] + before[1] + expected.len() as u64
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
        after = counters(metrics);
    }
    Ok(Download {
        elapsed,
        from_store: after[0] - before[0],
        from_origin: after[1] - before[1],
        wan_bytes: after[2] - before[2],
        content_information: after[3] - before[3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_is_deterministic_and_not_constant() {
        let a = generate(4096);
        assert_eq!(a, generate(4096));
        assert!(a.iter().any(|&b| b != a[0]));
    }

    #[tokio::test]
    async fn rejects_zero_and_huge_sizes() {
        let tmp = std::env::temp_dir();
        assert!(matches!(run(0, &tmp).await, Err(DemoError::Size)));
        assert!(matches!(
            run(MAX_DEMO_SIZE + 1, &tmp).await,
            Err(DemoError::Size)
        ));
    }
}

//! Configuration: `FileConfig` mirrors the TOML file 1:1 (unknown keys are
//! errors), [`Config::from_toml`] applies the defaults in one place and returns
//! typed sections (`SocketAddr`, `Duration`, byte counts, paths).
//!
//! A role runs when its section is present. With no file at all the embedded
//! defaults ([`EMBEDDED_DEFAULTS`]) apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::proto::negotiate::CiVersion;
use crate::proto::pccrc::HashAlgo;

/// The configuration used when `run` is given no `--config`.
pub const EMBEDDED_DEFAULTS: &str = r#"
[store]
path = "branchcache-data"
max_size = "10 GiB"

[admin]
listen = "127.0.0.1:9090"

[proxy]
listen = "127.0.0.1:8080"
forward = true

[log]
level = "info"
format = "text"
"#;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type (message carries line and key).
    #[error("{origin}: {message}")]
    Parse {
        /// File name or `<embedded defaults>`.
        origin: String,
        /// toml's message, with line, column and key.
        message: String,
    },
    /// A value has the right type but a bad meaning.
    #[error("{origin}: invalid value for `{key}`: {reason}")]
    Invalid {
        /// File name.
        origin: String,
        /// Dotted key path, e.g. `store.max_size`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The TOML file, 1:1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[store]`
    pub store: Option<FileStore>,
    /// `[admin]`
    pub admin: Option<FileAdmin>,
    /// `[proxy]`
    pub proxy: Option<FileProxy>,
    /// `[publisher]`
    pub publisher: Option<FilePublisher>,
    /// `[peer]`
    pub peer: Option<FilePeer>,
    /// `[hosted_cache]`
    pub hosted_cache: Option<FileHostedCache>,
    /// `[upstream_hosted_cache]`
    pub upstream_hosted_cache: Option<FileUpstreamHostedCache>,
    /// `[log]`
    pub log: Option<FileLog>,
}

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// Directory holding the index and block data.
    pub path: Option<PathBuf>,
    /// Size bound, e.g. "50 GiB".
    pub max_size: Option<String>,
}

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Admin listener address.
    pub listen: Option<String>,
}

/// `[proxy]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProxy {
    /// `false` switches the role off while keeping the section.
    pub enabled: Option<bool>,
    /// Client-facing listener, default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Reverse-proxy origin base URL (`http://` or `https://`).
    pub upstream: Option<String>,
    /// Also accept absolute-form requests and `CONNECT` (HTTP_PROXY clients).
    pub forward: Option<bool>,
    /// PEM file with extra CA certificates trusted for `https://` origins.
    pub extra_ca_file: Option<PathBuf>,
    /// Connect timeout towards origins, e.g. "10s".
    pub connect_timeout: Option<String>,
    /// Time to wait for an origin's response headers, e.g. "60s".
    pub response_timeout: Option<String>,
    /// Longest wait for an origin's next body frame, e.g. "30s".
    pub body_idle_timeout: Option<String>,
    /// Largest content information accepted from an origin, e.g. "16 MiB".
    pub max_content_info: Option<String>,
    /// Concurrent origin range requests across all clients.
    pub origin_parallelism: Option<u32>,
    /// Fixed MS-PCCRR peers (`"ip:port"`) asked for blocks before the origin
    /// (after the upstream hosted cache).
    pub peers: Option<Vec<String>>,
    /// Serve content information from memory while fresh (RFC 9111).
    pub freshness: Option<bool>,
    /// Most URLs whose content information is remembered (LRU).
    pub freshness_max_entries: Option<usize>,
    /// Memory bound of the remembered content information, e.g. "32 MiB".
    pub freshness_max_size: Option<String>,
    /// Drain time for in-flight requests and fetches at shutdown, e.g. "30s".
    pub shutdown_timeout: Option<String>,
}

/// `[hosted_cache]` as written: the MS-PCHC server plus MS-PCCRR on `listen_http`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHostedCache {
    /// `false` switches the role off while keeping the section.
    pub enabled: Option<bool>,
    /// PCHC v2 + PCCRR over HTTP, default `0.0.0.0:80`; `""` disables it.
    pub listen_http: Option<String>,
    /// PCHC v1 over HTTPS, default `0.0.0.0:443` when a certificate is given.
    pub listen_https: Option<String>,
    /// PEM certificate chain for the HTTPS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTPS listener.
    pub tls_key: Option<PathBuf>,
    /// Pulls waiting to start (default 1024).
    pub queue_capacity: Option<usize>,
    /// Pulls running at once (default 16).
    pub max_concurrent_pulls: Option<usize>,
    /// Sustained offers per second per client IP (default 20).
    pub offer_rate: Option<f64>,
    /// Offer burst per client IP (default 200).
    pub offer_burst: Option<f64>,
    /// Concurrent PCCRR requests per client before answers turn empty (default 1024, as Windows).
    pub max_active_per_client: Option<u32>,
    /// Block cipher for PCCRR answers of v1 (decryptable) segments: "aes128" (default), "aes192", "aes256".
    pub crypto: Option<String>,
    /// Bound on the v2 block replay store (encrypted blocks kept as received), e.g. "10 GiB".
    pub replay_max_size: Option<String>,
}

/// `[upstream_hosted_cache]` as written: the hosted cache this proxy offers
/// to and fetches from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamHostedCache {
    /// `"ip:port"` of its HTTP listener (PCCRR, and PCHC v2 offers).
    pub address: Option<String>,
    /// PCHC version for offers: 1 (HTTPS) or 2 (HTTP, default).
    pub version: Option<u8>,
    /// `"ip:port"` of its HTTPS listener for v1 offers (default: address's IP, port 443).
    pub https_address: Option<String>,
    /// TLS server name to verify for v1 (default: the address's IP).
    pub server_name: Option<String>,
    /// PEM CA certificates trusted for v1 (default: the built-in public roots).
    pub ca_file: Option<PathBuf>,
    /// Offer segments fetched from the origin (default: true when `[peer]` runs,
    /// since the hosted cache pulls them from this host's PCCRR listener).
    pub offer: Option<bool>,
}

/// `[peer]` as written: the MS-PCCRR server and MS-PCCRD discovery.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeer {
    /// `false` switches the role off while keeping the section.
    pub enabled: Option<bool>,
    /// PCCRR listener, default `0.0.0.0:8082`.
    pub listen: Option<String>,
    /// Answer and send MS-PCCRD discovery (default true).
    pub discovery: Option<bool>,
    /// Multicast interfaces for discovery by name; empty = every up,
    /// multicast-capable, non-loopback one.
    pub interfaces: Option<Vec<String>>,
    /// Block cipher for MSG_BLK: "aes128" (default), "aes192" or "aes256".
    pub crypto: Option<String>,
    /// Honour a client's request for unencrypted blocks (default false).
    pub allow_plaintext: Option<bool>,
    /// Concurrent requests per client address before answers turn empty (default 64).
    pub max_active_per_client: Option<u32>,
}

/// `[publisher]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePublisher {
    /// Listener address clients (or branch proxies) connect to.
    pub listen: Option<String>,
    /// Origin base URL, `http://…` or `https://…`; request paths are appended.
    pub upstream: Option<String>,
    /// Server secret key file (created with 32 random bytes when absent).
    pub secret_file: Option<PathBuf>,
    /// Entities smaller than this pass through unchanged, e.g. "64 KiB".
    pub min_size: Option<String>,
    /// Preferred content information version: 1 (default) or 2.
    pub content_version: Option<u8>,
    /// v1 hash: "sha256" (default), "sha384" or "sha512".
    pub hash: Option<String>,
    /// Bound on cached content information, e.g. "64 MiB".
    pub cache_size: Option<String>,
    /// Entities without a validator larger than this pass through.
    pub max_unvalidated_size: Option<String>,
    /// TCP/TLS connect timeout to the origin, e.g. "5s".
    pub connect_timeout: Option<String>,
    /// Time to wait for the origin's response headers, e.g. "30s".
    pub origin_timeout: Option<String>,
    /// Longest pause between two body frames while hashing, e.g. "30s".
    pub body_idle_timeout: Option<String>,
    /// Hashing threads; 0 (default) = one per core.
    pub hash_threads: Option<usize>,
    /// PEM file of CA certificates trusted for an `https` upstream instead of
    /// the built-in public roots (private CAs).
    pub upstream_ca_file: Option<PathBuf>,
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// tracing filter directive, e.g. "info" or "branchcache=debug".
    pub level: Option<String>,
    /// "text" or "json".
    pub format: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Store settings (always present: every role shares the store).
    pub store: StoreConfig,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// The publisher role, when `[publisher]` is present.
    pub publisher: Option<PublisherConfig>,
    /// The branch proxy role, when configured.
    pub proxy: Option<ProxyConfig>,
    /// The peer role (PCCRR server), when configured.
    pub peer: Option<PeerConfig>,
    /// The hosted cache role (PCHC + PCCRR), when configured.
    pub hosted_cache: Option<HostedCacheConfig>,
    /// The hosted cache the proxy uses, when configured.
    pub upstream_hosted_cache: Option<UpstreamHostedCacheConfig>,
}

/// Validated `[hosted_cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostedCacheConfig {
    /// PCHC v2 + PCCRR listener.
    pub listen_http: Option<SocketAddr>,
    /// PCHC v1 listener with its certificate and key files.
    pub https: Option<HostedCacheTls>,
    /// Pulls waiting to start.
    pub queue_capacity: usize,
    /// Pulls running at once.
    pub max_concurrent_pulls: usize,
    /// Sustained offers per second per client IP.
    pub offer_rate: f64,
    /// Offer burst per client IP.
    pub offer_burst: f64,
    /// PCCRR per-client concurrency limit.
    pub max_active_per_client: usize,
    /// Cipher for PCCRR answers of segments whose Kp is known.
    pub crypto: crate::proto::pccrr::CryptoAlgoId,
    /// Bound on the v2 replay store, bytes.
    pub replay_max_size: u64,
}

/// The hosted cache's HTTPS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct HostedCacheTls {
    /// Listener address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Validated `[upstream_hosted_cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamHostedCacheConfig {
    /// HTTP listener: PCCRR and PCHC v2.
    pub address: SocketAddr,
    /// PCHC version used for offers.
    pub version: u8,
    /// HTTPS listener for v1 offers.
    pub https_address: SocketAddr,
    /// TLS name verified for v1.
    pub server_name: String,
    /// Trusted CA file for v1; `None`: built-in public roots.
    pub ca_file: Option<PathBuf>,
    /// Whether fetched segments are offered.
    pub offer: bool,
}

/// Default PCHC v2 / PCCRR listener of the hosted cache (Windows' port 80).
pub const DEFAULT_HOSTED_CACHE_HTTP: &str = "0.0.0.0:80";
/// Default PCHC v1 listener of the hosted cache (Windows' port 443).
pub const DEFAULT_HOSTED_CACHE_HTTPS: &str = "0.0.0.0:443";
/// Default per-client PCCRR concurrency on a hosted cache (Windows: 1024).
pub const DEFAULT_HOSTED_CACHE_ACTIVE_PER_CLIENT: usize = 1024;
/// Default bound of the v2 replay store.
pub const DEFAULT_REPLAY_MAX_SIZE: u64 = 10 * 1024 * 1024 * 1024;

/// Validated `[peer]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// PCCRR listener.
    pub listen: SocketAddr,
    /// Run MS-PCCRD discovery (answer Probes, find peers for the proxy).
    pub discovery: bool,
    /// Discovery interfaces by name (empty: every suitable one).
    pub interfaces: Vec<String>,
    /// Cipher for served blocks.
    pub crypto: crate::proto::pccrr::CryptoAlgoId,
    /// Serve plaintext when a client asks for it.
    pub allow_plaintext: bool,
    /// Per-client concurrency limit.
    pub max_active_per_client: usize,
}

/// Validated `[publisher]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    /// Listener address.
    pub listen: SocketAddr,
    /// Origin base URL (scheme http or https, authority, optional path prefix
    /// without a trailing slash).
    pub upstream: http::Uri,
    /// Server secret key file.
    pub secret_file: PathBuf,
    /// Smallest entity that gets content information.
    pub min_size: u64,
    /// Preferred content information version.
    pub content_version: CiVersion,
    /// Hash algorithm for v1 content information (v2 always uses truncated SHA-512).
    pub hash: HashAlgo,
    /// Bound on cached content information, bytes.
    pub cache_size: u64,
    /// Largest entity without a validator that is still hashed (per request).
    pub max_unvalidated_size: u64,
    /// Origin connect timeout.
    pub connect_timeout: Duration,
    /// Origin response-header timeout.
    pub origin_timeout: Duration,
    /// Longest pause between body frames while hashing.
    pub body_idle_timeout: Duration,
    /// Hashing threads (0 = one per core).
    pub hash_threads: usize,
    /// Trust only these CA certificates (PEM) for an https upstream; `None`:
    /// the built-in public (webpki) roots.
    pub upstream_ca_file: Option<PathBuf>,
}

/// Default PCCRR listener of the peer role.
pub const DEFAULT_PEER_LISTEN: &str = "0.0.0.0:8082";

/// Validated `[proxy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Client-facing listener.
    pub listen: SocketAddr,
    /// Reverse-proxy origin base URL; `None` when only forward mode is used.
    pub upstream: Option<http::Uri>,
    /// Accept absolute-form requests and `CONNECT`.
    pub forward: bool,
    /// Extra trusted CA certificates (PEM) for `https://` origins.
    pub extra_ca_file: Option<PathBuf>,
    /// Connect timeout towards origins.
    pub connect_timeout: Duration,
    /// Time to wait for an origin's response headers.
    pub response_timeout: Duration,
    /// Longest wait for an origin's next body frame (pass-through bodies,
    /// content information, block ranges); the exchange then fails.
    pub body_idle_timeout: Duration,
    /// Largest content information body accepted, in bytes.
    pub max_content_info: u64,
    /// Concurrent origin range requests across all clients.
    pub origin_parallelism: u32,
    /// Fixed MS-PCCRR peers asked before the origin.
    pub peers: Vec<SocketAddr>,
    /// Serve content information from memory while fresh per RFC 9111
    /// (`false`: every request asks the origin).
    pub freshness: bool,
    /// Most URLs whose content information is remembered (LRU).
    pub freshness_max_entries: usize,
    /// Memory bound of the remembered content information, in bytes.
    pub freshness_max_size: u64,
    /// How long shutdown waits for in-flight requests and fetches.
    pub shutdown_timeout: Duration,
}

/// Default proxy listener.
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
/// Default origin connect timeout: generous for a WAN, short enough to fail a request visibly.
pub const DEFAULT_PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait for origin response headers (a cold publisher may hash a large object first).
pub const DEFAULT_PROXY_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default content-information cap: 16 MiB describes a ~32 TiB v1 object.
pub const DEFAULT_MAX_CONTENT_INFO: u64 = 16 * 1024 * 1024;
/// Default concurrent origin range requests: enough to fill a WAN pipe, few enough to be polite.
pub const DEFAULT_ORIGIN_PARALLELISM: u32 = 8;
/// Default URLs remembered with fresh content information: a branch's working
/// set of objects, a few MiB of memory (the entry holds block hashes).
pub const DEFAULT_FRESHNESS_MAX_ENTRIES: usize = 10_000;
/// Default memory bound of remembered content information (~70 bytes per
/// 64 KiB block in memory: 32 MiB describes about 30 TiB of objects).
pub const DEFAULT_FRESHNESS_MAX_SIZE: u64 = 32 * 1024 * 1024;
/// Default drain at shutdown: long enough for a LAN download to finish or a
/// segment fetch to land, short enough for `systemctl stop` (90 s default kill).
pub const DEFAULT_PROXY_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Validated `[store]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Directory.
    pub path: PathBuf,
    /// Bytes.
    pub max_size: u64,
}

/// Validated `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` answer.
    pub listen: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Filter directive.
    pub level: String,
    /// Format.
    pub format: LogFormat,
}

/// Default publisher `min_size`: Windows' own default threshold (64 KiB).
pub const DEFAULT_PUBLISHER_MIN_SIZE: u64 = 64 * 1024;
/// Default CI cache bound: holds the CI of ~128 GiB of v1 content (SHA-256).
pub const DEFAULT_PUBLISHER_CACHE_SIZE: u64 = 64 * 1024 * 1024;
/// Default `max_unvalidated_size`: hashing per request stays cheap below this.
pub const DEFAULT_MAX_UNVALIDATED_SIZE: u64 = 16 * 1024 * 1024;
/// Default origin connect timeout: the origin is on the HQ LAN.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait for the origin's response headers.
pub const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest pause between body frames while hashing.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default store size bound when `[store]` gives none.
pub const DEFAULT_STORE_MAX_SIZE: u64 = 50 * 1024 * 1024 * 1024;

impl Config {
    /// Read and validate a file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// The embedded defaults.
    pub fn embedded() -> Config {
        Config::from_toml(EMBEDDED_DEFAULTS, "<embedded defaults>")
            .expect("embedded defaults are valid")
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            reason,
        };
        let store = file.store.unwrap_or_default();
        let max_size = match store.max_size {
            Some(s) => parse_size(&s).map_err(|r| invalid("store.max_size", r))?,
            None => DEFAULT_STORE_MAX_SIZE,
        };
        let store = StoreConfig {
            path: store
                .path
                .unwrap_or_else(|| PathBuf::from("branchcache-data")),
            max_size,
        };

        let admin = file.admin.unwrap_or_default();
        let listen = admin
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|e| invalid("admin.listen", e.to_string()))?;

        let log = file.log.unwrap_or_default();
        let format = match log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("expected \"text\" or \"json\", got {other:?}"),
                ))
            }
        };
        let level = log.level.unwrap_or_else(|| "info".to_string());
        tracing_subscriber::EnvFilter::try_new(&level)
            .map_err(|e| invalid("log.level", e.to_string()))?;

        let proxy = match file.proxy {
            Some(p) if p.enabled != Some(false) => Some(proxy_config(p, &invalid)?),
            _ => None,
        };

        let peer = match file.peer {
            Some(p) if p.enabled != Some(false) => Some(peer_config(p, &invalid)?),
            _ => None,
        };

        let publisher = match file.publisher {
            Some(p) => Some(publisher_config(p, &store.path, &invalid)?),
            None => None,
        };

        let hosted_cache = match file.hosted_cache {
            Some(h) if h.enabled != Some(false) => Some(hosted_cache_config(h, &invalid)?),
            _ => None,
        };
        let upstream_hosted_cache = match file.upstream_hosted_cache {
            Some(u) => {
                if proxy.is_none() {
                    return Err(invalid(
                        "upstream_hosted_cache",
                        "needs a [proxy] section: only the proxy uses a hosted cache".into(),
                    ));
                }
                Some(upstream_hosted_cache_config(u, peer.is_some(), &invalid)?)
            }
            None => None,
        };

        Ok(Config {
            store,
            admin: AdminConfig { listen },
            log: LogConfig { level, format },
            proxy,
            peer,
            publisher,
            hosted_cache,
            upstream_hosted_cache,
        })
    }
}

fn parse_crypto(
    key: &str,
    v: Option<&str>,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::proto::pccrr::CryptoAlgoId, ConfigError> {
    use crate::proto::pccrr::CryptoAlgoId;
    match v.unwrap_or("aes128") {
        "aes128" => Ok(CryptoAlgoId::AES_128),
        "aes192" => Ok(CryptoAlgoId::AES_192),
        "aes256" => Ok(CryptoAlgoId::AES_256),
        other => Err(invalid(
            key,
            format!("expected \"aes128\", \"aes192\" or \"aes256\", got {other:?}"),
        )),
    }
}

fn hosted_cache_config(
    h: FileHostedCache,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<HostedCacheConfig, ConfigError> {
    let addr = |key: &str, v: &str| {
        v.parse::<SocketAddr>()
            .map_err(|e| invalid(key, format!("{v:?}: {e}")))
    };
    let listen_http = match h.listen_http.as_deref() {
        Some("") => None,
        v => Some(addr(
            "hosted_cache.listen_http",
            v.unwrap_or(DEFAULT_HOSTED_CACHE_HTTP),
        )?),
    };
    let https = match (h.tls_cert, h.tls_key, h.listen_https.as_deref()) {
        (_, _, Some("")) | (None, None, None) => None,
        (Some(cert), Some(key), listen) => Some(HostedCacheTls {
            listen: addr(
                "hosted_cache.listen_https",
                listen.unwrap_or(DEFAULT_HOSTED_CACHE_HTTPS),
            )?,
            cert,
            key,
        }),
        (None, _, _) => {
            return Err(invalid(
                "hosted_cache.tls_cert",
                "the HTTPS (PCHC v1) listener needs tls_cert and tls_key (`branchcache gen-cert` makes a lab pair)".into(),
            ))
        }
        (Some(_), None, _) => {
            return Err(invalid(
                "hosted_cache.tls_key",
                "tls_cert is set but tls_key is missing".into(),
            ))
        }
    };
    if listen_http.is_none() && https.is_none() {
        return Err(invalid(
            "hosted_cache.listen_http",
            "both listeners are off: nothing to serve".into(),
        ));
    }
    let positive = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(key, "must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let rate = |key: &str, v: Option<f64>, default: f64| match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err(invalid(
            key,
            format!("must be a finite number >= 0, got {x}"),
        )),
        Some(x) => Ok(x),
        None => Ok(default),
    };
    Ok(HostedCacheConfig {
        listen_http,
        https,
        queue_capacity: positive(
            "hosted_cache.queue_capacity",
            h.queue_capacity,
            crate::hosted_cache::DEFAULT_QUEUE_CAPACITY,
        )?,
        max_concurrent_pulls: positive(
            "hosted_cache.max_concurrent_pulls",
            h.max_concurrent_pulls,
            crate::hosted_cache::DEFAULT_MAX_CONCURRENT_PULLS,
        )?,
        offer_rate: rate(
            "hosted_cache.offer_rate",
            h.offer_rate,
            crate::hosted_cache::DEFAULT_OFFER_RATE,
        )?,
        offer_burst: rate(
            "hosted_cache.offer_burst",
            h.offer_burst,
            crate::hosted_cache::DEFAULT_OFFER_BURST,
        )?,
        max_active_per_client: positive(
            "hosted_cache.max_active_per_client",
            h.max_active_per_client.map(|n| n as usize),
            DEFAULT_HOSTED_CACHE_ACTIVE_PER_CLIENT,
        )?,
        crypto: parse_crypto("hosted_cache.crypto", h.crypto.as_deref(), invalid)?,
        replay_max_size: match h.replay_max_size {
            Some(s) => parse_size(&s).map_err(|r| invalid("hosted_cache.replay_max_size", r))?,
            None => DEFAULT_REPLAY_MAX_SIZE,
        },
    })
}

fn upstream_hosted_cache_config(
    u: FileUpstreamHostedCache,
    peer_role: bool,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<UpstreamHostedCacheConfig, ConfigError> {
    let address = u
        .address
        .as_deref()
        .ok_or_else(|| invalid("upstream_hosted_cache.address", "missing".into()))?;
    let address = address
        .parse::<SocketAddr>()
        .map_err(|e| invalid("upstream_hosted_cache.address", format!("{address:?}: {e}")))?;
    let version = match u.version.unwrap_or(2) {
        v @ (1 | 2) => v,
        n => {
            return Err(invalid(
                "upstream_hosted_cache.version",
                format!("expected 1 or 2, got {n}"),
            ))
        }
    };
    let https_address = match u.https_address.as_deref() {
        Some(a) => a
            .parse::<SocketAddr>()
            .map_err(|e| invalid("upstream_hosted_cache.https_address", format!("{a:?}: {e}")))?,
        None => SocketAddr::new(address.ip(), 443),
    };
    let server_name = u.server_name.unwrap_or_else(|| address.ip().to_string());
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        return Err(invalid(
            "upstream_hosted_cache.server_name",
            format!("{server_name:?} is not a DNS name or IP address"),
        ));
    }
    let offer = match u.offer {
        Some(true) if !peer_role => {
            return Err(invalid(
                "upstream_hosted_cache.offer",
                "offers need a [peer] section: the hosted cache pulls offered blocks from this host's PCCRR listener".into(),
            ))
        }
        Some(o) => o,
        None => peer_role,
    };
    Ok(UpstreamHostedCacheConfig {
        address,
        version,
        https_address,
        server_name,
        ca_file: u.ca_file,
        offer,
    })
}

fn peer_config(
    p: FilePeer,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<PeerConfig, ConfigError> {
    let listen = p
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_PEER_LISTEN)
        .parse::<SocketAddr>()
        .map_err(|e| invalid("peer.listen", e.to_string()))?;
    let crypto = parse_crypto("peer.crypto", p.crypto.as_deref(), invalid)?;
    let max_active_per_client = match p.max_active_per_client {
        Some(0) => {
            return Err(invalid(
                "peer.max_active_per_client",
                "must be at least 1".into(),
            ))
        }
        Some(n) => n as usize,
        None => crate::retrieval::DEFAULT_MAX_ACTIVE_PER_CLIENT,
    };
    Ok(PeerConfig {
        listen,
        discovery: p.discovery.unwrap_or(true),
        interfaces: p.interfaces.unwrap_or_default(),
        crypto,
        allow_plaintext: p.allow_plaintext.unwrap_or(false),
        max_active_per_client,
    })
}

fn proxy_config(
    p: FileProxy,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ProxyConfig, ConfigError> {
    let listen = p
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_PROXY_LISTEN)
        .parse::<SocketAddr>()
        .map_err(|e| invalid("proxy.listen", e.to_string()))?;
    let upstream = match p.upstream {
        Some(u) => {
            let uri: http::Uri = u
                .parse()
                .map_err(|e| invalid("proxy.upstream", format!("{u:?}: {e}")))?;
            match uri.scheme_str() {
                Some("http") | Some("https") => {}
                _ => {
                    return Err(invalid(
                        "proxy.upstream",
                        format!("{u:?} must start with http:// or https://"),
                    ))
                }
            }
            if uri.authority().is_none() {
                return Err(invalid("proxy.upstream", format!("{u:?} has no host")));
            }
            if uri.query().is_some() {
                return Err(invalid(
                    "proxy.upstream",
                    format!("{u:?} must not carry a query"),
                ));
            }
            Some(uri)
        }
        None => None,
    };
    let forward = p.forward.unwrap_or(false);
    if upstream.is_none() && !forward {
        return Err(invalid(
            "proxy.upstream",
            "required unless `forward = true`".to_string(),
        ));
    }
    let duration = |key: &str, v: Option<String>, default: Duration| match v {
        Some(s) => parse_duration(&s).map_err(|r| invalid(key, r)),
        None => Ok(default),
    };
    let connect_timeout = duration(
        "proxy.connect_timeout",
        p.connect_timeout,
        DEFAULT_PROXY_CONNECT_TIMEOUT,
    )?;
    let response_timeout = duration(
        "proxy.response_timeout",
        p.response_timeout,
        DEFAULT_PROXY_RESPONSE_TIMEOUT,
    )?;
    let body_idle_timeout = duration(
        "proxy.body_idle_timeout",
        p.body_idle_timeout,
        DEFAULT_BODY_IDLE_TIMEOUT,
    )?;
    let max_content_info = match p.max_content_info {
        Some(s) => parse_size(&s).map_err(|r| invalid("proxy.max_content_info", r))?,
        None => DEFAULT_MAX_CONTENT_INFO,
    };
    let origin_parallelism = p.origin_parallelism.unwrap_or(DEFAULT_ORIGIN_PARALLELISM);
    if origin_parallelism == 0 {
        return Err(invalid(
            "proxy.origin_parallelism",
            "must be at least 1".to_string(),
        ));
    }
    let peers = p
        .peers
        .unwrap_or_default()
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| invalid("proxy.peers", format!("{a:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shutdown_timeout = duration(
        "proxy.shutdown_timeout",
        p.shutdown_timeout,
        DEFAULT_PROXY_SHUTDOWN_TIMEOUT,
    )?;
    let freshness_max_entries = p
        .freshness_max_entries
        .unwrap_or(DEFAULT_FRESHNESS_MAX_ENTRIES);
    if freshness_max_entries == 0 {
        return Err(invalid(
            "proxy.freshness_max_entries",
            "must be at least 1 (use freshness = false to switch the cache off)".to_string(),
        ));
    }
    let freshness_max_size = match p.freshness_max_size {
        Some(s) => parse_size(&s).map_err(|r| invalid("proxy.freshness_max_size", r))?,
        None => DEFAULT_FRESHNESS_MAX_SIZE,
    };
    Ok(ProxyConfig {
        peers,
        freshness_max_size,
        freshness: p.freshness.unwrap_or(true),
        freshness_max_entries,
        shutdown_timeout,
        listen,
        upstream,
        forward,
        extra_ca_file: p.extra_ca_file,
        connect_timeout,
        response_timeout,
        body_idle_timeout,
        max_content_info,
        origin_parallelism,
    })
}

fn publisher_config(
    p: FilePublisher,
    store_path: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<PublisherConfig, ConfigError> {
    let listen = p
        .listen
        .as_deref()
        .ok_or_else(|| invalid("publisher.listen", "missing".into()))?
        .parse::<SocketAddr>()
        .map_err(|e| invalid("publisher.listen", e.to_string()))?;
    let upstream = p
        .upstream
        .as_deref()
        .ok_or_else(|| invalid("publisher.upstream", "missing".into()))?;
    let upstream = parse_upstream(upstream).map_err(|r| invalid("publisher.upstream", r))?;
    let size = |key: &str, v: Option<String>, default: u64| match v {
        Some(s) => parse_size(&s).map_err(|r| invalid(key, r)),
        None => Ok(default),
    };
    let duration = |key: &str, v: Option<String>, default: Duration| match v {
        Some(s) => parse_duration(&s).map_err(|r| invalid(key, r)),
        None => Ok(default),
    };
    let content_version = match p.content_version.unwrap_or(1) {
        1 => CiVersion::V1,
        2 => CiVersion::V2,
        n => {
            return Err(invalid(
                "publisher.content_version",
                format!("expected 1 or 2, got {n}"),
            ))
        }
    };
    let hash = match p.hash.as_deref().unwrap_or("sha256") {
        "sha256" => HashAlgo::Sha256,
        "sha384" => HashAlgo::Sha384,
        "sha512" => HashAlgo::Sha512,
        other => {
            return Err(invalid(
                "publisher.hash",
                format!("expected \"sha256\", \"sha384\" or \"sha512\", got {other:?}"),
            ))
        }
    };
    Ok(PublisherConfig {
        listen,
        upstream,
        secret_file: p
            .secret_file
            .unwrap_or_else(|| store_path.join("server-secret")),
        min_size: size("publisher.min_size", p.min_size, DEFAULT_PUBLISHER_MIN_SIZE)?,
        content_version,
        hash,
        cache_size: size(
            "publisher.cache_size",
            p.cache_size,
            DEFAULT_PUBLISHER_CACHE_SIZE,
        )?,
        max_unvalidated_size: size(
            "publisher.max_unvalidated_size",
            p.max_unvalidated_size,
            DEFAULT_MAX_UNVALIDATED_SIZE,
        )?,
        connect_timeout: duration(
            "publisher.connect_timeout",
            p.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        origin_timeout: duration(
            "publisher.origin_timeout",
            p.origin_timeout,
            DEFAULT_ORIGIN_TIMEOUT,
        )?,
        body_idle_timeout: duration(
            "publisher.body_idle_timeout",
            p.body_idle_timeout,
            DEFAULT_BODY_IDLE_TIMEOUT,
        )?,
        hash_threads: p.hash_threads.unwrap_or(0),
        upstream_ca_file: p.upstream_ca_file,
    })
}

/// Parse an origin base URL: `http` or `https`, an authority, an optional
/// path prefix (trailing `/` removed), no query or fragment.
pub fn parse_upstream(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{s:?}: scheme must be http or https")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{s:?}: missing host"))?
        .clone();
    if uri.query().is_some() {
        return Err(format!("{s:?}: a query is not allowed in the base URL"));
    }
    let prefix = uri.path().trim_end_matches('/');
    http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("http"))
        .authority(authority)
        .path_and_query(if prefix.is_empty() { "/" } else { prefix })
        .build()
        .map_err(|e| format!("{s:?}: {e}"))
}

/// Parse a byte size such as `"50 GiB"`, `"64 KiB"` or `"1000"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a size like \"50 GiB\": {e}"))
}

/// Parse a duration such as `"30s"`, `"500ms"` or `"2m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"30s\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::embedded();
        assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.store.max_size, 10 * 1024 * 1024 * 1024);
        assert_eq!(c.log.format, LogFormat::Text);
        // Out of the box: a forward proxy for any origin (`curl -x`, HTTP_PROXY).
        let p = c.proxy.expect("the embedded defaults run the proxy");
        assert_eq!(p.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(p.forward && p.upstream.is_none());
        // config/branchcache.toml spells out the same defaults.
        let file = Config::from_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/branchcache.toml"),
        )
        .unwrap();
        let fp = file.proxy.expect("config/branchcache.toml runs the proxy");
        assert_eq!((fp.listen, fp.forward), (p.listen, p.forward));
        assert_eq!(file.admin.listen, c.admin.listen);
        assert_eq!(file.store.max_size, c.store.max_size);
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_name() {
        let err = Config::from_toml("[store]\npath = \"x\"\nmax_sise = \"1 GiB\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_sise"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("50 GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn bad_listen_address_names_the_key() {
        let err = Config::from_toml("[admin]\nlisten = \"nowhere\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.listen"), "{err}");
    }

    #[test]
    fn proxy_section_gets_defaults() {
        let c =
            Config::from_toml("[proxy]\nupstream = \"http://127.0.0.1:8000\"\n", "t.toml").unwrap();
        let p = c.proxy.unwrap();
        assert_eq!(p.listen, DEFAULT_PROXY_LISTEN.parse().unwrap());
        assert!(!p.forward);
        assert_eq!(p.upstream.unwrap().host(), Some("127.0.0.1"));
        assert_eq!(p.origin_parallelism, DEFAULT_ORIGIN_PARALLELISM);
    }

    #[test]
    fn proxy_needs_upstream_or_forward() {
        let err = Config::from_toml("[proxy]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy.upstream"), "{err}");
        assert!(Config::from_toml("[proxy]\nforward = true\n", "t.toml")
            .unwrap()
            .proxy
            .is_some());
    }

    #[test]
    fn proxy_upstream_must_be_http_or_https() {
        let err = Config::from_toml("[proxy]\nupstream = \"ftp://x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy.upstream"), "{err}");
    }

    #[test]
    fn disabled_proxy_section_is_off() {
        let c = Config::from_toml("[proxy]\nenabled = false\n", "t.toml").unwrap();
        assert!(c.proxy.is_none());
    }

    #[test]
    fn publisher_section_gets_defaults_and_typed_values() {
        let c = Config::from_toml(
            "[store]\npath = \"/tmp/s\"\n[publisher]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:8000/files/\"\ncontent_version = 2\ncache_size = \"1 MiB\"\n",
            "t.toml",
        )
        .unwrap();
        let p = c.publisher.unwrap();
        assert_eq!(p.upstream.to_string(), "http://127.0.0.1:8000/files");
        assert_eq!(p.secret_file, Path::new("/tmp/s/server-secret"));
        assert_eq!(p.min_size, 64 << 10);
        assert_eq!(p.content_version, CiVersion::V2);
        assert_eq!(p.hash, HashAlgo::Sha256);
        assert_eq!(p.cache_size, 1 << 20);
    }

    #[test]
    fn publisher_rejects_bad_upstream_version_and_hash() {
        for (body, key) in [
            ("upstream = \"ftp://x\"", "publisher.upstream"),
            (
                "upstream = \"http://x\"\ncontent_version = 3",
                "publisher.content_version",
            ),
            ("upstream = \"http://x\"\nhash = \"md5\"", "publisher.hash"),
            (
                "upstream = \"http://x\"\nmin_size = \"big\"",
                "publisher.min_size",
            ),
        ] {
            let err = Config::from_toml(
                &format!("[publisher]\nlisten = \"127.0.0.1:0\"\n{body}\n"),
                "t.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn every_file_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 1, "config/ holds no .toml file");
    }

    #[test]
    fn peer_section_gets_defaults_and_validates_crypto() {
        let c = Config::from_toml("[peer]\n", "t.toml").unwrap();
        let p = c.peer.unwrap();
        assert_eq!(p.listen, DEFAULT_PEER_LISTEN.parse().unwrap());
        assert_eq!(p.crypto, crate::proto::pccrr::CryptoAlgoId::AES_128);
        assert!(!p.allow_plaintext);
        assert_eq!(p.max_active_per_client, 64);
        let c = Config::from_toml("[peer]\ncrypto = \"aes256\"\n", "t.toml").unwrap();
        assert_eq!(
            c.peer.unwrap().crypto,
            crate::proto::pccrr::CryptoAlgoId::AES_256
        );
        let err = Config::from_toml("[peer]\ncrypto = \"des\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("peer.crypto"), "{err}");
        let err = Config::from_toml("[peer]\nmax_active_per_client = 0\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("peer.max_active_per_client"), "{err}");
        assert!(Config::from_toml("[peer]\nenabled = false\n", "t.toml")
            .unwrap()
            .peer
            .is_none());
    }

    #[test]
    fn hosted_cache_section_gets_defaults_and_needs_a_key_with_its_certificate() {
        let c = Config::from_toml("[hosted_cache]\n", "t.toml").unwrap();
        let h = c.hosted_cache.unwrap();
        assert_eq!(
            h.listen_http,
            Some(DEFAULT_HOSTED_CACHE_HTTP.parse().unwrap())
        );
        assert!(h.https.is_none());
        assert_eq!(h.max_active_per_client, 1024);
        assert_eq!(h.replay_max_size, DEFAULT_REPLAY_MAX_SIZE);
        let c = Config::from_toml(
            "[hosted_cache]\nlisten_http = \"\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nreplay_max_size = \"1 GiB\"\n",
            "t.toml",
        )
        .unwrap();
        let h = c.hosted_cache.unwrap();
        assert_eq!(h.listen_http, None);
        let tls = h.https.unwrap();
        assert_eq!(tls.listen, DEFAULT_HOSTED_CACHE_HTTPS.parse().unwrap());
        assert_eq!(tls.key, PathBuf::from("k.pem"));
        assert_eq!(h.replay_max_size, 1 << 30);
        for (text, key) in [
            ("listen_https = \"0.0.0.0:443\"\n", "hosted_cache.tls_cert"),
            ("tls_cert = \"c.pem\"\n", "hosted_cache.tls_key"),
            ("listen_http = \"\"\n", "hosted_cache.listen_http"),
            (
                "max_concurrent_pulls = 0\n",
                "hosted_cache.max_concurrent_pulls",
            ),
            ("offer_rate = -1.0\n", "hosted_cache.offer_rate"),
            ("crypto = \"rot13\"\n", "hosted_cache.crypto"),
        ] {
            let err = Config::from_toml(&format!("[hosted_cache]\n{text}"), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn upstream_hosted_cache_needs_the_proxy_and_offers_only_with_a_peer_listener() {
        const PROXY: &str = "[proxy]\nupstream = \"http://o\"\n";
        let err = Config::from_toml(
            "[upstream_hosted_cache]\naddress = \"10.0.0.5:80\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs a [proxy] section"), "{err}");
        let c = Config::from_toml(
            &format!("{PROXY}[upstream_hosted_cache]\naddress = \"10.0.0.5:80\"\n"),
            "t.toml",
        )
        .unwrap();
        let u = c.upstream_hosted_cache.unwrap();
        assert_eq!(u.version, 2);
        assert_eq!(u.https_address, "10.0.0.5:443".parse().unwrap());
        assert_eq!(u.server_name, "10.0.0.5");
        assert!(!u.offer, "no [peer]: nothing to pull from, so no offers");
        let c = Config::from_toml(
            &format!(
                "{PROXY}[peer]\n[upstream_hosted_cache]\naddress = \"10.0.0.5:80\"\nversion = 1\n"
            ),
            "t.toml",
        )
        .unwrap();
        assert!(c.upstream_hosted_cache.unwrap().offer);
        for (text, key) in [
            ("offer = true\n", "upstream_hosted_cache.offer"),
            ("version = 3\n", "upstream_hosted_cache.version"),
            (
                "server_name = \"bad name\"\n",
                "upstream_hosted_cache.server_name",
            ),
        ] {
            let err = Config::from_toml(
                &format!("{PROXY}[upstream_hosted_cache]\naddress = \"10.0.0.5:80\"\n{text}"),
                "t.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Config::from_toml(&format!("{PROXY}[upstream_hosted_cache]\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream_hosted_cache.address"), "{err}");
        let c = Config::from_toml(
            "[proxy]\nupstream = \"http://o\"\npeers = [\"10.0.0.7:8082\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.proxy.unwrap().peers,
            vec!["10.0.0.7:8082".parse().unwrap()]
        );
        let err = Config::from_toml(
            "[proxy]\nupstream = \"http://o\"\npeers = [\"nope\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("proxy.peers"), "{err}");
    }
}

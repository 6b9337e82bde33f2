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

/// The configuration used when `run` is given no `--config`.
pub const EMBEDDED_DEFAULTS: &str = r#"
[store]
path = "branchcache-data"
max_size = "10 GiB"

[admin]
listen = "127.0.0.1:9090"

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
    pub proxy: Option<toml::Table>,
    /// `[publisher]`
    pub publisher: Option<toml::Table>,
    /// `[peer]`
    pub peer: Option<toml::Table>,
    /// `[hosted_cache]`
    pub hosted_cache: Option<toml::Table>,
    /// `[upstream_hosted_cache]`
    pub upstream_hosted_cache: Option<toml::Table>,
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
#[derive(Debug, Clone)]
pub struct Config {
    /// Store settings (always present: every role shares the store).
    pub store: StoreConfig,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Validated `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory.
    pub path: PathBuf,
    /// Bytes.
    pub max_size: u64,
}

/// Validated `[admin]`.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Filter directive.
    pub level: String,
    /// Format.
    pub format: LogFormat,
}

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
        for (name, present) in [
            ("proxy", file.proxy.is_some()),
            ("publisher", file.publisher.is_some()),
            ("peer", file.peer.is_some()),
            ("hosted_cache", file.hosted_cache.is_some()),
            (
                "upstream_hosted_cache",
                file.upstream_hosted_cache.is_some(),
            ),
        ] {
            if present {
                return Err(invalid(
                    name,
                    format!("the `{name}` role is not available in this build yet"),
                ));
            }
        }

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

        Ok(Config {
            store,
            admin: AdminConfig { listen },
            log: LogConfig { level, format },
        })
    }
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
}

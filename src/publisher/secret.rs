//! The server secret key: read from `secret_file`, or created there with 32
//! random bytes (mode 0600) on first start.
//!
//! Rotating the key changes `Ks`, hence every segment secret (`Kp`) and every
//! segment id (`HoHoDk`) this publisher hands out: branch caches then treat
//! all content as new. The key never reaches a log (`Debug` is redacted).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Length of a generated key. Windows' own keys are 32 bytes too.
pub const GENERATED_KEY_LEN: usize = 32;
/// Longest key file we accept; anything bigger is not a key.
pub const MAX_KEY_LEN: u64 = 4096;

/// The raw server secret key (`Ks = H(key)` is derived per CI version).
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    /// Wrap key bytes (tests, imported Windows keys).
    pub fn from_bytes(b: Vec<u8>) -> Self {
        SecretKey(b)
    }

    /// The key bytes, for deriving `Ks`. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading, creating or writing the file failed.
    #[error("server secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file exists but is empty or implausibly large.
    #[error("server secret file {path}: {len} bytes (expected 1..={MAX_KEY_LEN})")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The OS random source failed.
    #[error("cannot generate a server secret: {0}")]
    Random(getrandom::Error),
}

/// Read the key at `path`, or create it (parents too) with
/// [`GENERATED_KEY_LEN`] random bytes, mode 0600. Returns the key and
/// whether it was created.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let len = meta.len();
            if len == 0 || len > MAX_KEY_LEN {
                return Err(SecretError::BadLength {
                    path: path.to_path_buf(),
                    len,
                });
            }
            let bytes = std::fs::read(path).map_err(io)?;
            Ok((SecretKey(bytes), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; GENERATED_KEY_LEN];
            getrandom::getrandom(&mut key).map_err(SecretError::Random)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(io)?;
            f.write_all(&key).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok((SecretKey(key), true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_key_once_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(k1.expose().len(), GENERATED_KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.expose(), k2.expose());
    }

    #[test]
    fn empty_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(SecretError::BadLength { len: 0, .. })
        ));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = SecretKey::from_bytes(b"hunter2".to_vec());
        assert_eq!(format!("{k:?}"), "SecretKey([redacted])");
    }
}

//! The content-information cache: one entry per (URL, CI version), holding
//! the validator it was computed for, bounded in bytes with LRU eviction.
//!
//! An entry is replaced when the origin shows a different validator, so a
//! changed object never gets a stale CI.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;

use crate::proto::negotiate::CiVersion;
use crate::proto::pccrc::build::ContentHashes;

/// What identifies one version of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    /// A strong `ETag`.
    ETag(HeaderValue),
    /// `Last-Modified` plus the entity length (weak ETags are not used).
    LastModified(HeaderValue, u64),
}

/// A computed CI and the response metadata served with it.
#[derive(Debug)]
pub struct CiEntry {
    /// The validator the CI was computed for (`None`: hashed for one request only).
    pub validator: Option<Validator>,
    /// All segment hashes (range CIs are encoded from these on demand).
    pub hashes: ContentHashes,
    /// The whole-entity CI, encoded once.
    pub full: Bytes,
    /// Origin `Content-Type`.
    pub content_type: Option<HeaderValue>,
    /// Origin `ETag`.
    pub etag: Option<HeaderValue>,
    /// Origin `Last-Modified`.
    pub last_modified: Option<HeaderValue>,
    last_used: AtomicU64,
}

impl CiEntry {
    /// A new entry.
    pub fn new(
        validator: Option<Validator>,
        hashes: ContentHashes,
        full: Bytes,
        content_type: Option<HeaderValue>,
        etag: Option<HeaderValue>,
        last_modified: Option<HeaderValue>,
    ) -> Self {
        CiEntry {
            validator,
            hashes,
            full,
            content_type,
            etag,
            last_modified,
            last_used: AtomicU64::new(0),
        }
    }

    /// Identity length of the entity.
    pub fn entity_len(&self) -> u64 {
        self.hashes.total_len
    }

    /// Bytes this entry costs against the cache bound: the encoded CI plus
    /// the decoded hashes (about the same again) plus bookkeeping.
    fn cost(&self, key: &str) -> u64 {
        let per_entry = 512;
        (2 * self.full.len() + key.len() + per_entry) as u64
    }
}

type Key = (String, CiVersion);

/// Size-bounded LRU map of [`CiEntry`]s.
#[derive(Debug)]
pub struct CiCache {
    /// The bound in bytes; [`CiCache::set_limit`] changes it (reload).
    limit: AtomicU64,
    inner: Mutex<Inner>,
    clock: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Arc<CiEntry>>,
    used: u64,
}

impl CiCache {
    /// An empty cache holding at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        CiCache {
            limit: AtomicU64::new(limit),
            inner: Mutex::new(Inner::default()),
            clock: AtomicU64::new(1),
        }
    }

    /// Change the bound (configuration reload); a lower one evicts least
    /// recently used entries now.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
        Self::evict_to(&mut self.lock(), limit);
    }

    /// Evict least recently used entries until at most `room` bytes are used.
    fn evict_to(inner: &mut Inner, room: u64) {
        while inner.used > room {
            let victim = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            match victim.and_then(|k| inner.map.remove_entry(&k)) {
                Some((k, e)) => inner.used -= e.cost(&k.0),
                None => break,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `url` and `version`, marking it used.
    pub fn get(&self, url: &str, version: CiVersion) -> Option<Arc<CiEntry>> {
        let e = self.lock().map.get(&(url.to_string(), version)).cloned()?;
        e.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(e)
    }

    /// Store (or replace) the entry for `url` and `version`, evicting the least
    /// recently used entries beyond the bound. Entries bigger than the bound are not kept.
    pub fn insert(&self, url: &str, version: CiVersion, entry: Arc<CiEntry>) {
        let cost = entry.cost(url);
        let key = (url.to_string(), version);
        let limit = self.limit.load(Ordering::Relaxed);
        let mut inner = self.lock();
        if let Some(old) = inner.map.remove(&key) {
            inner.used -= old.cost(&key.0);
        }
        if cost > limit {
            return;
        }
        Self::evict_to(&mut inner, limit - cost);
        entry.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        inner.used += cost;
        inner.map.insert(key, entry);
    }

    /// Drop the entry for `url` and `version`.
    pub fn remove(&self, url: &str, version: CiVersion) {
        let mut inner = self.lock();
        if let Some(old) = inner.map.remove(&(url.to_string(), version)) {
            inner.used -= old.cost(url);
        }
    }

    /// Bytes currently accounted.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pccrc::build::hash_content;
    use crate::proto::pccrc::{server_secret, HashAlgo, Version};

    fn entry(n: usize) -> Arc<CiEntry> {
        let ks = server_secret(HashAlgo::Sha256, b"k");
        let h = hash_content(Version::V1, HashAlgo::Sha256, &ks, &vec![7u8; n]);
        let full = Bytes::from(h.encode(None).unwrap());
        Arc::new(CiEntry::new(None, h, full, None, None, None))
    }

    #[test]
    fn evicts_least_recently_used_beyond_bound() {
        let one = entry(100_000).cost("/a");
        let cache = CiCache::new(one * 2 + 10);
        cache.insert("/a", CiVersion::V1, entry(100_000));
        cache.insert("/b", CiVersion::V1, entry(100_000));
        assert!(cache.get("/a", CiVersion::V1).is_some()); // /a now more recent than /b
        cache.insert("/c", CiVersion::V1, entry(100_000));
        assert!(cache.get("/b", CiVersion::V1).is_none());
        assert!(cache.get("/a", CiVersion::V1).is_some());
        assert!(cache.get("/c", CiVersion::V1).is_some());
        assert!(cache.used() <= one * 2 + 10);
    }

    #[test]
    fn replacing_an_entry_keeps_accounting_exact() {
        let cache = CiCache::new(1 << 20);
        cache.insert("/a", CiVersion::V1, entry(100_000));
        let used = cache.used();
        cache.insert("/a", CiVersion::V1, entry(100_000));
        assert_eq!(cache.used(), used);
        assert_eq!(cache.len(), 1);
        cache.remove("/a", CiVersion::V1);
        assert_eq!(cache.used(), 0);
        assert!(cache.get("/a", CiVersion::V1).is_none());
    }

    #[test]
    fn entry_larger_than_bound_is_not_kept() {
        let cache = CiCache::new(10);
        cache.insert("/a", CiVersion::V1, entry(100_000));
        assert!(cache.is_empty());
    }

    #[test]
    fn lowering_the_limit_evicts_now() {
        let one = entry(100_000).cost("/a");
        let cache = CiCache::new(one * 3);
        for u in ["/a", "/b", "/c"] {
            cache.insert(u, CiVersion::V1, entry(100_000));
        }
        assert!(cache.get("/a", CiVersion::V1).is_some()); // /b is now the oldest
        cache.set_limit(one * 2);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("/b", CiVersion::V1).is_none());
        assert!(cache.used() <= one * 2);
    }
}

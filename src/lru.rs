//! Lazy promotion for the tick-ordered LRUs (the store's segments, its hot
//! blocks, the proxy's freshness entries).
//!
//! Each of them keeps `tick → key` in a `BTreeMap` and moves an entry to the
//! newest tick on every use: two tree operations per hit, which showed up as
//! several per cent of a small hit's CPU. An entry used less than a quarter
//! of the cache's length of uses ago is already among the most recently used
//! quarter, so moving it again cannot change what is evicted next; it is
//! left where it is. Eviction stays least-recently-used up to that quarter.

/// Whether an entry last promoted at `last` should be moved to the newest
/// tick `now`, in an LRU of `len` entries.
pub fn should_promote(last: u64, now: u64, len: usize) -> bool {
    now.saturating_sub(last) > (len / 4) as u64
}

#[cfg(test)]
mod tests {
    use super::should_promote;

    #[test]
    fn small_caches_stay_exact_and_recent_entries_stay_put() {
        // Up to 3 entries: every use promotes except of the newest one.
        assert!(should_promote(5, 7, 3));
        assert!(!should_promote(6, 6, 3));
        // 100 entries: used within the last 25 uses → left in place.
        assert!(!should_promote(80, 105, 100));
        assert!(should_promote(79, 105, 100));
        // A tick from the future (never happens) does not promote.
        assert!(!should_promote(10, 5, 100));
    }
}

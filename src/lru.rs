//! Exact LRU order with lazy repositioning, shared by the store's segments,
//! its hot blocks and the proxy's freshness entries.
//!
//! Each of them keeps its entries in a `HashMap` and the use order in an
//! [`LruOrder`]: a `BTreeMap` from tick to key plus a clock. Every entry
//! carries a [`Stamp`]: `used`, the (unique) tick of its last use, and
//! `pos`, the tick at which its key sits in the tree (`pos <= used`).
//!
//! - A use ([`LruOrder::touch`]) only sets `used` to the next tick: no tree
//!   operation, no allocation. That is the whole cost of a cache hit.
//! - An eviction ([`LruOrder::pop_lru`]) takes the first tree node; if its
//!   entry was used after it was placed there (`used > pos`) the node is
//!   moved to `used` and the next one is looked at, otherwise that entry is
//!   the least recently used of all and is the victim. Every entry's `used`
//!   is at least its `pos`, so the first node whose entry has `used == pos`
//!   has the smallest `used` of all: the order is exact. Each use causes at
//!   most one later move, so eviction is amortised one tree operation per
//!   use plus one per victim — paid by the (rarer) inserts, not the hits.
//! - A removal ([`LruOrder::remove`]) deletes the node at `pos`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

/// Where an entry sits in an [`LruOrder`] and when it was last used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Tick of the entry's node in the order tree.
    pub pos: u64,
    /// Tick of the entry's last use (`>= pos`, unique in its order).
    pub used: u64,
}

/// A map value that carries its entry's [`Stamp`].
pub trait Stamped {
    /// The entry's stamp.
    fn stamp_mut(&mut self) -> &mut Stamp;
}

impl Stamped for Stamp {
    fn stamp_mut(&mut self) -> &mut Stamp {
        self
    }
}

/// Use order of the entries of a map (see the module documentation).
#[derive(Debug)]
pub struct LruOrder<K> {
    /// `pos` → key; every entry of the map has exactly one node.
    tree: BTreeMap<u64, K>,
    /// The next tick handed out.
    clock: u64,
}

impl<K> Default for LruOrder<K> {
    fn default() -> Self {
        LruOrder {
            tree: BTreeMap::new(),
            clock: 0,
        }
    }
}

impl<K> LruOrder<K> {
    /// Add `key` as the most recently used entry; its stamp is returned for
    /// the caller to store with the entry.
    pub fn insert(&mut self, key: K) -> Stamp {
        let tick = self.next_tick();
        self.tree.insert(tick, key);
        Stamp {
            pos: tick,
            used: tick,
        }
    }

    /// Add `key` last used at `tick` (an order restored from disk). Ticks
    /// must be unique: one already taken is replaced by the next free tick
    /// (the entry then counts as the most recently used). Later ticks are
    /// handed out above `tick`.
    pub fn insert_at(&mut self, key: K, tick: u64) -> Stamp {
        let tick = if self.tree.contains_key(&tick) {
            debug_assert!(false, "LRU tick {tick} inserted twice");
            self.next_tick()
        } else {
            self.clock = self.clock.max(tick.saturating_add(1));
            tick
        };
        self.tree.insert(tick, key);
        Stamp {
            pos: tick,
            used: tick,
        }
    }

    /// Mark the entry with `stamp` used now: no tree operation.
    pub fn touch(&mut self, stamp: &mut Stamp) {
        stamp.used = self.next_tick();
    }

    /// Remove the node of the entry with `stamp` (the caller removes the
    /// entry itself).
    pub fn remove(&mut self, stamp: &Stamp) -> Option<K> {
        self.tree.remove(&stamp.pos)
    }

    /// Take the least recently used key of `map` out of the order (the
    /// caller removes its entry), moving nodes of entries used since they
    /// were placed to their last use on the way. `None` when empty. Nodes
    /// whose key has no entry in `map` (never left by the callers) are
    /// dropped.
    pub fn pop_lru<V, S>(&mut self, map: &mut HashMap<K, V, S>) -> Option<K>
    where
        K: Hash + Eq,
        V: Stamped,
        S: BuildHasher,
    {
        while let Some((pos, key)) = self.tree.pop_first() {
            let Some(stamp) = map.get_mut(&key).map(Stamped::stamp_mut) else {
                continue;
            };
            if stamp.pos != pos {
                // A node left by an older incarnation of the key.
                continue;
            }
            if stamp.used == pos {
                return Some(key);
            }
            stamp.pos = stamp.used;
            let displaced = self.tree.insert(stamp.used, key);
            debug_assert!(displaced.is_none(), "LRU ticks are unique");
        }
        None
    }

    /// Number of nodes (one per entry).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Every node as `(pos, key)`, by `pos` (not by last use).
    pub fn nodes(&self) -> impl Iterator<Item = (u64, &K)> {
        self.tree.iter().map(|(pos, k)| (*pos, k))
    }

    fn next_tick(&mut self) -> u64 {
        let t = self.clock;
        self.clock += 1;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Map = HashMap<u8, Stamp>;

    fn insert(o: &mut LruOrder<u8>, m: &mut Map, k: u8) {
        let s = o.insert(k);
        m.insert(k, s);
    }

    fn touch(o: &mut LruOrder<u8>, m: &mut Map, k: u8) {
        o.touch(m.get_mut(&k).unwrap());
    }

    fn evict(o: &mut LruOrder<u8>, m: &mut Map) -> Option<u8> {
        let k = o.pop_lru(m)?;
        m.remove(&k);
        Some(k)
    }

    #[test]
    fn touches_move_no_node_and_eviction_is_exact() {
        let mut o = LruOrder::default();
        let mut m = Map::new();
        for k in 0..4 {
            insert(&mut o, &mut m, k);
        }
        touch(&mut o, &mut m, 0);
        touch(&mut o, &mut m, 2);
        touch(&mut o, &mut m, 0);
        // Still one node per entry, each at its insert tick.
        assert_eq!(
            o.nodes().map(|(p, k)| (p, *k)).collect::<Vec<_>>(),
            vec![(0, 0), (1, 1), (2, 2), (3, 3)]
        );
        assert_eq!(m[&0], Stamp { pos: 0, used: 6 });
        // Order of last use: 1, 3, 2, 0.
        assert_eq!(evict(&mut o, &mut m), Some(1));
        // Popping 1 moved 0 to its last use: it is never looked at twice.
        assert_eq!(m[&0], Stamp { pos: 6, used: 6 });
        assert_eq!(evict(&mut o, &mut m), Some(3));
        assert_eq!(evict(&mut o, &mut m), Some(2));
        assert_eq!(evict(&mut o, &mut m), Some(0));
        assert_eq!(evict(&mut o, &mut m), None);
        assert!(o.is_empty());
    }

    #[test]
    fn remove_deletes_the_node_where_it_sits() {
        let mut o = LruOrder::default();
        let mut m = Map::new();
        insert(&mut o, &mut m, 1);
        insert(&mut o, &mut m, 2);
        touch(&mut o, &mut m, 1);
        let s = m.remove(&1).unwrap();
        assert_eq!(o.remove(&s), Some(1));
        assert_eq!(o.len(), 1);
        assert_eq!(evict(&mut o, &mut m), Some(2));
    }

    #[test]
    fn restored_ticks_keep_their_order_and_new_ticks_come_after() {
        let mut o = LruOrder::default();
        let mut m = Map::new();
        m.insert(7, o.insert_at(7, 40));
        m.insert(8, o.insert_at(8, 10));
        insert(&mut o, &mut m, 9);
        assert_eq!(m[&9].used, 41);
        touch(&mut o, &mut m, 8);
        assert_eq!(evict(&mut o, &mut m), Some(7));
        assert_eq!(evict(&mut o, &mut m), Some(9));
        assert_eq!(evict(&mut o, &mut m), Some(8));
    }

    #[test]
    fn nodes_without_a_current_entry_are_skipped() {
        let mut o = LruOrder::default();
        let mut m = Map::new();
        insert(&mut o, &mut m, 1);
        insert(&mut o, &mut m, 2);
        // Key 1 re-inserted without removing its old node.
        insert(&mut o, &mut m, 1);
        // Key 3 has a node but no entry.
        o.insert(3);
        assert_eq!(evict(&mut o, &mut m), Some(2));
        assert_eq!(evict(&mut o, &mut m), Some(1));
        assert_eq!(evict(&mut o, &mut m), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Touch(u8),
        Remove(u8),
        Evict,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..12).prop_map(Op::Insert),
            5 => (0u8..12).prop_map(Op::Touch),
            1 => (0u8..12).prop_map(Op::Remove),
            2 => Just(Op::Evict),
        ]
    }

    proptest! {
        /// Same victims, in the same order, as a naive exact LRU (a list
        /// ordered by last use).
        #[test]
        fn matches_a_naive_exact_lru(ops in proptest::collection::vec(op(), 0..200)) {
            let mut o = LruOrder::default();
            let mut m = Map::new();
            // Least recently used first.
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        if !m.contains_key(&k) {
                            insert(&mut o, &mut m, k);
                            model.push(k);
                        }
                    }
                    Op::Touch(k) => {
                        if m.contains_key(&k) {
                            touch(&mut o, &mut m, k);
                            model.retain(|x| *x != k);
                            model.push(k);
                        }
                    }
                    Op::Remove(k) => {
                        if let Some(s) = m.remove(&k) {
                            prop_assert_eq!(o.remove(&s), Some(k));
                            model.retain(|x| *x != k);
                        }
                    }
                    Op::Evict => {
                        let want = (!model.is_empty()).then(|| model.remove(0));
                        prop_assert_eq!(evict(&mut o, &mut m), want);
                    }
                }
                prop_assert_eq!(o.len(), m.len());
                for (pos, k) in o.nodes() {
                    let s = m[k];
                    prop_assert!(s.pos == pos && s.pos <= s.used);
                }
            }
            // Draining gives the rest in model order.
            let mut rest = Vec::new();
            while let Some(k) = evict(&mut o, &mut m) {
                rest.push(k);
            }
            prop_assert_eq!(rest, model);
        }
    }
}

//! The redb index: table definitions, key/value encodings and loading the
//! whole index into memory at open. Format: `docs/STORE-FORMAT.md`.

use redb::{ReadableTable, TableDefinition};

use super::meta::SegmentMeta;
use super::StoreError;
use crate::proto::codec::{Reader, Writer};
use crate::proto::pccrc::SegmentId;

/// On-disk format version; bump on any incompatible change to the tables below
/// or to the data file layout.
pub const FORMAT_VERSION: u64 = 1;

/// `"format_version"` → [`FORMAT_VERSION`].
pub(crate) const INFO: TableDefinition<&str, u64> = TableDefinition::new("info");
/// segment key → [`SegmentMeta::encode`].
pub(crate) const SEGMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("segments");
/// segment key → last-access tick (u64), persisted lazily.
pub(crate) const ACCESS: TableDefinition<&[u8], u64> = TableDefinition::new("access");
/// block key → `crc32c u32 LE ‖ length u32 LE`.
pub(crate) const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");

/// Segment key: `id length u8 ‖ id bytes` (the length prefix keeps a 32-byte
/// id from ever being a prefix of a longer one in block key ranges).
pub(crate) fn segment_key(id: &SegmentId) -> Vec<u8> {
    let b = id.as_bytes();
    let mut k = Vec::with_capacity(1 + b.len());
    k.push(b.len() as u8);
    k.extend_from_slice(b);
    k
}

/// Block key: segment key ‖ block index u32 BE (so a segment's blocks sort together, in order).
pub(crate) fn block_key(id: &SegmentId, index: u32) -> Vec<u8> {
    let mut k = segment_key(id);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Parse a segment key.
pub(crate) fn parse_segment_key(k: &[u8]) -> Option<SegmentId> {
    let mut r = Reader::new(k);
    let len = r.u8("id length").ok()?;
    let id = r.take(usize::from(len), "id").ok()?;
    r.expect_empty("segment key").ok()?;
    SegmentId::from_slice(id)
}

/// Parse a block key.
pub(crate) fn parse_block_key(k: &[u8]) -> Option<(SegmentId, u32)> {
    let mut r = Reader::new(k);
    let len = r.u8("id length").ok()?;
    let id = SegmentId::from_slice(r.take(usize::from(len), "id").ok()?)?;
    let index = r.u32_be("block index").ok()?;
    r.expect_empty("block key").ok()?;
    Some((id, index))
}

/// Block record value.
pub(crate) fn block_value(crc: u32, len: u32) -> [u8; 8] {
    let mut w = Writer::with_capacity(8);
    w.u32_le(crc).u32_le(len);
    let v = w.finish();
    let mut out = [0u8; 8];
    out.copy_from_slice(&v);
    out
}

/// Parse a block record value into `(crc32c, length)`.
pub(crate) fn parse_block_value(v: &[u8]) -> Option<(u32, u32)> {
    let mut r = Reader::new(v);
    let crc = r.u32_le("crc").ok()?;
    let len = r.u32_le("length").ok()?;
    r.expect_empty("block record").ok()?;
    Some((crc, len))
}

/// One segment as loaded from the index.
pub(crate) struct LoadedSegment {
    pub id: SegmentId,
    pub meta: SegmentMeta,
    pub tick: u64,
    /// `(index, crc32c)` of every block recorded present with the right length.
    pub blocks: Vec<(u32, u32)>,
}

/// Everything in the index, plus keys of records that are invalid and should be deleted.
pub(crate) struct Loaded {
    pub segments: Vec<LoadedSegment>,
    pub bad_segment_keys: Vec<Vec<u8>>,
    pub bad_block_keys: Vec<Vec<u8>>,
}

/// Create the tables if missing, check the format version, and delete records that do not decode.
pub(crate) fn init_and_load(db: &redb::Database) -> Result<Loaded, StoreError> {
    let txn = db.begin_write()?;
    {
        let mut info = txn.open_table(INFO)?;
        let found = info.get("format_version")?.map(|v| v.value());
        match found {
            None => {
                info.insert("format_version", FORMAT_VERSION)?;
            }
            Some(v) if v == FORMAT_VERSION => {}
            Some(v) => {
                return Err(StoreError::UnsupportedFormat {
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
        }
        txn.open_table(SEGMENTS)?;
        txn.open_table(ACCESS)?;
        txn.open_table(BLOCKS)?;
    }
    txn.commit()?;

    let mut loaded = load(db)?;
    if !loaded.bad_segment_keys.is_empty() || !loaded.bad_block_keys.is_empty() {
        let txn = db.begin_write()?;
        {
            let mut segs = txn.open_table(SEGMENTS)?;
            let mut access = txn.open_table(ACCESS)?;
            for k in &loaded.bad_segment_keys {
                segs.remove(k.as_slice())?;
                access.remove(k.as_slice())?;
            }
            let mut blocks = txn.open_table(BLOCKS)?;
            for k in &loaded.bad_block_keys {
                blocks.remove(k.as_slice())?;
            }
        }
        txn.commit()?;
        tracing::warn!(
            segments = loaded.bad_segment_keys.len(),
            blocks = loaded.bad_block_keys.len(),
            "store index: removed records that do not decode or match their segment"
        );
        loaded.bad_segment_keys.clear();
        loaded.bad_block_keys.clear();
    }
    Ok(loaded)
}

fn load(db: &redb::Database) -> Result<Loaded, StoreError> {
    use std::collections::HashMap;
    let txn = db.begin_read()?;
    let segs = txn.open_table(SEGMENTS)?;
    let access = txn.open_table(ACCESS)?;
    let blocks = txn.open_table(BLOCKS)?;

    let mut out = Loaded {
        segments: Vec::new(),
        bad_segment_keys: Vec::new(),
        bad_block_keys: Vec::new(),
    };
    let mut by_id: HashMap<SegmentId, usize> = HashMap::new();
    for row in segs.iter()? {
        let (k, v) = row?;
        let parsed = parse_segment_key(k.value())
            .and_then(|id| SegmentMeta::decode(v.value()).ok().map(|m| (id, m)))
            .filter(|(id, m)| m.validate(id).is_ok());
        match parsed {
            Some((id, meta)) => {
                let tick = access.get(k.value())?.map(|t| t.value()).unwrap_or(0);
                by_id.insert(id, out.segments.len());
                out.segments.push(LoadedSegment {
                    id,
                    meta,
                    tick,
                    blocks: Vec::new(),
                });
            }
            None => out.bad_segment_keys.push(k.value().to_vec()),
        }
    }
    for row in blocks.iter()? {
        let (k, v) = row?;
        let ok = parse_block_key(k.value()).and_then(|(id, index)| {
            let seg = out.segments.get_mut(*by_id.get(&id)?)?;
            let (crc, len) = parse_block_value(v.value())?;
            (seg.meta.block_len(index)? == len).then(|| seg.blocks.push((index, crc)))
        });
        if ok.is_none() {
            out.bad_block_keys.push(k.value().to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_blocks_by_index() {
        let id = SegmentId::from_slice(&[9u8; 32]).unwrap();
        assert_eq!(parse_segment_key(&segment_key(&id)), Some(id));
        assert_eq!(parse_block_key(&block_key(&id, 7)), Some((id, 7)));
        assert!(block_key(&id, 1) < block_key(&id, 256));
        assert_eq!(
            parse_block_value(&block_value(0xdead_beef, 5)),
            Some((0xdead_beef, 5))
        );
        assert_eq!(parse_block_value(&[0; 7]), None);
        assert_eq!(parse_block_key(&segment_key(&id)), None);
    }
}

//! Fuzz harness for the hosted cache's replay record decoder
//! ([`crate::hosted_cache::replay::decode_record`]), which reads files from disk.

use crate::hosted_cache::replay::{decode_record, encode_record, RECORD_OVERHEAD};
use crate::proto::pccrr::{IV_LEN, MAX_BLOCK_LEN};

/// Decode a record; when accepted, its fields are in bounds and it
/// re-encodes to exactly the input (the format has no slack).
pub fn record(data: &[u8]) {
    let Ok(raw) = decode_record(data) else {
        return;
    };
    assert!(!raw.block.is_empty() && raw.block.len() <= MAX_BLOCK_LEN);
    assert!(raw.iv.is_empty() || raw.iv.len() == IV_LEN);
    assert!(data.len() <= RECORD_OVERHEAD + MAX_BLOCK_LEN);
    assert_eq!(encode_record(&raw), data);
}

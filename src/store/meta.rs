//! Segment metadata: what the store must know to verify and serve a segment,
//! its validation against the segment id, and its on-disk record encoding
//! (see `docs/STORE-FORMAT.md`).

use std::fmt;

use crate::proto::codec::{DecodeError, Reader, Writer};
use crate::proto::pccrc::{
    segment_id, Digest, HashAlgo, SegmentId, SegmentSecret, MAX_BLOCKS_PER_SEGMENT,
    V1_SEGMENT_SIZE, V2_MAX_SEGMENT_SIZE,
};

/// Everything needed to verify and serve one segment.
///
/// v1 segments carry one hash per block (`block_hashes`), and
/// `hash_of_data = H(block hashes)`. v2 segments have `block_hashes` empty:
/// the whole segment is block 0, `block_size == size`, its hash is
/// `hash_of_data` and the algorithm is [`HashAlgo::Sha512Trunc`].
#[derive(Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Hash algorithm of the content information.
    pub algo: HashAlgo,
    /// Segment length in bytes.
    pub size: u32,
    /// Block length (v1: 65536; v2: equal to `size`).
    pub block_size: u32,
    /// HoD.
    pub hash_of_data: Digest,
    /// Kp. Never logged.
    pub secret: SegmentSecret,
    /// v1: one hash per block; v2: empty.
    pub block_hashes: Vec<Digest>,
}

impl fmt::Debug for SegmentMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentMeta")
            .field("algo", &self.algo)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("hash_of_data", &self.hash_of_data)
            .field("secret", &self.secret)
            .field("block_hashes", &self.block_hashes.len())
            .finish()
    }
}

impl SegmentMeta {
    /// Is this a v2 segment (one block, hashed as a whole)?
    pub fn is_v2(&self) -> bool {
        self.block_hashes.is_empty()
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u32 {
        if self.is_v2() {
            1
        } else {
            u32::try_from(self.block_hashes.len()).unwrap_or(u32::MAX)
        }
    }

    /// Length of block `index`, or `None` past the end.
    pub fn block_len(&self, index: u32) -> Option<u32> {
        if index >= self.block_count() {
            return None;
        }
        let start = u64::from(index) * u64::from(self.block_size);
        let rest = u64::from(self.size).checked_sub(start)?;
        u32::try_from(rest.min(u64::from(self.block_size))).ok()
    }

    /// Expected hash of block `index`, or `None` past the end.
    pub fn block_hash(&self, index: u32) -> Option<Digest> {
        if self.is_v2() {
            (index == 0).then_some(self.hash_of_data)
        } else {
            self.block_hashes.get(usize::try_from(index).ok()?).copied()
        }
    }

    /// Byte offset of block `index` inside the segment.
    pub(crate) fn block_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.block_size)
    }

    /// Check internal consistency and that `id` derives from (HoD, Kp):
    /// `id == HMAC(Kp, HoD ‖ C2)`, and for v1 `H(block hashes) == HoD`.
    pub fn validate(&self, id: &SegmentId) -> Result<(), &'static str> {
        let dlen = self.algo.digest_len();
        if self.size == 0 {
            return Err("segment size is 0");
        }
        if self.block_size == 0 {
            return Err("block size is 0");
        }
        if self.hash_of_data.as_bytes().len() != dlen {
            return Err("HoD length does not match the hash algorithm");
        }
        if self.secret.expose().len() != dlen {
            return Err("segment secret length does not match the hash algorithm");
        }
        if self.is_v2() {
            if self.algo != HashAlgo::Sha512Trunc {
                return Err("a segment without block hashes must be v2 (sha512-trunc)");
            }
            if self.size > V2_MAX_SEGMENT_SIZE {
                return Err("v2 segment larger than 128 KiB");
            }
            if self.block_size != self.size {
                return Err("v2 block size must equal the segment size");
            }
        } else {
            if self.algo == HashAlgo::Sha512Trunc {
                return Err("v1 segment with the v2 hash algorithm");
            }
            if self.size > V1_SEGMENT_SIZE {
                return Err("v1 segment larger than 32 MiB");
            }
            let count = self.block_hashes.len();
            if count > MAX_BLOCKS_PER_SEGMENT as usize {
                return Err("more block hashes than a segment can have");
            }
            let expected = u64::from(self.size).div_ceil(u64::from(self.block_size));
            if count as u64 != expected {
                return Err("block hash count does not match size / block size");
            }
            if self.block_hashes.iter().any(|h| h.as_bytes().len() != dlen) {
                return Err("block hash length does not match the hash algorithm");
            }
            let mut cat = Vec::with_capacity(count * dlen);
            for h in &self.block_hashes {
                cat.extend_from_slice(h.as_bytes());
            }
            if self.algo.hash(&cat) != self.hash_of_data {
                return Err("block hashes do not hash to HoD");
            }
        }
        if segment_id(self.algo, &self.secret, &self.hash_of_data) != *id {
            return Err("segment id does not derive from (HoD, Kp)");
        }
        Ok(())
    }

    /// Encode as a `segments` table value (format in `docs/STORE-FORMAT.md`).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let dlen = self.algo.digest_len();
        let mut w = Writer::with_capacity(16 + dlen * (2 + self.block_hashes.len()));
        w.u8(algo_code(self.algo))
            .u32_le(self.size)
            .u32_le(self.block_size)
            .bytes(self.hash_of_data.as_bytes())
            .bytes(self.secret.expose())
            .u32_le(u32::try_from(self.block_hashes.len()).unwrap_or(u32::MAX));
        for h in &self.block_hashes {
            w.bytes(h.as_bytes());
        }
        w.finish()
    }

    /// Decode a `segments` table value.
    pub(crate) fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let code = r.u8("hash algorithm")?;
        let algo = algo_from_code(code).ok_or(DecodeError::Unsupported {
            what: "hash algorithm",
            value: u64::from(code),
        })?;
        let dlen = algo.digest_len();
        let size = r.u32_le("segment size")?;
        let block_size = r.u32_le("block size")?;
        let hash_of_data = digest(r.take(dlen, "HoD")?)?;
        let secret = SegmentSecret::from_slice(r.take(dlen, "segment secret")?).ok_or(
            DecodeError::Invalid {
                what: "segment secret",
            },
        )?;
        let count = r.u32_le("block hash count")?;
        if count > MAX_BLOCKS_PER_SEGMENT {
            return Err(DecodeError::LimitExceeded {
                what: "block hash count",
                max: u64::from(MAX_BLOCKS_PER_SEGMENT),
            });
        }
        let mut block_hashes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            block_hashes.push(digest(r.take(dlen, "block hash")?)?);
        }
        r.expect_empty("segment record")?;
        Ok(SegmentMeta {
            algo,
            size,
            block_size,
            hash_of_data,
            secret,
            block_hashes,
        })
    }
}

fn digest(b: &[u8]) -> Result<Digest, DecodeError> {
    Digest::from_slice(b).ok_or(DecodeError::Invalid { what: "digest" })
}

/// Store-format code of a hash algorithm (not a wire value).
fn algo_code(a: HashAlgo) -> u8 {
    match a {
        HashAlgo::Sha256 => 1,
        HashAlgo::Sha384 => 2,
        HashAlgo::Sha512 => 3,
        HashAlgo::Sha512Trunc => 4,
    }
}

fn algo_from_code(c: u8) -> Option<HashAlgo> {
    Some(match c {
        1 => HashAlgo::Sha256,
        2 => HashAlgo::Sha384,
        3 => HashAlgo::Sha512,
        4 => HashAlgo::Sha512Trunc,
        _ => return None,
    })
}

impl SegmentMeta {
    /// Hash a whole v1 segment's bytes with the builder ([`crate::proto::pccrc::hash_segment`])
    /// and return its id and metadata, ready for [`crate::store::Store::put_meta`].
    pub fn hash_v1(
        algo: HashAlgo,
        ks: &crate::proto::pccrc::ServerSecret,
        data: &[u8],
    ) -> (SegmentId, SegmentMeta) {
        let h =
            crate::proto::pccrc::hash_segment(crate::proto::pccrc::Version::V1, algo, ks, 0, data);
        let id = h.id(algo);
        let meta = SegmentMeta {
            algo,
            size: h.size,
            block_size: crate::proto::pccrc::BLOCK_SIZE,
            hash_of_data: h.hash_of_data,
            secret: h.secret,
            block_hashes: h.block_hashes,
        };
        (id, meta)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::pccrc::{segment_secret, server_secret};

    /// A valid v1 (SHA-256) segment of `data` and its id.
    pub(crate) fn v1_segment(data: &[u8]) -> (SegmentId, SegmentMeta) {
        let algo = HashAlgo::Sha256;
        SegmentMeta::hash_v1(algo, &server_secret(algo, b"test key"), data)
    }

    /// A valid v2 segment of `data` and its id.
    pub(crate) fn v2_segment(data: &[u8]) -> (SegmentId, SegmentMeta) {
        let algo = HashAlgo::Sha512Trunc;
        let hod = algo.hash(data);
        let kp = segment_secret(algo, &server_secret(algo, b"test key"), &hod);
        let meta = SegmentMeta {
            algo,
            size: data.len() as u32,
            block_size: data.len() as u32,
            hash_of_data: hod,
            secret: kp,
            block_hashes: Vec::new(),
        };
        (segment_id(algo, &kp, &hod), meta)
    }

    #[test]
    fn v1_block_geometry_has_a_short_last_block() {
        let (id, m) = v1_segment(&vec![7u8; 150_000]);
        m.validate(&id).unwrap();
        assert_eq!(m.block_count(), 3);
        assert_eq!(m.block_len(0), Some(65_536));
        assert_eq!(m.block_len(2), Some(150_000 - 2 * 65_536));
        assert_eq!(m.block_len(3), None);
        assert_eq!(m.block_hash(3), None);
        assert_eq!(
            m.block_hash(2),
            Some(HashAlgo::Sha256.hash(&vec![7u8; 150_000 - 2 * 65_536]))
        );
    }

    #[test]
    fn v2_segment_is_one_block_hashed_as_hod() {
        let (id, m) = v2_segment(&[1u8; 1000]);
        m.validate(&id).unwrap();
        assert_eq!(m.block_count(), 1);
        assert_eq!(m.block_len(0), Some(1000));
        assert_eq!(m.block_hash(0), Some(m.hash_of_data));
        assert_eq!(m.block_hash(1), None);
    }

    #[test]
    fn rejects_id_not_derived_from_hod_and_secret() {
        let (_, m) = v1_segment(b"abc");
        let (other, _) = v1_segment(b"abd");
        assert_eq!(
            m.validate(&other),
            Err("segment id does not derive from (HoD, Kp)")
        );
    }

    #[test]
    fn rejects_block_hashes_that_do_not_hash_to_hod() {
        let (id, mut m) = v1_segment(&vec![0u8; 70_000]);
        m.block_hashes.swap(0, 1);
        assert_eq!(m.validate(&id), Err("block hashes do not hash to HoD"));
    }

    #[test]
    fn rejects_wrong_block_count() {
        let (id, mut m) = v1_segment(&vec![0u8; 70_000]);
        m.size = 10;
        assert_eq!(
            m.validate(&id),
            Err("block hash count does not match size / block size")
        );
    }

    #[test]
    fn record_round_trips_and_debug_redacts_the_secret() {
        for (_, m) in [v1_segment(&vec![3u8; 200_000]), v2_segment(b"xyz")] {
            assert_eq!(SegmentMeta::decode(&m.encode()).unwrap(), m);
            assert!(format!("{m:?}").contains("[redacted]"));
        }
    }

    #[test]
    fn decode_rejects_truncated_and_trailing_records() {
        let (_, m) = v1_segment(b"abc");
        let rec = m.encode();
        for n in 0..rec.len() {
            assert!(SegmentMeta::decode(&rec[..n]).is_err());
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(SegmentMeta::decode(&long).is_err());
    }
}

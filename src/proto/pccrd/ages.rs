//! The MS-PCCRR "Extensible Blob" version 1 (segment ages), as carried base64
//! encoded in the v2 ProbeMatch `<PeerDist:SegmentAges>` element.
//!
//! Implemented here because branch `pccrr` had not committed its copy when
//! discovery needed it; the byte layout is the same (MS-PCCRR §2.2.6.1), so the
//! two can be unified later without a format change.
//!
//! Layout, all big-endian: `ExtensibleBlobVersion` u16 (= 1) ·
//! `SegmentAgeUnits` u8 · `SegmentAgeCount` u8 · count × `{ SegmentIndex u8,
//! age u24 little-endian-by-byte (Low, Mid, High) }`.

use crate::proto::codec::{DecodeError, Reader, Writer};

/// The only blob version defined.
pub const EXTENSIBLE_BLOB_VERSION: u16 = 1;

/// Largest age representable in the 24-bit field.
pub const MAX_SEGMENT_AGE: u32 = 0x00FF_FFFF;

/// Largest number of ages in one blob (the count is a u8).
pub const MAX_SEGMENT_AGES: usize = u8::MAX as usize;

/// Unit of the age values in a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgeUnit {
    /// Seconds (1).
    Seconds,
    /// Tenths of a second (2).
    Deciseconds,
    /// Hundredths of a second (3) — what the spec says senders SHOULD use.
    Centiseconds,
    /// Milliseconds (4).
    Milliseconds,
}

impl AgeUnit {
    /// The wire value.
    pub const fn to_wire(self) -> u8 {
        match self {
            AgeUnit::Seconds => 1,
            AgeUnit::Deciseconds => 2,
            AgeUnit::Centiseconds => 3,
            AgeUnit::Milliseconds => 4,
        }
    }

    /// Parse a wire value; `None` outside 1..=4.
    pub const fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(AgeUnit::Seconds),
            2 => Some(AgeUnit::Deciseconds),
            3 => Some(AgeUnit::Centiseconds),
            4 => Some(AgeUnit::Milliseconds),
            _ => None,
        }
    }

    /// Milliseconds per unit.
    pub const fn millis(self) -> u64 {
        match self {
            AgeUnit::Seconds => 1000,
            AgeUnit::Deciseconds => 100,
            AgeUnit::Centiseconds => 10,
            AgeUnit::Milliseconds => 1,
        }
    }
}

/// How long ago one segment was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentAge {
    /// Index of the segment in the request's id list (0-based on the wire).
    // SPEC(MS-PCCRR §2.2.6.1): the example's prose says "segments 1 and 3"
    // but encodes indexes 0 and 2: indexes are 0-based.
    pub index: u8,
    /// Age in the blob's units; values above [`MAX_SEGMENT_AGE`] saturate on encode.
    pub age: u32,
}

/// A decoded extensible blob v1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentAges {
    /// Unit of every age.
    pub unit: AgeUnit,
    /// At most [`MAX_SEGMENT_AGES`] entries; extra entries are dropped on encode.
    pub ages: Vec<SegmentAge>,
}

impl Default for SegmentAges {
    fn default() -> Self {
        SegmentAges {
            unit: AgeUnit::Centiseconds,
            ages: Vec::new(),
        }
    }
}

impl SegmentAges {
    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        4 + 4 * self.ages.len().min(MAX_SEGMENT_AGES)
    }

    /// Encode (ages saturate at [`MAX_SEGMENT_AGE`], at most 255 entries).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.ages.len().min(MAX_SEGMENT_AGES);
        let mut w = Writer::with_capacity(self.encoded_len());
        w.u16_be(EXTENSIBLE_BLOB_VERSION)
            .u8(self.unit.to_wire())
            .u8(n as u8);
        for a in self.ages.iter().take(n) {
            let [low, mid, high, _] = a.age.min(MAX_SEGMENT_AGE).to_le_bytes();
            w.u8(a.index).u8(low).u8(mid).u8(high);
        }
        w.finish()
    }

    /// Decode, validating in the spec's order: size ≥ 4 (≥ 2 for the
    /// version), known version, units 1..=4, size ≥ 4·(count+1).
    ///
    /// Bytes after the last declared age are ignored (the spec only demands
    /// the size be large enough, leaving room for later blob versions).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u16_be("ExtensibleBlobVersion")?;
        if version != EXTENSIBLE_BLOB_VERSION {
            return Err(DecodeError::Unsupported {
                what: "ExtensibleBlobVersion",
                value: version.into(),
            });
        }
        let unit_raw = r.u8("SegmentAgeUnits")?;
        let count = r.u8("SegmentAgeCount")?;
        let unit = AgeUnit::from_wire(unit_raw).ok_or(DecodeError::Unsupported {
            what: "SegmentAgeUnits",
            value: unit_raw.into(),
        })?;
        // The count is a u8, so this allocation is bounded by 255 entries.
        let mut ages = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let [index, low, mid, high] = r.array::<4>("ENCODED_SEGMENT_AGE")?;
            ages.push(SegmentAge {
                index,
                age: u32::from_le_bytes([low, mid, high, 0]),
            });
        }
        Ok(SegmentAges { unit, ages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_spec_example() {
        let bytes = hex::decode("000103020060ea000260ea00").unwrap();
        let ages = SegmentAges::decode(&bytes).unwrap();
        assert_eq!(ages.unit, AgeUnit::Centiseconds);
        assert_eq!(
            ages.ages,
            vec![
                SegmentAge {
                    index: 0,
                    age: 60000
                },
                SegmentAge {
                    index: 2,
                    age: 60000
                }
            ]
        );
        assert_eq!(ages.encode(), bytes);
    }

    #[test]
    fn rejects_unknown_version_and_units() {
        assert!(matches!(
            SegmentAges::decode(&[0, 2, 3, 0]),
            Err(DecodeError::Unsupported {
                what: "ExtensibleBlobVersion",
                ..
            })
        ));
        assert!(matches!(
            SegmentAges::decode(&[0, 1, 5, 0]),
            Err(DecodeError::Unsupported {
                what: "SegmentAgeUnits",
                ..
            })
        ));
        assert!(matches!(
            SegmentAges::decode(&[0, 1, 0, 0]),
            Err(DecodeError::Unsupported { .. })
        ));
    }

    #[test]
    fn rejects_count_larger_than_blob() {
        assert!(matches!(
            SegmentAges::decode(&[0, 1, 3, 2, 0, 1, 2, 3]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(SegmentAges::decode(&[0, 1]).is_err());
    }

    #[test]
    fn encode_saturates_age_to_24_bits() {
        let ages = SegmentAges {
            unit: AgeUnit::Seconds,
            ages: vec![SegmentAge {
                index: 7,
                age: u32::MAX,
            }],
        };
        let back = SegmentAges::decode(&ages.encode()).unwrap();
        assert_eq!(back.ages[0].age, MAX_SEGMENT_AGE);
        assert_eq!(back.ages[0].index, 7);
    }
}

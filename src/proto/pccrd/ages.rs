//! The v2 ProbeMatch `<PeerDist:SegmentAges>` payload: the MS-PCCRR
//! Extensible Blob v1 (MS-PCCRR §2.2.6.1), base64-encoded in the XML.
//!
//! The byte codec is MS-PCCRR's, reused from [`crate::proto::pccrr::messages`]
//! so both protocols share one implementation of the format; this module only
//! names it for discovery.

pub use crate::proto::pccrr::messages::{
    age_units, ExtensibleBlob as SegmentAges, SegmentAge, MAX_SEGMENT_AGE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_segment_ages_example_decodes_through_the_shared_codec() {
        // MS-PCCRD v2 ProbeMatch example, spec-examples.md: "AAEDAgBg6gACYOoA".
        let bytes = hex::decode("000103020060ea000260ea00").unwrap();
        let ages = SegmentAges::decode(&bytes).unwrap();
        assert_eq!(ages.units, age_units::CENTISECONDS);
        let got: Vec<(u8, u32)> = ages.ages.iter().map(|a| (a.segment_index, a.age)).collect();
        assert_eq!(got, vec![(0, 60000), (2, 60000)]);
        assert_eq!(ages.encode(), bytes);
    }
}

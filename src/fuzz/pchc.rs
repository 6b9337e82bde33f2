//! Fuzz harnesses for the hosted cache wire (MS-PCHC): requests, responses and
//! the SEGMENT_INFO verifier ([`crate::proto::pchc`]).

use crate::proto::pccrc::segment_id;
use crate::proto::pchc::{
    verify_segment_info, MessageHeader, Request, RequestBody, Response, SegmentInfo,
    CONTENT_TAG_LEN, HEADER_LEN, MAX_BATCHED_DESCRIPTORS, PREFIX_LEN, SEGMENT_DESCRIPTOR_LEN,
};
use crate::proto::Reader;

/// Decode a request; when accepted, check that it re-encodes to the input
/// (modulo the ignored padding bytes), decodes again to itself, and that the
/// version matches the type. SEGMENT_INFO bodies go through the verifier.
pub fn request(data: &[u8]) {
    let Ok(req) = Request::decode(data) else {
        return;
    };
    assert_eq!(req.header.msg_type.major(), Some(req.header.major));
    let bytes = req.encode();
    assert_eq!(bytes.len(), data.len());
    // Only the padding (header bytes 4..8, connection bytes 10..16) may differ.
    for (i, (a, b)) in bytes.iter().zip(data).enumerate() {
        let padding = (4..HEADER_LEN).contains(&i) || (HEADER_LEN + 2..PREFIX_LEN).contains(&i);
        assert!(padding || a == b, "byte {i} changed on re-encode");
    }
    assert_eq!(Request::decode(&bytes).as_ref(), Ok(&req));
    let header = MessageHeader::decode(&mut Reader::new(data)).expect("decoded above");
    assert_eq!(header, req.header);
    match &req.body {
        RequestBody::InitialOffer(o) => assert!(matches!(o.hash.as_bytes().len(), 32 | 48 | 64)),
        RequestBody::SegmentInfo(info) => check_segment_info(info),
        RequestBody::BatchedOffer(b) => {
            assert!((1..=MAX_BATCHED_DESCRIPTORS).contains(&b.descriptors.len()));
            assert_eq!(
                data.len(),
                PREFIX_LEN + b.descriptors.len() * SEGMENT_DESCRIPTOR_LEN
            );
            for d in &b.descriptors {
                assert!(d.hash_algorithm.algo().is_some());
                assert!(d.segment_size > 0 && d.block_size > 0);
            }
        }
    }
}

/// Decode a response; when accepted it must re-encode byte for byte.
pub fn response(data: &[u8]) {
    if let Ok(r) = Response::decode(data) {
        assert_eq!(&r.encode()[..], data);
    }
}

/// Run the SEGMENT_INFO verifier on `data` as the embedded content information.
pub fn segment_info(data: &[u8]) {
    check_segment_info(&SegmentInfo {
        content_tag: [0; CONTENT_TAG_LEN],
        content_info: data,
    });
}

fn check_segment_info(info: &SegmentInfo<'_>) {
    let Ok(v) = verify_segment_info(None, info) else {
        return;
    };
    assert_eq!(v.id, segment_id(v.algo, &v.secret, &v.hash_of_data));
    assert_eq!(verify_segment_info(Some(&v.id), info).as_ref(), Ok(&v));
    let n = v.block_hashes.len();
    assert!(n >= 1 && n <= v.block_count() as usize);
    assert_eq!(v.complete, n == v.block_count() as usize);
    for (j, h) in v.block_hashes.iter().enumerate() {
        assert_eq!(h.as_bytes().len(), v.algo.digest_len());
        assert!(v.block_len(j as u32).is_some_and(|l| l > 0));
    }
    assert!(v.block_len(v.block_count()).is_none());
    assert!(!format!("{v:?}").contains(&hex::encode(v.secret.expose())));
}

//! Unit tests: golden vectors from `tests/data/pchc/` (independent Python),
//! every rejection rule, and proptest round-trips / no-panic on arbitrary bytes.

use proptest::prelude::*;

use super::*;

const INITIAL_OFFER: &[u8] = include_bytes!("../../../tests/data/pchc/initial_offer.bin");
const SEGMENT_INFO: &[u8] = include_bytes!("../../../tests/data/pchc/segment_info.bin");
const BATCHED_OFFER: &[u8] = include_bytes!("../../../tests/data/pchc/batched_offer.bin");
const RESPONSE_OK: &[u8] = include_bytes!("../../../tests/data/pchc/response_ok.bin");
const RESPONSE_INTERESTED: &[u8] =
    include_bytes!("../../../tests/data/pchc/response_interested.bin");
const VECTORS: &str = include_str!("../../../tests/data/pchc/vectors.txt");

fn vector(key: &str) -> &'static str {
    VECTORS
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("vectors.txt has no {key}"))
}

fn vector_id(key: &str) -> SegmentId {
    SegmentId::from_slice(&hex::decode(vector(key)).unwrap()).unwrap()
}

fn segment_info_ci() -> &'static [u8] {
    &SEGMENT_INFO[PREFIX_LEN + CONTENT_TAG_LEN..]
}

fn with_ci(ci: &[u8]) -> SegmentInfo<'_> {
    SegmentInfo {
        content_tag: [0; 16],
        content_info: ci,
    }
}

#[test]
fn golden_initial_offer_decodes_and_reencodes_byte_exact() {
    let req = Request::decode(INITIAL_OFFER).unwrap();
    assert_eq!(req.header.major, Major::V1);
    assert_eq!(req.header.minor, 0);
    assert_eq!(req.header.msg_type, MessageType::INITIAL_OFFER);
    assert_eq!(req.connection.port, 54321);
    match &req.body {
        RequestBody::InitialOffer(o) => assert_eq!(o.hash, vector_id("v1_hohodk")),
        other => panic!("{other:?}"),
    }
    assert_eq!(req.encode(), INITIAL_OFFER);
    assert_eq!(Request::new(54321, req.body.clone()), req);
}

#[test]
fn golden_segment_info_verifies_against_the_offered_id() {
    let req = Request::decode(SEGMENT_INFO).unwrap();
    assert_eq!(req.encode(), SEGMENT_INFO);
    let RequestBody::SegmentInfo(info) = &req.body else {
        panic!("{req:?}")
    };
    assert_eq!(&info.content_tag[..7], b"WinINet");
    let v = verify_segment_info(Some(&vector_id("v1_hohodk")), info).unwrap();
    assert_eq!(v.id, vector_id("v1_hohodk"));
    assert_eq!(v.hash_of_data.to_hex(), vector("v1_hod"));
    assert_eq!(v.segment_size.to_string(), vector("v1_segment_size"));
    assert_eq!(v.block_count().to_string(), vector("v1_block_count"));
    assert!(v.complete);
    assert_eq!(v.block_hashes.len(), 2);
    assert_eq!(v.block_hashes[0].to_hex(), vector("v1_block_hash_0"));
    assert_eq!(v.block_hashes[1].to_hex(), vector("v1_block_hash_1"));
    assert_eq!(v.block_len(0), Some(65536));
    assert_eq!(v.block_len(1), Some(99710 - 65536));
    assert_eq!(v.block_len(2), None);
    // Without an offer the recomputed id is returned as is.
    assert_eq!(verify_segment_info(None, info).unwrap(), v);
}

#[test]
fn golden_batched_offer_decodes_and_reencodes_byte_exact() {
    let req = Request::decode(BATCHED_OFFER).unwrap();
    assert_eq!(req.header.major, Major::V2);
    assert_eq!(req.connection.port, 54321);
    let RequestBody::BatchedOffer(b) = &req.body else {
        panic!("{req:?}")
    };
    assert_eq!(b.descriptors.len(), 2);
    let [d0, d1] = [b.descriptors[0], b.descriptors[1]];
    assert_eq!((d0.block_size, d0.segment_size), (65536, 99710));
    assert_eq!(d0.hash_algorithm, OfferHashAlgo::SHA256);
    assert_eq!(&d0.content_tag[..8], b"BITS-4.0");
    assert_eq!(d0.segment_id(), vector_id("v1_hohodk"));
    assert_eq!((d1.block_size, d1.segment_size), (0xF000, 0xF000));
    assert_eq!(d1.hash_algorithm, OfferHashAlgo::SHA512_TRUNC);
    assert_eq!(d1.segment_id(), vector_id("v2_hohodk"));
    assert_eq!(req.encode(), BATCHED_OFFER);
}

#[test]
fn golden_responses_decode_and_encode() {
    assert_eq!(Response::decode(RESPONSE_OK).unwrap(), Response::OK);
    assert_eq!(
        Response::decode(RESPONSE_INTERESTED).unwrap(),
        Response::INTERESTED
    );
    assert_eq!(Response::OK.encode(), RESPONSE_OK);
    assert_eq!(Response::INTERESTED.encode(), RESPONSE_INTERESTED);
}

#[test]
fn response_rejects_wrong_size_truncation_and_trailing_bytes() {
    assert!(matches!(
        Response::decode(&[0, 0, 0, 2, 0]),
        Err(DecodeError::Unsupported { value: 2, .. })
    ));
    assert!(matches!(
        Response::decode(&[0, 0, 0, 1]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        Response::decode(&[0, 0, 0, 1, 0, 0]),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // Unknown codes survive and print as hex.
    let r = Response::decode(&[0, 0, 0, 1, 7]).unwrap();
    assert_eq!(format!("{:?}", r.code), "ResponseCode(0x07)");
}

#[test]
fn rejects_message_types_sent_with_the_other_major_version() {
    let mut v2_initial = INITIAL_OFFER.to_vec();
    v2_initial[1] = 2;
    assert!(matches!(
        Request::decode(&v2_initial),
        Err(DecodeError::Unsupported { value: 2, .. })
    ));
    let mut v2_info = SEGMENT_INFO.to_vec();
    v2_info[1] = 2;
    assert!(Request::decode(&v2_info).is_err());
    let mut v1_batch = BATCHED_OFFER.to_vec();
    v1_batch[1] = 1;
    assert!(matches!(
        Request::decode(&v1_batch),
        Err(DecodeError::Unsupported { value: 1, .. })
    ));
}

#[test]
fn rejects_unknown_message_type_but_header_keeps_it() {
    let mut m = INITIAL_OFFER.to_vec();
    m[3] = 9;
    assert!(matches!(
        Request::decode(&m),
        Err(DecodeError::Unsupported { value: 9, .. })
    ));
    let h = MessageHeader::decode(&mut Reader::new(&m)).unwrap();
    assert_eq!(h.msg_type, MessageType(9));
    assert_eq!(format!("{:?}", h.msg_type), "MessageType(0x0009)");
}

#[test]
fn ignores_header_and_connection_padding() {
    let mut m = INITIAL_OFFER.to_vec();
    m[4..8].copy_from_slice(&[1, 2, 3, 4]);
    m[10..16].copy_from_slice(&[9; 6]);
    let req = Request::decode(&m).unwrap();
    assert_eq!(req.encode(), INITIAL_OFFER);
}

#[test]
fn keeps_a_nonzero_minor_version() {
    let mut m = INITIAL_OFFER.to_vec();
    m[0] = 3;
    let req = Request::decode(&m).unwrap();
    assert_eq!(req.header.minor, 3);
    assert_eq!(req.encode(), m);
}

#[test]
fn initial_offer_hash_must_be_32_48_or_64_bytes() {
    for len in [0usize, 1, 31, 33, 47, 49, 63, 65, 96] {
        let mut m = INITIAL_OFFER[..PREFIX_LEN].to_vec();
        m.extend(std::iter::repeat(0xAB).take(len));
        assert!(Request::decode(&m).is_err(), "hash length {len}");
    }
    for len in [32usize, 48, 64] {
        let mut m = INITIAL_OFFER[..PREFIX_LEN].to_vec();
        m.extend(std::iter::repeat(0xAB).take(len));
        let req = Request::decode(&m).unwrap();
        assert_eq!(req.encode(), m);
    }
}

#[test]
fn rejects_truncated_prefix() {
    for n in 0..PREFIX_LEN {
        assert!(matches!(
            Request::decode(&INITIAL_OFFER[..n]),
            Err(DecodeError::Truncated { .. })
        ));
    }
}

fn batch_with(n: usize) -> Vec<u8> {
    let mut m = BATCHED_OFFER[..PREFIX_LEN].to_vec();
    let d = &BATCHED_OFFER[PREFIX_LEN..PREFIX_LEN + SEGMENT_DESCRIPTOR_LEN];
    for _ in 0..n {
        m.extend_from_slice(d);
    }
    m
}

#[test]
fn batched_offer_accepts_1_to_128_descriptors_only() {
    assert!(matches!(
        Request::decode(&batch_with(0)),
        Err(DecodeError::Truncated { .. })
    ));
    for n in [1, 128] {
        let m = batch_with(n);
        assert_eq!(Request::decode(&m).unwrap().encode(), m);
    }
    assert!(matches!(
        Request::decode(&batch_with(129)),
        Err(DecodeError::LimitExceeded { max: 128, .. })
    ));
}

#[test]
fn batched_offer_rejects_partial_descriptor() {
    let mut m = batch_with(2);
    m.pop();
    assert!(matches!(
        Request::decode(&m),
        Err(DecodeError::Invalid { .. })
    ));
    m.extend_from_slice(&[0, 0]);
    assert!(Request::decode(&m).is_err());
}

#[test]
fn batched_offer_rejects_bad_tag_size_and_hash_algorithm() {
    let at = PREFIX_LEN + SEGMENT_DESCRIPTOR_LEN; // second descriptor
    let mut m = batch_with(2);
    m[at + 9] = 15; // SizeOfContentTag low byte
    assert!(matches!(
        Request::decode(&m),
        Err(DecodeError::Unsupported { value: 15, .. })
    ));
    let mut m = batch_with(2);
    m[at + 26] = 2; // HashAlgorithm
    assert!(matches!(
        Request::decode(&m),
        Err(DecodeError::Unsupported { value: 2, .. })
    ));
}

fn descriptor(block_size: u32, segment_size: u32, algo: u8) -> Vec<u8> {
    let d = SegmentDescriptor {
        block_size,
        segment_size,
        content_tag: [0; 16],
        hash_algorithm: OfferHashAlgo(algo),
        hohodk: [7; 32],
    };
    Request::new(
        80,
        RequestBody::BatchedOffer(BatchedOffer {
            descriptors: vec![d],
        }),
    )
    .encode()
}

#[test]
fn batched_offer_checks_segment_and_block_sizes() {
    assert!(Request::decode(&descriptor(65536, 1, 1)).is_ok());
    assert!(Request::decode(&descriptor(65536, V1_SEGMENT_SIZE, 1)).is_ok());
    assert!(Request::decode(&descriptor(0x1_0000, 0x1_0000, 4)).is_ok());
    assert!(Request::decode(&descriptor(65536, 0, 1)).is_err());
    assert!(Request::decode(&descriptor(0, 100, 1)).is_err());
    assert!(Request::decode(&descriptor(65536, V1_SEGMENT_SIZE + 1, 1)).is_err());
    assert!(Request::decode(&descriptor(1 << 20, 1 << 20, 1)).is_ok());
    assert!(Request::decode(&descriptor(1 << 21, 1 << 20, 1)).is_err());
    assert!(matches!(
        Request::decode(&descriptor(0x2_0001, 0x2_0001, 4)),
        Err(DecodeError::LimitExceeded { .. })
    ));
}

#[test]
fn rejects_requests_longer_than_the_largest_message() {
    let mut m = SEGMENT_INFO.to_vec();
    m.resize(MAX_REQUEST_LEN + 1, 0);
    assert!(matches!(
        Request::decode(&m),
        Err(DecodeError::LimitExceeded { .. })
    ));
}

#[test]
fn segment_info_rejects_content_information_shorter_than_one_segment() {
    let m = &SEGMENT_INFO[..PREFIX_LEN + CONTENT_TAG_LEN + MIN_SEGMENT_INFO_CI_LEN - 1];
    assert!(matches!(
        Request::decode(m),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn path_version_matches_case_insensitively_with_optional_slash() {
    assert_eq!(path_version(V2_PATH), Some(Major::V2));
    assert_eq!(
        path_version("/0131501B-D67F-491B-9A40-C4BF27BCB4D4/"),
        Some(Major::V2)
    );
    assert_eq!(path_version(V1_PATH), Some(Major::V1));
    assert_eq!(
        path_version("/c574ac30-5794-4aee-b1bb-6651c5315029/"),
        Some(Major::V1)
    );
    assert_eq!(path_version("/"), None);
    assert_eq!(
        path_version("/C574AC30-5794-4AEE-B1BB-6651C5315029//"),
        None
    );
    assert_eq!(path_version("/116B50EB-ECE2-41ac-8429-9F9E963361B7/"), None);
}

// ---- verify_segment_info -------------------------------------------------

/// Offsets inside the golden embedded CI (SHA-256, one segment, two blocks).
const CI_SEGMENTS: usize = 14;
const CI_BLOCK_SIZE: usize = 30;
const CI_HOD: usize = 34;
const CI_BLOCK_COUNT: usize = 98;
const CI_BLOCK_HASHES: usize = 102;

#[test]
fn verify_rejects_an_id_that_does_not_match_hod_and_kp() {
    let other = SegmentId::from_slice(&[0x11; 32]).unwrap();
    let err = verify_segment_info(Some(&other), &with_ci(segment_info_ci())).unwrap_err();
    assert!(matches!(err, OfferError::IdMismatch { .. }), "{err}");
    assert_eq!(err.kind(), "id_mismatch");
}

#[test]
fn verify_rejects_block_hashes_that_do_not_hash_to_hod() {
    let mut ci = segment_info_ci().to_vec();
    ci[CI_BLOCK_HASHES] ^= 1;
    let err = verify_segment_info(Some(&vector_id("v1_hohodk")), &with_ci(&ci)).unwrap_err();
    assert!(
        matches!(err, OfferError::HashOfDataMismatch { .. }),
        "{err}"
    );
}

#[test]
fn verify_rejects_tampered_hod() {
    let mut ci = segment_info_ci().to_vec();
    ci[CI_HOD] ^= 1;
    let err = verify_segment_info(Some(&vector_id("v1_hohodk")), &with_ci(&ci)).unwrap_err();
    assert!(matches!(err, OfferError::IdMismatch { .. }), "{err}");
}

#[test]
fn verify_accepts_a_partial_block_list_without_the_hod_check() {
    let mut ci = segment_info_ci().to_vec();
    ci[CI_BLOCK_COUNT] = 1;
    ci.truncate(CI_BLOCK_HASHES + 32);
    let v = verify_segment_info(Some(&vector_id("v1_hohodk")), &with_ci(&ci)).unwrap();
    assert!(!v.complete);
    assert_eq!(v.block_hashes.len(), 1);
    assert_eq!(v.block_count(), 2);
}

#[test]
fn verify_rejects_more_than_one_segment() {
    let mut ci = segment_info_ci().to_vec();
    ci[CI_SEGMENTS] = 2;
    assert_eq!(
        verify_segment_info(None, &with_ci(&ci)).unwrap_err(),
        OfferError::SegmentCount { count: 2 }
    );
    ci[CI_SEGMENTS] = 0;
    assert_eq!(
        verify_segment_info(None, &with_ci(&ci)).unwrap_err(),
        OfferError::SegmentCount { count: 0 }
    );
}

#[test]
fn verify_rejects_block_size_other_than_64k() {
    let mut ci = segment_info_ci().to_vec();
    ci[CI_BLOCK_SIZE + 2] = 2;
    assert!(matches!(
        verify_segment_info(None, &with_ci(&ci)),
        Err(OfferError::Decode(DecodeError::Unsupported { .. }))
    ));
}

#[test]
fn verify_rejects_more_block_hashes_than_the_segment_has() {
    let mut ci = segment_info_ci().to_vec();
    ci[CI_BLOCK_COUNT] = 3;
    ci.extend_from_slice(&[0; 32]);
    assert!(matches!(
        verify_segment_info(None, &with_ci(&ci)),
        Err(OfferError::Decode(DecodeError::LimitExceeded { .. }))
    ));
}

#[test]
fn verify_rejects_trailing_and_missing_bytes() {
    let mut ci = segment_info_ci().to_vec();
    ci.push(0);
    assert!(matches!(
        verify_segment_info(None, &with_ci(&ci)),
        Err(OfferError::Decode(DecodeError::TrailingBytes { .. }))
    ));
    let ci = &segment_info_ci()[..segment_info_ci().len() - 1];
    assert!(matches!(
        verify_segment_info(None, &with_ci(ci)),
        Err(OfferError::Decode(DecodeError::Truncated { .. }))
    ));
}

#[test]
fn verify_rejects_a_v2_or_unknown_version_ci() {
    let mut ci = segment_info_ci().to_vec();
    ci[0..2].copy_from_slice(&[0x00, 0x02]);
    assert!(matches!(
        verify_segment_info(None, &with_ci(&ci)),
        Err(OfferError::Decode(DecodeError::Unsupported { .. }))
    ));
}

#[test]
fn verify_agrees_with_the_pccrc_content_information_parser() {
    let ci = crate::proto::pccrc::ContentInfo::parse(segment_info_ci()).unwrap();
    assert_eq!(ci.segment_count(), 1);
    let seg = ci.segment(0).unwrap();
    let v = verify_segment_info(None, &with_ci(segment_info_ci())).unwrap();
    assert_eq!(seg.id(), v.id);
    assert_eq!(seg.hash_of_data(), v.hash_of_data);
    assert_eq!(seg.secret(), v.secret);
    assert_eq!(seg.size(), v.segment_size);
    assert_eq!(seg.block_count(), v.block_count());
    for j in 0..seg.block_count() {
        assert_eq!(seg.block_hash(j), Some(v.block_hashes[j as usize]));
    }
}

#[test]
fn verify_accepts_segment_size_as_read_bytes_with_a_nonzero_range_start() {
    // What the spec tells a client to send: offset = where its range began,
    // read bytes = the whole segment. PCCRC's single-segment rule would reject it.
    let mut ci = segment_info_ci().to_vec();
    ci[6..10].copy_from_slice(&70_000u32.to_le_bytes());
    ci[10..14].copy_from_slice(&99_710u32.to_le_bytes());
    assert!(crate::proto::pccrc::ContentInfo::parse(&ci).is_err());
    let v = verify_segment_info(Some(&vector_id("v1_hohodk")), &with_ci(&ci)).unwrap();
    assert!(v.complete);
    ci[10..14].copy_from_slice(&99_711u32.to_le_bytes());
    assert!(verify_segment_info(None, &with_ci(&ci)).is_err());
}

#[test]
fn verify_rejects_a_segment_offset_that_is_not_a_multiple_of_32_mib() {
    let mut ci = segment_info_ci().to_vec();
    ci[18] = 1;
    assert!(matches!(
        verify_segment_info(None, &with_ci(&ci)),
        Err(OfferError::Decode(DecodeError::Invalid { .. }))
    ));
    ci[18] = 0;
    ci[21] = 2; // 0x0200_0000 = 32 MiB: segment 1
    let v = verify_segment_info(None, &with_ci(&ci)).unwrap();
    assert_eq!(v.offset_in_content, 32 << 20);
}

#[test]
fn verified_segment_debug_redacts_the_secret() {
    let v = verify_segment_info(None, &with_ci(segment_info_ci())).unwrap();
    let dbg = format!("{v:?}");
    assert!(dbg.contains("[redacted]"), "{dbg}");
    let kp_hex = hex::encode(v.secret.expose());
    assert!(!dbg.contains(&kp_hex), "{dbg}");
}

// ---- proptest ---------------------------------------------------------------

fn arb_descriptor() -> impl Strategy<Value = SegmentDescriptor> {
    (
        prop_oneof![Just(1u8), Just(4u8)],
        1u32..=V2_MAX_SEGMENT_SIZE,
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(algo, size, content_tag, hohodk)| SegmentDescriptor {
            block_size: if algo == 4 { size } else { BLOCK_SIZE },
            segment_size: size,
            content_tag,
            hash_algorithm: OfferHashAlgo(algo),
            hohodk,
        })
}

proptest! {
    #[test]
    fn initial_offer_round_trips(port: u16, len in prop_oneof![Just(32usize), Just(48), Just(64)], b: [u8; 64]) {
        let hash = SegmentId::from_slice(&b[..len]).unwrap();
        let req = Request::new(port, RequestBody::InitialOffer(InitialOffer { hash }));
        let bytes = req.encode();
        prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn segment_info_round_trips(port: u16, tag: [u8; 16], ci in proptest::collection::vec(any::<u8>(), MIN_SEGMENT_INFO_CI_LEN..600)) {
        let req = Request::new(port, RequestBody::SegmentInfo(SegmentInfo { content_tag: tag, content_info: &ci }));
        let bytes = req.encode();
        prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn batched_offer_round_trips(port: u16, descriptors in proptest::collection::vec(arb_descriptor(), 1..=MAX_BATCHED_DESCRIPTORS)) {
        let req = Request::new(port, RequestBody::BatchedOffer(BatchedOffer { descriptors }));
        let bytes = req.encode();
        prop_assert_eq!(bytes.len(), PREFIX_LEN + SEGMENT_DESCRIPTOR_LEN * match &req.body { RequestBody::BatchedOffer(b) => b.descriptors.len(), _ => 0 });
        prop_assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn response_round_trips(code: u8) {
        let r = Response { code: ResponseCode(code) };
        prop_assert_eq!(Response::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
        let _ = verify_segment_info(None, &with_ci(&bytes));
    }

    #[test]
    fn mutated_golden_messages_never_panic(which in 0usize..3, at: prop::sample::Index, val: u8, cut: prop::sample::Index) {
        let src = [INITIAL_OFFER, SEGMENT_INFO, BATCHED_OFFER][which];
        let mut m = src.to_vec();
        let i = at.index(m.len());
        m[i] = val;
        m.truncate(cut.index(m.len() + 1).max(1));
        if let Ok(req) = Request::decode(&m) {
            // Whatever decodes re-encodes to something that decodes the same.
            let again = req.encode();
            prop_assert_eq!(Request::decode(&again).unwrap(), req.clone());
            if let RequestBody::SegmentInfo(info) = &req.body {
                let _ = verify_segment_info(None, info);
            }
        }
    }
}

#[test]
fn segment_info_ci_encoder_reproduces_the_golden_vector() {
    let v = verify_segment_info(None, &with_ci(segment_info_ci())).unwrap();
    let enc = encode_segment_info_ci(
        v.algo,
        v.offset_in_content,
        v.segment_size,
        &v.hash_of_data,
        &v.secret,
        &v.block_hashes,
    )
    .unwrap();
    assert_eq!(enc, segment_info_ci());
    // Inconsistent inputs give no structure at all.
    assert!(encode_segment_info_ci(
        v.algo,
        v.offset_in_content,
        v.segment_size,
        &v.hash_of_data,
        &v.secret,
        &v.block_hashes[..1],
    )
    .is_none());
    assert!(encode_segment_info_ci(
        v.algo,
        1,
        v.segment_size,
        &v.hash_of_data,
        &v.secret,
        &v.block_hashes,
    )
    .is_none());
    assert!(encode_segment_info_ci(
        crate::proto::pccrc::HashAlgo::Sha512Trunc,
        0,
        v.segment_size,
        &v.hash_of_data,
        &v.secret,
        &v.block_hashes,
    )
    .is_none());
}

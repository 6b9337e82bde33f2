//! Fuzz harnesses for the MS-PCCRR message decoders ([`Request::decode`],
//! [`Response::decode`]) and the block decryptor.

use crate::proto::pccrc::{HashAlgo, SegmentSecret};
use crate::proto::pccrr::{
    decrypt_and_verify, ExtensibleBlob, Request, Response, IV_LEN, MAX_BLOCK_LEN, MAX_RANGES,
    MAX_REQUEST_LEN, MAX_RESPONSE_MSG_LEN,
};

fn check_id(id: &crate::proto::pccrc::SegmentId) {
    assert!(matches!(id.as_bytes().len(), 32 | 48 | 64));
}

/// Decode `data` as a request; when accepted, assert the bounds and that
/// re-encoding decodes to the same message.
pub fn request(data: &[u8]) {
    let Ok(req) = Request::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_REQUEST_LEN);
    match &req {
        Request::NegoReq(_) => {}
        Request::GetBlkList(m) => {
            check_id(&m.segment_id);
            assert!((1..=MAX_RANGES).contains(&m.ranges.len()));
            assert!(m.ranges.iter().all(|r| r.count >= 1 && r.end().is_some()));
        }
        Request::GetBlks(m) => {
            check_id(&m.segment_id);
            assert!((1..=MAX_RANGES).contains(&m.ranges.len()));
            assert!(m.first_block().is_some());
        }
        Request::GetSegList(m) => {
            assert!(!m.segment_ids.is_empty());
            m.segment_ids.iter().for_each(check_id);
            let _ = m.ages();
        }
    }
    let again = req.encode();
    assert!(again.len() <= data.len() && data.len() - again.len() <= 3);
    assert_eq!(Request::decode(&again).as_ref(), Ok(&req));
}

/// Decode `data` as a response; when accepted, assert the bounds, that
/// re-encoding decodes to the same message and that decrypting a BLK cannot
/// panic.
pub fn response(data: &[u8]) {
    let Ok(resp) = Response::decode(data) else {
        return;
    };
    assert!(data.len() <= 4 + MAX_RESPONSE_MSG_LEN);
    match &resp {
        Response::NegoResp(_) => {}
        Response::BlkList(m) => {
            check_id(&m.segment_id);
            assert!(m.ranges.len() <= MAX_RANGES);
        }
        Response::Blk(m) => {
            check_id(&m.segment_id);
            assert!(m.block.len() <= MAX_BLOCK_LEN);
            assert!(m.iv.is_empty() || m.iv.len() == IV_LEN);
            let kp = SegmentSecret::from_slice(&[0x11; 32]).expect("32-byte secret");
            let hash = HashAlgo::Sha256.hash(b"");
            for expected in [0, m.block.len().saturating_sub(16), m.block.len()] {
                let _ = decrypt_and_verify(
                    m.crypto_algo,
                    &kp,
                    m.iv,
                    m.block,
                    expected,
                    HashAlgo::Sha256,
                    &hash,
                );
            }
        }
        Response::SegList(m) => {
            assert!(m.ranges.len() <= MAX_RANGES);
            if let Some(blob) = m.ages() {
                assert_eq!(ExtensibleBlob::decode(&blob.encode()).as_ref(), Ok(&blob));
            }
        }
    }
    let again = resp.encode();
    assert_eq!(Response::decode(&again).as_ref(), Ok(&resp));
}

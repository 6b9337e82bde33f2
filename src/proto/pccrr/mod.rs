//! Retrieval protocol (MS-PCCRR): message encode/decode and block crypto.
//!
//! See `PROTOCOL.md` §5. Every integer is big-endian. Requests are bare
//! messages (16-byte `MESSAGE_HEADER` + body); responses carry a 4-byte
//! `TRANSPORT_RESPONSE_HEADER` in front. Block encryption is AES-CBC keyed
//! from the segment secret `Kp` ([`crypto`]).

pub mod crypto;
pub mod messages;

pub use crypto::{
    cipher_len, decrypt_alternative_and_verify, decrypt_and_verify, decrypt_block,
    decrypt_block_in_place, encrypt_block, encrypt_blocks, reencrypt_in_place, BlockCryptoError,
    EncryptJob, KeyReading, ENCRYPT_LANES,
};
pub use messages::{
    age_units, negotiate, Blk, BlkList, BlockRange, CryptoAlgoId, ExtensibleBlob, GetBlkList,
    GetBlks, GetSegList, MessageHeader, MsgType, NegoReq, NegoResp, ProtVer, Request, Response,
    SegList, SegmentAge, IV_LEN, MAX_BLOCK_LEN, MAX_KNOWN_MAJOR, MAX_RANGES, MAX_REQUEST_LEN,
    MAX_RESPONSE_MSG_LEN, MAX_SEGMENT_AGE, MIN_MSG_LEN, RETRIEVAL_PATH,
};

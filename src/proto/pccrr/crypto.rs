//! PCCRR block encryption (MS-PCCRR §3.2.5.1, `PROTOCOL.md` §5.7).
//!
//! AES-CBC with PKCS#7 padding, keyed from the segment secret `Kp`. The IV is
//! a parameter: the pure core takes no RNG, the caller draws a fresh random
//! IV per block. Keys never reach a log or an error message.
//!
//! CBC encryption is one serial chain per block: each AES call waits for the
//! previous one, so AES-NI runs at a fraction of its throughput (~1.6 GB/s
//! per core against ~9 GB/s for CBC decryption, which is parallel).
//! [`encrypt_blocks`] encrypts several blocks under one key with their chains
//! side by side, [`ENCRYPT_LANES`] AES calls in flight at once, which is what
//! a server answering many GETBLKS at a time can use.

use aes::cipher::consts::U16;
use aes::cipher::inout::InOut;
use aes::cipher::{block_padding::NoPadding, block_padding::Pkcs7};
use aes::cipher::{
    Block, BlockBackend, BlockClosure, BlockDecryptMut, BlockEncrypt, BlockEncryptMut,
    BlockSizeUser, KeyInit, KeyIvInit, ParBlocks,
};

use super::messages::{CryptoAlgoId, IV_LEN, MAX_BLOCK_LEN};
use crate::proto::pccrc::{Digest, HashAlgo, SegmentSecret};

/// AES block size; ciphertext lengths are multiples of it.
const AES_BLOCK: usize = 16;

/// Which key reading decrypted a block whose hash then matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyReading {
    /// The header's algorithm keyed with the leading 16/24/32 bytes of Kp
    /// (iPXE's reading; what we send). Also used for plaintext blocks.
    Truncated,
    /// AES-256 keyed with the whole 32-byte Kp whatever the header says
    /// (the .NET test suite's reading).
    FullKp,
}

impl KeyReading {
    /// Stable label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyReading::Truncated => "truncated",
            KeyReading::FullKp => "full_kp",
        }
    }
}

/// Why a block could not be encrypted, decrypted or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockCryptoError {
    /// The `CryptoAlgoId` is not one this build knows.
    #[error("unsupported CryptoAlgoId {0}")]
    UnsupportedAlgo(CryptoAlgoId),
    /// Kp is shorter than the algorithm's key.
    #[error("segment secret ({kp_len} bytes) too short for {algo}")]
    KeyTooShort {
        /// The requested algorithm.
        algo: CryptoAlgoId,
        /// Length of Kp.
        kp_len: usize,
    },
    /// The IV is not 16 bytes (AES) or not empty (plaintext is fine either way).
    #[error("IV of {len} bytes, expected 16")]
    BadIv {
        /// The IV length received.
        len: usize,
    },
    /// Ciphertext length is not a multiple of 16, or shorter than the block,
    /// or plaintext length differs from the expected block length.
    #[error("block of {len} bytes cannot hold an expected {expected}-byte block")]
    BadLength {
        /// Bytes received.
        len: usize,
        /// Bytes the content information promises.
        expected: usize,
    },
    /// The expected block length exceeds the protocol's largest block.
    #[error("expected block length {0} exceeds the protocol limit")]
    ExpectedTooLarge(usize),
    /// No key reading produced a block with the expected hash: the peer
    /// sent wrong bytes (penalise it).
    #[error("block hash mismatch")]
    HashMismatch,
}

impl BlockCryptoError {
    /// Stable label for metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            BlockCryptoError::UnsupportedAlgo(_) => "unsupported_algo",
            BlockCryptoError::KeyTooShort { .. } => "key_too_short",
            BlockCryptoError::BadIv { .. } => "bad_iv",
            BlockCryptoError::BadLength { .. } => "bad_length",
            BlockCryptoError::ExpectedTooLarge(_) => "expected_too_large",
            BlockCryptoError::HashMismatch => "hash_mismatch",
        }
    }
}

/// The AES key for `algo`: the leading bytes of Kp. `Ok(None)` for plaintext.
// SPEC(MS-PCCRR §3.2.5.1): the key length for AES-128/192 is not spelled out;
// iPXE (interoperating with Windows) uses the first 16/24 bytes of Kp.
fn key_for(algo: CryptoAlgoId, kp: &SegmentSecret) -> Result<Option<&[u8]>, BlockCryptoError> {
    let len = algo
        .key_len()
        .ok_or(BlockCryptoError::UnsupportedAlgo(algo))?;
    if len == 0 {
        return Ok(None);
    }
    kp.expose()
        .get(..len)
        .map(Some)
        .ok_or(BlockCryptoError::KeyTooShort {
            algo,
            kp_len: kp.expose().len(),
        })
}

/// Encrypt one block for MSG_BLK: AES-CBC with PKCS#7 (a 65 536-byte block
/// becomes 65 552 bytes), key = leading bytes of Kp. `NONE` returns the
/// plaintext unchanged.
pub fn encrypt_block(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    iv: [u8; IV_LEN],
    plain: &[u8],
) -> Result<Vec<u8>, BlockCryptoError> {
    let Some(key) = key_for(algo, kp)? else {
        return Ok(plain.to_vec());
    };
    // key_for returned exactly the algorithm's key length, so new_from_slices
    // cannot fail; map the error anyway instead of panicking.
    let bad_key = || BlockCryptoError::KeyTooShort {
        algo,
        kp_len: kp.expose().len(),
    };
    Ok(match algo {
        CryptoAlgoId::AES_128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map_err(|_| bad_key())?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        CryptoAlgoId::AES_192 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &iv)
            .map_err(|_| bad_key())?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| bad_key())?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
    })
}

/// Blocks [`encrypt_blocks`] chains side by side: AES-NI backends encrypt 8
/// independent AES blocks per call.
pub const ENCRYPT_LANES: usize = 8;

/// One block for [`encrypt_blocks`].
#[derive(Debug)]
pub struct EncryptJob<'a> {
    /// The block's fresh random IV (unused for plaintext).
    pub iv: [u8; IV_LEN],
    /// The plaintext block.
    pub plain: &'a [u8],
    /// Receives the MSG_BLK payload: exactly
    /// [`cipher_len`]`(algo, plain.len())` bytes.
    pub out: &'a mut [u8],
}

/// Length of the MSG_BLK payload of a `plain_len`-byte block: PKCS#7 adds
/// 1 to 16 bytes (a 65 536-byte block becomes 65 552); plaintext adds none.
pub fn cipher_len(algo: CryptoAlgoId, plain_len: usize) -> Result<usize, BlockCryptoError> {
    match algo.key_len() {
        None => Err(BlockCryptoError::UnsupportedAlgo(algo)),
        Some(0) => Ok(plain_len),
        Some(_) => Ok((plain_len / AES_BLOCK + 1) * AES_BLOCK),
    }
}

/// Encrypt every job's block as [`encrypt_block`] would (same key, each
/// under its own IV; byte-for-byte the same output), writing into the jobs'
/// `out` buffers. Up to [`ENCRYPT_LANES`] CBC chains run interleaved, so a
/// batch costs far less CPU per block than one block at a time. Fails
/// without writing anything when an `out` has the wrong length.
pub fn encrypt_blocks(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    jobs: &mut [EncryptJob<'_>],
) -> Result<(), BlockCryptoError> {
    let key = key_for(algo, kp)?;
    for job in jobs.iter() {
        if job.out.len() != cipher_len(algo, job.plain.len())? {
            return Err(BlockCryptoError::BadLength {
                len: job.out.len(),
                expected: job.plain.len(),
            });
        }
    }
    let Some(key) = key else {
        for job in jobs.iter_mut() {
            job.out.copy_from_slice(job.plain);
        }
        return Ok(());
    };
    let bad_key = || BlockCryptoError::KeyTooShort {
        algo,
        kp_len: kp.expose().len(),
    };
    match key.len() {
        16 => encrypt_lanes(
            &aes::Aes128::new_from_slice(key).map_err(|_| bad_key())?,
            jobs,
        ),
        24 => encrypt_lanes(
            &aes::Aes192::new_from_slice(key).map_err(|_| bad_key())?,
            jobs,
        ),
        _ => encrypt_lanes(
            &aes::Aes256::new_from_slice(key).map_err(|_| bad_key())?,
            jobs,
        ),
    }
    Ok(())
}

fn encrypt_lanes<C: BlockEncrypt + BlockSizeUser<BlockSize = U16>>(
    cipher: &C,
    jobs: &mut [EncryptJob<'_>],
) {
    for lanes in jobs.chunks_mut(ENCRYPT_LANES) {
        cipher.encrypt_with_backend(CbcLanes { jobs: lanes });
    }
}

/// Up to [`ENCRYPT_LANES`] CBC encryptions run by one AES backend (the
/// closure runs inside the backend's `target_feature` context, so the AES-NI
/// calls inline).
struct CbcLanes<'j, 'a> {
    jobs: &'j mut [EncryptJob<'a>],
}

impl BlockSizeUser for CbcLanes<'_, '_> {
    type BlockSize = U16;
}

impl BlockClosure for CbcLanes<'_, '_> {
    // Inlined into the backend's `target_feature(enable = "aes")` wrapper so
    // that the AES-NI block functions inline here instead of being a call
    // per 16 bytes.
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        let jobs = self.jobs;
        // The previous ciphertext block of each chain (the IV at first).
        let mut chain = [[0u8; AES_BLOCK]; ENCRYPT_LANES];
        let mut lens = [0usize; ENCRYPT_LANES];
        for ((c, l), job) in chain.iter_mut().zip(lens.iter_mut()).zip(jobs.iter()) {
            *c = job.iv;
            *l = job.out.len();
        }
        let lanes = jobs.len().min(ENCRYPT_LANES);
        let end = lens.iter().copied().max().unwrap_or(0);
        let mut par = ParBlocks::<B>::default();
        let mut pos = 0;
        while pos < end {
            let active = lens.iter().take(lanes).filter(|&&l| l > pos).count();
            if active >= 2 && par.len() >= lanes {
                for (k, job) in jobs.iter().enumerate().take(lanes) {
                    if let (Some(p), Some(c)) = (par.get_mut(k), chain.get(k)) {
                        *p = Block::<B>::from(xor(c, &padded_block(job.plain, pos)));
                    }
                }
                backend.proc_par_blocks(InOut::from(&mut par));
                for (k, job) in jobs.iter_mut().enumerate().take(lanes) {
                    if lens.get(k).is_some_and(|&l| l > pos) {
                        if let (Some(p), Some(c)) = (par.get(k), chain.get_mut(k)) {
                            c.copy_from_slice(p);
                            put_block(job.out, pos, c);
                        }
                    }
                }
            } else {
                for (k, job) in jobs.iter_mut().enumerate().take(lanes) {
                    if !lens.get(k).is_some_and(|&l| l > pos) {
                        continue;
                    }
                    if let Some(c) = chain.get_mut(k) {
                        let mut b = Block::<B>::from(xor(c, &padded_block(job.plain, pos)));
                        backend.proc_block(InOut::from(&mut b));
                        c.copy_from_slice(&b);
                        put_block(job.out, pos, c);
                    }
                }
            }
            pos += AES_BLOCK;
        }
    }
}

/// The AES block of `plain` at `pos`, PKCS#7-padded when it is the last
/// (partial or empty) one. Zeros past the padded end (never written out).
#[inline(always)]
fn padded_block(plain: &[u8], pos: usize) -> [u8; AES_BLOCK] {
    if let Some(b) = plain.get(pos..pos.saturating_add(AES_BLOCK)) {
        let mut out = [0u8; AES_BLOCK];
        out.copy_from_slice(b);
        return out;
    }
    match plain.get(pos..) {
        Some(rest) => {
            // rest.len() < 16, so the pad byte is 1..=16.
            let mut out = [(AES_BLOCK - rest.len()) as u8; AES_BLOCK];
            if let Some(head) = out.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            out
        }
        None => [0u8; AES_BLOCK],
    }
}

#[inline(always)]
fn xor(a: &[u8; AES_BLOCK], b: &[u8; AES_BLOCK]) -> [u8; AES_BLOCK] {
    (u128::from_ne_bytes(*a) ^ u128::from_ne_bytes(*b)).to_ne_bytes()
}

#[inline(always)]
fn put_block(out: &mut [u8], pos: usize, block: &[u8; AES_BLOCK]) {
    if let Some(dst) = out.get_mut(pos..pos.saturating_add(AES_BLOCK)) {
        dst.copy_from_slice(block);
    }
}

/// AES-CBC decrypt without unpadding, keyed by `key` (16/24/32 bytes).
fn aes_cbc_decrypt(key: &[u8], iv: &[u8], cipher: &[u8]) -> Result<Vec<u8>, BlockCryptoError> {
    let mut buf = cipher.to_vec();
    aes_cbc_decrypt_in_place(key, iv, &mut buf)?;
    Ok(buf)
}

/// AES-CBC decrypt `buf` in place without unpadding.
fn aes_cbc_decrypt_in_place(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), BlockCryptoError> {
    let bad_iv = |_| BlockCryptoError::BadIv { len: iv.len() };
    let len = buf.len();
    let bad_len = |_| BlockCryptoError::BadLength { len, expected: len };
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(bad_iv)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map_err(bad_len)?,
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(bad_iv)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map_err(bad_len)?,
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(bad_iv)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map_err(bad_len)?,
    };
    Ok(())
}

fn check_lengths(
    algo: CryptoAlgoId,
    iv: &[u8],
    cipher: &[u8],
    expected_len: usize,
) -> Result<(), BlockCryptoError> {
    if expected_len > MAX_BLOCK_LEN {
        return Err(BlockCryptoError::ExpectedTooLarge(expected_len));
    }
    let bad = BlockCryptoError::BadLength {
        len: cipher.len(),
        expected: expected_len,
    };
    if algo == CryptoAlgoId::NONE {
        // Plaintext: the block itself, exactly.
        return if cipher.len() == expected_len {
            Ok(())
        } else {
            Err(bad)
        };
    }
    if iv.len() != IV_LEN {
        return Err(BlockCryptoError::BadIv { len: iv.len() });
    }
    // SPEC(MS-PCCRR §3.2.5.1): padding is PKCS#7 by all evidence, but iPXE
    // ignores its contents; we too only require whole AES blocks covering
    // the expected length, at most one block of padding beyond it.
    if cipher.len() % AES_BLOCK != 0
        || cipher.len() < expected_len
        || cipher.len() > expected_len + AES_BLOCK
    {
        return Err(bad);
    }
    Ok(())
}

/// Decrypt one MSG_BLK payload with the header's algorithm (key = leading
/// bytes of Kp) and return the first `expected_len` bytes. Pad contents are
/// not checked; verify the hash (or use [`decrypt_and_verify`]).
pub fn decrypt_block(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    iv: &[u8],
    cipher: &[u8],
    expected_len: usize,
) -> Result<Vec<u8>, BlockCryptoError> {
    let key = key_for(algo, kp)?;
    check_lengths(algo, iv, cipher, expected_len)?;
    let Some(key) = key else {
        return Ok(cipher.to_vec());
    };
    let mut plain = aes_cbc_decrypt(key, iv, cipher)?;
    plain.truncate(expected_len);
    Ok(plain)
}

/// [`decrypt_block`] in place: `buf` holds a MSG_BLK payload (the whole
/// ciphertext, pad included) and is decrypted where it lies, so the caller
/// saves a copy and an allocation per block; its first `expected_len` bytes
/// are then the block (pad bytes follow, unchecked: verify the hash).
/// Plaintext (`NONE`) is only length-checked.
pub fn decrypt_block_in_place(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    iv: &[u8],
    buf: &mut [u8],
    expected_len: usize,
) -> Result<(), BlockCryptoError> {
    let key = key_for(algo, kp)?;
    check_lengths(algo, iv, buf, expected_len)?;
    match key {
        Some(key) => aes_cbc_decrypt_in_place(key, iv, buf),
        None => Ok(()),
    }
}

/// Undo [`decrypt_block_in_place`]: CBC-encrypt the decrypted payload again
/// under the same cipher, key reading and IV, which gives back exactly the
/// ciphertext the peer sent (needed only to try the alternative key reading
/// after the usual one failed the hash check).
pub fn reencrypt_in_place(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    iv: &[u8],
    buf: &mut [u8],
) -> Result<(), BlockCryptoError> {
    let Some(key) = key_for(algo, kp)? else {
        return Ok(());
    };
    let bad_iv = |_| BlockCryptoError::BadIv { len: iv.len() };
    let len = buf.len();
    let bad_len = |_| BlockCryptoError::BadLength { len, expected: len };
    match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(bad_iv)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map_err(bad_len)?,
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(bad_iv)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map_err(bad_len)?,
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(bad_iv)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map_err(bad_len)?,
    };
    Ok(())
}

/// Decrypt and check the block hash. Tries the header's algorithm with the
/// truncated Kp first; if the hash fails and Kp is 32 bytes, retries with
/// the full-Kp AES-256 reading. Returns the plaintext and which reading
/// matched, or [`BlockCryptoError::HashMismatch`].
// SPEC(MS-PCCRR §3.2.5.1): the key length is ambiguous (iPXE truncates Kp,
// the MS test suite feeds all 32 bytes to .NET, i.e. AES-256); accept both.
pub fn decrypt_and_verify(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    iv: &[u8],
    cipher: &[u8],
    expected_len: usize,
    hash_algo: HashAlgo,
    expected_hash: &Digest,
) -> Result<(Vec<u8>, KeyReading), BlockCryptoError> {
    let plain = decrypt_block(algo, kp, iv, cipher, expected_len)?;
    if hash_algo.hash(&plain) == *expected_hash {
        return Ok((plain, KeyReading::Truncated));
    }
    decrypt_alternative_and_verify(algo, kp, iv, cipher, expected_len, hash_algo, expected_hash)
}

/// The second half of [`decrypt_and_verify`], for a caller that decrypted
/// with [`decrypt_block`] and hashed the result itself (e.g. many blocks in
/// one multi-buffer pass) and found the hash wrong: retry with the full-Kp
/// AES-256 reading when it differs (Kp of 32 bytes, a cipher other than
/// AES-256), else [`BlockCryptoError::HashMismatch`].
pub fn decrypt_alternative_and_verify(
    algo: CryptoAlgoId,
    kp: &SegmentSecret,
    iv: &[u8],
    cipher: &[u8],
    expected_len: usize,
    hash_algo: HashAlgo,
    expected_hash: &Digest,
) -> Result<(Vec<u8>, KeyReading), BlockCryptoError> {
    check_lengths(algo, iv, cipher, expected_len)?;
    let full = kp.expose();
    let alternative_differs = algo != CryptoAlgoId::NONE && algo != CryptoAlgoId::AES_256;
    if full.len() == 32 && alternative_differs {
        let mut plain = aes_cbc_decrypt(full, iv, cipher)?;
        plain.truncate(expected_len);
        if hash_algo.hash(&plain) == *expected_hash {
            return Ok((plain, KeyReading::FullKp));
        }
    }
    Err(BlockCryptoError::HashMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp() -> SegmentSecret {
        SegmentSecret::from_slice(&(0u8..32).collect::<Vec<_>>()).unwrap()
    }

    const IV: [u8; 16] = [7; 16];

    #[test]
    fn in_place_decryption_matches_and_reencryption_restores_the_ciphertext() {
        for algo in [
            CryptoAlgoId::NONE,
            CryptoAlgoId::AES_128,
            CryptoAlgoId::AES_192,
            CryptoAlgoId::AES_256,
        ] {
            for len in [0usize, 1, 15, 16, 17, 1000, 65_536] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
                let c = encrypt_block(algo, &kp(), IV, &plain).unwrap();
                let mut buf = c.clone();
                decrypt_block_in_place(algo, &kp(), &IV, &mut buf, len).unwrap();
                assert_eq!(&buf[..len], &plain[..], "{algo:?} {len}");
                assert_eq!(
                    &buf[..len],
                    &decrypt_block(algo, &kp(), &IV, &c, len).unwrap()[..]
                );
                reencrypt_in_place(algo, &kp(), &IV, &mut buf).unwrap();
                assert_eq!(buf, c, "{algo:?} {len}");
            }
        }
        let mut short = vec![0u8; 20];
        assert!(decrypt_block_in_place(CryptoAlgoId::AES_128, &kp(), &IV, &mut short, 20).is_err());
    }

    #[test]
    fn pkcs7_pads_a_full_block_to_65552_bytes() {
        let plain = vec![0x5A; 65_536];
        let c = encrypt_block(CryptoAlgoId::AES_128, &kp(), IV, &plain).unwrap();
        assert_eq!(c.len(), 65_552);
        assert_ne!(&c[..16], &plain[..16]);
        let back = decrypt_block(CryptoAlgoId::AES_128, &kp(), &IV, &c, plain.len()).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn every_algorithm_round_trips_odd_lengths() {
        for algo in [
            CryptoAlgoId::NONE,
            CryptoAlgoId::AES_128,
            CryptoAlgoId::AES_192,
            CryptoAlgoId::AES_256,
        ] {
            for len in [0usize, 1, 15, 16, 17, 1000] {
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let c = encrypt_block(algo, &kp(), IV, &plain).unwrap();
                let (p, reading) = decrypt_and_verify(
                    algo,
                    &kp(),
                    &IV,
                    &c,
                    len,
                    HashAlgo::Sha256,
                    &HashAlgo::Sha256.hash(&plain),
                )
                .unwrap();
                assert_eq!(p, plain, "{algo} {len}");
                assert_eq!(reading, KeyReading::Truncated);
            }
        }
    }

    #[test]
    fn batched_encryption_equals_one_block_at_a_time() {
        // Mixed lengths (full, short, empty, padded-to-a-whole-extra-block)
        // and more jobs than lanes, for every cipher.
        let lens = [
            65_536usize,
            65_536,
            100,
            0,
            16,
            65_536,
            17,
            4096,
            65_536,
            31,
            65_535,
        ];
        for algo in [
            CryptoAlgoId::NONE,
            CryptoAlgoId::AES_128,
            CryptoAlgoId::AES_192,
            CryptoAlgoId::AES_256,
        ] {
            for n in [1, 2, 3, ENCRYPT_LANES, lens.len()] {
                let plains: Vec<Vec<u8>> = lens[..n]
                    .iter()
                    .enumerate()
                    .map(|(k, &len)| (0..len).map(|i| (i * 31 + k * 7) as u8).collect())
                    .collect();
                let ivs: Vec<[u8; 16]> = (0..n).map(|k| [k as u8 + 1; 16]).collect();
                let mut outs: Vec<Vec<u8>> = plains
                    .iter()
                    .map(|p| vec![0xEE; cipher_len(algo, p.len()).unwrap()])
                    .collect();
                let mut jobs: Vec<EncryptJob<'_>> = plains
                    .iter()
                    .zip(&ivs)
                    .zip(outs.iter_mut())
                    .map(|((p, iv), out)| EncryptJob {
                        iv: *iv,
                        plain: p,
                        out,
                    })
                    .collect();
                encrypt_blocks(algo, &kp(), &mut jobs).unwrap();
                for ((p, iv), out) in plains.iter().zip(&ivs).zip(&outs) {
                    let want = encrypt_block(algo, &kp(), *iv, p).unwrap();
                    assert_eq!(out, &want, "{algo} n={n} len={}", p.len());
                }
            }
        }
    }

    #[test]
    fn batched_encryption_rejects_wrong_output_lengths() {
        let plain = [1u8; 32];
        let mut short = [0u8; 32];
        let mut jobs = [EncryptJob {
            iv: IV,
            plain: &plain,
            out: &mut short,
        }];
        assert!(matches!(
            encrypt_blocks(CryptoAlgoId::AES_128, &kp(), &mut jobs),
            Err(BlockCryptoError::BadLength { len: 32, .. })
        ));
        assert_eq!(cipher_len(CryptoAlgoId::AES_128, 65_536), Ok(65_552));
        assert_eq!(cipher_len(CryptoAlgoId::NONE, 7), Ok(7));
        assert!(cipher_len(CryptoAlgoId(9), 7).is_err());
    }

    #[test]
    fn accepts_full_kp_aes256_reading_when_truncated_fails() {
        let plain = vec![0x42u8; 4096];
        // Encrypt as the .NET test suite does: AES-256 with all of Kp, but
        // the header says AES-128.
        let c = encrypt_block(CryptoAlgoId::AES_256, &kp(), IV, &plain).unwrap();
        let (p, reading) = decrypt_and_verify(
            CryptoAlgoId::AES_128,
            &kp(),
            &IV,
            &c,
            plain.len(),
            HashAlgo::Sha256,
            &HashAlgo::Sha256.hash(&plain),
        )
        .unwrap();
        assert_eq!(p, plain);
        assert_eq!(reading, KeyReading::FullKp);
    }

    #[test]
    fn wrong_bytes_are_a_hash_mismatch() {
        let plain = vec![1u8; 100];
        let mut c = encrypt_block(CryptoAlgoId::AES_128, &kp(), IV, &plain).unwrap();
        c[0] ^= 1;
        let err = decrypt_and_verify(
            CryptoAlgoId::AES_128,
            &kp(),
            &IV,
            &c,
            100,
            HashAlgo::Sha256,
            &HashAlgo::Sha256.hash(&plain),
        )
        .unwrap_err();
        assert_eq!(err, BlockCryptoError::HashMismatch);
    }

    #[test]
    fn rejects_bad_lengths_iv_and_algo() {
        let k = kp();
        assert!(matches!(
            decrypt_block(CryptoAlgoId::AES_128, &k, &IV, &[0; 17], 16),
            Err(BlockCryptoError::BadLength { .. })
        ));
        assert!(matches!(
            decrypt_block(CryptoAlgoId::AES_128, &k, &IV, &[0; 16], 17),
            Err(BlockCryptoError::BadLength { .. })
        ));
        assert!(matches!(
            decrypt_block(CryptoAlgoId::AES_128, &k, &IV, &[0; 48], 16),
            Err(BlockCryptoError::BadLength { .. })
        ));
        assert!(matches!(
            decrypt_block(CryptoAlgoId::AES_128, &k, &[0; 8], &[0; 16], 16),
            Err(BlockCryptoError::BadIv { len: 8 })
        ));
        assert!(matches!(
            decrypt_block(CryptoAlgoId(9), &k, &IV, &[0; 16], 16),
            Err(BlockCryptoError::UnsupportedAlgo(_))
        ));
        assert!(matches!(
            decrypt_block(CryptoAlgoId::NONE, &k, &[], &[0; 15], 16),
            Err(BlockCryptoError::BadLength { .. })
        ));
        assert!(matches!(
            decrypt_block(CryptoAlgoId::AES_128, &k, &IV, &[], MAX_BLOCK_LEN + 1),
            Err(BlockCryptoError::ExpectedTooLarge(_))
        ));
        let short = SegmentSecret::from_slice(&[1; 16]).unwrap();
        assert!(matches!(
            encrypt_block(CryptoAlgoId::AES_256, &short, IV, b"x"),
            Err(BlockCryptoError::KeyTooShort { kp_len: 16, .. })
        ));
    }

    #[test]
    fn error_messages_never_contain_key_bytes() {
        let err = BlockCryptoError::KeyTooShort {
            algo: CryptoAlgoId::AES_256,
            kp_len: 16,
        };
        assert_eq!(
            err.to_string(),
            "segment secret (16 bytes) too short for AES_256"
        );
    }
}

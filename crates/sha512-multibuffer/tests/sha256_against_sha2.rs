//! Every SHA-256 backend against `sha2::Sha256` for random message counts and
//! lengths, including the lengths where the padding needs a second block
//! (56..=63) and multiples of the block size ±1.

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use sha512_multibuffer::{sha256_many, sha256_many_with, Backend};

fn want(msgs: &[Vec<u8>]) -> Vec<[u8; 32]> {
    msgs.iter().map(|m| Sha256::digest(m).into()).collect()
}

/// Lengths up to 200 KiB, weighted toward the edges of blocks and padding.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(55),
        Just(56),
        Just(63),
        Just(64),
        Just(65),
        (0usize..=3200).prop_flat_map(|b| prop_oneof![
            Just((b * 64).saturating_sub(1)),
            Just(b * 64),
            Just(b * 64 + 1)
        ]),
        Just(64 * 1024),
        0usize..=200 * 1024,
        0usize..=1024,
    ]
}

/// Up to 20 messages; each a deterministic pattern from a seed (cheap to build).
fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec((length(), any::<u64>()), 0..20).prop_map(|v| {
        v.into_iter()
            .map(|(len, seed)| {
                let mut x = seed | 1;
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    })
}

fn check(backend: Backend, msgs: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    match sha256_many_with(backend, &refs) {
        Some(got) => prop_assert_eq!(got, want(msgs), "{:?}", backend),
        None => prop_assert!(!backend.is_available(), "{:?}", backend),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn scalar_matches_sha2(msgs in messages()) {
        check(Backend::Scalar, &msgs)?;
    }

    #[test]
    fn avx2_matches_sha2(msgs in messages()) {
        check(Backend::Avx2, &msgs)?;
    }

    #[test]
    fn avx512_matches_sha2(msgs in messages()) {
        check(Backend::Avx512, &msgs)?;
    }

    #[test]
    fn default_backend_matches_sha2(msgs in messages()) {
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(sha256_many(&refs), want(&msgs));
    }
}

/// Many messages of the same length: whole groups, all lanes busy, and every
/// length of the first two blocks (so each padding case meets each lane).
#[test]
fn equal_lengths_every_backend() {
    for backend in Backend::ALL {
        for len in 0..=200 {
            // Bytes vary within each message so a swapped word shows.
            let msgs: Vec<Vec<u8>> = (0..33usize)
                .map(|i| (0..len).map(|j| (j * 31 + i * 7) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            if let Some(got) = sha256_many_with(backend, &refs) {
                assert_eq!(got, want(&msgs), "{backend:?}, {len} bytes");
            } else {
                assert!(!backend.is_available());
            }
        }
    }
}

/// Report which backend this machine uses, so a log shows what was covered.
#[test]
fn sha256_backend_reported() {
    let backend = sha512_multibuffer::sha256_backend();
    eprintln!("sha256_many uses {backend:?}");
    assert!(backend.is_available());
}

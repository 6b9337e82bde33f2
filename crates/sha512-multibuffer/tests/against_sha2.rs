//! Every SHA-512 and SHA-256 backend against `sha2` for random message
//! counts and lengths, including the lengths where the padding needs a
//! second block (SHA-512: 112..=127, SHA-256: 56..=63) and multiples of the
//! block size ±1. One set of tests, instantiated per algorithm by `against!`.

use proptest::prelude::*;
use sha512_multibuffer::Backend;

/// Up to 20 messages of lengths from `length`; each a deterministic pattern
/// from a seed (cheap to build).
fn messages(length: BoxedStrategy<usize>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec((length, any::<u64>()), 0..20).prop_map(|v| {
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

/// Lengths up to `max`, weighted toward the edges of blocks of `block`
/// bytes and of the padding (`pad` = first length needing a second block).
fn length(block: usize, pad: usize, max: usize) -> BoxedStrategy<usize> {
    prop_oneof![
        Just(0usize),
        Just(pad - 1),
        Just(pad),
        Just(block - 1),
        Just(block),
        Just(block + 1),
        Just(64 * 1024),
        (0usize..=max / block).prop_flat_map(move |b| prop_oneof![
            Just((b * block).saturating_sub(1)),
            Just(b * block),
            Just(b * block + 1)
        ]),
        0usize..=max,
        0usize..=1024,
    ]
    .boxed()
}

macro_rules! against {
    ($module:ident, $hasher:ty, $many:ident, $many_with:ident,
     block = $block:expr, pad = $pad:expr, max = $max:expr, group = $group:expr) => {
        mod $module {
            use super::*;
            use sha2::Digest as _;
            use sha512_multibuffer::{$many, $many_with};

            fn want(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
                msgs.iter().map(|m| <$hasher>::digest(m).to_vec()).collect()
            }

            fn got(d: Vec<impl AsRef<[u8]>>) -> Vec<Vec<u8>> {
                d.iter().map(|x| x.as_ref().to_vec()).collect()
            }

            fn msgs() -> impl Strategy<Value = Vec<Vec<u8>>> {
                messages(length($block, $pad, $max))
            }

            fn check(backend: Backend, msgs: &[Vec<u8>]) -> Result<(), TestCaseError> {
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                match $many_with(backend, &refs) {
                    Some(d) => prop_assert_eq!(got(d), want(msgs), "{:?}", backend),
                    None => prop_assert!(!backend.is_available(), "{:?}", backend),
                }
                Ok(())
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(48))]

                #[test]
                fn scalar_matches_sha2(m in msgs()) {
                    check(Backend::Scalar, &m)?;
                }

                #[test]
                fn avx2_matches_sha2(m in msgs()) {
                    check(Backend::Avx2, &m)?;
                }

                #[test]
                fn avx512_matches_sha2(m in msgs()) {
                    check(Backend::Avx512, &m)?;
                }

                #[test]
                fn default_backend_matches_sha2(m in msgs()) {
                    let refs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
                    prop_assert_eq!(got($many(&refs)), want(&m));
                }
            }

            /// Many messages of the same length: whole groups, all lanes
            /// busy, and every length of the first two blocks (so each
            /// padding case meets each lane).
            #[test]
            fn equal_lengths_every_backend() {
                for backend in Backend::ALL {
                    for len in 0..=2 * $block + 4 {
                        // Bytes vary within each message so a swapped word shows.
                        let msgs: Vec<Vec<u8>> = (0..$group + 1usize)
                            .map(|i| (0..len).map(|j| (j * 31 + i * 7) as u8).collect())
                            .collect();
                        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                        if let Some(d) = $many_with(backend, &refs) {
                            assert_eq!(got(d), want(&msgs), "{backend:?}, {len} bytes");
                        } else {
                            assert!(!backend.is_available());
                        }
                    }
                }
            }
        }
    };
}

against!(
    sha512,
    sha2::Sha512,
    sha512_many,
    sha512_many_with,
    block = 128,
    pad = 112,
    max = 300 * 1024,
    group = 16
);
against!(
    sha256,
    sha2::Sha256,
    sha256_many,
    sha256_many_with,
    block = 64,
    pad = 56,
    max = 200 * 1024,
    group = 32
);

/// Report which backends this machine ran, so a log shows what was covered.
#[test]
fn backends_covered_here() {
    let avail: Vec<_> = Backend::ALL.iter().filter(|b| b.is_available()).collect();
    eprintln!(
        "available backends: {avail:?}; detected {:?}; sha256_many uses {:?}",
        Backend::detect(),
        sha512_multibuffer::sha256_backend()
    );
    assert!(avail.contains(&&Backend::Scalar));
    assert!(sha512_multibuffer::sha256_backend().is_available());
}

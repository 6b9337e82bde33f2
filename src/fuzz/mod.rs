//! Fuzz harnesses, one per wire parser, shared by the cargo-fuzz crate in `fuzz/` and by the
//! corpus replay test (`tests/fuzz_corpus.rs`).
//!
//! A harness takes arbitrary bytes, runs the parser and, when it accepts the input, exercises
//! every accessor and asserts the structure's invariants: a panic is a finding. To add a
//! target: write `pub fn <name>(data: &[u8])` in a submodule, add it to [`TARGETS`] and to
//! [`run`], and add `fuzz/fuzz_targets/<target>.rs` (three lines calling [`run`]) plus a
//! `[[bin]]` entry in `fuzz/Cargo.toml`.

pub mod pccrc;
pub mod pccrd;
pub mod pccrr;
pub mod pchc;
pub mod replay;

/// Every target name [`run`] knows; also the directory names under `fuzz/corpus/` and
/// `tests/data/regress/`.
pub const TARGETS: &[&str] = &[
    "pccrc_parse",
    "pccrd_decode",
    "pccrd_engine",
    "pccrr_request",
    "pccrr_response",
    "pchc_request",
    "pchc_response",
    "pchc_segment_info",
    "replay_record",
];

/// Run the harness for `target` on `data`; `None` when no harness has that name.
pub fn run(target: &str, data: &[u8]) -> Option<()> {
    match target {
        "pccrc_parse" => pccrc::parse(data),
        "pccrr_request" => pccrr::request(data),
        "pccrr_response" => pccrr::response(data),
        "pchc_request" => pchc::request(data),
        "pchc_response" => pchc::response(data),
        "pchc_segment_info" => pchc::segment_info(data),
        "pccrd_decode" => pccrd::decode(data),
        "pccrd_engine" => pccrd::engine(data),
        "replay_record" => replay::record(data),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_target_has_a_harness() {
        for t in TARGETS {
            assert_eq!(run(t, b""), Some(()), "{t}");
        }
        assert_eq!(run("no_such_target", b""), None);
    }
}

//! Hosted cache replay record decoder: see `branchcache::fuzz::replay::record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("replay_record", data);
});

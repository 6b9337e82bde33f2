//! Discovery engine fed arbitrary datagrams: see `branchcache::fuzz::pccrd::engine`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pccrd_engine", data);
});

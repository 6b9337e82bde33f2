//! Content information parser (MS-PCCRC v1/v2): see `branchcache::fuzz::pccrc::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pccrc_parse", data);
});

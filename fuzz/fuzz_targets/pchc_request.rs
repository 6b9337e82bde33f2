//! Hosted cache request decoder (MS-PCHC): see `branchcache::fuzz::pchc::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pchc_request", data);
});

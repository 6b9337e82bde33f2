//! Hosted cache response decoder (MS-PCHC): see `branchcache::fuzz::pchc::response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pchc_response", data);
});

//! SEGMENT_INFO verifier (MS-PCHC §8.6): see `branchcache::fuzz::pchc::segment_info`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pchc_segment_info", data);
});

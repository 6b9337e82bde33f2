//! Discovery Probe/ProbeMatch decoder (MS-PCCRD): see `branchcache::fuzz::pccrd::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pccrd_decode", data);
});

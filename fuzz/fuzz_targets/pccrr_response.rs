//! MS-PCCRR response decoder: see `branchcache::fuzz::pccrr::response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pccrr_response", data);
});

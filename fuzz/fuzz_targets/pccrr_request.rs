//! MS-PCCRR request decoder: see `branchcache::fuzz::pccrr::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    branchcache::fuzz::run("pccrr_request", data);
});

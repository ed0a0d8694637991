//! Fuzzes `dfut_fuzz::frame`: see the crate's docs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dfut_fuzz::frame(data));

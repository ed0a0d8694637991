//! Fuzzes `dfut_fuzz::message`: see the crate's docs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dfut_fuzz::message(data));

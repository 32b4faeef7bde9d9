//! Arbitrary client bytes into `Request::decode`: see `src/client_frame.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::client_frame::run(data));

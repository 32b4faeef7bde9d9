//! Arbitrary bytes into `IngressRecord::decode`: see `src/ingress_record.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::ingress_record::run(data));

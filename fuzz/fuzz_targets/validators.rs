//! PROTOCOL.md's validation rules on arbitrary strings: see `src/validators.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: confab_fuzz::validators::Input<'_>| confab_fuzz::validators::check(input));

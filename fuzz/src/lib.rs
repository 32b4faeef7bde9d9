//! The checks of the fuzz targets in `fuzz_targets/`, one module per target,
//! each with `run(bytes)`: the cargo-fuzz binaries call them on libFuzzer's
//! inputs, and `tests/seeds.rs` (a plain `cargo test`, no libFuzzer) on every
//! committed seed and every local corpus file.

pub mod client_frame;
pub mod ingress_record;
pub mod validators;

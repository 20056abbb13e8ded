//! Fuzz target `shared_values`: see `checks::shared_values` for the input format and what it asserts.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::shared_values(data));

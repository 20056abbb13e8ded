//! Fuzz target `deadline`: see `checks::deadline` for the input format and what it asserts.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::deadline(data));

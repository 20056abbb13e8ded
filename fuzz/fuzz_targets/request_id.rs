//! Fuzz target `request_id`: see `checks::request_id` for the input format and what it asserts.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_id(data));

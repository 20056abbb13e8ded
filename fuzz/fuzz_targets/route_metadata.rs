//! Fuzz target `route_metadata`: see `checks::route_metadata` for the input format and what it asserts.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::route_metadata(data));

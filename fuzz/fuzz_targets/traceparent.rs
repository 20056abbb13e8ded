//! Fuzz target `traceparent`: see `checks::traceparent` for the input format and what it asserts.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::traceparent(data));

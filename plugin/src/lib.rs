//! Fusebox: resilience policies for Envoy, as a proxy-wasm HTTP filter.
//!
//! Two halves, kept apart on purpose:
//! - [`policy`]: the pure core. State machines and decisions that take time and randomness as
//!   arguments and never call the host, so they are tested natively with explicit time,
//!   benchmarked with criterion, and run unchanged on wasm32.
//! - `proxy` (wasm32-wasip1 only): the thin proxy-wasm glue that reads headers and properties,
//!   asks the core, and applies its decision.

// The filter runs inside Envoy on every request: a panic traps the VM. The workspace denies
// these too; saying it here keeps it true for this crate whatever the workspace says. Tests
// may panic (that is how they fail).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod policy;

#[cfg(all(target_os = "wasi", not(test)))]
mod proxy;

//! The pure policy core: no host calls, no clocks, no randomness of its own.

pub mod breaker;
pub mod budget;
pub mod correlation;
pub mod counters;
pub mod line_batch;
pub mod reject;
pub mod request_log;
pub mod response_flags;
pub mod route_cache;
pub mod selection;
pub mod shared;
pub mod shed;
pub mod traceparent;

//! Every way Fusebox refuses a request, in one place: the glue builds every local reply, stat
//! and log line from this enum, so a new rejection cannot forget one of them.

use fusebox_policy_schema::Priority;

/// Response header telling the client which Fusebox decision produced a local reply.
pub const DECISION_HEADER: &str = "x-fusebox-decision";

/// A local rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Too little of the timeout budget is left to call the upstream.
    DeadlineExceeded,
    /// The circuit breaker is open (or half-open with every probe slot taken).
    BreakerOpen {
        /// Seconds until probes are let through, rounded up: the `Retry-After` value.
        retry_after_secs: u64,
    },
    /// The token bucket has no token for this request's priority.
    Shed {
        /// Seconds until a token for this priority is there, rounded up.
        retry_after_secs: u64,
        /// The request's priority.
        priority: Priority,
    },
    /// The bulkhead is full: too many requests of the policy in flight.
    BulkheadFull,
}

impl Reject {
    /// The decision name: `x-fusebox-decision`, logs.
    pub fn decision(self) -> &'static str {
        match self {
            Reject::DeadlineExceeded => "deadline_exceeded",
            Reject::BreakerOpen { .. } => "breaker_open",
            Reject::Shed { .. } => "shed",
            Reject::BulkheadFull => "bulkhead_full",
        }
    }

    /// The decision name in dry-run mode, where the request goes through anyway.
    pub fn would_decision(self) -> &'static str {
        match self {
            Reject::DeadlineExceeded => "would_deadline_exceeded",
            Reject::BreakerOpen { .. } => "would_breaker_open",
            Reject::Shed { .. } => "would_shed",
            Reject::BulkheadFull => "would_bulkhead_full",
        }
    }
}

/// Milliseconds as whole seconds for `Retry-After`, rounded up and at least 1: a client told
/// "0" would retry at once, into the same refusal.
pub fn retry_after_secs(millis: u64) -> u64 {
    millis.div_ceil(1_000).max(1)
}

/// Body of an open breaker's reply when the policy sets none.
pub const BREAKER_OPEN_BODY: &str = "circuit breaker open\n";

/// Body of the shed reply.
pub const SHED_BODY: &str = "load shed: too many requests, retry after the time in Retry-After\n";

/// Body of the bulkhead's reply.
pub const BULKHEAD_FULL_BODY: &str = "bulkhead full: too many requests in flight\n";

/// Body of the local 504 for a spent budget.
pub const DEADLINE_EXCEEDED_BODY: &str =
    "deadline exceeded: too little of the request's time budget is left to call the upstream\n";

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_000), 1);
        assert_eq!(retry_after_secs(1_001), 2);
        assert_eq!(retry_after_secs(u64::MAX), u64::MAX / 1_000 + 1);
    }
}

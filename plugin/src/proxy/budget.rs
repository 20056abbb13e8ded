//! Budget glue: reads the caller's deadline headers and the request's start time, and hands
//! the router the plan the core made.

use std::time::Duration;

use fusebox_policy_schema::{BudgetConfig, RetryConfig};

use super::host;
use crate::policy::budget::{format_grpc_timeout, read_caller_deadline, CallerDeadline, RetryPlan};

const GRPC_TIMEOUT: &str = "grpc-timeout";
const UPSTREAM_TIMEOUT: &str = "x-envoy-upstream-rq-timeout-ms";
const PER_TRY_TIMEOUT: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
const MAX_RETRIES: &str = "x-envoy-max-retries";
const RETRY_ON: &str = "x-envoy-retry-on";
const RETRY_GRPC_ON: &str = "x-envoy-retry-grpc-on";

/// The caller's deadline from the configured headers.
pub fn caller_deadline(config: &BudgetConfig) -> CallerDeadline {
    let values: Vec<_> = config
        .caller_deadline_headers
        .iter()
        .map(|header| (header.format, host::request_header(&header.name)))
        .collect();
    read_caller_deadline(
        values
            .iter()
            .map(|(format, value)| (*format, value.as_deref())),
    )
}

/// Time between the request's first byte reaching Envoy and `now_nanos`: what earlier
/// filters and a slow client already spent of the budget. Zero when the host cannot say, or
/// when the clocks disagree by more than the longest possible budget.
pub fn elapsed_since_request_start(now_nanos: u64) -> Duration {
    let Some(start) = host::property_u64(&["request", "time"]) else {
        return Duration::ZERO;
    };
    let elapsed = Duration::from_nanos(now_nanos.saturating_sub(start));
    if elapsed > fusebox_policy_schema::duration::MAX_DURATION {
        Duration::ZERO
    } else {
        elapsed
    }
}

/// Hands the router the budget: its timeout for the whole exchange, the retries that fit, and
/// a rewritten `grpc-timeout` so a gRPC upstream knows its real deadline. Returns how many
/// header writes failed.
pub fn apply(
    remaining: Duration,
    upstream_timeout_ms: u64,
    retries: Option<(RetryPlan, &RetryConfig)>,
) -> u32 {
    let mut failed = 0;
    let mut set = |name: &str, value: &str| {
        if host::set_request_header(name, value).is_err() {
            failed += 1;
        }
    };
    set(UPSTREAM_TIMEOUT, &upstream_timeout_ms.to_string());
    if host::request_header(GRPC_TIMEOUT).is_some() {
        set(GRPC_TIMEOUT, &format_grpc_timeout(remaining));
    }
    if let Some((plan, config)) = retries {
        set(MAX_RETRIES, &plan.retries.to_string());
        // With no retry the single attempt gets the whole budget.
        if plan.retries > 0 {
            set(PER_TRY_TIMEOUT, &plan.per_try_timeout_ms.to_string());
            if !config.retry_on.is_empty() {
                set(RETRY_ON, &config.retry_on);
            }
            if !config.retry_grpc_on.is_empty() {
                set(RETRY_GRPC_ON, &config.retry_grpc_on);
            }
        }
    }
    failed
}

//! The counters every decision is visible in.
//!
//! One list, so the glue defines each counter once per policy at configure time (as
//! `fusebox.<policy>.<name>`) and the names in dashboards never drift from the code.

use fusebox_policy_schema::Priority;

use crate::policy::breaker::Transition;
use crate::policy::correlation::IdVerdict;
use crate::policy::reject::Reject;
use crate::policy::traceparent::TraceparentVerdict;

/// A per-policy counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests seen.
    Requests,
    /// Incoming correlation IDs kept.
    IdKept,
    /// Correlation IDs generated for requests without one.
    IdGenerated,
    /// Incoming correlation IDs replaced (invalid or untrusted).
    IdReplaced,
    /// No ID could be generated: the host's random source failed.
    IdGenerationFailed,
    /// Incoming `traceparent` headers kept.
    TraceparentKept,
    /// `traceparent` headers generated for requests without one.
    TraceparentGenerated,
    /// Invalid `traceparent` headers replaced.
    TraceparentReplaced,
    /// The route's metadata named a policy that does not exist.
    MetadataPolicyUnknown,
    /// A budget was applied: the router got the remaining time as its timeout.
    BudgetApplied,
    /// The caller's deadline was shorter than the route's and became the budget's base.
    CallerDeadlineHonored,
    /// A caller deadline header was malformed, overflowing or absurd, and was ignored.
    CallerDeadlineIgnored,
    /// Too little budget was left: answered 504 locally without calling the upstream.
    DeadlineExceeded,
    /// Dry run: the request would have been refused for its deadline, but went through.
    WouldDeadlineExceeded,
    /// The budget allowed fewer retries than the policy's maximum.
    RetriesLimited,
    /// The router's upstream timeout ended the request (response flag `UT`).
    UpstreamTimeout,
    /// The breaker opened (from closed, or again after a failed probe).
    BreakerOpened,
    /// The breaker became half-open and started admitting probes.
    BreakerHalfOpened,
    /// The breaker closed after successful probes.
    BreakerClosed,
    /// Requests refused by an open breaker.
    BreakerRejected,
    /// Dry run: requests an open breaker would have refused.
    WouldBreakerOpen,
    /// Failures the breaker counted.
    BreakerFailures,
    /// Breaker state could not be read or written (the request was let through).
    BreakerStateErrors,
    /// Shared-data writes that lost a compare-and-swap race and were retried.
    SharedCasRetries,
    /// Shared-data values that did not decode and were reset.
    SharedStateResets,
    /// Critical requests given a token.
    ShedAdmittedCritical,
    /// Normal requests given a token.
    ShedAdmittedNormal,
    /// Sheddable requests given a token.
    ShedAdmittedSheddable,
    /// Critical requests shed.
    ShedCritical,
    /// Normal requests shed.
    ShedNormal,
    /// Sheddable requests shed.
    ShedSheddable,
    /// Dry run: requests that would have been shed.
    WouldShed,
    /// Requests refused by a full bulkhead.
    BulkheadFull,
    /// Dry run: requests a full bulkhead would have refused.
    WouldBulkheadFull,
    /// Keyed requests that found no slot of their own and shared the overflow bucket.
    ShedKeysOverflow,
    /// Bucket or bulkhead state could not be read or written (the request was let through).
    ShedStateErrors,
    /// A peer outside `shed.trust_priority_from` claimed a higher priority than the default;
    /// it got the default.
    PriorityUntrusted,
    /// An `x-fusebox-decision` header Fusebox did not set was removed: from a client's request,
    /// or from an upstream's response.
    DecisionHeaderStripped,
    /// Host calls that failed (a header not set or removed): the decision they carried was
    /// degraded, the request went on.
    HostCallErrors,
}

impl Counter {
    /// Every counter, in stat-definition order.
    pub const ALL: [Counter; 39] = [
        Counter::Requests,
        Counter::IdKept,
        Counter::IdGenerated,
        Counter::IdReplaced,
        Counter::IdGenerationFailed,
        Counter::TraceparentKept,
        Counter::TraceparentGenerated,
        Counter::TraceparentReplaced,
        Counter::MetadataPolicyUnknown,
        Counter::BudgetApplied,
        Counter::CallerDeadlineHonored,
        Counter::CallerDeadlineIgnored,
        Counter::DeadlineExceeded,
        Counter::WouldDeadlineExceeded,
        Counter::RetriesLimited,
        Counter::UpstreamTimeout,
        Counter::BreakerOpened,
        Counter::BreakerHalfOpened,
        Counter::BreakerClosed,
        Counter::BreakerRejected,
        Counter::WouldBreakerOpen,
        Counter::BreakerFailures,
        Counter::BreakerStateErrors,
        Counter::SharedCasRetries,
        Counter::SharedStateResets,
        Counter::ShedAdmittedCritical,
        Counter::ShedAdmittedNormal,
        Counter::ShedAdmittedSheddable,
        Counter::ShedCritical,
        Counter::ShedNormal,
        Counter::ShedSheddable,
        Counter::WouldShed,
        Counter::BulkheadFull,
        Counter::WouldBulkheadFull,
        Counter::ShedKeysOverflow,
        Counter::ShedStateErrors,
        Counter::PriorityUntrusted,
        Counter::DecisionHeaderStripped,
        Counter::HostCallErrors,
    ];

    /// Position in [`Counter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The last segment of the stat name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "requests",
            Counter::IdKept => "id_kept",
            Counter::IdGenerated => "id_generated",
            Counter::IdReplaced => "id_replaced",
            Counter::IdGenerationFailed => "id_generation_failed",
            Counter::TraceparentKept => "traceparent_kept",
            Counter::TraceparentGenerated => "traceparent_generated",
            Counter::TraceparentReplaced => "traceparent_replaced",
            Counter::MetadataPolicyUnknown => "metadata_policy_unknown",
            Counter::BudgetApplied => "budget_applied",
            Counter::CallerDeadlineHonored => "caller_deadline_honored",
            Counter::CallerDeadlineIgnored => "caller_deadline_ignored",
            Counter::DeadlineExceeded => "deadline_exceeded",
            Counter::WouldDeadlineExceeded => "would_deadline_exceeded",
            Counter::RetriesLimited => "retries_limited",
            Counter::UpstreamTimeout => "upstream_timeout",
            Counter::BreakerOpened => "breaker_opened",
            Counter::BreakerHalfOpened => "breaker_half_opened",
            Counter::BreakerClosed => "breaker_closed",
            Counter::BreakerRejected => "breaker_rejected",
            Counter::WouldBreakerOpen => "would_breaker_open",
            Counter::BreakerFailures => "breaker_failures",
            Counter::BreakerStateErrors => "breaker_state_errors",
            Counter::SharedCasRetries => "shared_cas_retries",
            Counter::SharedStateResets => "shared_state_resets",
            Counter::ShedAdmittedCritical => "shed_admitted_critical",
            Counter::ShedAdmittedNormal => "shed_admitted_normal",
            Counter::ShedAdmittedSheddable => "shed_admitted_sheddable",
            Counter::ShedCritical => "shed_critical",
            Counter::ShedNormal => "shed_normal",
            Counter::ShedSheddable => "shed_sheddable",
            Counter::WouldShed => "would_shed",
            Counter::BulkheadFull => "bulkhead_full",
            Counter::WouldBulkheadFull => "would_bulkhead_full",
            Counter::ShedKeysOverflow => "shed_keys_overflow",
            Counter::ShedStateErrors => "shed_state_errors",
            Counter::PriorityUntrusted => "priority_untrusted",
            Counter::DecisionHeaderStripped => "decision_header_stripped",
            Counter::HostCallErrors => "host_call_errors",
        }
    }
}

impl From<IdVerdict> for Counter {
    fn from(verdict: IdVerdict) -> Self {
        match verdict {
            IdVerdict::Keep => Counter::IdKept,
            IdVerdict::Generate => Counter::IdGenerated,
            IdVerdict::Replace(_) => Counter::IdReplaced,
        }
    }
}

impl From<TraceparentVerdict> for Counter {
    fn from(verdict: TraceparentVerdict) -> Self {
        match verdict {
            TraceparentVerdict::Keep => Counter::TraceparentKept,
            TraceparentVerdict::Generate => Counter::TraceparentGenerated,
            TraceparentVerdict::Replace => Counter::TraceparentReplaced,
        }
    }
}

impl Counter {
    /// The counter of a rejection that was applied.
    pub fn rejected(reject: Reject) -> Counter {
        match reject {
            Reject::DeadlineExceeded => Counter::DeadlineExceeded,
            Reject::BreakerOpen { .. } => Counter::BreakerRejected,
            Reject::Shed {
                priority: Priority::Critical,
                ..
            } => Counter::ShedCritical,
            Reject::Shed {
                priority: Priority::Normal,
                ..
            } => Counter::ShedNormal,
            Reject::Shed {
                priority: Priority::Sheddable,
                ..
            } => Counter::ShedSheddable,
            Reject::BulkheadFull => Counter::BulkheadFull,
        }
    }

    /// The counter of a request of `priority` given a token.
    pub fn shed_admitted(priority: Priority) -> Counter {
        match priority {
            Priority::Critical => Counter::ShedAdmittedCritical,
            Priority::Normal => Counter::ShedAdmittedNormal,
            Priority::Sheddable => Counter::ShedAdmittedSheddable,
        }
    }

    /// The counter of a breaker transition.
    pub fn transition(transition: Transition) -> Counter {
        match transition {
            Transition::Opened(_) => Counter::BreakerOpened,
            Transition::HalfOpened => Counter::BreakerHalfOpened,
            Transition::Closed => Counter::BreakerClosed,
        }
    }

    /// The counter of a rejection that dry-run mode let through.
    pub fn would_reject(reject: Reject) -> Counter {
        match reject {
            Reject::DeadlineExceeded => Counter::WouldDeadlineExceeded,
            Reject::BreakerOpen { .. } => Counter::WouldBreakerOpen,
            Reject::Shed { .. } => Counter::WouldShed,
            Reject::BulkheadFull => Counter::WouldBulkheadFull,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn all_lists_every_counter_at_its_index_with_a_unique_name() {
        for (position, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), position);
            let same_name = Counter::ALL
                .iter()
                .filter(|c| c.name() == counter.name())
                .count();
            assert_eq!(same_name, 1, "{}", counter.name());
            assert!(counter
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}

//! Circuit breaker: stop calling an upstream that is failing, give it time to recover, and
//! probe before trusting it again.
//!
//! Split the way linkerd splits its breaker: a cheap gate ([`BreakerState::admit`]) asked
//! once per request, and window accounting ([`BreakerState::record`]) that flips the gate when
//! the trip conditions hold. The whole state is one small value in shared data, so every Envoy
//! worker sees the same breaker: failures seen on one worker open it for all, and half-open
//! probes are counted globally, so "one probe" means one, not one per worker.
//!
//! Closed → Open when failures in a row, the failure rate or the slow-call rate reach their
//! thresholds. Open → Half-open once `open_for` has passed (checked lazily by the next request:
//! no timer is needed). Half-open admits `half_open_requests` probes; that many successes close
//! it, one failure re-opens it for twice as long as before, up to `max_open_for`.

pub mod codec;
pub mod window;

use fusebox_policy_schema::BreakerConfig;

use self::window::Window;
use crate::policy::response_flags;

/// A half-open probe whose result never arrives (its VM died) stops holding its slot after
/// this long, so a breaker cannot be stuck half-open forever.
pub const PROBE_LEASE_MS: u64 = 60_000;

/// The breaker's phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Calls flow; outcomes are counted.
    #[default]
    Closed,
    /// Calls are refused locally until `open_until`.
    Open,
    /// A limited number of probes are let through.
    HalfOpen,
}

impl Phase {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }

    /// Value of the state gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u64 {
        match self {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        }
    }
}

/// Why a breaker opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// The window's failure rate reached `failure_rate`.
    FailureRate,
    /// The window's slow-call rate reached `slow_call_rate`.
    SlowCallRate,
    /// A half-open probe failed.
    ProbeFailed,
}

impl TripReason {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::ConsecutiveFailures => "consecutive_failures",
            TripReason::FailureRate => "failure_rate",
            TripReason::SlowCallRate => "slow_call_rate",
            TripReason::ProbeFailed => "probe_failed",
        }
    }
}

/// A change of phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed or half-open → open.
    Opened(TripReason),
    /// Open → half-open.
    HalfOpened,
    /// Half-open → closed.
    Closed,
}

/// The gate's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: go ahead as one of the probes; report the outcome with `probe: true`.
    Probe,
    /// Open (or half-open with every probe slot taken): refuse. `retry_after_ms` is when the
    /// breaker will let probes through.
    Rejected {
        /// Milliseconds until probes are admitted.
        retry_after_ms: u64,
    },
}

/// How an admitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered well.
    Success,
    /// A failure status or an upstream timeout, reset, connection failure or overflow.
    Failure,
    /// The call ended without a verdict on the upstream (e.g. the client went away).
    Abandoned,
}

impl Outcome {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// Response flags that always mean the upstream failed: timeout, reset, connection failure or
/// termination, overflow.
const UPSTREAM_FAILURE_FLAGS: u64 = response_flags::UPSTREAM_REQUEST_TIMEOUT
    | response_flags::UPSTREAM_REMOTE_RESET
    | response_flags::UPSTREAM_CONNECTION_FAILURE
    | response_flags::UPSTREAM_CONNECTION_TERMINATION
    | response_flags::UPSTREAM_OVERFLOW;

/// How a finished request counts for the breaker, from its status and Envoy's response flags.
/// A request that ended without a status (the client went away first) says nothing about the
/// upstream.
pub fn classify(config: &BreakerConfig, status: Option<u64>, flags: u64) -> Outcome {
    if flags & UPSTREAM_FAILURE_FLAGS != 0 {
        return Outcome::Failure;
    }
    match status {
        Some(status) if status > 0 => {
            if config
                .failure_statuses
                .iter()
                .any(|failure| u64::from(*failure) == status)
            {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        }
        _ => Outcome::Abandoned,
    }
}

/// One finished call, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// How it ended.
    pub outcome: Outcome,
    /// Slower than `slow_call`.
    pub slow: bool,
    /// Admitted as a half-open probe.
    pub probe: bool,
}

/// Everything a breaker remembers; lives in shared data (see [`codec`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerState {
    /// Current phase.
    pub phase: Phase,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Re-openings since the breaker last closed: the backoff exponent.
    pub reopen_count: u32,
    /// While open: when probes may start (ms since the Unix epoch).
    pub open_until_ms: u64,
    /// While half-open: when it became half-open, or the probe lease was last renewed.
    pub half_open_since_ms: u64,
    /// Probes admitted in this half-open period.
    pub probes_admitted: u32,
    /// Probes that succeeded in this half-open period.
    pub probe_successes: u32,
    /// Calls over the sliding window, while closed.
    pub window: Window,
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl BreakerState {
    /// The gate: may this request call the upstream?
    pub fn admit(
        &mut self,
        config: &BreakerConfig,
        now_ms: u64,
    ) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if self.phase == Phase::Open {
            if now_ms < self.open_until_ms {
                // Never wait longer than the longest open time: a clock that stepped back, or
                // a stored value from a confused writer, must not hold the breaker open for
                // hours. Re-anchor on the current clock instead.
                if self.open_until_ms - now_ms > self.max_open_duration_ms(config) {
                    self.open_until_ms = now_ms.saturating_add(self.open_duration_ms(config));
                }
                let retry_after_ms = self.open_until_ms.saturating_sub(now_ms).max(1);
                return (Admission::Rejected { retry_after_ms }, None);
            }
            self.phase = Phase::HalfOpen;
            self.half_open_since_ms = now_ms;
            self.probes_admitted = 0;
            self.probe_successes = 0;
            transition = Some(Transition::HalfOpened);
        }
        if self.phase == Phase::Closed {
            return (Admission::Allowed, transition);
        }
        if self.half_open_since_ms > now_ms {
            // Half-open "since" the future: the clock stepped back. Start the lease now, or
            // lost probes would hold their slots until the clock caught up.
            self.half_open_since_ms = now_ms;
        }
        if now_ms - self.half_open_since_ms >= PROBE_LEASE_MS {
            // Probes still out after the lease are lost; successes stay counted, but never so
            // many that no probe slot is left (only a corrupt value could have that many).
            self.probe_successes = self
                .probe_successes
                .min(config.half_open_requests.saturating_sub(1));
            self.probes_admitted = self.probe_successes;
            self.half_open_since_ms = now_ms;
        }
        if self.probes_admitted < config.half_open_requests {
            self.probes_admitted += 1;
            (Admission::Probe, transition)
        } else {
            // Every probe slot is taken: try again about when a probe should have answered.
            (
                Admission::Rejected {
                    retry_after_ms: 1_000,
                },
                transition,
            )
        }
    }

    /// Counts a finished call and flips the gate when a threshold is reached.
    pub fn record(
        &mut self,
        config: &BreakerConfig,
        now_ms: u64,
        call: Call,
    ) -> Option<Transition> {
        // A slow call counts against a half-open upstream: it is not recovered yet.
        let failed = call.outcome == Outcome::Failure || (call.probe && call.slow);
        match (self.phase, call.probe) {
            (Phase::HalfOpen, true) => match call.outcome {
                Outcome::Abandoned => {
                    self.probes_admitted = self.probes_admitted.saturating_sub(1);
                    None
                }
                _ if failed => {
                    self.reopen_count = self.reopen_count.saturating_add(1);
                    Some(self.open(config, now_ms, TripReason::ProbeFailed))
                }
                _ => {
                    self.probe_successes = self.probe_successes.saturating_add(1);
                    if self.probe_successes >= config.half_open_requests {
                        *self = BreakerState::default();
                        Some(Transition::Closed)
                    } else {
                        None
                    }
                }
            },
            (Phase::Closed, false) if call.outcome != Outcome::Abandoned => {
                self.consecutive_failures = if failed {
                    self.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                let bucket_ms = (millis(config.window) / window::BUCKETS as u64).max(1);
                // The window only serves rates: without one, a success in a healthy breaker
                // changes nothing, and nothing needs writing back to shared data.
                if config.failure_rate.is_some() || config.slow_call.is_some() {
                    self.window.record(now_ms, bucket_ms, failed, call.slow);
                }
                let reason = self.trip_reason(config, now_ms, bucket_ms)?;
                self.reopen_count = 0;
                Some(self.open(config, now_ms, reason))
            }
            // Late results of calls admitted before the breaker opened, or of probes from an
            // earlier half-open period: they say nothing about the upstream now.
            _ => None,
        }
    }

    fn trip_reason(
        &self,
        config: &BreakerConfig,
        now_ms: u64,
        bucket_ms: u64,
    ) -> Option<TripReason> {
        if config
            .consecutive_failures
            .is_some_and(|limit| self.consecutive_failures >= limit)
        {
            return Some(TripReason::ConsecutiveFailures);
        }
        let totals = self.window.totals(now_ms, bucket_ms);
        if totals.calls < u64::from(config.minimum_requests) || totals.calls == 0 {
            return None;
        }
        let rate = |count: u64| count as f64 / totals.calls as f64;
        if config
            .failure_rate
            .is_some_and(|limit| rate(totals.failures) >= limit)
        {
            return Some(TripReason::FailureRate);
        }
        if config
            .slow_call
            .is_some_and(|(_, limit)| rate(totals.slow) >= limit)
        {
            return Some(TripReason::SlowCallRate);
        }
        None
    }

    fn open(&mut self, config: &BreakerConfig, now_ms: u64, reason: TripReason) -> Transition {
        self.phase = Phase::Open;
        self.open_until_ms = now_ms.saturating_add(self.open_duration_ms(config));
        self.consecutive_failures = 0;
        self.probes_admitted = 0;
        self.probe_successes = 0;
        self.window.clear();
        Transition::Opened(reason)
    }

    /// `open_for` doubled once per re-opening, capped at `max_open_for`.
    pub fn open_duration_ms(&self, config: &BreakerConfig) -> u64 {
        let factor = 1u64
            .checked_shl(self.reopen_count.min(63))
            .unwrap_or(u64::MAX);
        millis(config.open_for)
            .saturating_mul(factor)
            .min(self.max_open_duration_ms(config))
    }

    /// The longest the breaker ever stays open: `max_open_for` (or `open_for`, if longer).
    pub fn max_open_duration_ms(&self, config: &BreakerConfig) -> u64 {
        millis(config.max_open_for).max(millis(config.open_for))
    }
}

#[cfg(test)]
mod tests;

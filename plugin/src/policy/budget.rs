//! Timeout budgets: how long the upstream may take, and how many retries fit in that.
//!
//! The budget of a request is the route's `timeout`, shortened (never lengthened) by the
//! deadline the caller sent, minus the time already spent before Fusebox saw the request.
//! Enforcement is left to Envoy's router, which already times out upstream requests and
//! propagates the remaining time (`x-envoy-expected-rq-timeout-ms`); Fusebox only tells it the
//! number, refuses outright when too little is left to be worth an upstream call, and sizes
//! retries so the last one can still finish in time.
//!
//! Caller deadlines arrive from the network, so they are parsed strictly: anything that is not
//! exactly the documented format is ignored (and reported), never guessed at.

use std::time::Duration;

use fusebox_policy_schema::duration::MAX_DURATION;
use fusebox_policy_schema::{BudgetConfig, DeadlineFormat};

/// The deadline a caller sent, as far as Fusebox believes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerDeadline {
    /// No deadline header was present.
    Absent,
    /// A valid deadline: the shortest of the headers that carried one.
    Honored(Duration),
    /// Deadline headers were present but none was usable.
    Ignored(DeadlineDefect),
}

/// Why a caller's deadline header was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineDefect {
    /// Not in the header's format (wrong unit, sign, spaces, too many digits, empty).
    Malformed,
    /// Well-formed but too large to represent.
    Overflow,
    /// Representable but longer than any budget could be (over 24 h): a bug or an attack.
    Absurd,
}

impl DeadlineDefect {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineDefect::Malformed => "malformed",
            DeadlineDefect::Overflow => "overflow",
            DeadlineDefect::Absurd => "absurd",
        }
    }
}

/// Parses a gRPC `grpc-timeout` value: 1 to 8 ASCII digits and one unit of `H` (hours), `M`
/// (minutes), `S` (seconds), `m` (milliseconds), `u` (microseconds), `n` (nanoseconds).
pub fn parse_grpc_timeout(value: &[u8]) -> Result<Duration, DeadlineDefect> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err(DeadlineDefect::Malformed);
    };
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DeadlineDefect::Malformed);
    }
    let nanos_per_unit: u64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return Err(DeadlineDefect::Malformed),
    };
    let count = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let nanos = count
        .checked_mul(nanos_per_unit)
        .ok_or(DeadlineDefect::Overflow)?;
    sane(Duration::from_nanos(nanos))
}

/// Parses whole milliseconds (`x-envoy-expected-rq-timeout-ms` and custom headers): ASCII
/// digits only, no sign, no spaces.
pub fn parse_millis(value: &[u8]) -> Result<Duration, DeadlineDefect> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(DeadlineDefect::Malformed);
    }
    let millis = value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    let millis = millis.ok_or(DeadlineDefect::Overflow)?;
    sane(Duration::from_millis(millis))
}

fn sane(deadline: Duration) -> Result<Duration, DeadlineDefect> {
    if deadline > MAX_DURATION {
        Err(DeadlineDefect::Absurd)
    } else {
        Ok(deadline)
    }
}

/// Reads the caller's deadline from `(format, header value)` pairs: the shortest valid one
/// wins; if headers were present but none was valid, the first defect is reported.
pub fn read_caller_deadline<'a>(
    headers: impl IntoIterator<Item = (DeadlineFormat, Option<&'a [u8]>)>,
) -> CallerDeadline {
    let mut shortest: Option<Duration> = None;
    let mut defect = None;
    for (format, value) in headers {
        let Some(value) = value else { continue };
        let parsed = match format {
            DeadlineFormat::GrpcTimeout => parse_grpc_timeout(value),
            DeadlineFormat::Milliseconds => parse_millis(value),
        };
        match parsed {
            Ok(deadline) => shortest = Some(shortest.map_or(deadline, |s| s.min(deadline))),
            Err(error) => defect = defect.or(Some(error)),
        }
    }
    match (shortest, defect) {
        (Some(deadline), _) => CallerDeadline::Honored(deadline),
        (None, Some(defect)) => CallerDeadline::Ignored(defect),
        (None, None) => CallerDeadline::Absent,
    }
}

/// What the budget says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPlan {
    /// Time left for the upstream: min(timeout, caller deadline) − elapsed.
    pub remaining: Duration,
    /// Whether to call the upstream, and with which limits.
    pub outcome: BudgetOutcome,
}

/// The verdict of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetOutcome {
    /// Call the upstream with these limits.
    Proceed {
        /// The router's timeout for the whole upstream exchange, retries included.
        upstream_timeout_ms: u64,
        /// Retries that fit, if the policy has retries.
        retries: Option<RetryPlan>,
    },
    /// Too little left to be worth an upstream call: answer 504 locally.
    DeadlineExceeded,
}

/// Retries granted to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPlan {
    /// Retries allowed (0: a single attempt).
    pub retries: u32,
    /// The policy's maximum, for telling whether the budget cut it.
    pub max: u32,
    /// Timeout of each attempt.
    pub per_try_timeout_ms: u64,
}

/// Plans a request against its budget. `elapsed` is the time spent before Fusebox saw it.
pub fn plan(config: &BudgetConfig, caller: CallerDeadline, elapsed: Duration) -> BudgetPlan {
    let deadline = match caller {
        CallerDeadline::Honored(caller) => caller.min(config.timeout),
        CallerDeadline::Absent | CallerDeadline::Ignored(_) => config.timeout,
    };
    let remaining = deadline.saturating_sub(elapsed);
    // Envoy takes timeouts in whole milliseconds and reads 0 as "none": under 1 ms left, any
    // timeout the router could be given would be longer than the budget.
    if remaining < MIN_ROUTER_TIMEOUT || remaining < config.min_remaining {
        return BudgetPlan {
            remaining,
            outcome: BudgetOutcome::DeadlineExceeded,
        };
    }
    let retries = config.retries.as_ref().map(|retries| RetryPlan {
        retries: retries_that_fit(remaining, retries.per_try_timeout, retries.max),
        max: retries.max,
        per_try_timeout_ms: whole_millis(retries.per_try_timeout),
    });
    BudgetPlan {
        remaining,
        outcome: BudgetOutcome::Proceed {
            upstream_timeout_ms: whole_millis(remaining),
            retries,
        },
    }
}

/// The shortest timeout Envoy's router can be given: 1 ms.
pub const MIN_ROUTER_TIMEOUT: Duration = Duration::from_millis(1);

/// Retries after the first attempt that still fit whole in `remaining`, at most `max`.
pub fn retries_that_fit(remaining: Duration, per_try: Duration, max: u32) -> u32 {
    let attempts = remaining
        .as_nanos()
        .checked_div(per_try.as_nanos())
        .unwrap_or(0);
    let retries = attempts.saturating_sub(1);
    u32::try_from(retries).unwrap_or(u32::MAX).min(max)
}

/// Milliseconds for Envoy's `-ms` headers: rounded down (never promise more than is left),
/// but at least 1, since 0 means "no timeout" to Envoy.
pub fn whole_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A `grpc-timeout` value for `remaining`, rounded down: milliseconds, or microseconds below
/// one millisecond. Budgets are at most 24 h, which is 8 digits of milliseconds.
pub fn format_grpc_timeout(remaining: Duration) -> String {
    let millis = remaining.as_millis();
    if millis >= 1 {
        format!("{}m", millis.min(99_999_999))
    } else {
        format!("{}u", remaining.as_micros().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusebox_policy_schema::RetryConfig;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn budget(timeout: u64, min_remaining: u64, retries: Option<(u32, u64)>) -> BudgetConfig {
        BudgetConfig {
            timeout: ms(timeout),
            min_remaining: ms(min_remaining),
            caller_deadline_headers: Vec::new(),
            retries: retries.map(|(max, per_try)| RetryConfig {
                max,
                per_try_timeout: ms(per_try),
                retry_on: "5xx".to_owned(),
                retry_grpc_on: String::new(),
            }),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout(b"2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"5S"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout(b"100m"), Ok(ms(100)));
        assert_eq!(parse_grpc_timeout(b"250u"), Ok(Duration::from_micros(250)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Ok(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout(b"0m"), Ok(Duration::ZERO));
        assert_eq!(parse_grpc_timeout(b"00000001S"), Ok(Duration::from_secs(1)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_timeouts_are_parsed_strictly() {
        for bad in [
            &b""[..],
            b"m",
            b"100",
            b"123456789m",
            b"-5m",
            b"+5m",
            b" 5m",
            b"5 m",
            b"5ms",
            b"5s",
            b"5h",
            b"1.5S",
            b"\xff5m",
        ] {
            assert_eq!(
                parse_grpc_timeout(bad),
                Err(DeadlineDefect::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn huge_grpc_timeouts_are_absurd_or_overflow_never_wrapped() {
        // 99999999 hours is 3.6e20 ns: more than u64 nanoseconds hold.
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Err(DeadlineDefect::Overflow)
        );
        assert_eq!(
            parse_grpc_timeout(b"99999999M"),
            Err(DeadlineDefect::Absurd)
        );
        assert_eq!(parse_grpc_timeout(b"25H"), Err(DeadlineDefect::Absurd));
        assert_eq!(parse_grpc_timeout(b"24H"), Ok(MAX_DURATION));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn millisecond_headers_are_digits_only() {
        assert_eq!(parse_millis(b"1500"), Ok(ms(1500)));
        assert_eq!(parse_millis(b"0"), Ok(Duration::ZERO));
        for bad in [
            &b""[..],
            b"-5",
            b"+5",
            b"5.0",
            b" 5",
            b"5ms",
            b"0x10",
            b"1e3",
        ] {
            assert_eq!(
                parse_millis(bad),
                Err(DeadlineDefect::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_millis(b"99999999999999999999999"),
            Err(DeadlineDefect::Overflow)
        );
        assert_eq!(
            parse_millis(b"18446744073709551615"),
            Err(DeadlineDefect::Absurd)
        );
        assert_eq!(parse_millis(b"86400001"), Err(DeadlineDefect::Absurd));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_shortest_valid_caller_deadline_wins() {
        use DeadlineFormat::{GrpcTimeout, Milliseconds};
        let read = |grpc: Option<&'static [u8]>, envoy: Option<&'static [u8]>| {
            read_caller_deadline([(GrpcTimeout, grpc), (Milliseconds, envoy)])
        };
        assert_eq!(read(None, None), CallerDeadline::Absent);
        assert_eq!(
            read(Some(b"300m"), Some(b"200")),
            CallerDeadline::Honored(ms(200))
        );
        assert_eq!(
            read(Some(b"100m"), Some(b"200")),
            CallerDeadline::Honored(ms(100))
        );
        assert_eq!(
            read(Some(b"junk"), Some(b"200")),
            CallerDeadline::Honored(ms(200))
        );
        assert_eq!(
            read(Some(b"junk"), None),
            CallerDeadline::Ignored(DeadlineDefect::Malformed)
        );
        assert_eq!(
            read(Some(b"99999999H"), Some(b"-1")),
            CallerDeadline::Ignored(DeadlineDefect::Overflow)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_caller_can_shorten_the_budget_but_never_lengthen_it() {
        let config = budget(1000, 5, None);
        let shorter = plan(&config, CallerDeadline::Honored(ms(300)), ms(10));
        assert_eq!(shorter.remaining, ms(290));
        let longer = plan(&config, CallerDeadline::Honored(ms(60_000)), ms(10));
        assert_eq!(longer.remaining, ms(990));
        let ignored = plan(
            &config,
            CallerDeadline::Ignored(DeadlineDefect::Malformed),
            ms(10),
        );
        assert_eq!(ignored.remaining, ms(990));
        assert_eq!(
            longer.outcome,
            BudgetOutcome::Proceed {
                upstream_timeout_ms: 990,
                retries: None
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn too_little_left_means_deadline_exceeded_at_the_exact_boundary() {
        let config = budget(1000, 5, None);
        let exceeded = |caller: u64, elapsed: u64| {
            plan(&config, CallerDeadline::Honored(ms(caller)), ms(elapsed)).outcome
                == BudgetOutcome::DeadlineExceeded
        };
        assert!(!exceeded(10, 5), "exactly min_remaining left proceeds");
        assert!(exceeded(10, 6));
        assert!(exceeded(10, 10));
        assert!(
            exceeded(10, 5000),
            "elapsed beyond the deadline saturates at zero"
        );
        assert!(exceeded(0, 0), "a zero caller deadline has already passed");
        let no_minimum = budget(1000, 0, None);
        assert_eq!(
            plan(&no_minimum, CallerDeadline::Absent, ms(1000)).outcome,
            BudgetOutcome::DeadlineExceeded,
            "nothing left is exceeded even without a minimum"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn retries_are_what_fits_in_the_remaining_budget() {
        assert_eq!(retries_that_fit(ms(1000), ms(200), 3), 3);
        assert_eq!(retries_that_fit(ms(1000), ms(200), 10), 4);
        assert_eq!(
            retries_that_fit(ms(400), ms(200), 3),
            1,
            "two whole attempts fit exactly"
        );
        assert_eq!(retries_that_fit(ms(399), ms(200), 3), 0);
        assert_eq!(retries_that_fit(ms(100), ms(200), 3), 0);
        assert_eq!(retries_that_fit(ms(100), Duration::ZERO, 3), 0);
        assert_eq!(
            retries_that_fit(Duration::MAX, Duration::from_nanos(1), 7),
            7
        );

        let config = budget(1000, 5, Some((3, 200)));
        let granted =
            |caller: u64| match plan(&config, CallerDeadline::Honored(ms(caller)), Duration::ZERO)
                .outcome
            {
                BudgetOutcome::Proceed {
                    retries: Some(plan),
                    ..
                } => plan.retries,
                other => panic!("{other:?}"),
            };
        assert_eq!(granted(1000), 3);
        assert_eq!(granted(300), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn under_a_millisecond_left_is_exceeded_even_without_a_minimum() {
        let no_minimum = budget(1000, 0, None);
        let plan_at = |elapsed: Duration| plan(&no_minimum, CallerDeadline::Absent, elapsed);
        assert_eq!(
            plan_at(ms(999) + Duration::from_micros(500)).outcome,
            BudgetOutcome::DeadlineExceeded,
            "the router's 1 ms would outlive the 0.5 ms left"
        );
        assert_eq!(
            plan_at(ms(999)).outcome,
            BudgetOutcome::Proceed {
                upstream_timeout_ms: 1,
                retries: None
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn headers_are_rounded_down_but_never_to_zero() {
        assert_eq!(whole_millis(Duration::from_micros(1999)), 1);
        assert_eq!(whole_millis(Duration::from_micros(10)), 1);
        assert_eq!(format_grpc_timeout(Duration::from_micros(1999)), "1m");
        assert_eq!(format_grpc_timeout(Duration::from_micros(999)), "999u");
        assert_eq!(format_grpc_timeout(Duration::from_nanos(10)), "1u");
        assert_eq!(format_grpc_timeout(MAX_DURATION), "86400000m");
        assert_eq!(
            parse_grpc_timeout(format_grpc_timeout(ms(1234)).as_bytes()),
            Ok(ms(1234))
        );
    }

    /// Property tests: the budget never grows. Whatever the route's budget, the caller's
    /// deadline, the time already spent and the retry policy, nothing handed to the router or
    /// the upstream is longer than min(route timeout, caller deadline) − elapsed.
    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> impl Strategy<Value = BudgetConfig> {
            let max_ms = u64::try_from(MAX_DURATION.as_millis()).unwrap_or(u64::MAX);
            prop_oneof![1u64..=2_000, 1u64..=max_ms]
                .prop_flat_map(move |timeout| {
                    (
                        Just(timeout),
                        prop_oneof![Just(0u64), Just(1u64.min(timeout - 1)), 0u64..timeout],
                        proptest::option::of((1u32..=10, 1u64..timeout.max(2))),
                    )
                })
                .prop_map(|(timeout, min_remaining, retries)| {
                    budget(timeout, min_remaining, retries)
                })
        }

        fn caller() -> impl Strategy<Value = CallerDeadline> {
            let max_ns = u64::try_from(MAX_DURATION.as_nanos()).unwrap_or(u64::MAX);
            prop_oneof![
                Just(CallerDeadline::Absent),
                (0u64..=max_ns).prop_map(|ns| CallerDeadline::Honored(Duration::from_nanos(ns))),
                (0u64..2_000_000_000)
                    .prop_map(|ns| CallerDeadline::Honored(Duration::from_nanos(ns))),
                Just(CallerDeadline::Ignored(DeadlineDefect::Overflow)),
            ]
        }

        fn elapsed() -> impl Strategy<Value = Duration> {
            prop_oneof![
                (0u64..2_000_000_000).prop_map(Duration::from_nanos),
                any::<u64>().prop_map(Duration::from_nanos),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn the_budget_never_grows(
                c in config(),
                caller in caller(),
                elapsed in elapsed(),
                near_the_end in proptest::option::of(0u64..3_000_000),
            ) {
                let ceiling = match caller {
                    CallerDeadline::Honored(deadline) => deadline.min(c.timeout),
                    _ => c.timeout,
                };
                // Often start within 3 ms of the deadline, where rounding matters most.
                let elapsed = near_the_end
                    .map_or(elapsed, |slack| ceiling.saturating_sub(Duration::from_nanos(slack)));
                let p = plan(&c, caller, elapsed);
                prop_assert!(p.remaining <= ceiling);
                prop_assert!(p.remaining <= c.timeout);
                prop_assert_eq!(p.remaining, ceiling.saturating_sub(elapsed));
                match p.outcome {
                    BudgetOutcome::DeadlineExceeded => {
                        prop_assert!(p.remaining < c.min_remaining.max(MIN_ROUTER_TIMEOUT));
                    }
                    BudgetOutcome::Proceed { upstream_timeout_ms, retries } => {
                        prop_assert!(p.remaining >= c.min_remaining);
                        // The router's timeout (whole ms) never outlives what is left.
                        prop_assert!(upstream_timeout_ms >= 1);
                        prop_assert!(Duration::from_millis(upstream_timeout_ms) <= p.remaining);
                        // Neither does the deadline the upstream is told in grpc-timeout.
                        let told = parse_grpc_timeout(format_grpc_timeout(p.remaining).as_bytes());
                        prop_assert!(matches!(told, Ok(d) if d <= p.remaining), "{told:?}");
                        if let (Some(granted), Some(policy)) = (retries, &c.retries) {
                            prop_assert!(granted.retries <= policy.max);
                            let attempts = u128::from(granted.retries) + 1;
                            let per_try = policy.per_try_timeout.as_nanos();
                            // Retries never outlive the budget: every attempt fits whole...
                            if granted.retries > 0 {
                                prop_assert!(attempts * per_try <= p.remaining.as_nanos());
                                prop_assert!(
                                    u128::from(granted.per_try_timeout_ms) * attempts
                                        <= u128::from(upstream_timeout_ms)
                                );
                            }
                            // ...and no retry that would fit is withheld.
                            if granted.retries < policy.max {
                                prop_assert!((attempts + 1) * per_try > p.remaining.as_nanos());
                            }
                        }
                    }
                }
            }
        }
    }
}

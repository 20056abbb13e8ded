//! The breaker driven with explicit time, and shared between two "workers" through one store.

use std::time::Duration;

use fusebox_policy_schema::{BreakerConfig, BreakerScope, Fallback};
use wasm_bindgen_test::wasm_bindgen_test;

use super::*;
use crate::policy::shared::{update, MemoryStore};

fn config() -> BreakerConfig {
    BreakerConfig {
        scope: BreakerScope::Route,
        consecutive_failures: Some(3),
        failure_rate: None,
        minimum_requests: 10,
        window: Duration::from_secs(10),
        slow_call: None,
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(5),
        half_open_requests: 1,
        failure_statuses: vec![500, 502, 503, 504],
        fallback: Fallback {
            status: 503,
            body: String::new(),
            headers: Vec::new(),
        },
    }
}

const T0: u64 = 1_732_000_000_000;

fn call(outcome: Outcome) -> Call {
    Call {
        outcome,
        slow: false,
        probe: false,
    }
}

fn probe(outcome: Outcome) -> Call {
    Call {
        outcome,
        slow: false,
        probe: true,
    }
}

fn fail_n(state: &mut BreakerState, config: &BreakerConfig, n: u32, at: u64) -> Option<Transition> {
    (0..n)
        .filter_map(|_| state.record(config, at, call(Outcome::Failure)))
        .last()
}

#[wasm_bindgen_test(unsupported = test)]
fn consecutive_failures_open_it_and_a_success_resets_the_count() {
    let c = config();
    let mut s = BreakerState::default();
    assert_eq!(fail_n(&mut s, &c, 2, T0), None);
    assert_eq!(s.record(&c, T0, call(Outcome::Success)), None);
    assert_eq!(fail_n(&mut s, &c, 2, T0), None);
    assert_eq!(s.phase, Phase::Closed);
    assert_eq!(
        s.record(&c, T0, call(Outcome::Failure)),
        Some(Transition::Opened(TripReason::ConsecutiveFailures))
    );
    assert_eq!(s.phase, Phase::Open);
    assert_eq!(
        s.admit(&c, T0 + 1),
        (
            Admission::Rejected {
                retry_after_ms: 4_999
            },
            None
        )
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn failure_rate_needs_the_minimum_number_of_calls() {
    let c = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        minimum_requests: 4,
        ..config()
    };
    let mut s = BreakerState::default();
    for _ in 0..3 {
        assert_eq!(
            s.record(&c, T0, call(Outcome::Failure)),
            None,
            "below minimum_requests"
        );
    }
    assert_eq!(
        s.record(&c, T0, call(Outcome::Success)),
        Some(Transition::Opened(TripReason::FailureRate))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn failures_that_slid_out_of_the_window_do_not_count() {
    let c = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        minimum_requests: 4,
        ..config()
    };
    let mut s = BreakerState::default();
    for _ in 0..3 {
        s.record(&c, T0, call(Outcome::Failure));
    }
    // Ten seconds later those failures are out of the 10 s window: 1 failure in 4 calls.
    let later = T0 + 10_000;
    for outcome in [Outcome::Success, Outcome::Success, Outcome::Success] {
        assert_eq!(s.record(&c, later, call(outcome)), None);
    }
    assert_eq!(
        s.record(&c, later, call(Outcome::Failure)),
        None,
        "1 in 4 is under 50%"
    );
    // Just inside the window edge they still count: 9.999 s after T0, in a fresh breaker.
    let mut s = BreakerState::default();
    for _ in 0..3 {
        s.record(&c, T0, call(Outcome::Failure));
    }
    assert_eq!(
        s.record(&c, T0 + 9_000, call(Outcome::Success)),
        Some(Transition::Opened(TripReason::FailureRate))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn slow_calls_open_it_by_rate() {
    let c = BreakerConfig {
        consecutive_failures: None,
        slow_call: Some((Duration::from_millis(300), 0.5)),
        minimum_requests: 2,
        ..config()
    };
    let mut s = BreakerState::default();
    assert_eq!(
        s.record(
            &c,
            T0,
            Call {
                outcome: Outcome::Success,
                slow: false,
                probe: false
            }
        ),
        None
    );
    assert_eq!(
        s.record(
            &c,
            T0,
            Call {
                outcome: Outcome::Success,
                slow: true,
                probe: false
            }
        ),
        Some(Transition::Opened(TripReason::SlowCallRate))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn after_open_for_exactly_one_probe_goes_through_and_its_success_closes() {
    let c = config();
    let mut s = BreakerState::default();
    fail_n(&mut s, &c, 3, T0);
    assert!(matches!(
        s.admit(&c, T0 + 4_999).0,
        Admission::Rejected { retry_after_ms: 1 }
    ));
    assert_eq!(
        s.admit(&c, T0 + 5_000),
        (Admission::Probe, Some(Transition::HalfOpened))
    );
    assert_eq!(
        s.admit(&c, T0 + 5_001),
        (
            Admission::Rejected {
                retry_after_ms: 1_000
            },
            None
        )
    );
    // A late result from before the breaker opened changes nothing.
    assert_eq!(s.record(&c, T0 + 5_002, call(Outcome::Success)), None);
    assert_eq!(s.phase, Phase::HalfOpen);
    assert_eq!(
        s.record(&c, T0 + 5_010, probe(Outcome::Success)),
        Some(Transition::Closed)
    );
    assert_eq!(s, BreakerState::default());
    assert_eq!(s.admit(&c, T0 + 5_011), (Admission::Allowed, None));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_failed_probe_reopens_with_exponential_backoff_up_to_the_ceiling() {
    let c = BreakerConfig {
        max_open_for: Duration::from_secs(15),
        ..config()
    };
    let mut s = BreakerState::default();
    fail_n(&mut s, &c, 3, T0);
    let mut now;
    for expected_open in [10_000, 15_000, 15_000] {
        now = s.open_until_ms;
        assert_eq!(s.admit(&c, now).0, Admission::Probe);
        assert_eq!(
            s.record(&c, now, probe(Outcome::Failure)),
            Some(Transition::Opened(TripReason::ProbeFailed))
        );
        assert_eq!(s.open_until_ms - now, expected_open);
    }
    now = s.open_until_ms;
    s.admit(&c, now);
    assert_eq!(
        s.record(&c, now, probe(Outcome::Success)),
        Some(Transition::Closed)
    );
    fail_n(&mut s, &c, 3, now);
    assert_eq!(s.open_until_ms - now, 5_000, "closing resets the backoff");
}

#[wasm_bindgen_test(unsupported = test)]
fn an_abandoned_probe_frees_its_slot_and_a_lost_one_expires() {
    let c = config();
    let mut s = BreakerState::default();
    fail_n(&mut s, &c, 3, T0);
    let half_open = T0 + 5_000;
    assert_eq!(s.admit(&c, half_open).0, Admission::Probe);
    assert_eq!(s.record(&c, half_open, probe(Outcome::Abandoned)), None);
    assert_eq!(
        s.admit(&c, half_open + 1).0,
        Admission::Probe,
        "the slot was given back"
    );
    assert!(matches!(
        s.admit(&c, half_open + 2).0,
        Admission::Rejected { .. }
    ));
    assert_eq!(
        s.admit(&c, half_open + 1 + PROBE_LEASE_MS).0,
        Admission::Probe,
        "a lost probe expires"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn slow_probes_count_as_failures() {
    let c = BreakerConfig {
        slow_call: Some((Duration::from_millis(100), 1.0)),
        ..config()
    };
    let mut s = BreakerState::default();
    fail_n(&mut s, &c, 3, T0);
    s.admit(&c, T0 + 5_000);
    let slow_probe = Call {
        outcome: Outcome::Success,
        slow: true,
        probe: true,
    };
    assert_eq!(
        s.record(&c, T0 + 5_200, slow_probe),
        Some(Transition::Opened(TripReason::ProbeFailed))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn two_workers_share_one_breaker_through_the_store() {
    let c = BreakerConfig {
        half_open_requests: 2,
        ..config()
    };
    let store = MemoryStore::default();
    let record = |outcome: Outcome, probe: bool, at: u64| {
        update(&store, "b", |s: &mut BreakerState| {
            s.record(
                &c,
                at,
                Call {
                    outcome,
                    slow: false,
                    probe,
                },
            )
        })
        .0
    };
    let admit = |at: u64| update(&store, "b", |s: &mut BreakerState| s.admit(&c, at).0).0;
    // Worker A sees two failures, worker B the third: the breaker opens for both.
    assert_eq!(record(Outcome::Failure, false, T0), Ok(None));
    assert_eq!(record(Outcome::Failure, false, T0), Ok(None));
    assert_eq!(
        record(Outcome::Failure, false, T0),
        Ok(Some(Transition::Opened(TripReason::ConsecutiveFailures)))
    );
    assert!(matches!(admit(T0 + 1), Ok(Admission::Rejected { .. })));
    // In half-open, the two probes are admitted across both workers, not two per worker.
    let admissions: Vec<_> = (0..4).map(|i| admit(T0 + 5_000 + i)).collect();
    let probes = admissions
        .iter()
        .filter(|a| **a == Ok(Admission::Probe))
        .count();
    assert_eq!(probes, 2, "{admissions:?}");
    assert_eq!(record(Outcome::Success, true, T0 + 5_100), Ok(None));
    assert_eq!(
        record(Outcome::Success, true, T0 + 5_100),
        Ok(Some(Transition::Closed))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn outcomes_come_from_failure_statuses_and_upstream_failure_flags() {
    use crate::policy::response_flags::*;
    let c = BreakerConfig {
        failure_statuses: vec![500, 503],
        ..config()
    };
    assert_eq!(classify(&c, Some(200), 0), Outcome::Success);
    assert_eq!(
        classify(&c, Some(404), 0),
        Outcome::Success,
        "4xx are successes by default"
    );
    assert_eq!(
        classify(&c, Some(502), 0),
        Outcome::Success,
        "only the configured statuses fail"
    );
    assert_eq!(classify(&c, Some(503), 0), Outcome::Failure);
    for flag in [
        UPSTREAM_REQUEST_TIMEOUT,
        UPSTREAM_REMOTE_RESET,
        UPSTREAM_CONNECTION_FAILURE,
        UPSTREAM_CONNECTION_TERMINATION,
        UPSTREAM_OVERFLOW,
    ] {
        assert_eq!(classify(&c, Some(200), flag), Outcome::Failure, "{flag:#x}");
    }
    assert_eq!(classify(&c, None, 0), Outcome::Abandoned);
    assert_eq!(
        classify(&c, Some(0), 0x4000),
        Outcome::Abandoned,
        "downstream went away"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_clock_step_back_never_holds_the_breaker_open_longer_than_max_open_for() {
    let c = config();
    let mut s = BreakerState::default();
    fail_n(&mut s, &c, 3, T0);
    // The clock steps back an hour: the breaker re-anchors instead of waiting an hour more.
    let back = T0 - 3_600_000;
    assert_eq!(
        s.admit(&c, back),
        (
            Admission::Rejected {
                retry_after_ms: 5_000
            },
            None
        )
    );
    assert_eq!(
        s.admit(&c, back + 5_000),
        (Admission::Probe, Some(Transition::HalfOpened))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_stored_state_with_absurd_values_recovers_instead_of_sticking() {
    let c = config();
    // Half-open "since" the far future with every slot taken and more successes than probes:
    // only a corrupt or foreign value looks like this.
    let mut s = BreakerState {
        phase: Phase::HalfOpen,
        half_open_since_ms: u64::MAX,
        probes_admitted: u32::MAX,
        probe_successes: u32::MAX,
        ..BreakerState::default()
    };
    assert!(matches!(s.admit(&c, T0).0, Admission::Rejected { .. }));
    assert_eq!(s.admit(&c, T0 + PROBE_LEASE_MS).0, Admission::Probe);
    // A success on top of u32::MAX successes saturates instead of overflowing.
    let mut s = BreakerState {
        phase: Phase::HalfOpen,
        probe_successes: u32::MAX,
        ..BreakerState::default()
    };
    assert_eq!(
        s.record(&c, T0, probe(Outcome::Success)),
        Some(Transition::Closed)
    );
}

/// Property tests: whatever the events, their order and the clock (stepping back included),
/// and whatever state shared data held, the breaker only moves along its four legal edges and
/// never stays shut for good.
#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use crate::policy::breaker::window::{Bucket, Window, BUCKETS};
    use crate::policy::shared::SharedValue;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Admit,
        Record(Call),
    }

    #[derive(Debug, Clone)]
    struct Step {
        /// Clock change before the event, in ms; negative: the clock steps back.
        clock: i64,
        event: Event,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Failure),
            Just(Outcome::Abandoned)
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let clock = prop_oneof![
            4 => 0i64..2_000,
            1 => -120_000i64..0,
            1 => 0i64..200_000,
            1 => Just(-(1i64 << 40)),
            1 => Just(1i64 << 40),
        ];
        let event = prop_oneof![
            Just(Event::Admit),
            (outcome(), any::<bool>(), any::<bool>()).prop_map(|(outcome, slow, probe)| {
                Event::Record(Call {
                    outcome,
                    slow,
                    probe,
                })
            }),
        ];
        (clock, event).prop_map(|(clock, event)| Step { clock, event })
    }

    fn config() -> impl Strategy<Value = BreakerConfig> {
        (
            proptest::option::of(1u32..5),
            proptest::option::of(0.1f64..=1.0),
            1u32..5,
            10u64..5_000,
            proptest::option::of((1u64..1_000, 0.1f64..=1.0)),
            1u64..10_000,
            0u64..60_000,
            1u32..4,
        )
            .prop_map(
                |(consecutive, rate, minimum, window, slow, open_for, extra, probes)| {
                    let consecutive = match (consecutive, rate, slow) {
                        (None, None, None) => Some(1),
                        (c, _, _) => c,
                    };
                    BreakerConfig {
                        consecutive_failures: consecutive,
                        failure_rate: rate,
                        minimum_requests: minimum,
                        window: Duration::from_millis(window),
                        slow_call: slow.map(|(ms, rate)| (Duration::from_millis(ms), rate)),
                        open_for: Duration::from_millis(open_for),
                        max_open_for: Duration::from_millis(open_for + extra),
                        half_open_requests: probes,
                        ..super::config()
                    }
                },
            )
    }

    fn edge_u32() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(u32::MAX - 1),
            Just(u32::MAX),
            any::<u32>()
        ]
    }

    fn edge_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(T0),
            Just(u64::MAX),
            (T0 - 10_000_000)..(T0 + 10_000_000),
            any::<u64>()
        ]
    }

    /// Any state shared data could hold: a fresh breaker, or any decodable value at all.
    fn stored_state() -> impl Strategy<Value = BreakerState> {
        let bucket = (edge_u64(), edge_u32(), edge_u32(), edge_u32()).prop_map(
            |(epoch, calls, failures, slow)| Bucket {
                epoch,
                calls,
                failures,
                slow,
            },
        );
        let phase = prop_oneof![
            Just(Phase::Closed),
            Just(Phase::Open),
            Just(Phase::HalfOpen)
        ];
        let hostile = (
            phase,
            (edge_u32(), edge_u32(), edge_u32(), edge_u32()),
            (edge_u64(), edge_u64()),
            proptest::collection::vec(bucket, BUCKETS),
        )
            .prop_map(
                |(phase, (consecutive, reopen, admitted, successes), (until, since), buckets)| {
                    let mut window = Window::default();
                    for (slot, bucket) in window.buckets.iter_mut().zip(buckets) {
                        *slot = bucket;
                    }
                    BreakerState {
                        phase,
                        consecutive_failures: consecutive,
                        reopen_count: reopen,
                        open_until_ms: until,
                        half_open_since_ms: since,
                        probes_admitted: admitted,
                        probe_successes: successes,
                        window,
                    }
                },
            );
        prop_oneof![Just(BreakerState::default()), hostile]
    }

    fn legal(before: Phase, after: Phase, transition: Option<Transition>) -> bool {
        match transition {
            None => before == after,
            Some(Transition::Opened(_)) => {
                after == Phase::Open && matches!(before, Phase::Closed | Phase::HalfOpen)
            }
            Some(Transition::HalfOpened) => before == Phase::Open && after == Phase::HalfOpen,
            Some(Transition::Closed) => before == Phase::HalfOpen && after == Phase::Closed,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn transitions_follow_the_four_legal_edges_only(
            c in config(),
            start in stored_state(),
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let mut s = start;
            let mut now = T0;
            for step in steps {
                now = now.saturating_add_signed(step.clock);
                let before = s.phase;
                match step.event {
                    Event::Admit => {
                        let (admission, transition) = s.admit(&c, now);
                        prop_assert!(legal(before, s.phase, transition),
                            "{before:?} -> {:?} reported as {transition:?}", s.phase);
                        match admission {
                            Admission::Allowed => prop_assert_eq!(s.phase, Phase::Closed),
                            Admission::Probe => {
                                prop_assert_eq!(s.phase, Phase::HalfOpen);
                                prop_assert!(s.probes_admitted <= c.half_open_requests);
                            }
                            Admission::Rejected { retry_after_ms } => {
                                prop_assert!(s.phase != Phase::Closed);
                                prop_assert!(retry_after_ms >= 1);
                                prop_assert!(retry_after_ms <= s.max_open_duration_ms(&c).max(1_000),
                                    "told to wait {retry_after_ms} ms");
                            }
                        }
                    }
                    Event::Record(call) => {
                        let transition = s.record(&c, now, call);
                        prop_assert!(legal(before, s.phase, transition),
                            "{before:?} -> {:?} reported as {transition:?}", s.phase);
                    }
                }
                // What is written back to shared data reads back the same.
                prop_assert_eq!(BreakerState::decode(&s.encode()), Some(s.clone()));
            }
        }

        #[test]
        fn whatever_it_held_it_admits_again_within_max_open_for_and_a_probe_lease(
            c in config(),
            start in stored_state(),
            now in (T0 - 10_000_000)..(T0 + 10_000_000),
        ) {
            let mut s = start;
            let _ = s.admit(&c, now);
            let later = now + s.max_open_duration_ms(&c) + PROBE_LEASE_MS;
            let (admission, _) = s.admit(&c, later);
            prop_assert!(matches!(admission, Admission::Allowed | Admission::Probe),
                "still {admission:?} in {:?}", s.phase);
        }
    }
}

//! The token bucket driven with explicit time.

use fusebox_policy_schema::{IpRange, Priority};
use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

const T0: u64 = 1_732_000_000_000_000;
const SECOND: u64 = 1_000_000;

fn limits(rate: f64, burst: u64, critical: f64, normal: f64) -> Limits {
    let burst_micro = burst * MICRO;
    Limits {
        rate,
        burst_micro,
        reserve_critical_micro: (burst_micro as f64 * critical) as u64,
        reserve_normal_micro: (burst_micro as f64 * normal) as u64,
    }
}

fn admitted(take: Take) -> bool {
    matches!(take, Take::Admitted { .. })
}

#[wasm_bindgen_test(unsupported = test)]
fn a_new_bucket_is_full_and_a_burst_drains_it() {
    let l = limits(10.0, 5, 0.0, 0.0);
    let mut b = Bucket::default();
    for expected in (0..5).rev() {
        assert_eq!(
            b.take(&l, Priority::Normal, T0),
            Take::Admitted {
                remaining: expected
            }
        );
    }
    assert_eq!(
        b.take(&l, Priority::Normal, T0),
        Take::Shed {
            retry_after_ms: 100
        }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn refill_is_exact_and_capped_at_the_burst() {
    let l = limits(2.0, 4, 0.0, 0.0);
    let mut b = Bucket::default();
    for _ in 0..4 {
        b.take(&l, Priority::Normal, T0);
    }
    b.refill(&l, T0 + SECOND / 2);
    assert_eq!(b.tokens_micro, MICRO, "half a second at 2/s is one token");
    b.refill(&l, T0 + 3_600 * SECOND);
    assert_eq!(
        b.tokens_micro,
        4 * MICRO,
        "a long idle gap fills the bucket, no more"
    );
    b.refill(&l, u64::MAX);
    assert_eq!(b.tokens_micro, 4 * MICRO, "even an absurd clock jump");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_clock_stepping_back_earns_nothing_and_re_anchors() {
    let l = limits(1.0, 10, 0.0, 0.0);
    let mut b = Bucket::default();
    for _ in 0..10 {
        b.take(&l, Priority::Normal, T0);
    }
    b.refill(&l, T0 - 60 * SECOND);
    assert_eq!(b.tokens_micro, 0, "going back in time earns nothing");
    assert_eq!(
        b.last_refill_us,
        T0 - 60 * SECOND,
        "and re-anchors the refill clock"
    );
    b.refill(&l, T0 - 58 * SECOND);
    assert_eq!(
        b.tokens_micro,
        2 * MICRO,
        "time after the step is earned at the rate"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn sheddable_goes_first_and_critical_keeps_a_reserve() {
    // Burst 10: normal keeps 2 back for critical, sheddable keeps 5 back.
    let l = limits(0.001, 10, 0.2, 0.5);
    let mut b = Bucket::default();
    let sheddable = (0..10)
        .filter(|_| admitted(b.take(&l, Priority::Sheddable, T0)))
        .count();
    assert_eq!(sheddable, 5, "sheddable stops at the normal reserve");
    let normal = (0..10)
        .filter(|_| admitted(b.take(&l, Priority::Normal, T0)))
        .count();
    assert_eq!(normal, 3, "normal stops at the critical reserve");
    let critical = (0..10)
        .filter(|_| admitted(b.take(&l, Priority::Critical, T0)))
        .count();
    assert_eq!(critical, 2, "critical takes the last tokens");
    assert_eq!(b.tokens_micro, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn retry_after_is_when_a_token_for_that_class_is_there() {
    let l = limits(1.0, 10, 0.2, 0.5);
    let mut b = Bucket {
        owner: 0,
        tokens_micro: 0,
        last_refill_us: T0,
    };
    assert_eq!(
        b.take(&l, Priority::Critical, T0),
        Take::Shed {
            retry_after_ms: 1_000
        }
    );
    assert_eq!(
        b.take(&l, Priority::Normal, T0),
        Take::Shed {
            retry_after_ms: 3_000
        }
    );
    assert_eq!(
        b.take(&l, Priority::Sheddable, T0),
        Take::Shed {
            retry_after_ms: 6_000
        }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn codecs_round_trip_and_refuse_other_layouts() {
    let bucket = Bucket {
        owner: 7,
        tokens_micro: 123,
        last_refill_us: T0,
    };
    assert_eq!(Bucket::decode(&bucket.encode()), Some(bucket));
    assert_eq!(Bucket::decode(&[]), None);
    assert_eq!(Bucket::decode(&bucket.encode()[..24]), None);
    let mut other = bucket.encode();
    other[0] = 9;
    assert_eq!(Bucket::decode(&other), None);
    let in_flight = InFlight { count: 3 };
    assert_eq!(InFlight::decode(&in_flight.encode()), Some(in_flight));
    assert_eq!(InFlight::decode(&[2, 0, 0, 0, 0]), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_bulkhead_never_goes_over_or_below() {
    let mut in_flight = InFlight::default();
    assert!(in_flight.acquire(2));
    assert!(in_flight.acquire(2));
    assert!(!in_flight.acquire(2));
    in_flight.release();
    in_flight.release();
    in_flight.release();
    assert_eq!(in_flight.count, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn slots_are_taken_in_batches_only_as_far_as_the_limit() {
    let mut in_flight = InFlight { count: 6 };
    assert_eq!(in_flight.acquire_up_to(10, 3), 3);
    assert_eq!(in_flight.acquire_up_to(10, 3), 1, "only what is free");
    assert_eq!(in_flight.acquire_up_to(10, 3), 0);
    in_flight.release_many(4);
    assert_eq!(in_flight.count, 6);
    in_flight.release_many(100);
    assert_eq!(in_flight.count, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_lease_is_taken_only_from_tokens_above_every_reserve() {
    // Burst 1000; normal keeps 200 for critical, sheddable keeps 500 for the others.
    let l = limits(1.0, 1_000, 0.2, 0.5);
    let mut b = Bucket::default();
    assert_eq!(
        b.take_and_lease(&l, Priority::Sheddable, T0, 15),
        (Take::Admitted { remaining: 984 }, 15)
    );
    let mut leased = 15;
    loop {
        let (take, lease) = b.take_and_lease(&l, Priority::Critical, T0, 15);
        assert!(admitted(take));
        if lease == 0 {
            break;
        }
        leased += lease;
        assert!(
            b.tokens_micro >= l.top_floor_micro(),
            "a lease never eats a reserve"
        );
    }
    assert!(
        b.whole_tokens() < 500 + 15,
        "leasing stops near the top reserve"
    );
    assert_eq!(leased % 15, 0);
    // From here on every token comes from the bucket, exactly as without leases.
    let before = b;
    let (take, lease) = b.take_and_lease(&l, Priority::Sheddable, T0, 15);
    let mut plain = before;
    assert_eq!((take, lease), (plain.take(&l, Priority::Sheddable, T0), 0));
    assert_eq!(b, plain);
}

#[wasm_bindgen_test(unsupported = test)]
fn no_batch_or_no_token_means_no_lease() {
    let l = limits(1.0, 1_000, 0.0, 0.0);
    let mut b = Bucket::default();
    assert_eq!(
        b.take_and_lease(&l, Priority::Normal, T0, 0),
        (Take::Admitted { remaining: 999 }, 0)
    );
    b.tokens_micro = 0;
    let (take, lease) = b.take_and_lease(&l, Priority::Normal, T0, 15);
    assert!(!admitted(take));
    assert_eq!(lease, 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn priorities_parse_case_insensitively_and_nothing_else() {
    assert_eq!(parse_priority(b"CRITICAL"), Some(Priority::Critical));
    assert_eq!(parse_priority(b"sheddable"), Some(Priority::Sheddable));
    assert_eq!(parse_priority(b"critical "), None);
    assert_eq!(parse_priority(b""), None);
}

#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Take(Priority),
        Advance(u64),
        Rewind(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            prop_oneof![
                Just(Priority::Critical),
                Just(Priority::Normal),
                Just(Priority::Sheddable)
            ]
            .prop_map(Step::Take),
            (0u64..10 * SECOND).prop_map(Step::Advance),
            (0u64..10 * SECOND).prop_map(Step::Rewind),
        ]
    }

    proptest! {
        #[test]
        fn tokens_stay_within_zero_and_burst(
            rate in 0.001f64..10_000.0,
            burst in 1u64..1_000,
            critical in 0.0f64..0.5,
            extra in 0.0f64..0.49,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let l = limits(rate, burst, critical, critical + extra);
            let mut b = Bucket::default();
            let mut now = T0;
            for step in steps {
                match step {
                    Step::Take(priority) => {
                        let before = { let mut probe = b; probe.refill(&l, now); probe.tokens_micro };
                        match b.take(&l, priority, now) {
                            Take::Admitted { .. } => {
                                prop_assert!(before >= l.floor_micro(priority) + MICRO);
                                prop_assert_eq!(b.tokens_micro, before - MICRO);
                            }
                            Take::Shed { retry_after_ms } => {
                                prop_assert!(before < l.floor_micro(priority) + MICRO);
                                prop_assert!(retry_after_ms >= 1 || before + MICRO > l.floor_micro(priority) + MICRO);
                                prop_assert_eq!(b.tokens_micro, before);
                            }
                        }
                    }
                    Step::Advance(us) => now += us,
                    Step::Rewind(us) => now -= us.min(now - T0 / 2),
                }
                prop_assert!(b.tokens_micro <= l.burst_micro);
            }
        }

        #[test]
        fn leases_never_reach_into_a_reserve_nor_create_tokens(
            burst in 1u64..5_000,
            critical in 0.0f64..0.5,
            extra in 0.0f64..0.49,
            batch in 0u64..64,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let l = limits(1.0, burst, critical, critical + extra);
            let mut b = Bucket::default();
            let mut now = T0;
            for step in steps {
                match step {
                    Step::Take(priority) => {
                        let before = { let mut probe = b; probe.refill(&l, now); probe.tokens_micro };
                        let (take, leased) = b.take_and_lease(&l, priority, now, batch);
                        let spent = if admitted(take) { MICRO + leased * MICRO } else { 0 };
                        prop_assert_eq!(b.tokens_micro, before - spent, "tokens only move, never appear");
                        if leased > 0 {
                            prop_assert!(b.tokens_micro >= l.top_floor_micro());
                        }
                    }
                    Step::Advance(us) => now += us,
                    Step::Rewind(us) => now -= us.min(now - T0 / 2),
                }
            }
        }

        #[test]
        fn refill_over_a_gap_matches_the_rate(rate in 0.01f64..1_000.0, burst in 1u64..10_000, gap_ms in 0u64..100_000) {
            let l = limits(rate, burst, 0.0, 0.0);
            let mut b = Bucket { owner: 0, tokens_micro: 0, last_refill_us: T0 };
            b.refill(&l, T0 + gap_ms * 1_000);
            let expected = ((gap_ms * 1_000) as f64 * rate).min(l.burst_micro as f64);
            prop_assert!((b.tokens_micro as f64 - expected).abs() <= 1.0, "{} vs {}", b.tokens_micro, expected);
        }
    }
}

/// A policy's shedding: 1 token/s, a burst of 10, default reserves, trusting `trust` (CIDR
/// ranges; `None`: every peer).
fn shed_config(priority_header: Option<&str>, trust: Option<&[&str]>) -> ShedConfig {
    ShedConfig {
        rate: 1.0,
        burst: 10,
        key_header: None,
        max_keys: 64,
        priority_header: priority_header.map(str::to_owned),
        default_priority: Priority::Normal,
        reserve_critical: 0.2,
        reserve_normal: 0.5,
        status: 429,
        rate_limit_headers: false,
        max_in_flight: None,
        trust_priority_from: trust.map(|ranges| {
            ranges
                .iter()
                .map(|range| IpRange::parse(range).unwrap())
                .collect()
        }),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn reserves_apply_only_when_requests_carry_a_priority() {
    let classes = Limits::new(&shed_config(Some("x-priority"), None));
    assert_eq!(
        (classes.reserve_critical_micro, classes.reserve_normal_micro),
        (2 * MICRO, 5 * MICRO)
    );
    let one_class = Limits::new(&shed_config(None, None));
    assert_eq!(
        (
            one_class.reserve_critical_micro,
            one_class.reserve_normal_micro
        ),
        (0, 0)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn untrusted_peers_can_lower_their_priority_but_never_raise_it() {
    let edge = shed_config(Some("x-priority"), Some(&["10.0.0.0/8"]));
    let inside = peer_address(b"10.1.2.3:4000");
    let outside = peer_address(b"203.0.113.9:4000");
    use Priority::{Critical, Normal, Sheddable};
    assert_eq!(
        effective_priority(&edge, Some(Critical), inside),
        (Critical, false)
    );
    assert_eq!(
        effective_priority(&edge, Some(Critical), outside),
        (Normal, true)
    );
    assert_eq!(
        effective_priority(&edge, Some(Critical), None),
        (Normal, true)
    );
    assert_eq!(
        effective_priority(&edge, Some(Sheddable), outside),
        (Sheddable, false)
    );
    assert_eq!(
        effective_priority(&edge, Some(Normal), outside),
        (Normal, false)
    );
    assert_eq!(effective_priority(&edge, None, outside), (Normal, false));
    let everyone = shed_config(Some("x-priority"), None);
    assert_eq!(
        effective_priority(&everyone, Some(Critical), outside),
        (Critical, false)
    );
    let nobody = shed_config(Some("x-priority"), Some(&[]));
    assert_eq!(
        effective_priority(&nobody, Some(Critical), inside),
        (Normal, true)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn peer_addresses_parse_as_envoy_writes_them() {
    assert_eq!(peer_address(b"127.0.0.1:5000"), "127.0.0.1".parse().ok());
    assert_eq!(peer_address(b"[::1]:5000"), "::1".parse().ok());
    assert_eq!(peer_address(b"10.0.0.1"), "10.0.0.1".parse().ok());
    assert_eq!(peer_address(b"/tmp/socket"), None);
    assert_eq!(peer_address(b"\xff"), None);
}

//! What every fuzz target asserts, in one place for two users: the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly) and the regression test that replays every checked-in
//! input with plain `cargo test` (`plugin/tests/fuzz_regressions.rs`). A check panics when an
//! invariant breaks; "no panic" is the first invariant of all, since a panic in the plugin traps
//! Envoy's VM.
//!
//! Each target's input format is documented on its function. Where a format has several
//! fields, bytes are taken from the front; a short input simply leaves the rest out.

#![allow(dead_code)]

use std::time::Duration;

use fusebox::policy::breaker::{Admission, BreakerState, Call, Outcome, Phase, Transition};
use fusebox::policy::budget::{
    format_grpc_timeout, parse_grpc_timeout, parse_millis, plan, read_caller_deadline,
    BudgetOutcome, CallerDeadline, DeadlineDefect,
};
use fusebox::policy::correlation::{check_id, judge_incoming_id, mint_id, IdVerdict, InvalidId};
use fusebox::policy::request_log::RequestLog;
use fusebox::policy::selection::{select_policy, PolicySource};
use fusebox::policy::shared::SharedValue;
use fusebox::policy::shed::slots::{take_from_slot, SlotTake};
use fusebox::policy::shed::{Bucket, InFlight, Limits, Take, MICRO};
use fusebox::policy::traceparent::{
    is_valid_traceparent, judge_traceparent, mint_traceparent, TraceparentVerdict, TRACEPARENT_LEN,
};
use fusebox_policy_schema::duration::{ConfigDuration, MAX_DURATION};
use fusebox_policy_schema::{
    parse, BudgetConfig, Config, CorrelationConfig, DeadlineFormat, IdFormat, Priority, ShedConfig,
    NO_POLICY,
};

/// One target's check: panics when the input breaks an invariant.
pub type Check = fn(&[u8]);

/// Every target by name: the directory names under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: [(&str, Check); 6] = [
    ("config", config),
    ("deadline", deadline),
    ("traceparent", traceparent),
    ("request_id", request_id),
    ("shared_values", shared_values),
    ("route_metadata", route_metadata),
];

/// Takes `N` bytes from the front of `data`, zero-padded.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = data.len().min(N);
    let (head, rest) = data.split_at(n);
    out[..n].copy_from_slice(head);
    *data = rest;
    out
}

// ---------------------------------------------------------------------------------------------
// config

/// `config`: the bytes are a plugin configuration document, as Envoy hands it over.
///
/// Asserts: parsing never panics and is deterministic; an accepted configuration holds every
/// invariant the plugin relies on without re-checking; a refusal names at least one problem,
/// each with a path and a message of bounded size. The same bytes, as text, also go through
/// the duration parser: an accepted duration is well-formed and at most 24 h.
pub fn config(data: &[u8]) {
    let parsed = parse(data);
    assert_eq!(parse(data), parsed, "parsing is deterministic");
    match &parsed {
        Ok(config) => config_invariants(config),
        Err(errors) => {
            assert!(errors.iter().count() > 0, "a refusal names its problems");
            for error in errors.iter() {
                assert!(
                    !error.path.is_empty() && !error.message.is_empty(),
                    "{error}"
                );
                assert!(
                    error.path.len() <= 8192 && error.message.len() <= 2048,
                    "error text stays bounded: {} + {} bytes",
                    error.path.len(),
                    error.message.len()
                );
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ConfigDuration(duration)) = ConfigDuration::parse(text) {
            assert!(is_duration_text(text), "accepted {text:?}");
            assert!(duration <= MAX_DURATION, "{text:?} -> {duration:?}");
        }
    }
}

/// `<digits>[.<digits>](ns|us|ms|s|m|h)`, written independently of the parser.
fn is_duration_text(text: &str) -> bool {
    let Some(number) = ["ns", "us", "ms", "s", "m", "h"]
        .iter()
        .find_map(|unit| text.strip_suffix(unit))
    else {
        return false;
    };
    let mut parts = number.split('.');
    let digits = |part: Option<&str>| {
        part.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let whole = digits(parts.next());
    let fraction = match parts.next() {
        None => true,
        some => digits(some),
    };
    whole && fraction && parts.next().is_none()
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn config_invariants(config: &Config) {
    assert!(config.policies().len() <= fusebox_policy_schema::limits::MAX_POLICIES);
    let correlation = &config.correlation;
    assert!(
        is_header_name(&correlation.header),
        "{:?}",
        correlation.header
    );
    assert!((36..=8192).contains(&correlation.max_length));
    for (index, policy) in config.policies().iter().enumerate() {
        let name = &policy.name;
        assert!(
            !name.is_empty()
                && name.len() <= 64
                && name != NO_POLICY
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name:?}"
        );
        let id = config.policy_named(name);
        assert_eq!(id, config.policy_id_at(index), "{name}");
        if let Some(budget) = &policy.budget {
            assert!(budget.timeout >= Duration::from_millis(1) && budget.timeout <= MAX_DURATION);
            assert!(budget.min_remaining < budget.timeout);
            assert!(budget
                .caller_deadline_headers
                .iter()
                .all(|h| is_header_name(&h.name)));
            if let Some(retries) = &budget.retries {
                assert!((1..=10).contains(&retries.max));
                assert!(retries.per_try_timeout >= Duration::from_millis(1));
                assert!(retries.per_try_timeout < budget.timeout);
            }
        }
        if let Some(breaker) = &policy.breaker {
            assert!(
                breaker.consecutive_failures.is_some()
                    || breaker.failure_rate.is_some()
                    || breaker.slow_call.is_some(),
                "a breaker needs a trip condition"
            );
            assert!(breaker.consecutive_failures != Some(0));
            assert!(breaker.failure_rate.is_none_or(|r| r > 0.0 && r <= 1.0));
            assert!(breaker
                .slow_call
                .is_none_or(|(d, r)| d >= Duration::from_millis(1) && r > 0.0 && r <= 1.0));
            assert!(breaker.minimum_requests >= 1);
            assert!(breaker.window >= Duration::from_millis(10));
            assert!(breaker.open_for >= Duration::from_millis(1));
            assert!(breaker.max_open_for >= breaker.open_for);
            assert!((1..=100).contains(&breaker.half_open_requests));
            assert!(breaker
                .failure_statuses
                .iter()
                .all(|s| (100..=599).contains(s)));
            assert!((200..=599).contains(&breaker.fallback.status));
            assert!(breaker.fallback.body.len() <= 4096);
            for (name, value) in &breaker.fallback.headers {
                assert!(is_header_name(name), "{name:?}");
                assert!(value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
            }
        }
        if let Some(shed) = &policy.shed {
            assert!(shed.rate > 0.0 && shed.rate.is_finite() && shed.rate <= 1e9);
            assert!(shed.burst >= 1);
            assert!((1..=4096).contains(&shed.max_keys));
            assert!((0.0..1.0).contains(&shed.reserve_critical));
            assert!((shed.reserve_critical..1.0).contains(&shed.reserve_normal));
            assert!((400..=599).contains(&shed.status));
            assert!(shed.max_in_flight != Some(0));
            assert!(shed.key_header.as_deref().is_none_or(is_header_name));
            assert!(shed.priority_header.as_deref().is_none_or(is_header_name));
            if let Some(ranges) = &shed.trust_priority_from {
                assert!(shed.priority_header.is_some());
                assert!(ranges.len() <= fusebox_policy_schema::limits::MAX_TRUSTED_RANGES);
            }
            // The limits the request path derives from it are sane.
            let limits = Limits::new(shed);
            assert!(limits.reserve_normal_micro <= limits.burst_micro);
            assert!(limits.reserve_critical_micro <= limits.reserve_normal_micro);
        }
    }
    if let Some(default) = config.default_policy() {
        assert!(config.policy(default).is_some());
    }
}

// ---------------------------------------------------------------------------------------------
// deadline

/// `deadline`: the bytes are deadline header values. The whole input is read as one
/// `grpc-timeout` and as one millisecond header; split at the first `\n` (a byte no header value
/// holds), the two halves are a request's `grpc-timeout` and millisecond header together.
///
/// Asserts: a parsed deadline is exactly the format (checked independently of the parser),
/// exactly its value, and never above 24 h; the shortest valid header wins; a plan made from it
/// never hands the router or the upstream more than min(route timeout, caller deadline).
pub fn deadline(data: &[u8]) {
    let grpc = parse_grpc_timeout(data);
    match grpc_reference(data) {
        None => assert_eq!(grpc, Err(DeadlineDefect::Malformed), "{data:?}"),
        Some(nanos) if nanos > MAX_DURATION.as_nanos() => {
            assert!(
                matches!(grpc, Err(DeadlineDefect::Overflow | DeadlineDefect::Absurd)),
                "{data:?}: {grpc:?}"
            );
        }
        Some(nanos) => assert_eq!(grpc.map(|d| d.as_nanos()), Ok(nanos), "{data:?}"),
    }
    let millis = parse_millis(data);
    match millis_reference(data) {
        None => assert_eq!(millis, Err(DeadlineDefect::Malformed), "{data:?}"),
        Some(nanos) if nanos > MAX_DURATION.as_nanos() => {
            assert!(
                matches!(
                    millis,
                    Err(DeadlineDefect::Overflow | DeadlineDefect::Absurd)
                ),
                "{data:?}: {millis:?}"
            );
        }
        Some(nanos) => assert_eq!(millis.map(|d| d.as_nanos()), Ok(nanos), "{data:?}"),
    }
    for parsed in [grpc, millis].into_iter().flatten() {
        assert!(parsed <= MAX_DURATION);
        if parsed >= Duration::from_millis(1) {
            // What Fusebox propagates reads back as at most what it was, at most 1 ms less.
            let told = parse_grpc_timeout(format_grpc_timeout(parsed).as_bytes());
            assert!(
                matches!(told, Ok(d) if d <= parsed && parsed - d < Duration::from_millis(1)),
                "{parsed:?} -> {told:?}"
            );
        }
    }

    let (first, second) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let caller = read_caller_deadline([
        (DeadlineFormat::GrpcTimeout, Some(first)),
        (DeadlineFormat::Milliseconds, second),
    ]);
    let valid: Vec<Duration> = [
        parse_grpc_timeout(first).ok(),
        second.and_then(|s| parse_millis(s).ok()),
    ]
    .into_iter()
    .flatten()
    .collect();
    match caller {
        CallerDeadline::Honored(d) => assert_eq!(Some(d), valid.iter().min().copied()),
        CallerDeadline::Ignored(_) => assert!(valid.is_empty()),
        CallerDeadline::Absent => panic!("a header was present"),
    }
    for timeout_ms in [1, 5, 300, 86_400_000] {
        let config = BudgetConfig {
            timeout: Duration::from_millis(timeout_ms),
            min_remaining: Duration::from_millis(timeout_ms.min(5) - 1),
            caller_deadline_headers: Vec::new(),
            retries: None,
        };
        let ceiling = match caller {
            CallerDeadline::Honored(d) => d.min(config.timeout),
            _ => config.timeout,
        };
        let p = plan(&config, caller, Duration::ZERO);
        assert!(
            p.remaining <= ceiling,
            "the caller can only shorten the budget"
        );
        if let BudgetOutcome::Proceed {
            upstream_timeout_ms,
            ..
        } = p.outcome
        {
            assert!(Duration::from_millis(upstream_timeout_ms) <= p.remaining);
        }
    }
}

/// 1 to 8 ASCII digits and one of `HMSmun`: the value in nanoseconds, as u128 (no overflow).
fn grpc_reference(value: &[u8]) -> Option<u128> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let per: u128 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    let count: u128 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(count * per)
}

/// ASCII digits only: milliseconds in nanoseconds, saturating far above 24 h.
fn millis_reference(value: &[u8]) -> Option<u128> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u128, |n, d| {
                n.saturating_mul(10).saturating_add(u128::from(d - b'0'))
            })
            .saturating_mul(1_000_000),
    )
}

// ---------------------------------------------------------------------------------------------
// traceparent

/// `traceparent`: the bytes are an incoming `traceparent` value; the first 24 are also the
/// randomness a fresh one is minted from.
///
/// Asserts: validity agrees with the W3C rules (checked independently of the parser); the
/// verdict follows validity; a minted header is always valid and carries the random bytes.
pub fn traceparent(data: &[u8]) {
    let valid = is_valid_traceparent(data);
    assert_eq!(
        valid,
        traceparent_reference(data),
        "{:?}",
        String::from_utf8_lossy(data)
    );
    let expected = if valid {
        TraceparentVerdict::Keep
    } else {
        TraceparentVerdict::Replace
    };
    assert_eq!(judge_traceparent(Some(data)), expected);

    let mut rest = data;
    let random: [u8; 24] = take(&mut rest);
    let minted = mint_traceparent(random);
    let text = minted.as_str();
    assert!(is_valid_traceparent(text.as_bytes()), "{text}");
    assert_eq!(text.len(), TRACEPARENT_LEN);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    if random[..16] != [0; 16] {
        assert_eq!(&text[3..35], &hex[..32]);
    }
    if random[16..] != [0; 8] {
        assert_eq!(&text[36..52], &hex[32..]);
    }
}

/// The W3C Trace Context rules, written as the spec states them. What a future version adds
/// after the fourth field is opaque: only the dash that starts it is checked.
fn traceparent_reference(value: &[u8]) -> bool {
    let (head, tail) = value.split_at(value.len().min(TRACEPARENT_LEN));
    let Ok(text) = std::str::from_utf8(head) else {
        return false;
    };
    if !tail.is_empty() && tail.first() != Some(&b'-') {
        return false;
    }
    let extra = (!tail.is_empty()).then_some(());
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut fields = text.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2)
        // Version 00 has exactly four fields; later versions may append more after a dash.
        && (extra.is_none() || version != "00")
}

// ---------------------------------------------------------------------------------------------
// request_id

/// `request_id`: the bytes are an incoming correlation ID; the first 8 are also a clock and the
/// next 16 the randomness an ID is minted from.
///
/// Asserts: an ID is kept exactly when it is non-empty, not too long and visible ASCII (checked
/// independently), never when untrusted; a kept ID is UTF-8 and stays inside one valid JSON log
/// line, as does any route name; a minted ID is a valid UUID of the right version that the
/// next hop keeps.
pub fn request_id(data: &[u8]) {
    for max_length in [36, 128, 8192] {
        let expected = if data.is_empty() {
            Err(InvalidId::Empty)
        } else if data.len() > max_length {
            Err(InvalidId::TooLong)
        } else if !data.iter().all(|b| (b'!'..=b'~').contains(b)) {
            Err(InvalidId::NotVisibleAscii)
        } else {
            Ok(())
        };
        assert_eq!(check_id(data, max_length), expected);
        let trusted = CorrelationConfig {
            max_length,
            ..CorrelationConfig::default()
        };
        let untrusted = CorrelationConfig {
            trust_incoming: false,
            ..trusted.clone()
        };
        let verdict = judge_incoming_id(&trusted, Some(data));
        match expected {
            Ok(()) => {
                assert_eq!(verdict, IdVerdict::Keep);
                assert_eq!(
                    judge_incoming_id(&untrusted, Some(data)),
                    IdVerdict::Replace(InvalidId::Untrusted)
                );
                let id = std::str::from_utf8(data).expect("a kept ID is UTF-8");
                one_json_line(Some(id), "route");
            }
            Err(reason) => assert_eq!(verdict, IdVerdict::Replace(reason)),
        }
    }
    one_json_line(None, &String::from_utf8_lossy(data));

    let mut rest = data;
    let clock = u64::from_le_bytes(take(&mut rest)) & ((1 << 48) - 1);
    let random: [u8; 16] = take(&mut rest);
    for (format, version) in [(IdFormat::UuidV7, 7), (IdFormat::UuidV4, 4)] {
        let id = mint_id(format, clock, random);
        assert_eq!(check_id(id.as_str().as_bytes(), 36), Ok(()), "{id:?}");
        let parsed = uuid::Uuid::parse_str(id.as_str()).expect("a minted ID is a UUID");
        assert_eq!(parsed.get_version_num(), version);
    }
}

fn one_json_line(correlation_id: Option<&str>, route: &str) {
    let line = RequestLog {
        correlation_id,
        route,
        policy: "p",
        ..RequestLog::default()
    }
    .to_json();
    assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(parsed["route"].as_str(), Some(route));
    assert_eq!(parsed["correlation_id"].as_str(), correlation_id);
}

// ---------------------------------------------------------------------------------------------
// shared_values

/// `shared_values`: byte 0 picks the value kind (breaker, bucket, in-flight count); the next
/// bytes, as long as that kind's layout, are the value as found in shared data; every 3 bytes
/// after that are one operation on it (a kind byte and a signed clock step).
///
/// Asserts: decoding any bytes never panics; what decodes re-encodes to exactly the same bytes
/// and decodes back to the same value; whatever state was stored, operations on it never panic,
/// the breaker only moves along its legal edges and never asks a client to wait longer than the
/// longest open time, a bucket never holds more than its burst, a bulkhead never admits past
/// its limit.
pub fn shared_values(data: &[u8]) {
    // Any bytes at all, as each kind.
    round_trip::<BreakerState>(data);
    round_trip::<Bucket>(data);
    round_trip::<InFlight>(data);

    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => breaker_ops(rest),
        1 => bucket_ops(rest, kind / 3),
        _ => in_flight_ops(rest),
    }
}

fn round_trip<V: SharedValue + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<V> {
    let value = V::decode(bytes)?;
    let encoded = value.encode();
    assert_eq!(encoded, bytes, "decoding is canonical: {value:?}");
    assert_eq!(V::decode(&encoded).as_ref(), Some(&value));
    Some(value)
}

/// Splits `data` into a stored value of `len` bytes and the operations after it.
fn stored<V: SharedValue + PartialEq + std::fmt::Debug>(data: &[u8], len: usize) -> (V, &[u8]) {
    let (value, ops) = data.split_at(data.len().min(len));
    (round_trip(value).unwrap_or_default(), ops)
}

const T0_MS: u64 = 1_732_000_000_000;

fn clock_step(now: u64, step: [u8; 2], scale: i64) -> u64 {
    let step = i64::from(i16::from_le_bytes(step)) * scale;
    now.saturating_add_signed(step)
}

fn breaker_ops(data: &[u8]) {
    use fusebox::policy::breaker::codec::ENCODED_LEN;
    let (mut state, ops) = stored::<BreakerState>(data, ENCODED_LEN);
    let config = fusebox_policy_schema::BreakerConfig {
        scope: fusebox_policy_schema::BreakerScope::Route,
        consecutive_failures: Some(3),
        failure_rate: Some(0.5),
        minimum_requests: 4,
        window: Duration::from_secs(1),
        slow_call: Some((Duration::from_millis(100), 0.5)),
        open_for: Duration::from_millis(500),
        max_open_for: Duration::from_secs(4),
        half_open_requests: 2,
        failure_statuses: vec![500, 503],
        fallback: fusebox_policy_schema::Fallback {
            status: 503,
            body: String::new(),
            headers: Vec::new(),
        },
    };
    let mut now = T0_MS;
    for op in ops.chunks(3) {
        let mut op = op;
        let [kind] = take::<1>(&mut op);
        now = clock_step(now, take(&mut op), 10);
        let before = state.phase;
        let transition = if kind % 4 == 0 {
            let (admission, transition) = state.admit(&config, now);
            match admission {
                Admission::Allowed => assert_eq!(state.phase, Phase::Closed),
                Admission::Probe => assert_eq!(state.phase, Phase::HalfOpen),
                Admission::Rejected { retry_after_ms } => {
                    assert!(state.phase != Phase::Closed);
                    assert!(retry_after_ms >= 1);
                    assert!(retry_after_ms <= state.max_open_duration_ms(&config).max(1_000));
                }
            }
            transition
        } else {
            let outcome = match kind % 3 {
                0 => Outcome::Success,
                1 => Outcome::Failure,
                _ => Outcome::Abandoned,
            };
            state.record(
                &config,
                now,
                Call {
                    outcome,
                    slow: kind & 0x10 != 0,
                    probe: kind & 0x20 != 0,
                },
            )
        };
        let after = state.phase;
        let legal = match transition {
            None => before == after,
            Some(Transition::Opened(_)) => {
                after == Phase::Open && matches!(before, Phase::Closed | Phase::HalfOpen)
            }
            Some(Transition::HalfOpened) => before == Phase::Open && after == Phase::HalfOpen,
            Some(Transition::Closed) => before == Phase::HalfOpen && after == Phase::Closed,
        };
        assert!(legal, "{before:?} -> {after:?} reported as {transition:?}");
        assert_eq!(BreakerState::decode(&state.encode()), Some(state.clone()));
    }
}

fn shed_config(burst: u32, rate: f64, priority_header: bool) -> ShedConfig {
    ShedConfig {
        rate,
        burst,
        key_header: None,
        max_keys: 64,
        priority_header: priority_header.then(|| "x-priority".to_owned()),
        default_priority: Priority::Normal,
        reserve_critical: 0.2,
        reserve_normal: 0.5,
        status: 429,
        rate_limit_headers: false,
        max_in_flight: None,
        trust_priority_from: None,
    }
}

fn bucket_ops(data: &[u8], config: u8) {
    let (mut bucket, ops) = stored::<Bucket>(data, 25);
    // One configuration per bucket: its shared-data key holds the configuration's fingerprint.
    let config = match config % 3 {
        0 => shed_config(1, 0.001, false),
        1 => shed_config(10, 5.0, true),
        _ => shed_config(u32::MAX, 1e9, true),
    };
    let limits = Limits::new(&config);
    let mut now_us = T0_MS * 1_000;
    for op in ops.chunks(3) {
        let mut op = op;
        let [kind] = take::<1>(&mut op);
        now_us = clock_step(now_us, take(&mut op), 10_000);
        let priority = match (kind >> 2) % 3 {
            0 => Priority::Critical,
            1 => Priority::Normal,
            _ => Priority::Sheddable,
        };
        let before = {
            let mut probe = bucket;
            probe.refill(&limits, now_us);
            probe.tokens_micro
        };
        let stored = bucket;
        let take = if kind & 0x40 != 0 {
            match take_from_slot(&mut bucket, u64::from(kind) + 1, &limits, priority, now_us) {
                SlotTake::Taken(take) => Some(take),
                SlotTake::Occupied => None,
            }
        } else {
            Some(bucket.take(&limits, priority, now_us))
        };
        match take {
            // Whatever was stored, a bucket that was used holds at most its burst.
            Some(_) => assert!(bucket.tokens_micro <= limits.burst_micro, "{bucket:?}"),
            None => assert_eq!(bucket, stored, "an occupied slot is left alone"),
        }
        if let (Some(Take::Admitted { remaining }), false) = (take, kind & 0x40 != 0) {
            assert!(before >= limits.floor_micro(priority) + MICRO);
            assert_eq!(bucket.tokens_micro, before - MICRO);
            assert_eq!(remaining, bucket.tokens_micro / MICRO);
        }
        assert_eq!(Bucket::decode(&bucket.encode()), Some(bucket));
    }
}

fn in_flight_ops(data: &[u8]) {
    let (mut in_flight, ops) = stored::<InFlight>(data, 5);
    for &op in ops {
        let max = u32::from(op >> 1);
        let before = in_flight.count;
        if op & 1 == 0 {
            let acquired = in_flight.acquire(max);
            assert_eq!(acquired, before < max);
            assert!(!acquired || in_flight.count <= max);
        } else {
            in_flight.release();
            assert_eq!(in_flight.count, before.saturating_sub(1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// route_metadata

/// `route_metadata`: byte 0 picks which sources are present (bit 0: route metadata, bit 1: a
/// route name, bit 2: a `default_policy`); the rest, split at the first `0xff` byte (which no
/// UTF-8 text holds), is the metadata value as Envoy hands it over (raw bytes for a string,
/// 8 bytes for a number, the pairs encoding for a map) and the route name.
///
/// Asserts: the metadata selects a policy exactly when its bytes are that policy's name; any
/// other metadata value is flagged and never selects; the route map and the default policy
/// then decide, in that order.
pub fn route_metadata(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (metadata, route) = match rest.iter().position(|b| *b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let metadata = (flags & 1 != 0).then_some(metadata);
    let route = String::from_utf8_lossy(route);
    let route = (flags & 2 != 0).then_some(route.as_ref());
    let document = format!(
        r#"{{"policies": {{"payments": {{}}, "search": {{}}, "a": {{}}, "route_1": {{}}}},
            "routes": {{"checkout": "payments", "": "search", "search": "search", "a b": "a"}}{}}}"#,
        if flags & 4 != 0 {
            r#", "default_policy": "route_1""#
        } else {
            ""
        }
    );
    // An empty route name is refused by validation; keep the document valid without it.
    let document = document.replace(r#""": "search", "#, "");
    let config = parse(document.as_bytes()).expect("the target's own configuration is valid");

    let selection = select_policy(&config, metadata, route);
    let named = metadata
        .and_then(|m| std::str::from_utf8(m).ok())
        .and_then(|name| config.policy_named(name));
    match named {
        Some(policy) => {
            assert_eq!(selection.policy, Some(policy));
            assert_eq!(selection.source, PolicySource::RouteMetadata);
            assert!(!selection.metadata_policy_unknown);
            let name = config.policy(policy).map(|p| p.name.as_bytes());
            assert_eq!(name, metadata, "selected by exactly its name");
        }
        None => {
            assert_eq!(selection.metadata_policy_unknown, metadata.is_some());
            let mapped = route.and_then(|r| config.route_policy(r));
            let (policy, source) = match (mapped, config.default_policy()) {
                (Some(p), _) => (Some(p), PolicySource::RouteMap),
                (None, Some(p)) => (Some(p), PolicySource::Default),
                (None, None) => (None, PolicySource::None),
            };
            assert_eq!((selection.policy, selection.source), (policy, source));
        }
    }
}

//! Per-request costs of the policy core, measured natively. Every one of these runs on every
//! request in Envoy, so each should stay far below the ~1.8 µs an empty wasm filter costs
//! (the target is under 100 ns each). The request log line, a few hundred bytes of JSON
//! rather than a decision, is measured beside them.

#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fusebox::policy::breaker::{BreakerState, Call, Outcome};
use fusebox::policy::budget::{parse_grpc_timeout, parse_millis, plan, CallerDeadline};
use fusebox::policy::correlation::{judge_incoming_id, mint_id};
use fusebox::policy::request_log::{RequestLog, UnixTime};
use fusebox::policy::selection::select_policy;
use fusebox::policy::shared::SharedValue;
use fusebox::policy::shed::{Bucket, Limits};
use fusebox::policy::traceparent::{is_valid_traceparent, mint_traceparent};
use fusebox_policy_schema::{CorrelationConfig, IdFormat, Priority};

const NOW_MS: u64 = 1_732_000_000_000;

fn correlation(c: &mut Criterion) {
    let config = CorrelationConfig::default();
    c.bench_function("correlation/judge_valid_uuid", |b| {
        b.iter(|| {
            judge_incoming_id(
                &config,
                black_box(Some(b"01923456-789a-7abc-8def-0123456789ab")),
            )
        })
    });
    c.bench_function("correlation/mint_uuid_v7", |b| {
        b.iter(|| mint_id(IdFormat::UuidV7, black_box(NOW_MS), black_box([7; 16])))
    });
    c.bench_function("correlation/mint_uuid_v4", |b| {
        b.iter(|| mint_id(IdFormat::UuidV4, black_box(NOW_MS), black_box([7; 16])))
    });
    c.bench_function("traceparent/validate", |b| {
        b.iter(|| {
            is_valid_traceparent(black_box(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ))
        })
    });
    c.bench_function("traceparent/mint", |b| {
        b.iter(|| mint_traceparent(black_box([9; 24])))
    });
}

fn policy(document: &str) -> fusebox_policy_schema::Policy {
    let config =
        fusebox_policy_schema::parse(document.as_bytes()).expect("a valid benchmark config");
    config.policies().first().cloned().expect("one policy")
}

fn budget(c: &mut Criterion) {
    let policy = policy(
        r#"{"policies": {"p": {"budget": {"timeout": "800ms", "retries": {"max": 2, "per_try_timeout": "250ms"}}}}}"#,
    );
    let config = policy.budget.expect("a budget");
    c.bench_function("budget/parse_grpc_timeout", |b| {
        b.iter(|| parse_grpc_timeout(black_box(b"250m")))
    });
    c.bench_function("budget/parse_millis", |b| {
        b.iter(|| parse_millis(black_box(b"15000")))
    });
    c.bench_function("budget/plan_with_retries", |b| {
        b.iter(|| {
            plan(
                &config,
                black_box(CallerDeadline::Honored(Duration::from_millis(500))),
                black_box(Duration::from_micros(400)),
            )
        })
    });
}

fn breaker(c: &mut Criterion) {
    let policy = policy(
        r#"{"policies": {"p": {"breaker": {"consecutive_failures": 5, "failure_rate": 0.5}}}}"#,
    );
    let config = policy.breaker.expect("a breaker");
    let state = BreakerState::default();
    c.bench_function("breaker/admit_closed", |b| {
        b.iter(|| black_box(state.clone()).admit(&config, black_box(NOW_MS)))
    });
    let success = Call {
        outcome: Outcome::Success,
        slow: false,
        probe: false,
    };
    c.bench_function("breaker/record_success", |b| {
        let mut state = BreakerState::default();
        let mut now = NOW_MS;
        b.iter(|| {
            now += 1;
            state.record(&config, now, black_box(success))
        })
    });
    let encoded = state.encode();
    c.bench_function("shared/breaker_encode", |b| {
        b.iter(|| black_box(&state).encode())
    });
    c.bench_function("shared/breaker_decode", |b| {
        b.iter(|| BreakerState::decode(black_box(&encoded)))
    });
}

fn shed(c: &mut Criterion) {
    let policy = policy(
        r#"{"policies": {"p": {"shed": {"rate": 1000000, "burst": 1000, "priority_header": "x-priority"}}}}"#,
    );
    let config = policy.shed.expect("shedding");
    let limits = Limits::new(&config);
    c.bench_function("shed/take", |b| {
        let mut bucket = Bucket::default();
        let mut now_us = NOW_MS * 1_000;
        b.iter(|| {
            now_us += 1;
            bucket.take(&limits, black_box(Priority::Normal), now_us)
        })
    });
    let encoded = Bucket::default().encode();
    c.bench_function("shared/bucket_encode", |b| {
        b.iter(|| black_box(Bucket::default()).encode())
    });
    c.bench_function("shared/bucket_decode", |b| {
        b.iter(|| Bucket::decode(black_box(&encoded)))
    });
}

/// A configuration with `routes` routes, each mapped to one of 10 policies.
fn config_with_routes(routes: usize) -> fusebox_policy_schema::Config {
    let policies: Vec<String> = (0..10).map(|i| format!("\"p{i}\": {{}}")).collect();
    let map: Vec<String> = (0..routes)
        .map(|i| format!("\"route_{i}\": \"p{}\"", i % 10))
        .collect();
    let document = format!(
        "{{\"policies\": {{{}}}, \"routes\": {{{}}}, \"default_policy\": \"p0\"}}",
        policies.join(","),
        map.join(",")
    );
    fusebox_policy_schema::parse(document.as_bytes()).expect("a valid benchmark config")
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("selection/route_map");
    for routes in [1, 100, 10_000] {
        let config = config_with_routes(routes);
        let route = format!("route_{}", routes / 2);
        group.bench_with_input(BenchmarkId::from_parameter(routes), &route, |b, route| {
            b.iter(|| select_policy(&config, None, black_box(Some(route.as_str()))))
        });
    }
    group.finish();
}

/// The per-request log line: built on every request with `log.requests: all`.
fn request_log(c: &mut Criterion) {
    let line = RequestLog {
        start_time: UnixTime(NOW_MS * 1_000_000),
        correlation_id: Some("01a20619-5e19-716b-95a1-68b0e8687b8d"),
        correlation: Some("generated"),
        traceparent: Some("generated"),
        route: "checkout",
        policy: "checkout",
        policy_source: "route_metadata",
        mode: Some("enforce"),
        decision: "allow",
        remaining_ms: Some(4999.51),
        breaker: Some("admitted"),
        breaker_outcome: Some("success"),
        priority: Some("normal"),
        tokens_left: Some(999_935),
        status: Some(200),
        duration_ms: 2.009,
        ..RequestLog::default()
    };
    c.bench_function("request_log/to_json", |b| {
        b.iter(|| black_box(&line).to_json())
    });
}

criterion_group!(
    benches,
    correlation,
    budget,
    breaker,
    shed,
    selection,
    request_log
);
criterion_main!(benches);

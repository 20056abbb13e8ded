//! Timeout budgets in real Envoy at --concurrency 2 with a slow upstream: the router enforces
//! the budget, the caller can only shorten it, a spent budget never reaches the upstream, and
//! retries are only granted when they fit.

mod common;

use std::time::Duration;

use common::{start_with_routes, Setup};
use fusebox_harness::client::Request;
use fusebox_harness::envoy::{test_spec, Envoy};
use fusebox_harness::envoy_config::RouteSpec;
use fusebox_harness::upstream::Upstream;

const CONFIG: &str = r#"{
  "policies": {
    "budget": {"budget": {"timeout": "300ms"}},
    "retrying": {"budget": {"timeout": "1s", "retries": {"max": 3, "per_try_timeout": "200ms", "retry_on": "5xx"}}},
    "dry": {"mode": "dry_run", "budget": {"timeout": "300ms"}}
  },
  "routes": {"budget_route": "budget", "retry_route": "retrying", "dry_route": "dry"}
}"#;

fn start() -> Setup {
    // Envoy's own route timeout is 15 s: any faster 504 is the budget's doing.
    start_with_routes(
        CONFIG,
        vec![
            RouteSpec::new("budget_route", "/budget"),
            RouteSpec::new("retry_route", "/retry"),
            RouteSpec::new("dry_route", "/dry"),
        ],
    )
}

fn millis_header(value: Option<String>) -> u64 {
    value
        .and_then(|v| v.trim_end_matches('m').parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn a_request_over_budget_ends_in_504_at_the_budget_not_the_route_timeout() {
    let s = start();
    let response = s
        .envoy
        .send(&Request::get("/budget/delay/3000").header("x-request-id", "slow"))
        .unwrap();
    assert_eq!(response.status, 504);
    assert!(String::from_utf8_lossy(&response.body).contains("upstream request timeout"));
    assert!(
        response.elapsed >= Duration::from_millis(280)
            && response.elapsed < Duration::from_millis(1500),
        "504 after {:?}, expected about 300ms",
        response.elapsed
    );
    let upstream_saw = &s.upstream.received_with("x-request-id", "slow")[0];
    let expected = millis_header(upstream_saw.header("x-envoy-expected-rq-timeout-ms"));
    assert!(
        (250..=300).contains(&expected),
        "upstream told {expected}ms"
    );

    let log = s.envoy.wait_for_request_log("slow").unwrap();
    assert_eq!(log["code_details"], "response_timeout", "{log}");
    assert_eq!(log["response_flags"], "UT", "{log}");
    let remaining = log["remaining_ms"].as_f64().unwrap();
    assert!(remaining > 250.0 && remaining <= 300.0, "{log}");
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.budget.upstream_timeout", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.budget.budget_applied", 1),
        Some(1)
    );
}

#[test]
fn a_shorter_caller_grpc_timeout_wins_and_is_propagated() {
    let s = start();
    let request = Request::get("/budget/delay/3000")
        .header("x-request-id", "short")
        .header("grpc-timeout", "100m");
    let response = s.envoy.send(&request).unwrap();
    assert_eq!(response.status, 504);
    assert!(
        response.elapsed < Duration::from_millis(280),
        "took {:?}",
        response.elapsed
    );
    let upstream_saw = &s.upstream.received_with("x-request-id", "short")[0];
    let grpc = millis_header(upstream_saw.header("grpc-timeout"));
    assert!(
        (50..=100).contains(&grpc),
        "upstream got grpc-timeout {grpc}m"
    );
    assert!(millis_header(upstream_saw.header("x-envoy-expected-rq-timeout-ms")) <= 100);
    let log = s.envoy.wait_for_request_log("short").unwrap();
    assert_eq!(log["caller_deadline_ms"], 100.0);
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.budget.caller_deadline_honored", 1),
        Some(1)
    );
}

#[test]
fn a_longer_caller_deadline_does_not_extend_the_budget() {
    let s = start();
    let request = Request::get("/budget/delay/3000")
        .header("x-request-id", "long")
        .header("grpc-timeout", "10S");
    let response = s.envoy.send(&request).unwrap();
    assert_eq!(response.status, 504);
    assert!(
        response.elapsed < Duration::from_millis(1500),
        "took {:?}",
        response.elapsed
    );
    let upstream_saw = &s.upstream.received_with("x-request-id", "long")[0];
    assert!(
        millis_header(upstream_saw.header("grpc-timeout")) <= 300,
        "the caller's 10S must not pass through"
    );
    assert!(millis_header(upstream_saw.header("x-envoy-expected-rq-timeout-ms")) <= 300);
}

#[test]
fn a_nearly_spent_deadline_is_refused_without_calling_the_upstream() {
    let s = start();
    let request = Request::get("/budget/x")
        .header("x-request-id", "spent")
        .header("grpc-timeout", "3m");
    let response = s.envoy.send(&request).unwrap();
    assert_eq!(response.status, 504);
    assert_eq!(
        response.header("x-fusebox-decision").as_deref(),
        Some("deadline_exceeded")
    );
    assert_eq!(
        response.header_all("x-request-id"),
        ["spent"],
        "the reply carries the correlation ID once"
    );
    assert_eq!(s.upstream.hits(), 0, "the upstream is never called");
    let log = s.envoy.wait_for_request_log("spent").unwrap();
    assert_eq!(log["decision"], "deadline_exceeded");
    assert_eq!(log["status"], 504);
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.budget.deadline_exceeded", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy.stat("wasmcustom.fusebox.budget.budget_applied"),
        Some(0)
    );
}

#[test]
fn malformed_caller_deadlines_fall_back_to_the_route_budget() {
    let s = start();
    for (id, value, defect) in [
        ("bad", "abc", "malformed"),
        ("huge", "99999999H", "overflow"),
        ("neg", "-5m", "malformed"),
    ] {
        let response = s
            .envoy
            .send(
                &Request::get("/budget/fast")
                    .header("x-request-id", id)
                    .header("grpc-timeout", value),
            )
            .unwrap();
        assert_eq!(response.status, 200, "{value}");
        let upstream_saw = &s.upstream.received_with("x-request-id", id)[0];
        let expected = millis_header(upstream_saw.header("x-envoy-expected-rq-timeout-ms"));
        assert!(
            (250..=300).contains(&expected),
            "{value}: upstream told {expected}ms"
        );
        let grpc = millis_header(upstream_saw.header("grpc-timeout"));
        assert!(
            (250..=300).contains(&grpc),
            "{value}: grpc-timeout rewritten to the budget, got {grpc}"
        );
        let log = s.envoy.wait_for_request_log(id).unwrap();
        assert_eq!(log["caller_deadline_ignored"], defect, "{value}: {log}");
    }
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.budget.caller_deadline_ignored", 3),
        Some(3)
    );
}

#[test]
fn retries_happen_only_when_they_fit_in_the_budget() {
    let s = start();
    // 1 s budget, 200 ms per try: 5 attempts would fit, the policy allows 3 retries.
    let response = s
        .envoy
        .send(&Request::get("/retry/status/503").header("x-request-id", "fits"))
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(
        s.upstream.received_with("x-request-id", "fits").len(),
        4,
        "1 try + 3 retries"
    );
    assert_eq!(s.envoy.wait_for_request_log("fits").unwrap()["retries"], 3);

    // 300 ms left: one 200 ms attempt fits, no retry does.
    let request = Request::get("/retry/status/503")
        .header("x-request-id", "tight")
        .header("grpc-timeout", "300m");
    assert_eq!(s.envoy.send(&request).unwrap().status, 503);
    assert_eq!(
        s.upstream.received_with("x-request-id", "tight").len(),
        1,
        "no retry fits"
    );
    assert_eq!(s.envoy.wait_for_request_log("tight").unwrap()["retries"], 0);
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.retrying.retries_limited", 1),
        Some(1)
    );
}

#[test]
fn dry_run_counts_and_logs_the_refusal_but_lets_the_request_through_unchanged() {
    let s = start();
    let request = Request::get("/dry/x")
        .header("x-request-id", "dry-spent")
        .header("grpc-timeout", "1m");
    let response = s.envoy.send(&request).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-fusebox-decision"), None);
    let upstream_saw = &s.upstream.received_with("x-request-id", "dry-spent")[0];
    assert_eq!(
        upstream_saw.header("grpc-timeout").as_deref(),
        Some("1m"),
        "headers are left unchanged"
    );
    let log = s.envoy.wait_for_request_log("dry-spent").unwrap();
    assert_eq!(log["decision"], "would_deadline_exceeded");
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.dry.would_deadline_exceeded", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy.stat("wasmcustom.fusebox.dry.deadline_exceeded"),
        Some(0)
    );

    // Nor is the budget applied: the route's own 15 s timeout governs.
    let response = s
        .envoy
        .send(&Request::get("/dry/delay/500").header("x-request-id", "dry-slow"))
        .unwrap();
    assert_eq!(response.status, 200);
    let upstream_saw = &s.upstream.received_with("x-request-id", "dry-slow")[0];
    assert_eq!(
        upstream_saw
            .header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("15000")
    );
}

#[test]
fn a_previous_envoy_hops_deadline_is_honored_but_an_edge_client_cannot_send_one() {
    // From an external client, Envoy strips x-envoy-* before any filter runs.
    let s = start();
    let request = Request::get("/budget/x")
        .header("x-request-id", "edge")
        .header("x-envoy-expected-rq-timeout-ms", "100");
    assert_eq!(s.envoy.send(&request).unwrap().status, 200);
    let log = s.envoy.wait_for_request_log("edge").unwrap();
    assert!(log.get("caller_deadline_ms").is_none(), "{log}");

    // From an internal hop (here: loopback declared internal), the header is the caller's deadline.
    let upstream = Upstream::start().unwrap();
    let mut spec = test_spec(
        upstream.addr(),
        CONFIG,
        vec![RouteSpec::new("budget_route", "/budget")],
    )
    .unwrap();
    spec.loopback_is_internal = true;
    let envoy = Envoy::start(&spec).unwrap_or_else(|e| panic!("{e}"));
    let request = Request::get("/budget/delay/3000")
        .header("x-request-id", "hop")
        .header("x-envoy-expected-rq-timeout-ms", "100");
    let response = envoy.send(&request).unwrap();
    assert_eq!(response.status, 504);
    assert!(
        response.elapsed < Duration::from_millis(280),
        "took {:?}",
        response.elapsed
    );
    assert_eq!(
        envoy.wait_for_request_log("hop").unwrap()["caller_deadline_ms"],
        100.0
    );
}

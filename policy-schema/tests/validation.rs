//! The configuration contract as operators meet it: what is accepted, and what every refusal says.

#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

use fusebox_policy_schema::{parse, ConfigErrors, IdFormat, Mode, RequestLogging, NO_POLICY};

fn errors(document: &str) -> ConfigErrors {
    match parse(document.as_bytes()) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors,
    }
}

fn messages(errors: &ConfigErrors) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn empty_document_means_defaults() {
    let config = parse(b"").unwrap();
    assert_eq!(config.correlation.header, "x-request-id");
    assert_eq!(config.correlation.generate, IdFormat::UuidV7);
    assert!(config.correlation.trust_incoming);
    assert_eq!(config.correlation.max_length, 128);
    assert!(config.correlation.echo_in_response);
    assert!(config.correlation.traceparent);
    assert!(config.policies().is_empty());
    assert_eq!(parse(b"{}").unwrap(), config);
}

#[test]
fn full_document_is_accepted() {
    let config = parse(
        br#"{
          "correlation": {"header": "X-Correlation-ID", "generate": "uuid_v4", "trust_incoming": false,
                          "max_length": 64, "echo_in_response": false, "traceparent": false},
          "policies": {"payments": {"mode": "dry_run", "budget": {"timeout": "2s"}, "breaker": {"consecutive_failures": 5}, "shed": {"rate": 10, "burst": 20}},
                       "search": {}},
          "routes": {"payments_route": "payments", "api/v1.search": "search"},
          "default_policy": "search"
        }"#,
    )
    .unwrap();
    assert_eq!(config.correlation.header, "x-correlation-id");
    assert_eq!(config.correlation.generate, IdFormat::UuidV4);
    assert!(!config.correlation.trust_incoming);
    assert_eq!(config.correlation.max_length, 64);
    let payments = config.policy_named("payments").unwrap();
    let search = config.policy_named("search").unwrap();
    assert_eq!(config.policy(payments).unwrap().mode, Mode::DryRun);
    assert!(config.policy(payments).unwrap().budget.is_some());
    assert_eq!(config.policy(search).unwrap().mode, Mode::Enforce);
    assert!(config.policy(search).unwrap().breaker.is_none());
    assert_eq!(config.route_policy("payments_route"), Some(payments));
    assert_eq!(config.route_policy("api/v1.search"), Some(search));
    assert_eq!(config.route_policy("other"), None);
    assert_eq!(config.default_policy(), Some(search));
}

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let errors = errors(
        r#"{
          "correlation": {"header": "x id", "generate": "uuid_v9", "max_length": 10, "trust_incomming": true},
          "policies": {"payments": {"mode": "dryrun", "budgett": {}},
                       "bad.name": {},
                       "orders": 7},
          "routes": {"r1": "paymnts", "r2": "nowhere", "r3": 5},
          "default_policy": "missing",
          "polices": {}
        }"#,
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "correlation.header",
        "correlation.generate",
        "correlation.max_length",
        "correlation.trust_incomming",
        "policies.payments.mode",
        "policies.payments.budgett",
        r#"policies["bad.name"]"#,
        "policies.orders",
        "routes.r1",
        "routes.r2",
        "routes.r3",
        "default_policy",
        "polices",
    ] {
        assert!(
            paths.contains(&expected),
            "missing {expected} in {:#?}",
            messages(&errors)
        );
    }
    assert_eq!(errors.iter().count(), 13, "{:#?}", messages(&errors));
    let text = errors.to_string();
    assert!(
        text.contains("correlation.trust_incomming: unknown field; did you mean `trust_incoming`?"),
        "{text}"
    );
    assert!(
        text.contains("routes.r1: unknown policy `paymnts`; did you mean `payments`?"),
        "{text}"
    );
    assert!(
        text.contains("polices: unknown field; did you mean `policies`?"),
        "{text}"
    );
    assert!(
        text.contains("policies.payments.mode: unknown variant `dryrun`"),
        "{text}"
    );
}

#[test]
fn a_policy_that_fails_validation_can_still_be_referenced_without_extra_noise() {
    let errors =
        errors(r#"{"policies": {"p": {"mode": 1}}, "routes": {"r": "p"}, "default_policy": "p"}"#);
    assert_eq!(messages(&errors).len(), 1, "{:#?}", messages(&errors));
    assert!(errors.has_path("policies.p.mode"));
}

#[test]
fn reserved_and_malformed_policy_names_are_refused() {
    let errors = errors(&format!(
        r#"{{"policies": {{"{NO_POLICY}": {{}}, "": {{}}, "{}": {{}}}}}}"#,
        "x".repeat(65)
    ));
    assert!(errors.has_path("policies.none"));
    assert!(errors.has_path(r#"policies[""]"#));
    assert!(errors.has_path(&format!("policies.{}", "x".repeat(65))));
}

#[test]
fn wrong_types_are_refused_not_coerced() {
    let errors = errors(
        r#"{"correlation": {"trust_incoming": "yes", "max_length": -1, "echo_in_response": 1},
            "policies": [], "routes": {"": "p"}}"#,
    );
    for path in [
        "correlation.trust_incoming",
        "correlation.max_length",
        "correlation.echo_in_response",
        "policies",
    ] {
        assert!(errors.has_path(path), "{path}: {errors}");
    }
}

#[test]
fn shedding_defaults_and_limits() {
    use fusebox_policy_schema::Priority;
    let config = parse(br#"{"policies": {"p": {"shed": {"rate": 50, "burst": 100}}}}"#).unwrap();
    let shed = config.policies()[0].shed.clone().unwrap();
    assert_eq!(
        (shed.rate, shed.burst, shed.max_keys, shed.status),
        (50.0, 100, 64, 429)
    );
    assert_eq!((shed.reserve_critical, shed.reserve_normal), (0.2, 0.5));
    assert_eq!(shed.default_priority, Priority::Normal);
    assert!(
        shed.key_header.is_none() && shed.priority_header.is_none() && shed.max_in_flight.is_none()
    );

    let keyed = parse(
        br#"{"policies": {"p": {"shed": {"rate": 0.5, "burst": 1, "key": "header:X-Tenant", "max_keys": 8,
            "priority_header": "X-Priority", "default_priority": "sheddable", "reserve": {"critical": 0, "normal": 0.9},
            "status": 503, "rate_limit_headers": true, "max_in_flight": 4}}}}"#,
    )
    .unwrap();
    let shed = keyed.policies()[0].shed.clone().unwrap();
    assert_eq!(shed.key_header.as_deref(), Some("x-tenant"));
    assert_eq!(shed.priority_header.as_deref(), Some("x-priority"));
    assert_eq!(shed.max_in_flight, Some(4));

    let errors = errors(
        r#"{"policies": {
            "a": {"shed": {}},
            "b": {"shed": {"rate": 0, "burst": 0, "key": "cookie:x", "max_keys": 5000, "status": 200,
                           "reserve": {"critical": 0.6, "normal": 0.5, "sheddable": 1}, "max_in_flight": 0,
                           "default_priority": "urgent"}}
        }}"#,
    );
    for path in [
        "policies.a.shed.rate",
        "policies.a.shed.burst",
        "policies.b.shed.rate",
        "policies.b.shed.burst",
        "policies.b.shed.key",
        "policies.b.shed.max_keys",
        "policies.b.shed.status",
        "policies.b.shed.reserve.normal",
        "policies.b.shed.reserve.sheddable",
        "policies.b.shed.max_in_flight",
        "policies.b.shed.default_priority",
    ] {
        assert!(errors.has_path(path), "missing {path}:\n{errors}");
    }
}

#[test]
fn not_json_or_not_an_object_is_one_error_at_the_root() {
    for document in ["{", "[]", "\"x\"", "{\"policies\": {}} trailing"] {
        let errors = errors(document);
        assert_eq!(errors.iter().count(), 1);
        assert!(errors.has_path("$"), "{errors}");
    }
}

#[test]
fn null_is_the_same_as_absent() {
    let config = parse(br#"{"correlation": {"header": null}, "default_policy": null}"#).unwrap();
    assert_eq!(config.correlation.header, "x-request-id");
    assert_eq!(config.default_policy(), None);
}

fn budget_of(document: &str) -> fusebox_policy_schema::BudgetConfig {
    let config = parse(document.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let id = config.policy_named("p").unwrap();
    config.policy(id).unwrap().budget.clone().unwrap()
}

#[test]
fn a_budget_needs_only_a_timeout_and_defaults_the_rest() {
    use fusebox_policy_schema::DeadlineFormat;
    use std::time::Duration;
    let budget = budget_of(r#"{"policies": {"p": {"budget": {"timeout": "2s"}}}}"#);
    assert_eq!(budget.timeout, Duration::from_secs(2));
    assert_eq!(budget.min_remaining, Duration::from_millis(5));
    let headers: Vec<(&str, DeadlineFormat)> = budget
        .caller_deadline_headers
        .iter()
        .map(|h| (h.name.as_str(), h.format))
        .collect();
    assert_eq!(
        headers,
        [
            ("grpc-timeout", DeadlineFormat::GrpcTimeout),
            (
                "x-envoy-expected-rq-timeout-ms",
                DeadlineFormat::Milliseconds
            )
        ]
    );
    assert!(budget.retries.is_none());

    let ignore_caller = budget_of(
        r#"{"policies": {"p": {"budget": {"timeout": "2s", "caller_deadline": false}}}}"#,
    );
    assert!(ignore_caller.caller_deadline_headers.is_empty());
}

#[test]
fn retries_are_validated_against_the_budget_and_envoys_conditions() {
    let budget = budget_of(
        r#"{"policies": {"p": {"budget": {"timeout": "1s", "caller_deadline_headers": ["X-Deadline-Ms"],
            "retries": {"max": 3, "per_try_timeout": "200ms", "retry_on": "5xx, reset"}}}}}"#,
    );
    let retries = budget.retries.unwrap();
    assert_eq!((retries.max, retries.retry_on.as_str()), (3, "5xx,reset"));
    assert_eq!(budget.caller_deadline_headers[0].name, "x-deadline-ms");
    assert_eq!(
        budget_of(r#"{"policies": {"p": {"budget": {"timeout": "1s", "retries": {"max": 1, "per_try_timeout": "1ms"}}}}}"#)
            .retries
            .unwrap()
            .retry_on,
        "connect-failure,refused-stream,reset-before-request"
    );

    let grpc = budget_of(
        r#"{"policies": {"p": {"budget": {"timeout": "1s",
            "retries": {"max": 2, "per_try_timeout": "100ms", "retry_on": "unavailable,5xx,cancelled"}}}}}"#,
    )
    .retries
    .unwrap();
    assert_eq!(
        (grpc.retry_on.as_str(), grpc.retry_grpc_on.as_str()),
        ("5xx", "unavailable,cancelled")
    );

    let errors = errors(
        r#"{"policies": {
            "a": {"budget": {"min_remaining": "10ms"}},
            "b": {"budget": {"timeout": "100ms", "min_remaining": "100ms", "caller_deadline_headers": ["bad header"]}},
            "c": {"budget": {"timeout": "1s", "retries": {"max": 11, "per_try_timeout": "1s", "retry_on": "5xx,sometimes"}}},
            "d": {"budget": {"timeout": "0s", "retries": {}}},
            "e": {"budget": {"timeout": 5}}
        }}"#,
    );
    for path in [
        "policies.a.budget.timeout",
        "policies.b.budget.min_remaining",
        "policies.b.budget.caller_deadline_headers[0]",
        "policies.c.budget.retries.max",
        "policies.c.budget.retries.per_try_timeout",
        "policies.c.budget.retries.retry_on",
        "policies.d.budget.timeout",
        "policies.d.budget.retries.max",
        "policies.d.budget.retries.per_try_timeout",
        "policies.e.budget.timeout",
    ] {
        assert!(errors.has_path(path), "missing {path}:\n{errors}");
    }
    assert_eq!(errors.iter().count(), 10, "{errors}");
    assert!(
        errors
            .to_string()
            .contains("`sometimes` is not an Envoy retry condition"),
        "{errors}"
    );
}

fn breaker_of(document: &str) -> fusebox_policy_schema::BreakerConfig {
    let config = parse(document.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let id = config.policy_named("p").unwrap();
    config.policy(id).unwrap().breaker.clone().unwrap()
}

#[test]
fn a_breaker_needs_a_trip_condition_and_defaults_the_rest() {
    use fusebox_policy_schema::BreakerScope;
    use std::time::Duration;
    let breaker = breaker_of(r#"{"policies": {"p": {"breaker": {"consecutive_failures": 5}}}}"#);
    assert_eq!(breaker.scope, BreakerScope::Route);
    assert_eq!(breaker.consecutive_failures, Some(5));
    assert_eq!(breaker.open_for, Duration::from_secs(5));
    assert_eq!(
        breaker.max_open_for, breaker.open_for,
        "no backoff unless asked for"
    );
    assert_eq!(breaker.half_open_requests, 1);
    assert_eq!(breaker.failure_statuses, [500, 502, 503, 504]);
    assert_eq!(breaker.fallback.status, 503);

    let full = breaker_of(
        r#"{"policies": {"p": {"breaker": {"scope": "cluster", "failure_rate": 0.5, "minimum_requests": 4,
            "window": "2s", "slow_call": "300ms", "slow_call_rate": 1, "open_for": "1s", "max_open_for": "8s",
            "half_open_requests": 2, "failure_statuses": [500, 429],
            "fallback": {"status": 200, "body": "{}", "headers": {"Content-Type": "application/json"}}}}}}"#,
    );
    assert_eq!(full.scope, BreakerScope::Cluster);
    assert_eq!(full.slow_call, Some((Duration::from_millis(300), 1.0)));
    assert_eq!(
        full.fallback.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );

    let errors = errors(
        r#"{"policies": {
            "a": {"breaker": {}},
            "b": {"breaker": {"failure_rate": 0, "slow_call": "1s", "consecutive_failures": 0}},
            "c": {"breaker": {"failure_rate": 1.5, "open_for": "2s", "max_open_for": "1s", "half_open_requests": 0,
                              "failure_statuses": [42], "window": "1ms", "scope": "tenant"}},
            "d": {"breaker": {"consecutive_failures": 1, "fallback": {"status": 99, "headers": {"retry-after": "5", "x-ok": "a\nb"}}}}
        }}"#,
    );
    for path in [
        "policies.a.breaker",
        "policies.b.breaker.failure_rate",
        "policies.b.breaker.slow_call_rate",
        "policies.b.breaker.consecutive_failures",
        "policies.c.breaker.failure_rate",
        "policies.c.breaker.max_open_for",
        "policies.c.breaker.half_open_requests",
        "policies.c.breaker.failure_statuses[0]",
        "policies.c.breaker.window",
        "policies.c.breaker.scope",
        "policies.d.breaker.fallback.status",
        "policies.d.breaker.fallback.headers.retry-after",
        "policies.d.breaker.fallback.headers.x-ok",
    ] {
        assert!(errors.has_path(path), "missing {path}:\n{errors}");
    }
}

#[test]
fn request_logging_defaults_to_every_request_and_refuses_unknown_settings() {
    assert_eq!(parse(b"{}").unwrap().log, RequestLogging::All);
    let quiet = parse(br#"{"log": {"requests": "decisions"}}"#).unwrap();
    assert_eq!(quiet.log, RequestLogging::Decisions);
    let bad = errors(r#"{"log": {"requests": "sometimes", "sample": 0.1}}"#);
    let paths: Vec<&str> = bad.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"log.requests"), "{bad}");
    assert!(paths.contains(&"log.sample"), "{bad}");
}

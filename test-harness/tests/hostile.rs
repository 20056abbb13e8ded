//! Hostile requests against real Envoy at --concurrency 2: forged, malformed, oversized and
//! privilege-claiming headers. For each, the safe behaviour SECURITY.md documents, and after
//! each the same four checks: Envoy still serves, the plugin's VM was never replaced (no
//! panic, its counters still count), every Fusebox log line is still one valid JSON object
//! (nothing a client sent could start a line of its own), and the stats say what happened.

mod common;

use std::time::Duration;

use common::{start_with_routes, Setup};
use fusebox_harness::client::Request;
use fusebox_harness::envoy_config::RouteSpec;

/// `edge` is what faces clients: a budget that reads two caller deadline headers, shedding
/// that trusts priority claims only from 10.0.0.0/8 (the tests connect from 127.0.0.1).
/// `inside` trusts loopback, to show the same claim honoured where it is trusted.
const CONFIG: &str = r#"{
  "policies": {
    "edge": {
      "budget": {"timeout": "300ms", "caller_deadline_headers": ["grpc-timeout", "x-deadline-ms"]},
      "shed": {"rate": 100, "burst": 100, "priority_header": "x-priority",
               "trust_priority_from": ["10.0.0.0/8"]}
    },
    "inside": {
      "shed": {"rate": 100, "burst": 100, "priority_header": "x-priority",
               "trust_priority_from": ["127.0.0.0/8"]}
    }
  },
  "routes": {"edge_route": "edge", "inside_route": "inside"},
  "default_policy": "edge"
}"#;

const DECISION: &str = "x-fusebox-decision";

/// Envoy's count of wasm VMs it ever created: a VM that panicked and was replaced
/// (`failure_policy: FAIL_RELOAD`) makes it grow.
const VMS_CREATED: &str = "wasm.envoy.wasm.runtime.v8.created";

struct Hostile {
    s: Setup,
    vms_created: u64,
}

impl std::ops::Deref for Hostile {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.s
    }
}

fn start() -> Hostile {
    let s = start_with_routes(
        CONFIG,
        vec![
            RouteSpec::new("edge_route", "/edge"),
            RouteSpec::new("inside_route", "/inside"),
        ],
    );
    let vms_created = s
        .envoy
        .stat(VMS_CREATED)
        .expect("Envoy counts its wasm VMs");
    Hostile { s, vms_created }
}

fn stat(s: &Hostile, policy: &str, name: &str) -> u64 {
    s.envoy
        .stat(&format!("wasmcustom.fusebox.{policy}.{name}"))
        .unwrap_or(0)
}

fn wait_stat(s: &Hostile, policy: &str, name: &str, at_least: u64) -> u64 {
    s.envoy
        .wait_for_stat(&format!("wasmcustom.fusebox.{policy}.{name}"), at_least)
        .unwrap_or(0)
}

/// What every test ends with, whatever it sent: Envoy answers an ordinary request through
/// the plugin, the plugin's VM is the one that started (no panic, no reload), and the log
/// holds no line a client could have written.
fn assert_unharmed(s: &Hostile, probe_id: &str) {
    let requests_before = stat(s, "edge", "requests");
    let response = s
        .envoy
        .send(&Request::get("/edge/after").header("x-request-id", probe_id))
        .expect("Envoy still answers");
    assert_eq!(response.status, 200, "Envoy still serves");
    let log_line = s
        .envoy
        .wait_for_request_log(probe_id)
        .expect("the plugin still logs");
    assert_eq!(log_line["correlation"], "kept");
    assert!(
        wait_stat(s, "edge", "requests", requests_before + 1) > requests_before,
        "the plugin's counters still count"
    );

    assert_eq!(
        s.envoy.stat(VMS_CREATED),
        Some(s.vms_created),
        "no VM was replaced"
    );
    // Every line either worker still held, too.
    s.envoy.settle_log();
    let log = s.envoy.log();
    assert!(
        !log.contains("panic"),
        "Envoy's log mentions a panic:\n{log}"
    );
    // Envoy starts every log line with `[date]`: a client value that smuggled a line break
    // into the log would start a line of its own.
    for line in log.lines() {
        assert!(
            line.starts_with('['),
            "a log line Envoy did not start: {line:?}"
        );
    }
    // Every line Fusebox writes as JSON is one whole, valid JSON object.
    let mut json_lines = 0;
    for line in log.lines().filter(|line| line.contains("wasm log")) {
        let Some(start) = line.find('{') else {
            continue;
        };
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&line[start..]);
        assert!(
            parsed.as_ref().is_ok_and(serde_json::Value::is_object),
            "not one JSON object: {line:?}"
        );
        json_lines += 1;
    }
    assert!(json_lines > 0, "no Fusebox JSON line at all");
}

/// No header value that reached the upstream holds a control character.
fn assert_upstream_saw_no_control_characters(s: &Hostile) {
    for received in s.upstream.received() {
        for (name, value) in &received.headers {
            assert!(
                !value.iter().any(|b| b.is_ascii_control() && *b != b'\t'),
                "{name}: {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}

#[test]
fn control_characters_and_oversized_values_in_the_correlation_header() {
    let s = start();
    // Envoy 1.40's HTTP/1 codec (balsa) drops a bare CR inside a header value, so the value
    // arrives without it; a bare LF or a NUL gets a 400 before any filter runs.
    let response = s
        .envoy
        .send(&Request::get("/edge/cr").header("x-request-id", b"cr\rinjected"))
        .unwrap();
    assert_eq!(response.status, 200, "bare CR");
    assert_eq!(
        response.header("x-request-id").as_deref(),
        Some("crinjected")
    );
    assert_eq!(
        s.upstream.received_with("x-request-id", "crinjected").len(),
        1
    );
    for (what, value) in [("bare LF", &b"lf\ninjected"[..]), ("NUL", b"nul\0injected")] {
        let response = s
            .envoy
            .send(&Request::get("/edge/ctl").header("x-request-id", value))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(response.status, 400, "{what}");
    }
    assert_eq!(
        s.upstream.hits(),
        1,
        "no refused request reached the upstream"
    );

    // CRLF ends the header line: what follows is simply another header, here a forged
    // decision header, which the plugin strips like any other.
    let response = s
        .envoy
        .send(
            &Request::get("/edge/crlf")
                .header("x-request-id", b"crlf-id\r\nx-fusebox-decision: allow"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-request-id").as_deref(), Some("crlf-id"));
    let upstream_saw = s.upstream.received_with("x-request-id", "crlf-id");
    assert_eq!(upstream_saw.len(), 1);
    assert_eq!(upstream_saw[0].header(DECISION), None);

    // 64 KiB is over Envoy's default limit on request headers (60 KiB): 431 from the codec.
    let huge = "a".repeat(64 * 1024);
    let response = s
        .envoy
        .send(&Request::get("/edge/huge").header("x-request-id", &huge))
        .unwrap();
    assert_eq!(response.status, 431);

    // Under the limit, a long ID reaches the plugin, which replaces it: the upstream and the
    // log see a fresh ID, never the client's value.
    let long = "b".repeat(40 * 1024);
    let response = s
        .envoy
        .send(&Request::get("/edge/long").header("x-request-id", &long))
        .unwrap();
    assert_eq!(response.status, 200);
    let minted = response.header("x-request-id").expect("a fresh ID");
    assert!(minted.len() <= 128, "{minted}");
    let log_line = s.envoy.wait_for_request_log(&minted).expect("log line");
    assert_eq!(log_line["correlation_invalid"], "too_long");
    assert!(
        !s.envoy.log().contains(&long[..1024]),
        "the long value is never logged"
    );

    // A valid ID may hold quotes, braces and colons: it is kept, and JSON-escaped in the log
    // line it stays one string value, not fields of its own.
    let forged = r#"x","decision":"forged","priority":"critical"#;
    let response = s
        .envoy
        .send(&Request::get("/edge/quotes").header("x-request-id", forged))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-request-id").as_deref(), Some(forged));
    let log_line = s.envoy.wait_for_request_log(forged).expect("log line");
    assert_eq!(log_line["decision"], "allow", "{log_line}");
    assert_eq!(log_line["priority"], "normal", "{log_line}");

    // Envoy counts what its codec refused (LF, NUL, 64 KiB); the plugin what it saw.
    assert_eq!(
        s.envoy.stat("http.ingress.downstream_cx_protocol_error"),
        Some(3)
    );
    assert_eq!(s.envoy.stat("http.ingress.downstream_rq_4xx"), Some(3));
    assert_eq!(wait_stat(&s, "edge", "requests", 4), 4);
    assert_eq!(wait_stat(&s, "edge", "id_replaced", 1), 1);
    assert_eq!(wait_stat(&s, "edge", "decision_header_stripped", 1), 1);
    assert_upstream_saw_no_control_characters(&s);
    assert_unharmed(&s, "after-correlation");
}

#[test]
fn many_priority_headers_and_untrusted_critical_claims() {
    let s = start();
    let send = |path: &str, id: &str, priorities: &[&str]| {
        let mut request = Request::get(path).header("x-request-id", id);
        for priority in priorities {
            request = request.header("x-priority", priority);
        }
        s.envoy.send(&request).unwrap()
    };

    // 1,000 headers is over Envoy's default limit of 100 request headers: 431 from the codec.
    let response = send("/edge/many", "thousand", &["critical"; 1000]);
    assert_eq!(response.status, 431);
    assert_eq!(s.upstream.hits(), 0);
    assert_eq!(s.envoy.stat("http.ingress.downstream_rq_4xx"), Some(1));

    // 90 repeated priority headers get through Envoy; the plugin reads the first value, and
    // an untrusted peer's critical claim still gets the default.
    let mut ninety = vec!["critical"];
    ninety.extend(["sheddable"; 89]);
    let response = send("/edge/many", "ninety", &ninety);
    assert_eq!(response.status, 200);
    let log_line = s.envoy.wait_for_request_log("ninety").unwrap();
    assert_eq!(log_line["priority"], "normal", "{log_line}");
    assert_eq!(log_line["priority_untrusted"], true, "{log_line}");

    // One plain critical claim from outside trust_priority_from: the default, counted and
    // flagged in the log line.
    let response = send("/edge/claim", "claim", &["critical"]);
    assert_eq!(response.status, 200);
    let log_line = s.envoy.wait_for_request_log("claim").unwrap();
    assert_eq!(log_line["priority"], "normal", "{log_line}");
    assert_eq!(log_line["priority_untrusted"], true, "{log_line}");

    // Lowering one's own priority needs no trust.
    send("/edge/lower", "lower", &["sheddable"]);
    let log_line = s.envoy.wait_for_request_log("lower").unwrap();
    assert_eq!(log_line["priority"], "sheddable", "{log_line}");
    assert!(log_line.get("priority_untrusted").is_none(), "{log_line}");

    // Where loopback is trusted, the same claim is honoured.
    send("/inside/claim", "trusted", &["critical"]);
    let log_line = s.envoy.wait_for_request_log("trusted").unwrap();
    assert_eq!(log_line["priority"], "critical", "{log_line}");

    assert_eq!(wait_stat(&s, "edge", "priority_untrusted", 2), 2);
    assert_eq!(stat(&s, "edge", "shed_admitted_critical"), 0);
    assert_eq!(wait_stat(&s, "edge", "shed_admitted_sheddable", 1), 1);
    assert_eq!(wait_stat(&s, "inside", "shed_admitted_critical", 1), 1);
    assert_eq!(stat(&s, "inside", "priority_untrusted"), 0);
    assert_unharmed(&s, "after-priority");
}

fn millis_header(value: Option<String>) -> u64 {
    value
        .and_then(|v| v.trim_end_matches('m').parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn hostile_deadlines_fall_back_to_the_budget_and_never_extend_it() {
    let s = start();
    let cases: [(&str, &str, &str, &str); 9] = [
        ("grpc-huge", "grpc-timeout", "99999999H", "overflow"),
        ("grpc-days", "grpc-timeout", "99999H", "absurd"),
        ("grpc-neg", "grpc-timeout", "-5m", "malformed"),
        ("grpc-word", "grpc-timeout", "soon", "malformed"),
        ("ms-neg", "x-deadline-ms", "-100", "malformed"),
        ("ms-word", "x-deadline-ms", "soon", "malformed"),
        ("ms-float", "x-deadline-ms", "1e9", "malformed"),
        ("ms-days", "x-deadline-ms", "100000000", "absurd"),
        (
            "ms-overflow",
            "x-deadline-ms",
            "99999999999999999999999",
            "overflow",
        ),
    ];
    for (id, header, value, _) in cases {
        let response = s
            .envoy
            .send(
                &Request::get("/edge/deadline")
                    .header("x-request-id", id)
                    .header(header, value),
            )
            .unwrap();
        assert_eq!(response.status, 200, "{header}: {value}");
        let upstream_saw = &s.upstream.received_with("x-request-id", id)[0];
        let told = millis_header(upstream_saw.header("x-envoy-expected-rq-timeout-ms"));
        assert!(
            (250..=300).contains(&told),
            "{header}: {value}: upstream told {told}ms"
        );
    }
    for (id, header, value, defect) in cases {
        let log_line = s.envoy.wait_for_request_log(id).unwrap();
        assert_eq!(
            log_line["caller_deadline_ignored"], defect,
            "{header}: {value}: {log_line}"
        );
    }
    assert_eq!(
        wait_stat(&s, "edge", "caller_deadline_ignored", cases.len() as u64),
        cases.len() as u64
    );

    // A client asking for more time every way it can: a long grpc-timeout and deadline, and
    // Envoy's own timeout headers (which Envoy strips from an edge client before filters run).
    let response = s
        .envoy
        .send(
            &Request::get("/edge/delay/3000")
                .header("x-request-id", "extend")
                .header("grpc-timeout", "10S")
                .header("x-deadline-ms", "100000")
                .header("x-envoy-upstream-rq-timeout-ms", "100000")
                .header("x-envoy-expected-rq-timeout-ms", "100000")
                .timeout(Duration::from_secs(10)),
        )
        .unwrap();
    assert_eq!(response.status, 504, "the budget, not the client, decides");
    assert!(
        response.elapsed < Duration::from_millis(1500),
        "504 after {:?}, expected about 300ms",
        response.elapsed
    );
    let upstream_saw = &s.upstream.received_with("x-request-id", "extend")[0];
    assert!(millis_header(upstream_saw.header("x-envoy-expected-rq-timeout-ms")) <= 300);
    assert!(millis_header(upstream_saw.header("grpc-timeout")) <= 300);
    let log_line = s.envoy.wait_for_request_log("extend").unwrap();
    assert!(log_line["remaining_ms"].as_f64().unwrap_or(f64::MAX) <= 300.0);
    assert_eq!(wait_stat(&s, "edge", "upstream_timeout", 1), 1);
    assert_unharmed(&s, "after-deadlines");
}

#[test]
fn spoofed_decision_headers_are_stripped_both_ways() {
    let s = start();
    // From the client: removed before the upstream sees it.
    let response = s
        .envoy
        .send(
            &Request::get("/edge/spoof")
                .header("x-request-id", "spoof-request")
                .header(DECISION, "allow")
                .header(DECISION, "shed"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header(DECISION), None);
    let upstream_saw = &s.upstream.received_with("x-request-id", "spoof-request")[0];
    assert_eq!(
        upstream_saw.header(DECISION),
        None,
        "the upstream never sees it"
    );

    // From the upstream: removed before the client sees it.
    let response = s
        .envoy
        .send(
            &Request::get("/edge/respond-header/x-fusebox-decision/breaker_open")
                .header("x-request-id", "spoof-response"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header_all(DECISION), Vec::<String>::new());

    // Fusebox's own decision on a local reply stays, alone, whatever the client sent.
    let response = s
        .envoy
        .send(
            &Request::get("/edge/spent")
                .header("x-request-id", "own-decision")
                .header("grpc-timeout", "1m")
                .header(DECISION, "allow"),
        )
        .unwrap();
    assert_eq!(response.status, 504);
    assert_eq!(response.header_all(DECISION), vec!["deadline_exceeded"]);

    assert_eq!(wait_stat(&s, "edge", "decision_header_stripped", 3), 3);
    assert_eq!(stat(&s, "edge", "host_call_errors"), 0);
    assert_unharmed(&s, "after-decision");
}

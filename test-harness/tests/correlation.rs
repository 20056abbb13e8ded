//! Correlation IDs and trace context, end to end through real Envoy at --concurrency 2.

mod common;

use std::collections::HashSet;

use common::{log_thread, start};
use fusebox_harness::client::Request;
use uuid::Uuid;

const ONE_POLICY: &str = r#"{"policies": {"p": {}}, "default_policy": "p"}"#;

fn uuid_version(id: &str) -> Option<usize> {
    Uuid::parse_str(id).ok().map(|uuid| uuid.get_version_num())
}

#[test]
fn a_request_without_an_id_gets_a_fresh_uuid_v7_seen_upstream_and_echoed() {
    let s = start(ONE_POLICY);
    let response = s.envoy.send(&Request::get("/a")).unwrap();
    assert_eq!(response.status, 200);
    let id = response
        .header("x-request-id")
        .expect("the ID is echoed downstream");
    assert_eq!(uuid_version(&id), Some(7), "{id}");
    assert_eq!(
        s.upstream.received_with("x-request-id", &id).len(),
        1,
        "the upstream saw the same ID"
    );

    let log = s
        .envoy
        .wait_for_request_log(&id)
        .expect("one log line carries the ID");
    assert_eq!(log["correlation"], "generated");
    assert_eq!(log["policy"], "p");
    assert_eq!(log["route"], "echo");
    assert_eq!(log["status"], 200);
    // An ordinary answer is described by its status; details come with failures only.
    assert!(log.get("code_details").is_none(), "{log}");
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.p.id_generated", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy.wait_for_stat("wasmcustom.fusebox.p.requests", 1),
        Some(1)
    );
}

#[test]
fn generated_ids_are_unique_across_requests_and_both_workers() {
    let s = start(ONE_POLICY);
    let ids: Vec<String> = (0..40)
        .map(|_| {
            s.envoy
                .send(&Request::get("/many"))
                .unwrap()
                .header("x-request-id")
                .unwrap()
        })
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "IDs repeat: {ids:?}");
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.p.id_generated", 40),
        Some(40)
    );

    let log = s
        .envoy
        .wait_for_log(|log| ids.iter().all(|id| log.contains(id.as_str())));
    let threads: HashSet<&str> = log
        .lines()
        .filter(|line| ids.iter().any(|id| line.contains(id.as_str())))
        .filter_map(log_thread)
        .collect();
    assert_eq!(
        threads.len(),
        2,
        "requests should be served by both workers: {threads:?}"
    );
    // One log line per request, no more.
    for id in &ids {
        assert_eq!(
            log.lines()
                .filter(|l| l.contains(id.as_str()) && l.contains("wasm log"))
                .count(),
            1
        );
    }
}

#[test]
fn a_valid_incoming_id_is_kept_unchanged() {
    let s = start(ONE_POLICY);
    let id = "Trace-ID_42:abc~!{}";
    let response = s
        .envoy
        .send(&Request::get("/keep").header("x-request-id", id))
        .unwrap();
    assert_eq!(response.header("x-request-id").as_deref(), Some(id));
    assert_eq!(
        response.header_all("x-request-id").len(),
        1,
        "echoed once, not appended"
    );
    assert_eq!(s.upstream.received_with("x-request-id", id).len(), 1);
    let log = s.envoy.wait_for_request_log(id).expect("log line");
    assert_eq!(log["correlation"], "kept");
    assert_eq!(
        s.envoy.wait_for_stat("wasmcustom.fusebox.p.id_kept", 1),
        Some(1)
    );
    assert_eq!(s.envoy.stat("wasmcustom.fusebox.p.id_generated"), Some(0));
}

#[test]
fn invalid_incoming_ids_are_replaced_and_counted() {
    let s = start(ONE_POLICY);
    let too_long = "a".repeat(129);
    let cases: [(&[u8], &str); 5] = [
        (too_long.as_bytes(), "too_long"),
        (b"two words", "not_visible_ascii"),
        (b"caf\xc3\xa9", "not_visible_ascii"),
        (b"a\tb", "not_visible_ascii"),
        (b"", "empty"),
    ];
    for (sent, reason) in cases {
        let response = s
            .envoy
            .send(&Request::get("/replace").header("x-request-id", sent))
            .unwrap();
        assert_eq!(response.status, 200);
        let id = response
            .header("x-request-id")
            .expect("a replacement is echoed");
        assert_eq!(uuid_version(&id), Some(7), "{id}");
        let upstream_saw = s.upstream.received_with("x-request-id", &id);
        assert_eq!(upstream_saw.len(), 1, "upstream gets the replacement");
        let log = s.envoy.wait_for_request_log(&id).expect("log line");
        assert_eq!(log["correlation"], "replaced");
        assert_eq!(
            log["correlation_invalid"],
            reason,
            "{:?}",
            String::from_utf8_lossy(sent)
        );
    }
    assert_eq!(
        s.envoy.wait_for_stat("wasmcustom.fusebox.p.id_replaced", 5),
        Some(5)
    );
    // Control characters never reach the filter: Envoy's codec refuses the request itself.
    let refused = s
        .envoy
        .send(&Request::get("/replace").header("x-request-id", b"a\x01b"))
        .unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(s.upstream.hits(), 5);
    assert!(
        s.upstream.received().iter().all(|r| r
            .header("x-request-id")
            .is_some_and(|id| uuid_version(&id) == Some(7))),
        "no invalid ID reached the upstream"
    );
}

#[test]
fn untrusted_ids_are_replaced_with_the_configured_header_format_and_echo() {
    let s = start(
        r#"{"correlation": {"header": "X-Correlation-ID", "trust_incoming": false,
                            "generate": "uuid_v4", "echo_in_response": false}}"#,
    );
    let response = s
        .envoy
        .send(
            &Request::get("/untrusted")
                .header("x-correlation-id", "valid-but-untrusted")
                .header("x-request-id", "other"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-correlation-id"), None, "echo is off");
    let received = s.upstream.received();
    let upstream_id = received[0]
        .header("x-correlation-id")
        .expect("upstream gets an ID");
    assert_eq!(uuid_version(&upstream_id), Some(4), "{upstream_id}");
    assert_eq!(
        received[0].header("x-request-id").as_deref(),
        Some("other"),
        "other headers are left alone"
    );

    let log = s
        .envoy
        .wait_for_request_log(&upstream_id)
        .expect("log line");
    assert_eq!(log["correlation"], "replaced");
    assert_eq!(log["correlation_invalid"], "untrusted");
    assert_eq!(log["policy"], "none");
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.none.id_replaced", 1),
        Some(1)
    );
}

#[test]
fn traceparent_is_kept_when_valid_and_replaced_when_missing_or_invalid() {
    let s = start(ONE_POLICY);
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let send = |id: &str, traceparent: Option<&str>| {
        let mut request = Request::get("/trace")
            .header("x-request-id", id)
            .header("tracestate", "vendor=x");
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        s.envoy.send(&request).unwrap();
        s.upstream
            .received_with("x-request-id", id)
            .pop()
            .expect("reached upstream")
    };

    let kept = send("kept", Some(valid));
    assert_eq!(kept.header("traceparent").as_deref(), Some(valid));
    assert_eq!(kept.header("tracestate").as_deref(), Some("vendor=x"));

    let replaced = send(
        "replaced",
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
    );
    let minted = replaced.header("traceparent").unwrap();
    assert!(
        fusebox::policy::traceparent::is_valid_traceparent(minted.as_bytes()),
        "{minted}"
    );
    assert_eq!(
        replaced.header("tracestate"),
        None,
        "tracestate of an invalid context is dropped"
    );

    let generated = send("generated", None);
    let minted_too = generated.header("traceparent").unwrap();
    assert!(fusebox::policy::traceparent::is_valid_traceparent(
        minted_too.as_bytes()
    ));
    assert_ne!(minted, minted_too);

    assert_eq!(
        s.envoy.wait_for_request_log("kept").unwrap()["traceparent"],
        "kept"
    );
    assert_eq!(
        s.envoy.wait_for_request_log("replaced").unwrap()["traceparent"],
        "replaced"
    );
    assert_eq!(
        s.envoy.wait_for_request_log("generated").unwrap()["traceparent"],
        "generated"
    );
    for stat in ["kept", "replaced", "generated"] {
        assert_eq!(
            s.envoy
                .wait_for_stat(&format!("wasmcustom.fusebox.p.traceparent_{stat}"), 1),
            Some(1),
            "{stat}"
        );
    }
}

#[test]
fn traceparent_handling_can_be_turned_off() {
    let s = start(r#"{"correlation": {"traceparent": false}}"#);
    s.envoy
        .send(&Request::get("/a").header("x-request-id", "a"))
        .unwrap();
    s.envoy
        .send(
            &Request::get("/b")
                .header("x-request-id", "b")
                .header("traceparent", "junk"),
        )
        .unwrap();
    assert_eq!(
        s.upstream.received_with("x-request-id", "a")[0].header("traceparent"),
        None
    );
    assert_eq!(
        s.upstream.received_with("x-request-id", "b")[0]
            .header("traceparent")
            .as_deref(),
        Some("junk")
    );
    let log = s.envoy.wait_for_request_log("b").unwrap();
    assert!(log.get("traceparent").is_none(), "{log}");
}

#[test]
fn with_decisions_only_logging_ordinary_requests_leave_no_line_but_replacements_do() {
    let s = start(
        r#"{"log": {"requests": "decisions"}, "policies": {"p": {}}, "default_policy": "p"}"#,
    );
    let ordinary: Vec<String> = (0..6)
        .map(|_| {
            s.envoy
                .send(&Request::get("/quiet"))
                .unwrap()
                .header("x-request-id")
                .unwrap()
        })
        .collect();
    let replaced = s
        .envoy
        .send(&Request::get("/quiet").header("x-request-id", b"two words"))
        .unwrap()
        .header("x-request-id")
        .unwrap();
    let log = s
        .envoy
        .wait_for_request_log(&replaced)
        .expect("a replaced ID is a decision worth a line");
    assert_eq!(log["correlation"], "replaced");
    // Every request is still counted.
    assert_eq!(
        s.envoy.wait_for_stat("wasmcustom.fusebox.p.requests", 7),
        Some(7)
    );
    s.envoy.settle_log();
    let logged: Vec<String> = s
        .envoy
        .request_logs()
        .iter()
        .filter_map(|line| line["correlation_id"].as_str().map(str::to_owned))
        .collect();
    for id in &ordinary {
        assert!(!logged.contains(id), "ordinary request {id} was logged");
    }
}

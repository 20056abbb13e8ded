//! Circuit breakers in real Envoy at --concurrency 2, one new connection per request so both
//! workers serve traffic: the state is shared, so failures seen by one worker open the breaker
//! for both, and half-open admits one probe in total.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{log_thread, Setup};
use fusebox_harness::client::Request;
use fusebox_harness::envoy::{test_spec, Envoy};
use fusebox_harness::envoy_config::RouteSpec;
use fusebox_harness::upstream::Upstream;

const CONFIG: &str = r#"{
  "policies": {
    "flaky": {"breaker": {"consecutive_failures": 5, "open_for": "1s", "max_open_for": "4s",
              "fallback": {"status": 503, "body": "try later", "headers": {"x-fallback": "yes"}}}},
    "down": {"breaker": {"consecutive_failures": 3, "open_for": "30s"}},
    "hang": {"budget": {"timeout": "200ms"}, "breaker": {"consecutive_failures": 3, "open_for": "30s"}},
    "dry": {"mode": "dry_run", "breaker": {"consecutive_failures": 2, "open_for": "30s"}},
    "per_cluster": {"breaker": {"scope": "cluster", "consecutive_failures": 2, "open_for": "30s"}}
  },
  "routes": {"flaky_route": "flaky", "down_route": "down", "hang_route": "hang", "dry_route": "dry",
             "cluster_a": "per_cluster", "cluster_b": "per_cluster"}
}"#;

struct Harness {
    setup: Setup,
    second: Upstream,
}

/// A loopback address nothing listens on (the privileged tcpmux port): connections are
/// refused. An ephemeral port released by a test could be reused by a parallel test.
fn refused_address() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

fn start() -> Harness {
    let upstream = Upstream::start().unwrap();
    let second = Upstream::start().unwrap();
    let routes = vec![
        RouteSpec::new("flaky_route", "/flaky"),
        RouteSpec::new("down_route", "/down").to_cluster("dead"),
        RouteSpec::new("hang_route", "/slow"),
        RouteSpec::new("dry_route", "/dry"),
        RouteSpec::new("cluster_a", "/a"),
        RouteSpec::new("cluster_b", "/b").to_cluster("second"),
    ];
    let mut spec = test_spec(upstream.addr(), CONFIG, routes).unwrap_or_else(|e| panic!("{e}"));
    spec.extra_clusters = vec![
        ("dead".to_owned(), refused_address().into()),
        ("second".to_owned(), second.addr().into()),
    ];
    let envoy = Envoy::start(&spec).unwrap_or_else(|e| panic!("{e}"));
    Harness {
        setup: Setup { upstream, envoy },
        second,
    }
}

fn get(envoy: &Envoy, path: &str, id: &str) -> fusebox_harness::client::Response {
    envoy
        .send(&Request::get(path).header("x-request-id", id))
        .unwrap()
}

fn is_breaker_reply(response: &fusebox_harness::client::Response) -> bool {
    response.header("x-fusebox-decision").as_deref() == Some("breaker_open")
}

#[test]
fn failures_open_the_breaker_for_every_worker_then_one_probe_recovers_it() {
    let h = start();
    let (envoy, upstream) = (&h.setup.envoy, &h.setup.upstream);

    for i in 0..5 {
        assert_eq!(
            get(envoy, "/flaky/status/500", &format!("fail-{i}")).status,
            500
        );
    }
    assert_eq!(upstream.hits(), 5);

    let rejected: Vec<String> = (0..16).map(|i| format!("rejected-{i}")).collect();
    for id in &rejected {
        let response = get(envoy, "/flaky/ok", id);
        assert_eq!(response.status, 503);
        assert!(is_breaker_reply(&response));
        assert_eq!(response.header("retry-after").as_deref(), Some("1"));
        assert_eq!(response.header("x-fallback").as_deref(), Some("yes"));
        assert_eq!(response.header_all("x-request-id"), [id.as_str()]);
        assert_eq!(response.body, b"try later");
    }
    assert_eq!(
        upstream.hits(),
        5,
        "an open breaker keeps traffic off the upstream"
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_rejected", 16),
        Some(16)
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_opened", 1),
        Some(1)
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_failures", 5),
        Some(5)
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_state", 1),
        Some(1)
    );
    let refusing_threads = |log: &str| -> usize {
        log.lines()
            .filter(|line| line.contains("\"decision\":\"breaker_open\""))
            .filter_map(log_thread)
            .collect::<HashSet<&str>>()
            .len()
    };
    let transition = r#""event":"breaker_transition","policy":"flaky","scope":"route","transition":"opened","reason":"consecutive_failures""#;
    let log = envoy.wait_for_log(|log| refusing_threads(log) == 2 && log.contains(transition));
    assert_eq!(
        refusing_threads(&log),
        2,
        "both workers refuse: the breaker is shared"
    );
    assert!(log.contains(transition), "a transition log line");

    // After open_for, exactly one of two concurrent requests is let through as the probe.
    std::thread::sleep(Duration::from_millis(1100));
    let probes: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn({
                let addr = envoy.listener();
                move || {
                    Request::get("/flaky/delay/300")
                        .header("x-request-id", format!("probe-{i}"))
                        .send(addr)
                        .unwrap()
                }
            })
        })
        .collect();
    let responses: Vec<_> = probes.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(
        responses.iter().filter(|r| r.status == 200).count(),
        1,
        "one probe"
    );
    assert_eq!(
        responses.iter().filter(|r| is_breaker_reply(r)).count(),
        1,
        "the other is refused"
    );
    assert_eq!(upstream.hits(), 6);
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_closed", 1),
        Some(1),
        "the probe's success closes it"
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_half_opened", 1),
        Some(1)
    );
    assert_eq!(
        envoy.wait_for_stat_at_most("wasmcustom.fusebox.flaky.breaker_state", 0),
        Some(0)
    );
    assert_eq!(get(envoy, "/flaky/ok", "after-recovery").status, 200);

    // A still-failing upstream re-opens it, for twice as long.
    for i in 0..5 {
        get(envoy, "/flaky/status/500", &format!("again-{i}"));
    }
    assert!(is_breaker_reply(&get(envoy, "/flaky/ok", "open-again")));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(envoy, "/flaky/status/500", "failing-probe").status, 500);
    let reopened = get(envoy, "/flaky/ok", "after-failed-probe");
    assert!(is_breaker_reply(&reopened));
    assert_eq!(
        reopened.header("retry-after").as_deref(),
        Some("2"),
        "backoff doubles open_for"
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.flaky.breaker_opened", 3),
        Some(3)
    );
}

#[test]
fn an_upstream_that_refuses_connections_trips_the_breaker() {
    let h = start();
    let envoy = &h.setup.envoy;
    for i in 0..3 {
        let response = get(envoy, "/down/x", &format!("refused-{i}"));
        assert_eq!(response.status, 503, "Envoy's own connect-failure reply");
        assert!(!is_breaker_reply(&response));
        let log = envoy.wait_for_request_log(&format!("refused-{i}")).unwrap();
        assert_eq!(log["breaker_outcome"], "failure", "{log}");
        assert!(
            log["response_flags"].as_str().unwrap_or("").contains("UF"),
            "{log}"
        );
    }
    assert!(is_breaker_reply(&get(envoy, "/down/x", "after")));
}

#[test]
fn an_upstream_that_hangs_past_the_budget_trips_the_breaker() {
    let h = start();
    let envoy = &h.setup.envoy;
    for i in 0..3 {
        let response = get(envoy, "/slow/hang", &format!("hung-{i}"));
        assert_eq!(response.status, 504);
        assert!(
            response.elapsed < Duration::from_secs(2),
            "the budget ends it, {:?}",
            response.elapsed
        );
    }
    let response = get(envoy, "/slow/hang", "after");
    assert!(is_breaker_reply(&response));
    assert!(
        response.elapsed < Duration::from_millis(150),
        "open replies are immediate: {:?}",
        response.elapsed
    );
    assert_eq!(h.setup.upstream.hits(), 3);
}

#[test]
fn dry_run_counts_would_be_rejections_but_lets_traffic_through() {
    let h = start();
    let envoy = &h.setup.envoy;
    for i in 0..4 {
        let response = get(envoy, "/dry/status/500", &format!("dry-{i}"));
        assert_eq!(response.status, 500, "every request reaches the upstream");
        assert!(!is_breaker_reply(&response));
    }
    assert_eq!(h.setup.upstream.hits(), 4);
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.fusebox.dry.would_breaker_open", 2),
        Some(2)
    );
    assert_eq!(
        envoy.stat("wasmcustom.fusebox.dry.breaker_rejected"),
        Some(0)
    );
    assert_eq!(
        envoy.wait_for_request_log("dry-3").unwrap()["decision"],
        "would_breaker_open"
    );
}

#[test]
fn cluster_scope_keeps_one_breaker_per_upstream_cluster() {
    let h = start();
    let envoy = &h.setup.envoy;
    for i in 0..2 {
        assert_eq!(
            get(envoy, "/b/status/500", &format!("b-fail-{i}")).status,
            500
        );
    }
    assert!(
        is_breaker_reply(&get(envoy, "/b/ok", "b-after")),
        "cluster `second` is open"
    );
    assert_eq!(
        get(envoy, "/a/ok", "a-after").status,
        200,
        "cluster `upstream` is not"
    );
    assert_eq!(h.second.hits(), 2);
    let opened = r#""policy":"per_cluster","scope":"second","transition":"opened""#;
    assert!(envoy
        .wait_for_log(|log| log.contains(opened))
        .contains(opened));
}

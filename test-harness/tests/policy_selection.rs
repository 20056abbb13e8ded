//! Which policy governs a request, as seen in real Envoy: route metadata, then the `routes`
//! map, then `default_policy`; and the stats each policy reports to Prometheus.

mod common;

use common::start_with_routes;
use fusebox_harness::client::Request;
use fusebox_harness::envoy_config::RouteSpec;

const CONFIG: &str = r#"{
  "policies": {"meta": {}, "mapped": {"mode": "dry_run"}, "fallback": {}},
  "routes": {"meta_route": "mapped", "mapped_route": "mapped"},
  "default_policy": "fallback"
}"#;

fn routes() -> Vec<RouteSpec> {
    vec![
        // Named in the routes map too: the metadata must win.
        RouteSpec::new("meta_route", "/meta").with_policy_metadata("meta"),
        RouteSpec::new("mapped_route", "/mapped"),
        RouteSpec::new("typo_route", "/typo").with_policy_metadata("no_such_policy"),
        RouteSpec::new("", "/unnamed"),
        RouteSpec::new("other_route", "/"),
    ]
}

#[test]
fn metadata_beats_the_route_map_which_beats_the_default() {
    let s = start_with_routes(CONFIG, routes());
    let cases = [
        ("/meta", "meta", "route_metadata", "enforce"),
        ("/mapped", "mapped", "route_map", "dry_run"),
        ("/typo", "fallback", "default", "enforce"),
        ("/unnamed", "fallback", "default", "enforce"),
        ("/other", "fallback", "default", "enforce"),
    ];
    for (path, policy, source, mode) in cases {
        let id = format!("case{}", path.replace('/', "-"));
        let response = s
            .envoy
            .send(&Request::get(path).header("x-request-id", &id))
            .unwrap();
        assert_eq!(response.status, 200, "{path}");
        let log = s.envoy.wait_for_request_log(&id).expect("log line");
        assert_eq!(log["policy"], policy, "{path}: {log}");
        assert_eq!(log["policy_source"], source, "{path}: {log}");
        assert_eq!(log["mode"], mode, "{path}: {log}");
    }
    let typo = s.envoy.wait_for_request_log("case-typo").unwrap();
    assert_eq!(
        typo["metadata_policy_unknown"], true,
        "a metadata typo is reported: {typo}"
    );
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.fallback.metadata_policy_unknown", 1),
        Some(1)
    );

    assert_eq!(
        s.envoy.wait_for_stat("wasmcustom.fusebox.meta.requests", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.mapped.requests", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.fallback.requests", 3),
        Some(3)
    );
    assert_eq!(s.envoy.stat("wasmcustom.fusebox.none.requests"), Some(0));

    let prometheus = s.envoy.admin_get("/stats/prometheus").unwrap();
    let text = String::from_utf8_lossy(&prometheus.body);
    for line in [
        "fusebox_requests{policy=\"meta\"} 1",
        "fusebox_requests{policy=\"fallback\"} 3",
        "fusebox_id_kept{policy=\"mapped\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from /stats/prometheus"
        );
    }
}

#[test]
fn without_a_match_there_is_no_policy_but_correlation_still_applies() {
    let s = start_with_routes(
        r#"{"policies": {"only": {}}, "routes": {"mapped_route": "only"}}"#,
        routes(),
    );
    let response = s.envoy.send(&Request::get("/other")).unwrap();
    let id = response
        .header("x-request-id")
        .expect("an ID even without a policy");
    let log = s.envoy.wait_for_request_log(&id).unwrap();
    assert_eq!(log["policy"], "none");
    assert_eq!(log["policy_source"], "none");
    assert!(log.get("mode").is_none());
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.none.id_generated", 1),
        Some(1)
    );
}

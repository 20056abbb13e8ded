//! Configuration as Envoy sees it: invalid documents refuse the filter with every problem in
//! Envoy's log; the shipped configuration files are valid and in sync with their description.

mod common;

use fusebox_harness::client::Request;
use fusebox_harness::envoy::{test_spec, Envoy};
use fusebox_harness::envoy_config::{
    demo_spec, render, render_istio_wasm_plugin, RouteSpec, DEMO_CONFIG, ISTIO_WASM_PLUGIN,
};
use fusebox_harness::provision::repo_root;

fn refused_log(plugin_config: &str) -> String {
    let spec = test_spec(
        "127.0.0.1:9".parse().unwrap(),
        plugin_config,
        vec![RouteSpec::new("r", "/")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let refusal = Envoy::start_expecting_refusal(&spec).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !refusal.status.success(),
        "Envoy must not start with an invalid plugin configuration"
    );
    refusal.log
}

#[test]
fn invalid_configuration_is_refused_with_every_problem_and_its_path_in_envoys_log() {
    let log = refused_log(
        r#"{"correlation": {"max_length": 5, "generat": "uuid_v7"},
            "policies": {"payments": {"mode": "dryrun"}},
            "routes": {"checkout": "paymnts"},
            "default_policy": "nowhere"}"#,
    );
    assert!(
        log.contains("invalid configuration, refusing to start (5 problems)"),
        "{log}"
    );
    for expected in [
        "config error: correlation.max_length: must be in [36, 8192]",
        "config error: correlation.generat: unknown field; did you mean `generate`?",
        "config error: policies.payments.mode: unknown variant `dryrun`",
        "config error: routes.checkout: unknown policy `paymnts`; did you mean `payments`?",
        "config error: default_policy: unknown policy `nowhere`",
    ] {
        assert!(
            log.contains(expected),
            "missing {expected:?} in Envoy's log:\n{log}"
        );
    }
}

#[test]
fn a_document_that_is_not_json_is_refused() {
    let log = refused_log("policies: yaml-is-not-json");
    assert!(
        log.contains("config error: $: not a valid configuration document"),
        "{log}"
    );
}

#[test]
fn the_checked_in_demo_and_istio_configs_match_their_description() {
    let spec = demo_spec().unwrap();
    let fix = "regenerate with `cargo harness render`";
    let demo = std::fs::read_to_string(repo_root().join(DEMO_CONFIG)).unwrap_or_default();
    assert!(demo == render(&spec), "{DEMO_CONFIG} is out of date; {fix}");
    let istio = std::fs::read_to_string(repo_root().join(ISTIO_WASM_PLUGIN)).unwrap_or_default();
    assert!(
        istio == render_istio_wasm_plugin(&spec.plugin_config),
        "{ISTIO_WASM_PLUGIN} is out of date; {fix}"
    );
    fusebox_policy_schema::parse(spec.plugin_config.as_bytes())
        .unwrap_or_else(|errors| panic!("{errors}"));
}

#[test]
fn the_demo_topology_serves_traffic_in_real_envoy() {
    let upstream = fusebox_harness::upstream::Upstream::start().unwrap();
    let demo = demo_spec().unwrap();
    let mut spec = test_spec(upstream.addr(), &demo.plugin_config, demo.routes.clone()).unwrap();
    spec.admin_port = 0;
    spec.listener_port = 0;
    let envoy = Envoy::start(&spec).unwrap_or_else(|e| panic!("{e}"));
    for (path, policy, mode) in [
        ("/payments/x", "payments", "enforce"),
        ("/search?q=1", "search", "dry_run"),
        ("/", "standard", "enforce"),
    ] {
        let response = envoy.send(&Request::get(path)).unwrap();
        assert_eq!(response.status, 200, "{path}");
        let id = response.header("x-request-id").unwrap();
        let log = envoy.wait_for_request_log(&id).unwrap();
        assert_eq!(
            (log["policy"].as_str(), log["mode"].as_str()),
            (Some(policy), Some(mode)),
            "{path}"
        );
    }
}

#[test]
fn the_shipped_module_exports_only_the_callbacks_fusebox_implements() {
    use fusebox_harness::provision::{plugin_wasm, wasm_exports, PLUGIN_EXPORTS};
    let module = std::fs::read(plugin_wasm().unwrap_or_else(|e| panic!("{e}"))).unwrap();
    let mut exports = wasm_exports(&module).unwrap();
    exports.sort();
    let mut expected = PLUGIN_EXPORTS.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(exports, expected);
}

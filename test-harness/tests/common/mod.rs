//! What every integration test starts with: an upstream and an Envoy with the plugin in front.

#![allow(dead_code)]

use fusebox_harness::envoy::{test_spec, Envoy};
use fusebox_harness::envoy_config::RouteSpec;
use fusebox_harness::upstream::Upstream;

pub struct Setup {
    pub upstream: Upstream,
    pub envoy: Envoy,
}

/// Starts an upstream and an Envoy whose plugin has `plugin_config`, with `routes`.
pub fn start_with_routes(plugin_config: &str, routes: Vec<RouteSpec>) -> Setup {
    let upstream = Upstream::start().expect("upstream starts");
    let spec = test_spec(upstream.addr(), plugin_config, routes).unwrap_or_else(|e| panic!("{e}"));
    let envoy = Envoy::start(&spec).unwrap_or_else(|e| panic!("{e}"));
    Setup { upstream, envoy }
}

/// Starts an upstream and an Envoy with one catch-all route named `echo`.
pub fn start(plugin_config: &str) -> Setup {
    start_with_routes(plugin_config, vec![RouteSpec::new("echo", "/")])
}

/// The Envoy worker thread id that wrote a log line (`[date][tid][level]...`).
pub fn log_thread(line: &str) -> Option<&str> {
    line.split('[').nth(2)?.split(']').next()
}

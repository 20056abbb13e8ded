//! The topology a scenario runs on, described once and rendered for both backends: the native
//! processes CI runs (Envoy and our upstreams on loopback, ephemeral ports) and the
//! docker-compose file shipped for users (the official Envoy image and our upstream image).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fusebox_policy_schema::ConfigDuration;
use serde::Deserialize;

use crate::envoy_config::{render, Endpoint, EnvoySpec, RouteSpec};

/// The Envoy image the compose file runs: the same release CI runs natively.
pub const ENVOY_IMAGE: &str = "envoyproxy/envoy:v1.40.0";
/// The image of our upstream, built from `test-harness/Dockerfile`.
pub const UPSTREAM_IMAGE: &str = "fusebox-upstream:dev";
/// Where the rendered compose files live, relative to the repository root.
pub const COMPOSE_DIR: &str = "envoy-config/compose";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    policy: PathBuf,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: ConfigDuration,
    envoy: EnvoyPorts,
    upstreams: Vec<UpstreamSpec>,
    routes: Vec<TopologyRoute>,
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(1))
}

/// The ports Envoy publishes in the compose backend (the native backend takes free ones).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyPorts {
    /// Traffic.
    pub listener_port: u16,
    /// Admin interface (stats).
    pub admin_port: u16,
}

/// One controllable upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Its name: the Envoy cluster and the compose service.
    pub name: String,
    /// Traffic port in the compose backend.
    pub port: u16,
    /// Control port in the compose backend.
    pub control_port: u16,
}

/// One Envoy route of the topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyRoute {
    /// Envoy route name (what `routes` in the policy file maps).
    pub name: String,
    /// Path prefix.
    pub prefix: String,
    /// The upstream it sends to.
    pub upstream: String,
    /// Envoy's own route timeout.
    #[serde(default = "default_route_timeout")]
    pub timeout: String,
}

fn default_route_timeout() -> String {
    "15s".to_owned()
}

/// A checked topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Where the file is.
    pub path: PathBuf,
    /// The policy file.
    pub policy_path: PathBuf,
    /// The plugin configuration (the policy file's text).
    pub plugin_config: String,
    /// Envoy's connect timeout to upstreams.
    pub connect_timeout: ConfigDuration,
    /// Envoy's published ports.
    pub envoy: EnvoyPorts,
    /// The upstreams.
    pub upstreams: Vec<UpstreamSpec>,
    /// The routes, matched in order.
    pub routes: Vec<TopologyRoute>,
}

impl Topology {
    /// Reads and checks a topology file, and the policy file it names.
    pub fn load(path: &Path) -> Result<Topology, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let file: TopologyFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let policy_path = dir.join(&file.policy);
        let plugin_config = std::fs::read_to_string(&policy_path)
            .map_err(|e| format!("reading {}: {e}", policy_path.display()))?;
        fusebox_policy_schema::parse(plugin_config.as_bytes())
            .map_err(|errors| format!("{} is invalid:\n{errors}", policy_path.display()))?;
        let mut errors = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, upstream) in file.upstreams.iter().enumerate() {
            let valid_name = !upstream.name.is_empty()
                && upstream
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                errors.push(format!(
                    "upstreams[{i}].name: lower-case letters, digits and `-` only (a compose service name)"
                ));
            }
            if upstream.name == "envoy" || !names.insert(upstream.name.clone()) {
                errors.push(format!("upstreams[{i}].name: {:?} is taken", upstream.name));
            }
        }
        for (i, route) in file.routes.iter().enumerate() {
            if !file.upstreams.iter().any(|u| u.name == route.upstream) {
                errors.push(format!(
                    "routes[{i}].upstream: no upstream named {:?}",
                    route.upstream
                ));
            }
        }
        if file.upstreams.is_empty() {
            errors.push("upstreams: at least one".to_owned());
        }
        if !errors.is_empty() {
            return Err(format!(
                "{} is invalid:\n  {}",
                path.display(),
                errors.join("\n  ")
            ));
        }
        Ok(Topology {
            path: path.to_owned(),
            policy_path,
            plugin_config,
            connect_timeout: file.connect_timeout,
            envoy: file.envoy,
            upstreams: file.upstreams,
            routes: file.routes,
        })
    }

    /// The route a request path takes, as Envoy matches prefixes in order.
    pub fn route_for(&self, path: &str) -> Option<&TopologyRoute> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }

    /// The Envoy description, with each upstream at `endpoints[name]`.
    pub fn envoy_spec(
        &self,
        bind_address: &str,
        ports: (u16, u16),
        wasm_path: &str,
        plugin_config: &str,
        endpoints: &BTreeMap<String, Endpoint>,
    ) -> EnvoySpec {
        let extra_clusters: Vec<(String, Endpoint)> = self
            .upstreams
            .iter()
            .filter_map(|u| Some((u.name.clone(), endpoints.get(&u.name)?.clone())))
            .collect();
        let upstream = extra_clusters
            .first()
            .map(|(_, endpoint)| endpoint.clone())
            .unwrap_or(Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 0,
            });
        EnvoySpec {
            bind_address: bind_address.to_owned(),
            listener_port: ports.0,
            admin_port: ports.1,
            upstream,
            connect_timeout: format_duration(self.connect_timeout),
            wasm_path: wasm_path.to_owned(),
            plugin_config: plugin_config.to_owned(),
            routes: self
                .routes
                .iter()
                .map(|r| {
                    let mut route = RouteSpec::new(&r.name, &r.prefix).to_cluster(&r.upstream);
                    route.timeout = r.timeout.clone();
                    route
                })
                .collect(),
            loopback_is_internal: false,
            extra_clusters,
        }
    }

    /// The Envoy configuration of the compose backend: listeners on every interface, upstreams
    /// by service name, the plugin mounted at `/etc/fusebox/fusebox.wasm`.
    pub fn compose_envoy_yaml(&self) -> String {
        let endpoints = self
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    Endpoint {
                        host: u.name.clone(),
                        port: u.port,
                    },
                )
            })
            .collect();
        render(&self.envoy_spec(
            "0.0.0.0",
            (self.envoy.listener_port, self.envoy.admin_port),
            "/etc/fusebox/fusebox.wasm",
            &self.plugin_config,
            &endpoints,
        ))
    }

    /// The docker-compose file: the official Envoy image with fusebox, and one container of
    /// our upstream image per upstream, control ports published for the chaos runner.
    pub fn compose_file(&self) -> String {
        let mut out = format!(
            r#"# Rendered by test-harness/src/chaos/topology.rs from {topology};
# `cargo test` keeps it equal to its rendering (`cargo harness render` rewrites it).
#
# Build the plugin first (`cargo harness build`), then from this directory:
#   docker compose up --build
# Traffic on http://127.0.0.1:{listener}, Envoy admin on http://127.0.0.1:{admin}; switch an
# upstream's faults through its control port, e.g.
#   curl -X PUT localhost:9080/fault -d '{{"kind": "hang"}}'   (README: "Fault injection").
name: fusebox
services:
  envoy:
    image: {ENVOY_IMAGE}
    command: ["envoy", "-c", "/etc/envoy/envoy.yaml", "--concurrency", "2"]
    volumes:
      - ./envoy.yaml:/etc/envoy/envoy.yaml:ro
      - ../../target/wasm32-wasip1/release/fusebox.wasm:/etc/fusebox/fusebox.wasm:ro
    ports:
      - "{listener}:{listener}"
      - "{admin}:{admin}"
    depends_on:
"#,
            topology = "test-harness/scenarios/topology.toml",
            listener = self.envoy.listener_port,
            admin = self.envoy.admin_port,
        );
        for upstream in &self.upstreams {
            let _ = writeln!(out, "      - {}", upstream.name);
        }
        for upstream in &self.upstreams {
            let _ = write!(
                out,
                r#"  {name}:
    image: {UPSTREAM_IMAGE}
    build:
      context: ../..
      dockerfile: test-harness/Dockerfile
    command: ["upstream", "--listen", "0.0.0.0:{port}", "--control", "0.0.0.0:{control}"]
    ports:
      - "{control}:{control}"
"#,
                name = upstream.name,
                port = upstream.port,
                control = upstream.control_port,
            );
        }
        out
    }
}

/// A duration the way Envoy's YAML writes it (protobuf `Duration`: seconds only).
fn format_duration(duration: ConfigDuration) -> String {
    format!("{}s", duration.0.as_secs_f64())
}

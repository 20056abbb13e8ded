//! Envoy bootstrap configuration, rendered from one description for every use: the demo
//! (`envoy-config/demo.yaml`, checked in and kept equal to its rendering by a test), the
//! integration tests and, later, the fault scenarios.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::provision::repo_root;

/// The demo's checked-in Envoy configuration, relative to the repository root.
pub const DEMO_CONFIG: &str = "envoy-config/demo.yaml";
/// The demo's plugin configuration, relative to the repository root.
pub const DEMO_PLUGIN_CONFIG: &str = "envoy-config/fusebox.json";
/// The checked-in Istio `WasmPlugin`, relative to the repository root.
pub const ISTIO_WASM_PLUGIN: &str = "envoy-config/istio/wasmplugin.yaml";
/// Where the demo's upstream listens.
pub const DEMO_UPSTREAM: &str = "127.0.0.1:8081";

/// Shared data and VM identity: unique, so no other plugin can read or clobber Fusebox's
/// shared data (Envoy keys shared data by `vm_id`).
pub const VM_ID: &str = "fusebox";

/// What Envoy does if the Fusebox VM dies: replace it with a fresh VM, with backoff.
/// FAIL_CLOSED would turn a plugin fault into an outage of every route behind it; FAIL_OPEN
/// would silently drop every policy until Envoy restarts.
pub const FAILURE_POLICY: &str = "FAIL_RELOAD";

/// One Envoy route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Envoy route name (`xds.route_name`); empty for an unnamed route.
    pub name: String,
    /// Path prefix it matches.
    pub prefix: String,
    /// `filter_metadata.fusebox.policy` on the route, if any.
    pub policy_metadata: Option<String>,
    /// Envoy's own route timeout.
    pub timeout: String,
    /// The cluster it routes to: `upstream`, or one of [`EnvoySpec::extra_clusters`].
    pub cluster: String,
}

impl RouteSpec {
    /// A named route for `prefix` with a 15 s Envoy timeout and no metadata.
    pub fn new(name: &str, prefix: &str) -> RouteSpec {
        RouteSpec {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            policy_metadata: None,
            timeout: "15s".to_owned(),
            cluster: "upstream".to_owned(),
        }
    }

    /// Routes to `cluster` instead of `upstream`.
    pub fn to_cluster(mut self, cluster: &str) -> RouteSpec {
        self.cluster = cluster.to_owned();
        self
    }

    /// Selects `policy` through route metadata.
    pub fn with_policy_metadata(mut self, policy: &str) -> RouteSpec {
        self.policy_metadata = Some(policy.to_owned());
        self
    }
}

/// Where a cluster's single endpoint is: an IP address (a static cluster) or a host name
/// resolved by Envoy (a DNS cluster, as in docker-compose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address or host name.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

/// Everything that varies between the Envoys Fusebox runs in.
#[derive(Debug, Clone)]
pub struct EnvoySpec {
    /// Address the listener and the admin interface bind to.
    pub bind_address: String,
    /// Admin port (0: any free port).
    pub admin_port: u16,
    /// Listener port (0: any free port).
    pub listener_port: u16,
    /// The cluster named `upstream`, where routes go unless they name another one.
    pub upstream: Endpoint,
    /// How long Envoy waits for a TCP connection to an upstream.
    pub connect_timeout: String,
    /// Path of `fusebox.wasm` as Envoy should open it.
    pub wasm_path: String,
    /// The plugin configuration (JSON text).
    pub plugin_config: String,
    /// Routes, matched in order.
    pub routes: Vec<RouteSpec>,
    /// Treat loopback peers as internal hops, whose `x-envoy-*` headers (such as a previous
    /// Envoy's `x-envoy-expected-rq-timeout-ms`) Envoy keeps instead of stripping.
    pub loopback_is_internal: bool,
    /// More clusters beyond `upstream`: name and endpoint.
    pub extra_clusters: Vec<(String, Endpoint)>,
}

/// The demo: Envoy on 127.0.0.1:10000 (admin 9901) in front of the demo upstream, with the
/// plugin configuration from `envoy-config/fusebox.json`.
pub fn demo_spec() -> std::io::Result<EnvoySpec> {
    let plugin_config = std::fs::read_to_string(repo_root().join(DEMO_PLUGIN_CONFIG))?;
    let upstream: SocketAddr = DEMO_UPSTREAM.parse().map_err(std::io::Error::other)?;
    Ok(EnvoySpec {
        bind_address: "127.0.0.1".to_owned(),
        admin_port: 9901,
        listener_port: 10000,
        upstream: upstream.into(),
        connect_timeout: "1s".to_owned(),
        wasm_path: "target/wasm32-wasip1/release/fusebox.wasm".to_owned(),
        plugin_config,
        routes: vec![
            RouteSpec::new("payments", "/payments").with_policy_metadata("payments"),
            RouteSpec::new("search", "/search"),
            RouteSpec::new("catch_all", "/"),
        ],
        loopback_is_internal: false,
        extra_clusters: Vec::new(),
    })
}

/// Indents every line of `text` by `spaces`.
fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.trim_end()
        .lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Quotes a string for YAML (JSON strings are valid YAML scalars).
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn render_routes(routes: &[RouteSpec]) -> String {
    let mut out = String::new();
    for route in routes {
        out.push_str("- ");
        if !route.name.is_empty() {
            let _ = writeln!(out, "name: {}", quoted(&route.name));
            out.push_str("  ");
        }
        let _ = writeln!(out, "match: {{ prefix: {} }}", quoted(&route.prefix));
        let _ = writeln!(
            out,
            "  route: {{ cluster: {}, timeout: {} }}",
            quoted(&route.cluster),
            route.timeout
        );
        if let Some(policy) = &route.policy_metadata {
            let _ = writeln!(
                out,
                "  metadata: {{ filter_metadata: {{ fusebox: {{ policy: {} }} }} }}",
                quoted(policy)
            );
        }
    }
    out
}

fn render_cluster(name: &str, endpoint: &Endpoint, connect_timeout: &str) -> String {
    let name = quoted(name);
    let (ip, port) = (&endpoint.host, endpoint.port);
    let kind = if ip.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    format!(
        r#"    - name: {name}
      type: {kind}
      connect_timeout: {connect_timeout}
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}
"#
    )
}

/// Renders an Envoy bootstrap for `spec`.
pub fn render(spec: &EnvoySpec) -> String {
    let routes = indent(&render_routes(&spec.routes), 24);
    let plugin_config = indent(&spec.plugin_config, 28);
    // The default cluster only when a route sends to it: a topology of named upstreams has
    // no use for it.
    let default_used = spec.routes.iter().any(|route| route.cluster == "upstream");
    let clusters = std::iter::once(("upstream".to_owned(), spec.upstream.clone()))
        .filter(|_| default_used)
        .chain(spec.extra_clusters.iter().cloned())
        .map(|(name, endpoint)| render_cluster(&name, &endpoint, &spec.connect_timeout))
        .collect::<String>();
    let bind = &spec.bind_address;
    let admin_port = spec.admin_port;
    let listener_port = spec.listener_port;
    let wasm_path = quoted(&spec.wasm_path);
    let internal = if spec.loopback_is_internal {
        "\n                use_remote_address: true\n                internal_address_config:\n                  cidr_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }]"
    } else {
        ""
    };
    format!(
        r#"# Rendered by test-harness/src/envoy_config.rs; `cargo test` keeps the checked-in demo equal to it.
admin:
  address: {{ socket_address: {{ address: {bind}, port_value: {admin_port} }} }}
# Fusebox's stats are `wasmcustom.fusebox.<policy>.<event>`: make the policy a Prometheus label,
# e.g. fusebox_requests{{policy="payments"}}.
stats_config:
  stats_tags:
    - tag_name: policy
      regex: '^wasmcustom\.fusebox\.((.+?)\.)'
static_resources:
  listeners:
    - name: ingress
      address: {{ socket_address: {{ address: {bind}, port_value: {listener_port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                # Fusebox owns the correlation ID: Envoy must neither mint one before the
                # filter runs nor rewrite the one a trusted caller sent.
                generate_request_id: false
                preserve_external_request_id: true
                # Envoy must not rewrite a character of the ID to record its trace decision
                # (pack_trace_reason), nor sample traces on the ID's leading hex digits, which
                # in a UUIDv7 are a timestamp (all or none of a minute's requests).
                request_id_extension:
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig
                    pack_trace_reason: false
                    use_request_id_for_trace_sampling: false{internal}
                route_config:
                  name: local
                  virtual_hosts:
                    - name: fusebox
                      domains: ["*"]
                      routes:
{routes}
                http_filters:
                  - name: fusebox
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: fusebox
                        root_id: fusebox
                        # A crashed VM is replaced by a fresh one instead of failing every
                        # request (FAIL_CLOSED) or dropping every policy (FAIL_OPEN).
                        failure_policy: {FAILURE_POLICY}
                        vm_config:
                          # Unique: shared data (breakers, buckets) is keyed by vm_id.
                          vm_id: {VM_ID}
                          runtime: envoy.wasm.runtime.v8
                          code: {{ local: {{ filename: {wasm_path} }} }}
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: |
{plugin_config}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#
    )
}

/// Renders the Istio `WasmPlugin` that loads Fusebox with the demo's plugin configuration
/// (Istio hands `pluginConfig` to the plugin as JSON text, exactly like Envoy's StringValue).
pub fn render_istio_wasm_plugin(plugin_config: &str) -> String {
    let plugin_config = indent(plugin_config, 4);
    format!(
        r#"# Rendered by test-harness/src/envoy_config.rs from envoy-config/fusebox.json;
# `cargo test` keeps it equal to its rendering.
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: fusebox
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  # Publish fusebox.wasm as an OCI image (or mount it and use file://) and point url at it.
  url: file:///etc/istio/extensions/fusebox.wasm
  # Last before the router: decisions see the final route and its metadata.
  phase: UNSPECIFIED_PHASE
  pluginConfig:
{plugin_config}
"#
    )
}

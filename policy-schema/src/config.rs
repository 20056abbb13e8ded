//! The configuration after validation: types that hold their invariants, so the plugin never
//! re-checks them on the request path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

pub use crate::spec::{IdFormat, Mode, RequestLogging};

/// Name under which requests without a policy are counted; no policy may take it.
pub const NO_POLICY: &str = "none";

/// A validated plugin configuration. The default is what an empty document means:
/// correlation IDs with default settings, no policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Correlation-ID settings, applied to every request.
    pub correlation: CorrelationConfig,
    /// Which requests get a JSON log line.
    pub log: RequestLogging,
    pub(crate) policies: Vec<Policy>,
    pub(crate) policy_ids: HashMap<String, PolicyId>,
    pub(crate) routes: HashMap<String, PolicyId>,
    pub(crate) default_policy: Option<PolicyId>,
}

/// Index of a policy in [`Config::policies`]: cheap to copy and to keep per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(pub(crate) u32);

impl PolicyId {
    /// Position in [`Config::policies`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl Config {
    /// All policies, ordered by name; a [`PolicyId`] indexes this slice.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy with this id.
    pub fn policy(&self, id: PolicyId) -> Option<&Policy> {
        self.policies.get(id.index())
    }

    /// The id of the policy at `index` in [`Config::policies`].
    pub fn policy_id_at(&self, index: usize) -> Option<PolicyId> {
        (index < self.policies.len()).then(|| PolicyId(u32::try_from(index).unwrap_or(u32::MAX)))
    }

    /// The policy called `name`.
    pub fn policy_named(&self, name: &str) -> Option<PolicyId> {
        self.policy_ids.get(name).copied()
    }

    /// The policy the `routes` map gives this Envoy route name.
    pub fn route_policy(&self, route_name: &str) -> Option<PolicyId> {
        self.routes.get(route_name).copied()
    }

    /// The policy for routes that name none.
    pub fn default_policy(&self) -> Option<PolicyId> {
        self.default_policy
    }
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The policy's name: also its stat prefix and the `policy` label in Prometheus.
    pub name: String,
    /// Whether decisions are applied or only observed.
    pub mode: Mode,
    /// Timeout budget, if configured.
    pub budget: Option<BudgetConfig>,
    /// Circuit breaker, if configured.
    pub breaker: Option<BreakerConfig>,
    /// Load shedding, if configured.
    pub shed: Option<ShedConfig>,
}

/// Validated timeout-budget settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// The route's total budget per request, retries included; at least 1 ms.
    pub timeout: Duration,
    /// Below this remaining budget the upstream is not called; shorter than `timeout`.
    pub min_remaining: Duration,
    /// Headers carrying the caller's deadline (empty: the caller's deadline is not read).
    pub caller_deadline_headers: Vec<DeadlineHeader>,
    /// Retries within the budget, if configured.
    pub retries: Option<RetryConfig>,
}

/// A header that may carry the caller's deadline, and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineHeader {
    /// Lower-case header name.
    pub name: String,
    /// How its value is written.
    pub format: DeadlineFormat,
}

/// How a deadline header's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineFormat {
    /// gRPC's `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
    GrpcTimeout,
    /// Whole milliseconds, like Envoy's `x-envoy-expected-rq-timeout-ms`.
    Milliseconds,
}

/// Validated retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Most retries per request, 1 to 10.
    pub max: u32,
    /// Timeout of each attempt; shorter than the budget's timeout.
    pub per_try_timeout: Duration,
    /// Envoy HTTP retry conditions (`x-envoy-retry-on`), comma-separated; may be empty.
    pub retry_on: String,
    /// Envoy gRPC retry conditions (`x-envoy-retry-grpc-on`), comma-separated; may be empty.
    pub retry_grpc_on: String,
}

/// Validated circuit-breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// What one breaker covers.
    pub scope: BreakerScope,
    /// Open after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Open when this fraction, in (0, 1], of the window's calls failed.
    pub failure_rate: Option<f64>,
    /// Calls needed in the window before a rate can open the breaker.
    pub minimum_requests: u32,
    /// Sliding window for rates; at least 10 ms (ten buckets of at least 1 ms).
    pub window: Duration,
    /// Calls slower than `.0` count as slow; open when fraction `.1` of the window is slow.
    pub slow_call: Option<(Duration, f64)>,
    /// Time open before half-open.
    pub open_for: Duration,
    /// Ceiling of the backoff when probes keep failing; `open_for` when there is no backoff.
    pub max_open_for: Duration,
    /// Probes admitted in half-open, across all workers.
    pub half_open_requests: u32,
    /// Statuses that count as failures.
    pub failure_statuses: Vec<u16>,
    /// The reply while open.
    pub fallback: Fallback,
}

pub use crate::spec::BreakerScope;

/// The local reply of an open breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Extra headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

/// Validated load-shedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ShedConfig {
    /// Tokens per second, > 0.
    pub rate: f64,
    /// Bucket size, >= 1.
    pub burst: u32,
    /// Header whose value selects the bucket, lower case; `None`: one bucket.
    pub key_header: Option<String>,
    /// Most keyed buckets.
    pub max_keys: u32,
    /// Header carrying the criticality, lower case.
    pub priority_header: Option<String>,
    /// Criticality of requests without a valid priority header.
    pub default_priority: Priority,
    /// Fraction of `burst` kept for critical work, in [0, reserve_normal].
    pub reserve_critical: f64,
    /// Fraction of `burst` kept for normal and critical work, in [reserve_critical, 1).
    pub reserve_normal: f64,
    /// Status of the shed reply.
    pub status: u16,
    /// Add IETF `RateLimit` / `RateLimit-Policy` headers.
    pub rate_limit_headers: bool,
    /// Bulkhead limit, if any.
    pub max_in_flight: Option<u32>,
    /// Peers whose priority header may raise a request's priority above `default_priority`;
    /// `None`: every peer's.
    pub trust_priority_from: Option<Vec<IpRange>>,
}

/// A range of IP addresses in CIDR notation (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `<address>/<prefix length>`. Host bits must be zero: `10.0.0.1/8` is more likely
    /// a mistake than a way of writing `10.0.0.0/8`.
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| "must be a CIDR range, e.g. `10.0.0.0/8` or `::1/128`".to_owned())?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IP address"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| format!("the prefix length must be 0 to {bits}"))?;
        let range = IpRange { network, prefix };
        if !range.contains(network) || range.masked(network) != Some(bits_of(network)) {
            return Err(format!(
                "host bits are set; the range is written with zeros there, e.g. `{}`",
                range.canonical()
            ));
        }
        Ok(range)
    }

    fn mask(&self) -> u128 {
        let bits = if self.network.is_ipv4() { 32 } else { 128 };
        let ones = u128::MAX
            .checked_shl(bits - u32::from(self.prefix))
            .unwrap_or(0);
        if self.network.is_ipv4() {
            ones & u128::from(u32::MAX)
        } else {
            ones
        }
    }

    fn masked(&self, address: IpAddr) -> Option<u128> {
        match (self.network, unmap(address)) {
            (IpAddr::V4(_), IpAddr::V4(a)) => Some(u128::from(u32::from(a)) & self.mask()),
            (IpAddr::V6(_), IpAddr::V6(a)) => Some(u128::from(a) & self.mask()),
            _ => None,
        }
    }

    fn canonical(&self) -> String {
        let network = bits_of(self.network) & self.mask();
        let address = match self.network {
            IpAddr::V4(_) => IpAddr::from(u32::try_from(network).unwrap_or(0).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(network.to_be_bytes()),
        };
        format!("{address}/{}", self.prefix)
    }

    /// True when `address` is in the range. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`,
    /// as dual-stack listeners report IPv4 peers) counts as the IPv4 address it maps.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.masked(address) == Some(bits_of(self.network) & self.mask())
    }
}

fn unmap(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn bits_of(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

pub use crate::spec::Priority;

/// Validated correlation-ID settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationConfig {
    /// Header carrying the ID, lower case.
    pub header: String,
    /// Format of generated IDs.
    pub generate: IdFormat,
    /// Keep valid incoming IDs (otherwise every incoming ID is replaced).
    pub trust_incoming: bool,
    /// Longest incoming ID kept, in bytes; at least the length of a generated UUID.
    pub max_length: usize,
    /// Echo the ID in the response.
    pub echo_in_response: bool,
    /// Ensure a valid W3C `traceparent` on every request.
    pub traceparent: bool,
}

/// Length of a generated ID (a hyphenated UUID): the smallest `max_length` allowed, so that an
/// ID Fusebox generated is never refused by the next Fusebox hop.
pub const GENERATED_ID_LEN: usize = 36;

/// The largest `max_length` allowed: Envoy's default limit for all headers together is 60 KiB,
/// and one ID should not be able to use a sizeable part of it.
pub const MAX_ID_LENGTH: usize = 8192;

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            header: "x-request-id".to_owned(),
            generate: IdFormat::UuidV7,
            trust_incoming: true,
            max_length: 128,
            echo_in_response: true,
            traceparent: true,
        }
    }
}

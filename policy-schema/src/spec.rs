//! The configuration as operators write it: serde types whose doc comments become the JSON
//! Schema. Every field is [`Checked`] so that one bad value does not hide the others; unknown
//! fields are collected, not silently dropped, and reported by validation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::checked::Checked;
use crate::duration::ConfigDuration;

/// Members of an object that its type does not know. Always an error: a misspelt
/// `trust_incomming` must not quietly fall back to the default.
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

/// An object type of the configuration: the names it accepts and the ones it was given beyond them.
pub trait Section {
    /// Field names, as written in JSON.
    const FIELDS: &'static [&'static str];
    /// Members present in the document that are not in [`Section::FIELDS`].
    fn unknown_fields(&self) -> &UnknownFields;
}

macro_rules! section {
    ($type:ty, [$($field:literal),* $(,)?]) => {
        impl Section for $type {
            const FIELDS: &'static [&'static str] = &[$($field),*];
            fn unknown_fields(&self) -> &UnknownFields {
                &self.unknown
            }
        }
    };
}

/// Fusebox plugin configuration: the JSON document given to the plugin as its Envoy
/// `configuration` (a `google.protobuf.StringValue`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields, title = "Fusebox plugin configuration")]
pub struct ConfigSpec {
    /// Correlation-ID handling. Applies to every request, whether or not a policy matches.
    pub correlation: Option<Checked<CorrelationSpec>>,
    /// The per-request JSON log line.
    pub log: Option<Checked<LogSpec>>,
    /// Named resilience policies. A name is 1 to 64 characters from `A-Z a-z 0-9 _ -`;
    /// `none` is reserved for requests without a policy.
    pub policies: Option<Checked<BTreeMap<String, Checked<PolicySpec>>>>,
    /// Envoy route name → policy name. The route's metadata
    /// (`filter_metadata.fusebox.policy`) takes precedence over this map.
    pub routes: Option<Checked<BTreeMap<String, Checked<String>>>>,
    /// Policy for requests whose route names none, neither in its metadata nor in `routes`.
    /// Absent: such requests get no policy (correlation IDs still apply).
    pub default_policy: Option<Checked<String>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(
    ConfigSpec,
    ["correlation", "log", "policies", "routes", "default_policy"]
);

/// Which requests get a JSON line in Envoy's log.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LogSpec {
    /// `all` (default): one line per request. `decisions`: only requests where Fusebox decided
    /// something (a rejection or a `would_…`, an ID replaced or not generated, a caller deadline
    /// ignored, a breaker failure) or that went wrong (no response, status 500 and above). A log
    /// line costs Envoy more CPU than all of Fusebox's decisions together (see the README's
    /// performance section); stats count every request either way.
    #[schemars(extend("default" = "all"))]
    pub requests: Option<Checked<RequestLogging>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(LogSpec, ["requests"]);

/// Which requests are logged; see [`LogSpec::requests`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestLogging {
    /// Every request.
    #[default]
    All,
    /// Requests where Fusebox decided something or that went wrong.
    Decisions,
}

/// How correlation IDs are validated, generated and propagated.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CorrelationSpec {
    /// Request header carrying the correlation ID (case-insensitive). Default: `x-request-id`.
    #[schemars(extend("default" = "x-request-id"))]
    pub header: Option<Checked<String>>,
    /// Format of generated IDs. Default: `uuid_v7`.
    #[schemars(extend("default" = "uuid_v7"))]
    pub generate: Option<Checked<IdFormat>>,
    /// Keep a valid incoming ID. `false` replaces every incoming ID (for edges facing untrusted
    /// clients). Default: `true`.
    #[schemars(extend("default" = true))]
    pub trust_incoming: Option<Checked<bool>>,
    /// Longest incoming ID kept, in bytes; longer ones are replaced. 36 (a UUID) to 8192.
    /// Default: 128.
    #[schemars(extend("default" = 128), range(min = 36, max = 8192))]
    pub max_length: Option<Checked<u32>>,
    /// Send the ID back to the client in the response header of the same name. Default: `true`.
    #[schemars(extend("default" = true))]
    pub echo_in_response: Option<Checked<bool>>,
    /// Ensure every request carries a valid W3C `traceparent`: a missing or invalid one is
    /// replaced by a fresh one (and `tracestate` dropped); a valid one is kept. Default: `true`.
    #[schemars(extend("default" = true))]
    pub traceparent: Option<Checked<bool>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(
    CorrelationSpec,
    [
        "header",
        "generate",
        "trust_incoming",
        "max_length",
        "echo_in_response",
        "traceparent"
    ]
);

/// Format of generated correlation IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdFormat {
    /// RFC 9562 UUID version 7: a millisecond timestamp then 74 random bits, so IDs sort by
    /// creation time (useful in log stores).
    UuidV7,
    /// RFC 9562 UUID version 4: 122 random bits. Pick this when a tracer samples on the ID's
    /// leading hex digits, which in a v7 ID are the timestamp.
    UuidV4,
}

/// One named policy: the resilience rules for the routes that select it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PolicySpec {
    /// `enforce` (default) applies every decision. `dry_run` computes, counts and logs every
    /// decision as `would_…` but lets every request through unchanged: how a new policy is
    /// rolled out safely.
    #[schemars(extend("default" = "enforce"))]
    pub mode: Option<Checked<Mode>>,
    /// Timeout budget for the route. Absent: no budget.
    pub budget: Option<Checked<BudgetSpec>>,
    /// Circuit breaker. Absent: no breaker.
    pub breaker: Option<Checked<BreakerSpec>>,
    /// Token-bucket load shedding. Absent: no shedding.
    pub shed: Option<Checked<ShedSpec>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(PolicySpec, ["mode", "budget", "breaker", "shed"]);

/// Whether a policy's decisions are applied or only observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Apply decisions: rejected requests get a local reply.
    #[default]
    Enforce,
    /// Compute, count and log decisions, but let every request through.
    DryRun,
}

/// Timeout budget: the route's total deadline, shortened (never lengthened) by the caller's,
/// enforced by Envoy's router and propagated upstream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BudgetSpec {
    /// The route's total budget for one request, retries included. Required.
    #[schemars(required)]
    pub timeout: Option<Checked<ConfigDuration>>,
    /// When less than this is left, answer 504 at once instead of calling the upstream.
    /// Default: `5ms`.
    #[schemars(extend("default" = "5ms"))]
    pub min_remaining: Option<Checked<ConfigDuration>>,
    /// Shorten the budget to the deadline the caller sent. Default: `true`.
    #[schemars(extend("default" = true))]
    pub caller_deadline: Option<Checked<bool>>,
    /// Headers read for the caller's deadline; the shortest valid one wins. `grpc-timeout` is
    /// read in gRPC's format (`100m`, `2S`), any other header as whole milliseconds.
    /// Default: `["grpc-timeout", "x-envoy-expected-rq-timeout-ms"]`.
    #[schemars(extend("default" = ["grpc-timeout", "x-envoy-expected-rq-timeout-ms"]))]
    pub caller_deadline_headers: Option<Checked<Vec<String>>>,
    /// Retries, limited to what fits in the remaining budget. Absent: no retries are added.
    pub retries: Option<Checked<RetriesSpec>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(
    BudgetSpec,
    [
        "timeout",
        "min_remaining",
        "caller_deadline",
        "caller_deadline_headers",
        "retries"
    ]
);

/// Retries within the budget: Envoy's router retries, with as many attempts as fit.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetriesSpec {
    /// Most retries per request (1 to 10); fewer when fewer fit in the remaining budget.
    #[schemars(required, range(min = 1, max = 10))]
    pub max: Option<Checked<u32>>,
    /// Timeout of each attempt; must be shorter than `timeout`. Required.
    #[schemars(required)]
    pub per_try_timeout: Option<Checked<ConfigDuration>>,
    /// Envoy retry conditions (`x-envoy-retry-on`), comma-separated.
    /// Default: `connect-failure,refused-stream,reset-before-request` (only requests the
    /// upstream application never saw, so safe for non-idempotent requests).
    #[schemars(extend("default" = "connect-failure,refused-stream,reset-before-request"))]
    pub retry_on: Option<Checked<String>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(RetriesSpec, ["max", "per_try_timeout", "retry_on"]);

/// Circuit breaker, shared by every Envoy worker. At least one trip condition is required:
/// `consecutive_failures`, `failure_rate`, or `slow_call` with `slow_call_rate`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BreakerSpec {
    /// `route` (default): one breaker for the policy. `cluster`: one per upstream cluster.
    #[schemars(extend("default" = "route"))]
    pub scope: Option<Checked<BreakerScope>>,
    /// Open after this many failures in a row.
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<Checked<u32>>,
    /// Open when at least this fraction, in (0, 1], of the calls in `window` failed.
    pub failure_rate: Option<Checked<f64>>,
    /// Calls needed in `window` before a rate can open the breaker. Default: 10.
    #[schemars(extend("default" = 10), range(min = 1))]
    pub minimum_requests: Option<Checked<u32>>,
    /// Length of the sliding window for rates (10 buckets). Default: `10s`.
    #[schemars(extend("default" = "10s"))]
    pub window: Option<Checked<ConfigDuration>>,
    /// A call slower than this is a slow call.
    pub slow_call: Option<Checked<ConfigDuration>>,
    /// Open when at least this fraction, in (0, 1], of the calls in `window` were slow.
    pub slow_call_rate: Option<Checked<f64>>,
    /// How long the breaker stays open before letting probes through. Default: `5s`.
    #[schemars(extend("default" = "5s"))]
    pub open_for: Option<Checked<ConfigDuration>>,
    /// Ceiling of the exponential backoff when a probe fails again (open time doubles each
    /// time). Absent: no backoff.
    pub max_open_for: Option<Checked<ConfigDuration>>,
    /// Probes admitted in half-open across all workers; that many successes close the
    /// breaker. Default: 1.
    #[schemars(extend("default" = 1), range(min = 1, max = 100))]
    pub half_open_requests: Option<Checked<u32>>,
    /// Response statuses that count as failures. Default: 500, 502, 503, 504. Envoy's upstream
    /// timeout, reset, connection failure and overflow always count.
    #[schemars(extend("default" = [500, 502, 503, 504]))]
    pub failure_statuses: Option<Checked<Vec<u16>>>,
    /// The reply while open.
    pub fallback: Option<Checked<FallbackSpec>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(
    BreakerSpec,
    [
        "scope",
        "consecutive_failures",
        "failure_rate",
        "minimum_requests",
        "window",
        "slow_call",
        "slow_call_rate",
        "open_for",
        "max_open_for",
        "half_open_requests",
        "failure_statuses",
        "fallback"
    ]
);

/// What one breaker covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerScope {
    /// One breaker for every request of the policy.
    #[default]
    Route,
    /// One breaker per upstream cluster the policy's requests go to.
    Cluster,
}

/// The local reply sent while a breaker is open.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FallbackSpec {
    /// HTTP status, 200 to 599. Default: 503.
    #[schemars(extend("default" = 503), range(min = 200, max = 599))]
    pub status: Option<Checked<u16>>,
    /// Response body (at most 4096 bytes). Default: a short text.
    pub body: Option<Checked<String>>,
    /// Extra response headers.
    pub headers: Option<Checked<BTreeMap<String, String>>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(FallbackSpec, ["status", "body", "headers"]);

/// Token-bucket load shedding, criticality-aware, with an optional concurrency bulkhead. The
/// buckets live in shared data: the limit holds for the whole Envoy process.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ShedSpec {
    /// Tokens added per second (> 0): the sustained rate. Required.
    #[schemars(required)]
    pub rate: Option<Checked<f64>>,
    /// Bucket size (>= 1): the burst allowed after a quiet period. Required.
    #[schemars(required, range(min = 1))]
    pub burst: Option<Checked<u32>>,
    /// `header:<name>`: one bucket per value of that header (e.g. per tenant), in at most
    /// `max_keys` slots; requests without the header share one bucket. Absent: one bucket.
    pub key: Option<Checked<String>>,
    /// Most keyed buckets (1 to 4096). Default: 64.
    #[schemars(extend("default" = 64), range(min = 1, max = 4096))]
    pub max_keys: Option<Checked<u32>>,
    /// Header carrying the request's criticality: `critical`, `normal` or `sheddable`.
    /// Absent: every request has `default_priority`.
    pub priority_header: Option<Checked<String>>,
    /// Peers whose priority header is trusted, as CIDR ranges (`10.0.0.0/8`, `::1/128`),
    /// matched against the request's downstream address as Envoy sees it (`source.address`).
    /// A request from any other peer may lower its priority below `default_priority`, never
    /// raise it. Only with `priority_header`. Absent: every peer's priority header is trusted;
    /// set it wherever clients could claim `critical` for themselves.
    pub trust_priority_from: Option<Checked<Vec<String>>>,
    /// Criticality of requests without a (valid) priority header. Default: `normal`.
    #[schemars(extend("default" = "normal"))]
    pub default_priority: Option<Checked<Priority>>,
    /// Fractions of `burst` kept back for more critical work. Only with `priority_header`:
    /// without one every request is of one class and uses the whole bucket.
    pub reserve: Option<Checked<ReserveSpec>>,
    /// Status of the shed reply (400 to 599). Default: 429.
    #[schemars(extend("default" = 429), range(min = 400, max = 599))]
    pub status: Option<Checked<u16>>,
    /// Add IETF `RateLimit` / `RateLimit-Policy` headers to responses. Default: `false`.
    #[schemars(extend("default" = false))]
    pub rate_limit_headers: Option<Checked<bool>>,
    /// Bulkhead: most requests of the policy in flight across all workers; over it, a
    /// local 503. Absent: no bulkhead.
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<Checked<u32>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(
    ShedSpec,
    [
        "rate",
        "burst",
        "key",
        "max_keys",
        "priority_header",
        "trust_priority_from",
        "default_priority",
        "reserve",
        "status",
        "rate_limit_headers",
        "max_in_flight"
    ]
);

/// How much a request matters when capacity is short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served while any token remains.
    Critical,
    /// Served while more than the critical reserve remains.
    #[default]
    Normal,
    /// Served only while more than the normal reserve remains: shed first.
    Sheddable,
}

/// Fractions of `burst` held back for more critical work: sheddable work needs more than
/// `normal` of the bucket, normal work more than `critical`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReserveSpec {
    /// Kept for critical work, in [0, 1). Default: 0.2.
    #[schemars(extend("default" = 0.2))]
    pub critical: Option<Checked<f64>>,
    /// Kept for normal and critical work, in [critical, 1). Default: 0.5.
    #[schemars(extend("default" = 0.5))]
    pub normal: Option<Checked<f64>>,
    #[serde(flatten)]
    #[schemars(skip)]
    #[allow(missing_docs)]
    pub unknown: UnknownFields,
}
section!(ReserveSpec, ["critical", "normal"]);

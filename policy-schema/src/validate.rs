//! From what the operator wrote ([`ConfigSpec`]) to what the plugin runs ([`Config`]).
//!
//! Validation walks the whole document and collects every problem with its JSON path before
//! giving up, so one Envoy restart shows the operator everything there is to fix.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::checked::Checked;
use crate::config::{
    BreakerConfig, BudgetConfig, Config, CorrelationConfig, DeadlineFormat, DeadlineHeader,
    Fallback, IpRange, Policy, PolicyId, RetryConfig, ShedConfig, GENERATED_ID_LEN, MAX_ID_LENGTH,
    NO_POLICY,
};
use crate::duration::ConfigDuration;
use crate::error::{ConfigError, ConfigErrors, JsonPath};
use crate::limits::{
    shorten, MAX_DEADLINE_HEADERS, MAX_FAILURE_STATUSES, MAX_FALLBACK_HEADERS, MAX_POLICIES,
    MAX_QUOTED_LEN, MAX_ROUTES, MAX_TOTAL_SHED_KEYS, MAX_TRUSTED_RANGES,
};
use crate::spec::{
    BreakerSpec, BudgetSpec, ConfigSpec, CorrelationSpec, FallbackSpec, PolicySpec, RequestLogging,
    RetriesSpec, Section, ShedSpec,
};

/// Errors that get a "did you mean" suggestion; later ones do without, so that a document
/// full of misspellings cannot make validation quadratic.
const MAX_SUGGESTIONS: usize = 20;

/// Longest policy name: it becomes part of stat names.
pub const MAX_POLICY_NAME_LEN: usize = 64;

/// Default `budget.min_remaining`.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_millis(5);

/// Default `budget.caller_deadline_headers`: gRPC callers and previous Envoy hops.
pub const DEFAULT_DEADLINE_HEADERS: [&str; 2] = ["grpc-timeout", "x-envoy-expected-rq-timeout-ms"];

/// Most retries a policy may ask for: more is a retry storm, not resilience.
pub const MAX_RETRIES: u32 = 10;

/// Default `budget.retries.retry_on`: only failures where the upstream application never saw
/// the request, so retrying is safe whatever the method.
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,reset-before-request";

/// Every `x-envoy-retry-on` condition Envoy 1.40 knows.
pub const ENVOY_RETRY_ON: [&str; 11] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// Every `x-envoy-retry-grpc-on` condition Envoy 1.40 knows.
pub const ENVOY_RETRY_GRPC_ON: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Validates a parsed document into a [`Config`], or returns every problem found.
pub fn validate(spec: &ConfigSpec) -> Result<Config, ConfigErrors> {
    let mut v = Validator::default();
    let root = JsonPath::root();
    v.unknown_fields(&root, spec);

    let correlation = match v.field(&root.key("correlation"), &spec.correlation) {
        Some(correlation) => v.correlation(&root.key("correlation"), correlation),
        None => CorrelationConfig::default(),
    };

    let log = match v.field(&root.key("log"), &spec.log) {
        Some(log) => {
            v.unknown_fields(&root.key("log"), log);
            v.field(&root.key("log").key("requests"), &log.requests)
                .copied()
                .unwrap_or_default()
        }
        None => RequestLogging::default(),
    };

    let mut policies = Vec::new();
    let mut policy_ids = HashMap::new();
    let policies_path = root.key("policies");
    let empty = BTreeMap::new();
    let policy_specs = v.field(&policies_path, &spec.policies).unwrap_or(&empty);
    let too_many_policies = policy_specs.len() > MAX_POLICIES;
    if too_many_policies {
        v.error(
            &policies_path,
            format!(
                "{} policies; at most {MAX_POLICIES} (each defines about 40 Envoy stats on every worker)",
                policy_specs.len()
            ),
        );
    }
    for (name, policy) in policy_specs
        .iter()
        .take(if too_many_policies { 0 } else { usize::MAX })
    {
        let path = policies_path.key(name);
        v.policy_name(&path, name);
        let policy = match policy {
            Checked::Valid(policy) => v.policy(&path, name, policy),
            Checked::Invalid(message) => {
                v.error(&path, message);
                continue;
            }
        };
        let id = PolicyId(u32::try_from(policies.len()).unwrap_or(u32::MAX));
        policy_ids.insert(name.clone(), id);
        policies.push(policy);
    }
    let shed_keys: u64 = policies
        .iter()
        .filter_map(|policy| policy.shed.as_ref())
        .filter(|shed| shed.key_header.is_some())
        .map(|shed| u64::from(shed.max_keys))
        .sum();
    if shed_keys > MAX_TOTAL_SHED_KEYS {
        v.error(
            &policies_path,
            format!(
                "the keyed shed policies have {shed_keys} buckets (max_keys) in all; at most \
                 {MAX_TOTAL_SHED_KEYS} (every bucket is shared data Envoy never frees)"
            ),
        );
    }
    // Names of policies that failed validation still exist for the purpose of references, so
    // a bad policy does not also produce a misleading "unknown policy" error at every use.
    let known = |name: &str| policy_specs.contains_key(name);

    let mut routes = HashMap::new();
    let routes_path = root.key("routes");
    if let Some(route_specs) = v.field(&routes_path, &spec.routes) {
        if route_specs.len() > MAX_ROUTES {
            v.error(
                &routes_path,
                format!(
                    "{} routes; at most {MAX_ROUTES} (select policies through route metadata instead)",
                    route_specs.len()
                ),
            );
        }
        for (route, policy) in route_specs.iter().take(if route_specs.len() > MAX_ROUTES {
            0
        } else {
            usize::MAX
        }) {
            let path = routes_path.key(route);
            if route.is_empty() {
                v.error(&path, "route name must not be empty");
            }
            match policy {
                Checked::Valid(name) if known(name) => {
                    if let Some(id) = policy_ids.get(name) {
                        routes.insert(route.clone(), *id);
                    }
                }
                Checked::Valid(name) => v.unknown_policy(&path, name, policy_specs),
                Checked::Invalid(message) => v.error(&path, message),
            }
        }
    }

    let default_path = root.key("default_policy");
    let default_policy = match v.field(&default_path, &spec.default_policy) {
        Some(name) if known(name) => policy_ids.get(name.as_str()).copied(),
        Some(name) => {
            v.unknown_policy(&default_path, name, policy_specs);
            None
        }
        None => None,
    };

    if v.errors.is_empty() {
        Ok(Config {
            correlation,
            log,
            policies,
            policy_ids,
            routes,
            default_policy,
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
}

impl Validator {
    fn error(&mut self, path: &JsonPath, message: impl Into<String>) {
        let message = message.into();
        self.errors.push(ConfigError {
            path: path.as_str().to_owned(),
            // serde's messages quote the offending value, which may be huge.
            message: shorten(&message, 4 * MAX_QUOTED_LEN).into_owned(),
        });
    }

    /// The value of an optional field, reporting it if it has the wrong type.
    fn field<'a, T>(&mut self, path: &JsonPath, field: &'a Option<Checked<T>>) -> Option<&'a T> {
        match field {
            Some(Checked::Valid(value)) => Some(value),
            Some(Checked::Invalid(message)) => {
                self.error(path, message);
                None
            }
            None => None,
        }
    }

    /// The value of a required field, reporting it if it is missing (with `hint`) or has the
    /// wrong type.
    fn required<'a, T>(
        &mut self,
        path: &JsonPath,
        field: &'a Option<Checked<T>>,
        hint: &str,
    ) -> Option<&'a T> {
        if field.is_none() {
            self.error(path, format!("required: {hint}"));
        }
        self.field(path, field)
    }

    fn unknown_fields<S: Section>(&mut self, path: &JsonPath, section: &S) {
        for name in section.unknown_fields().keys() {
            let message = match closest(name, S::FIELDS) {
                Some(known) => format!("unknown field; did you mean `{known}`?"),
                None if S::FIELDS.is_empty() => {
                    "unknown field; this section has no fields yet".to_owned()
                }
                None => format!("unknown field; expected one of: {}", S::FIELDS.join(", ")),
            };
            self.error(&path.key(name), message);
        }
    }

    fn unknown_policy<T>(&mut self, path: &JsonPath, name: &str, policies: &BTreeMap<String, T>) {
        let names: Vec<&str> = policies.keys().map(String::as_str).collect();
        // Suggestions cost an edit distance per defined policy: only for the first few errors.
        let suggestion = if self.errors.len() < MAX_SUGGESTIONS {
            closest(name, &names)
        } else {
            None
        };
        let name = shorten(name, 64);
        let message = match suggestion {
            Some(known) => format!("unknown policy `{name}`; did you mean `{known}`?"),
            None if names.is_empty() => format!("unknown policy `{name}`: no policies are defined"),
            None if names.len() > 10 => format!(
                "unknown policy `{name}`; defined: {}, … ({} in all)",
                names
                    .iter()
                    .take(10)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
                names.len()
            ),
            None => format!("unknown policy `{name}`; defined: {}", names.join(", ")),
        };
        self.error(path, message);
    }

    fn policy_name(&mut self, path: &JsonPath, name: &str) {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if name.is_empty() || name.len() > MAX_POLICY_NAME_LEN || !name.bytes().all(allowed) {
            self.error(
                path,
                format!("policy name must be 1 to {MAX_POLICY_NAME_LEN} characters from A-Z a-z 0-9 _ - (it becomes part of stat names)"),
            );
        } else if name == NO_POLICY {
            self.error(
                path,
                format!("the policy name `{NO_POLICY}` is reserved for requests without a policy"),
            );
        }
    }

    fn correlation(&mut self, path: &JsonPath, spec: &CorrelationSpec) -> CorrelationConfig {
        self.unknown_fields(path, spec);
        let defaults = CorrelationConfig::default();
        let header = match self.field(&path.key("header"), &spec.header) {
            Some(header) => {
                let header = header.to_ascii_lowercase();
                if let Err(message) = check_id_header(&header) {
                    self.error(&path.key("header"), message);
                }
                header
            }
            None => defaults.header,
        };
        let max_length = match self.field(&path.key("max_length"), &spec.max_length) {
            Some(&length) => {
                let length = length as usize;
                if !(GENERATED_ID_LEN..=MAX_ID_LENGTH).contains(&length) {
                    self.error(
                        &path.key("max_length"),
                        format!("must be in [{GENERATED_ID_LEN}, {MAX_ID_LENGTH}] (a generated ID is {GENERATED_ID_LEN} bytes)"),
                    );
                }
                length
            }
            None => defaults.max_length,
        };
        CorrelationConfig {
            header,
            generate: self
                .field(&path.key("generate"), &spec.generate)
                .copied()
                .unwrap_or(defaults.generate),
            trust_incoming: self
                .field(&path.key("trust_incoming"), &spec.trust_incoming)
                .copied()
                .unwrap_or(defaults.trust_incoming),
            max_length,
            echo_in_response: self
                .field(&path.key("echo_in_response"), &spec.echo_in_response)
                .copied()
                .unwrap_or(defaults.echo_in_response),
            traceparent: self
                .field(&path.key("traceparent"), &spec.traceparent)
                .copied()
                .unwrap_or(defaults.traceparent),
        }
    }

    fn policy(&mut self, path: &JsonPath, name: &str, spec: &PolicySpec) -> Policy {
        self.unknown_fields(path, spec);
        let mode = self
            .field(&path.key("mode"), &spec.mode)
            .copied()
            .unwrap_or_default();
        let budget = self
            .field(&path.key("budget"), &spec.budget)
            .map(|budget| self.budget(&path.key("budget"), budget));
        let breaker = self
            .field(&path.key("breaker"), &spec.breaker)
            .map(|breaker| self.breaker(&path.key("breaker"), breaker));
        let shed = self
            .field(&path.key("shed"), &spec.shed)
            .map(|shed| self.shed(&path.key("shed"), shed));
        Policy {
            name: name.to_owned(),
            mode,
            budget,
            breaker,
            shed,
        }
    }

    fn budget(&mut self, path: &JsonPath, spec: &BudgetSpec) -> BudgetConfig {
        self.unknown_fields(path, spec);
        let timeout_path = path.key("timeout");
        let timeout = match self.required(
            &timeout_path,
            &spec.timeout,
            "the route's total budget, e.g. \"2s\"",
        ) {
            Some(timeout) if timeout.0 < Duration::from_millis(1) => {
                self.error(
                    &timeout_path,
                    "must be at least 1ms (Envoy enforces timeouts in whole milliseconds)",
                );
                Duration::ZERO
            }
            Some(timeout) => timeout.0,
            None => Duration::ZERO,
        };
        let min_remaining = self
            .field(&path.key("min_remaining"), &spec.min_remaining)
            .map_or(DEFAULT_MIN_REMAINING, |d| d.0);
        if timeout > Duration::ZERO && min_remaining >= timeout {
            self.error(
                &path.key("min_remaining"),
                "must be shorter than timeout, or no request could ever proceed",
            );
        }
        let honor_caller = self
            .field(&path.key("caller_deadline"), &spec.caller_deadline)
            .copied()
            .unwrap_or(true);
        let headers_path = path.key("caller_deadline_headers");
        let names: Vec<String> = match self.field(&headers_path, &spec.caller_deadline_headers) {
            Some(names) => names.iter().map(|name| name.to_ascii_lowercase()).collect(),
            None => DEFAULT_DEADLINE_HEADERS
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
        };
        if names.len() > MAX_DEADLINE_HEADERS {
            self.error(
                &headers_path,
                format!("at most {MAX_DEADLINE_HEADERS} headers (each is read on every request)"),
            );
        }
        let mut caller_deadline_headers = Vec::new();
        for (index, name) in names.into_iter().enumerate() {
            if !is_header_name(&name) {
                self.error(
                    &headers_path.index(index),
                    "must be an HTTP header name: 1 to 128 token characters",
                );
            }
            let format = if name == "grpc-timeout" {
                DeadlineFormat::GrpcTimeout
            } else {
                DeadlineFormat::Milliseconds
            };
            if honor_caller {
                caller_deadline_headers.push(DeadlineHeader { name, format });
            }
        }
        let retries = self
            .field(&path.key("retries"), &spec.retries)
            .map(|retries| self.retries(&path.key("retries"), retries, timeout));
        BudgetConfig {
            timeout,
            min_remaining,
            caller_deadline_headers,
            retries,
        }
    }

    fn retries(&mut self, path: &JsonPath, spec: &RetriesSpec, timeout: Duration) -> RetryConfig {
        self.unknown_fields(path, spec);
        let max = match self.required(&path.key("max"), &spec.max, "the most retries per request") {
            Some(&max) => {
                if !(1..=MAX_RETRIES).contains(&max) {
                    self.error(&path.key("max"), format!("must be in [1, {MAX_RETRIES}]"));
                }
                max
            }
            None => 0,
        };
        let per_try_path = path.key("per_try_timeout");
        let per_try_timeout = match self.required(
            &per_try_path,
            &spec.per_try_timeout,
            "the timeout of each attempt, e.g. \"200ms\"",
        ) {
            Some(per_try) => {
                if per_try.0 < Duration::from_millis(1) {
                    self.error(&per_try_path, "must be at least 1ms");
                } else if timeout > Duration::ZERO && per_try.0 >= timeout {
                    self.error(
                        &per_try_path,
                        "must be shorter than the budget's timeout, or no retry could ever fit",
                    );
                }
                per_try.0
            }
            None => Duration::ZERO,
        };
        let retry_on = self
            .field(&path.key("retry_on"), &spec.retry_on)
            .map_or(DEFAULT_RETRY_ON, String::as_str);
        let (mut http, mut grpc) = (Vec::new(), Vec::new());
        for condition in retry_on.split(',').map(str::trim) {
            if ENVOY_RETRY_ON.contains(&condition) {
                http.push(condition);
            } else if ENVOY_RETRY_GRPC_ON.contains(&condition) {
                grpc.push(condition);
            } else {
                let known: Vec<&str> = ENVOY_RETRY_ON
                    .iter()
                    .chain(&ENVOY_RETRY_GRPC_ON)
                    .copied()
                    .collect();
                self.error(
                    &path.key("retry_on"),
                    format!(
                        "`{condition}` is not an Envoy retry condition; known: {}",
                        known.join(", ")
                    ),
                );
            }
        }
        RetryConfig {
            max,
            per_try_timeout,
            retry_on: http.join(","),
            retry_grpc_on: grpc.join(","),
        }
    }

    fn fraction(&mut self, path: &JsonPath, field: &Option<Checked<f64>>) -> Option<f64> {
        let value = *self.field(path, field)?;
        if value > 0.0 && value <= 1.0 {
            Some(value)
        } else {
            self.error(path, "must be in (0, 1]");
            None
        }
    }

    fn duration_at_least(
        &mut self,
        path: &JsonPath,
        field: &Option<Checked<ConfigDuration>>,
        min: Duration,
    ) -> Option<Duration> {
        let value = self.field(path, field)?.0;
        if value < min {
            self.error(path, format!("must be at least {}ms", min.as_millis()));
        }
        Some(value)
    }

    fn breaker(&mut self, path: &JsonPath, spec: &BreakerSpec) -> BreakerConfig {
        self.unknown_fields(path, spec);
        let consecutive_failures = self
            .field(
                &path.key("consecutive_failures"),
                &spec.consecutive_failures,
            )
            .copied();
        if consecutive_failures == Some(0) {
            self.error(&path.key("consecutive_failures"), "must be at least 1");
        }
        let failure_rate = self.fraction(&path.key("failure_rate"), &spec.failure_rate);
        let slow_call = self.duration_at_least(
            &path.key("slow_call"),
            &spec.slow_call,
            Duration::from_millis(1),
        );
        let slow_call_rate = self.fraction(&path.key("slow_call_rate"), &spec.slow_call_rate);
        let slow_call = match (slow_call, slow_call_rate) {
            (Some(slow), Some(rate)) => Some((slow, rate)),
            (Some(_), None) if spec.slow_call_rate.is_none() => {
                self.error(&path.key("slow_call_rate"), "required with slow_call");
                None
            }
            (None, Some(_)) if spec.slow_call.is_none() => {
                self.error(&path.key("slow_call"), "required with slow_call_rate");
                None
            }
            _ => None,
        };
        if spec.consecutive_failures.is_none()
            && spec.failure_rate.is_none()
            && spec.slow_call.is_none()
        {
            self.error(path, "needs a trip condition: consecutive_failures, failure_rate, or slow_call with slow_call_rate");
        }
        let minimum_requests = self
            .field(&path.key("minimum_requests"), &spec.minimum_requests)
            .copied()
            .unwrap_or(10);
        if minimum_requests == 0 {
            self.error(&path.key("minimum_requests"), "must be at least 1");
        }
        let window = self
            .duration_at_least(&path.key("window"), &spec.window, Duration::from_millis(10))
            .unwrap_or(Duration::from_secs(10));
        let open_for = self
            .duration_at_least(
                &path.key("open_for"),
                &spec.open_for,
                Duration::from_millis(1),
            )
            .unwrap_or(Duration::from_secs(5));
        let max_open_for = match self.field(&path.key("max_open_for"), &spec.max_open_for) {
            Some(max) if max.0 < open_for => {
                self.error(&path.key("max_open_for"), "must be at least open_for");
                open_for
            }
            Some(max) => max.0,
            None => open_for,
        };
        let half_open_requests = self
            .field(&path.key("half_open_requests"), &spec.half_open_requests)
            .copied()
            .unwrap_or(1);
        if !(1..=100).contains(&half_open_requests) {
            self.error(&path.key("half_open_requests"), "must be in [1, 100]");
        }
        let failure_statuses =
            match self.field(&path.key("failure_statuses"), &spec.failure_statuses) {
                Some(statuses) => {
                    if statuses.len() > MAX_FAILURE_STATUSES {
                        self.error(
                            &path.key("failure_statuses"),
                            format!("at most {MAX_FAILURE_STATUSES} statuses"),
                        );
                    }
                    for (index, status) in statuses.iter().enumerate() {
                        if !(100..=599).contains(status) {
                            self.error(
                                &path.key("failure_statuses").index(index),
                                "must be an HTTP status, 100 to 599",
                            );
                        }
                    }
                    statuses.clone()
                }
                None => vec![500, 502, 503, 504],
            };
        let fallback = match self.field(&path.key("fallback"), &spec.fallback) {
            Some(fallback) => self.fallback(&path.key("fallback"), fallback),
            None => default_fallback(),
        };
        BreakerConfig {
            scope: self
                .field(&path.key("scope"), &spec.scope)
                .copied()
                .unwrap_or_default(),
            consecutive_failures,
            failure_rate,
            minimum_requests,
            window,
            slow_call,
            open_for,
            max_open_for,
            half_open_requests,
            failure_statuses,
            fallback,
        }
    }

    fn fallback(&mut self, path: &JsonPath, spec: &FallbackSpec) -> Fallback {
        self.unknown_fields(path, spec);
        let defaults = default_fallback();
        let status = self
            .field(&path.key("status"), &spec.status)
            .copied()
            .unwrap_or(defaults.status);
        if !(200..=599).contains(&status) {
            self.error(&path.key("status"), "must be in [200, 599]");
        }
        let body = self
            .field(&path.key("body"), &spec.body)
            .cloned()
            .unwrap_or(defaults.body);
        if body.len() > 4096 {
            self.error(&path.key("body"), "must be at most 4096 bytes");
        }
        let mut headers = Vec::new();
        if let Some(specified) = self.field(&path.key("headers"), &spec.headers) {
            if specified.len() > MAX_FALLBACK_HEADERS {
                self.error(
                    &path.key("headers"),
                    format!("at most {MAX_FALLBACK_HEADERS} headers"),
                );
            }
            for (name, value) in specified {
                let name = name.to_ascii_lowercase();
                let header_path = path.key("headers").key(&name);
                if !is_header_name(&name) || name.starts_with(':') {
                    self.error(&header_path, "must be an HTTP header name");
                } else if [
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "x-fusebox-decision",
                    "retry-after",
                ]
                .contains(&name.as_str())
                {
                    self.error(
                        &header_path,
                        "is set by Fusebox or Envoy and cannot be overridden",
                    );
                }
                if !value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
                {
                    self.error(&header_path, "value must be printable ASCII");
                }
                headers.push((name, value.clone()));
            }
        }
        Fallback {
            status,
            body,
            headers,
        }
    }

    fn shed(&mut self, path: &JsonPath, spec: &ShedSpec) -> ShedConfig {
        self.unknown_fields(path, spec);
        let rate = match self.required(&path.key("rate"), &spec.rate, "tokens per second, e.g. 100")
        {
            Some(&rate) if rate > 0.0 && rate.is_finite() && rate <= 1e9 => rate,
            Some(_) => {
                self.error(
                    &path.key("rate"),
                    "must be a number of tokens per second in (0, 1e9]",
                );
                1.0
            }
            None => 1.0,
        };
        let burst =
            match self.required(&path.key("burst"), &spec.burst, "the bucket size, e.g. 200") {
                Some(&burst) if burst >= 1 => burst,
                Some(_) => {
                    self.error(&path.key("burst"), "must be at least 1");
                    1
                }
                None => 1,
            };
        let key_header = self.field(&path.key("key"), &spec.key).and_then(|key| {
            match key.strip_prefix("header:").map(str::to_ascii_lowercase) {
                Some(name) if is_header_name(&name) => Some(name),
                _ => {
                    self.error(
                        &path.key("key"),
                        "must be `header:<name>`, e.g. `header:x-tenant`",
                    );
                    None
                }
            }
        });
        let max_keys = self
            .field(&path.key("max_keys"), &spec.max_keys)
            .copied()
            .unwrap_or(64);
        if !(1..=4096).contains(&max_keys) {
            self.error(
                &path.key("max_keys"),
                "must be in [1, 4096] (every key is shared data that is never freed)",
            );
        }
        let priority_header = self
            .field(&path.key("priority_header"), &spec.priority_header)
            .map(|name| {
                let name = name.to_ascii_lowercase();
                if !is_header_name(&name) {
                    self.error(&path.key("priority_header"), "must be an HTTP header name");
                }
                name
            });
        let trust_path = path.key("trust_priority_from");
        let trust_priority_from = match self.field(&trust_path, &spec.trust_priority_from) {
            Some(ranges) => {
                if spec.priority_header.is_none() {
                    self.error(
                        &trust_path,
                        "only meaningful with priority_header, which it decides whom to trust for",
                    );
                }
                if ranges.len() > MAX_TRUSTED_RANGES {
                    self.error(&trust_path, format!("at most {MAX_TRUSTED_RANGES} ranges"));
                }
                let mut parsed = Vec::new();
                for (index, range) in ranges.iter().enumerate() {
                    match IpRange::parse(range) {
                        Ok(range) => parsed.push(range),
                        Err(message) => self.error(&trust_path.index(index), message),
                    }
                }
                Some(parsed)
            }
            None => None,
        };
        let (mut reserve_critical, mut reserve_normal) = (0.2, 0.5);
        if let Some(reserve) = self.field(&path.key("reserve"), &spec.reserve) {
            let reserve_path = path.key("reserve");
            self.unknown_fields(&reserve_path, reserve);
            if let Some(&critical) = self.field(&reserve_path.key("critical"), &reserve.critical) {
                reserve_critical = critical;
            }
            if let Some(&normal) = self.field(&reserve_path.key("normal"), &reserve.normal) {
                reserve_normal = normal;
            }
            if !(0.0..1.0).contains(&reserve_critical) {
                self.error(&reserve_path.key("critical"), "must be in [0, 1)");
            }
            if !(0.0..1.0).contains(&reserve_normal) || reserve_normal < reserve_critical {
                self.error(&reserve_path.key("normal"), "must be in [critical, 1)");
            }
        }
        let status = self
            .field(&path.key("status"), &spec.status)
            .copied()
            .unwrap_or(429);
        if !(400..=599).contains(&status) {
            self.error(&path.key("status"), "must be in [400, 599]");
        }
        let max_in_flight = self
            .field(&path.key("max_in_flight"), &spec.max_in_flight)
            .copied();
        if max_in_flight == Some(0) {
            self.error(&path.key("max_in_flight"), "must be at least 1");
        }
        ShedConfig {
            rate,
            burst,
            key_header,
            max_keys,
            priority_header,
            default_priority: self
                .field(&path.key("default_priority"), &spec.default_priority)
                .copied()
                .unwrap_or_default(),
            reserve_critical,
            reserve_normal,
            status,
            rate_limit_headers: self
                .field(&path.key("rate_limit_headers"), &spec.rate_limit_headers)
                .copied()
                .unwrap_or(false),
            max_in_flight,
            trust_priority_from,
        }
    }
}

fn default_fallback() -> Fallback {
    Fallback {
        status: 503,
        body: "circuit breaker open: the upstream is failing and is being given time to recover\n"
            .to_owned(),
        headers: Vec::new(),
    }
}

/// Headers that cannot carry a correlation ID: framing and hop-by-hop headers that proxies
/// rewrite or drop, and the trace-context headers Fusebox manages separately.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "traceparent",
    "tracestate",
];

/// An RFC 9110 token of reasonable length: what Envoy accepts as a header name.
fn is_header_name(name: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty() && name.len() <= 128 && name.bytes().all(token)
}

fn check_id_header(name: &str) -> Result<(), String> {
    if !is_header_name(name) {
        return Err("must be an HTTP header name: 1 to 128 token characters".to_owned());
    }
    if RESERVED_HEADERS.contains(&name) {
        return Err(format!("`{name}` cannot carry a correlation ID"));
    }
    if name.starts_with("x-envoy-") {
        return Err("Envoy strips x-envoy-* headers from external requests, so the ID would never arrive; pick another name".to_owned());
    }
    Ok(())
}

/// The known name closest to a misspelt one, if it is close enough to be what was meant.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let within = |candidate: &str| 2.max(candidate.len() / 4);
    known
        .iter()
        // The distance is at least the difference in length: skip what cannot be close, so a
        // megabyte-long name costs nothing.
        .filter(|candidate| name.len().abs_diff(candidate.len()) <= within(candidate))
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= within(candidate))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let deletion = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insertion = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("trust_incomming", "trust_incoming"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("mode", "mode"), 0);
        assert_eq!(
            closest("polices", &["policies", "routes"]),
            Some("policies")
        );
        assert_eq!(closest("zzzzzz", &["policies", "routes"]), None);
    }

    #[test]
    fn id_header_must_be_a_usable_token() {
        assert!(check_id_header("x-correlation-id").is_ok());
        for bad in [
            "",
            "x id",
            "x:id",
            "traceparent",
            "host",
            "x-envoy-request-id",
            "é",
        ] {
            assert!(check_id_header(bad).is_err(), "{bad:?}");
        }
    }
}

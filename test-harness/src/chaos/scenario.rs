//! What a scenario file says, read and checked before anything starts: a scenario that cannot
//! be judged (a hypothesis without a threshold, a fault on an unknown upstream) is refused with
//! the field that is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fusebox_policy_schema::ConfigDuration;
use serde::Deserialize;

use super::topology::Topology;
use crate::upstream::Fault;

/// A scenario as written in its TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    description: String,
    /// The topology file, relative to the scenario file.
    topology: PathBuf,
    /// How much shorter every time of the scenario is in the short profile (CI).
    #[serde(default = "default_short_scale")]
    short_scale: f64,
    load: Load,
    #[serde(default)]
    faults: Vec<FaultSpec>,
    #[serde(default)]
    hypotheses: Vec<HypothesisSpec>,
    #[serde(default)]
    stop_when: Vec<StopSpec>,
}

fn default_short_scale() -> f64 {
    0.4
}

/// Criticality classes, as Fusebox's shedding knows them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Must keep working.
    Critical,
    /// Ordinary traffic.
    Normal,
    /// Shed first.
    Sheddable,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 3] = [Class::Critical, Class::Normal, Class::Sheddable];

    /// The header value.
    pub fn name(self) -> &'static str {
        match self {
            Class::Critical => "critical",
            Class::Normal => "normal",
            Class::Sheddable => "sheddable",
        }
    }
}

/// The offered load: an open-loop generator at a fixed arrival rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// The request path (it selects the Envoy route, hence the policy).
    pub path: String,
    /// Arrivals per second, whatever the answers.
    pub rate: f64,
    /// How long the load runs.
    pub duration: ConfigDuration,
    /// The client gives up on a request after this.
    #[serde(default = "default_client_timeout")]
    pub client_timeout: ConfigDuration,
    /// The header carrying the class; absent: no class is sent.
    #[serde(default)]
    pub priority_header: Option<String>,
    /// Share of requests per class (normalised); absent: all normal.
    #[serde(default)]
    pub priorities: BTreeMap<Class, f64>,
    /// Share of requests that send a correlation ID of their own (the rest get one minted).
    #[serde(default = "default_own_ids")]
    pub own_correlation_ids: f64,
    /// A deadline some callers send.
    #[serde(default)]
    pub caller_deadline: Option<CallerDeadline>,
    /// Client-side retries (a retry storm when aggressive).
    #[serde(default)]
    pub retries: Option<ClientRetries>,
}

fn default_client_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

fn default_own_ids() -> f64 {
    0.5
}

/// A deadline header a share of the callers send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerDeadline {
    /// Header name, e.g. `grpc-timeout`.
    pub header: String,
    /// Header value, sent as is (e.g. `200m`).
    pub value: String,
    /// Share of requests that carry it.
    #[serde(default = "one")]
    pub share: f64,
}

fn one() -> f64 {
    1.0
}

/// How clients retry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRetries {
    /// Retries per request after the first attempt.
    pub max: u32,
    /// Statuses that make a client retry; a request without an answer is always retried.
    #[serde(default = "default_retry_on")]
    pub on: Vec<u16>,
    /// Pause before each retry.
    #[serde(default)]
    pub backoff: Option<ConfigDuration>,
}

fn default_retry_on() -> Vec<u16> {
    vec![500, 502, 503, 504]
}

/// The kinds of fault an upstream can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The process is killed; `until` restarts it.
    Crash,
    /// Requests are never answered.
    Hang,
    /// Every answer is `ms` late.
    Latency,
    /// A share `rate` of requests fails with `status`.
    Errors,
    /// New connections time out in the handshake, open ones go silent.
    Blackhole,
    /// New connections refused, answers on open ones `ms` late, then closed.
    SlowDrain,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    upstream: String,
    kind: FaultKind,
    from: ConfigDuration,
    until: ConfigDuration,
    #[serde(default)]
    ms: Option<u64>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    rate: Option<f64>,
}

/// A fault of the schedule, with its window in run time.
#[derive(Debug, Clone)]
pub struct ScheduledFault {
    /// The upstream it hits.
    pub upstream: String,
    /// What happens.
    pub action: FaultAction,
    /// When it starts.
    pub from: Duration,
    /// When it is cleared.
    pub until: Duration,
}

/// What a scheduled fault does to its upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAction {
    /// Kill the process, restart it at the end of the window.
    Crash,
    /// Switch a fault on through the control endpoint, off at the end of the window.
    Inject(Fault),
}

impl FaultAction {
    /// A short label for reports.
    pub fn label(&self) -> String {
        match self {
            FaultAction::Crash => "crash".to_owned(),
            FaultAction::Inject(Fault::Hang) => "hang".to_owned(),
            FaultAction::Inject(Fault::Latency { ms }) => format!("latency +{ms}ms"),
            FaultAction::Inject(Fault::Errors { status, rate }) => {
                format!("errors {status} at {:.0}%", rate * 100.0)
            }
            FaultAction::Inject(Fault::Blackhole) => "blackhole".to_owned(),
            FaultAction::Inject(Fault::SlowDrain { ms }) => format!("slow drain {ms}ms"),
        }
    }
}

/// Part of the run a hypothesis looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The whole run.
    All,
    /// Before the first fault.
    Before,
    /// From the first fault's start to the last fault's end.
    Fault,
    /// After the last fault's end.
    After,
}

/// How a request ended, from the client's point of view.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Fusebox shed it (`x-fusebox-decision: shed`).
    Shed,
    /// Fusebox's bulkhead was full.
    BulkheadFull,
    /// Fusebox's breaker was open.
    BreakerOpen,
    /// Fusebox refused it for lack of budget.
    DeadlineExceeded,
    /// Any other non-2xx answer: the upstream's own error, or Envoy's 5xx for an upstream
    /// timeout, reset or connection failure.
    UpstreamError,
    /// No answer at all: connection refused or reset, or the client's timeout.
    NoResponse,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Shed,
        Outcome::BulkheadFull,
        Outcome::BreakerOpen,
        Outcome::DeadlineExceeded,
        Outcome::UpstreamError,
        Outcome::NoResponse,
    ];

    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Shed => "shed",
            Outcome::BulkheadFull => "bulkhead_full",
            Outcome::BreakerOpen => "breaker_open",
            Outcome::DeadlineExceeded => "deadline_exceeded",
            Outcome::UpstreamError => "upstream_error",
            Outcome::NoResponse => "no_response",
        }
    }
}

/// A number, or a duration for latency thresholds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Threshold {
    Number(f64),
    Duration(ConfigDuration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CheckKind {
    SuccessRate,
    Latency,
    OutcomeShare,
    BreakerOpensWithin,
    BreakerClosesWithin,
    UpstreamRate,
    CorrelationIds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HypothesisSpec {
    check: CheckKind,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    class: Option<Class>,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default = "default_phase")]
    during: Phase,
    #[serde(default)]
    skip: Option<ConfigDuration>,
    #[serde(default)]
    percentile: Option<f64>,
    #[serde(default)]
    at_least: Option<f64>,
    #[serde(default)]
    at_most: Option<Threshold>,
    #[serde(default)]
    within: Option<ConfigDuration>,
}

fn default_phase() -> Phase {
    Phase::All
}

/// Which requests a check counts.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    /// Only this class; `None`: every class.
    pub class: Option<Class>,
    /// The part of the run.
    pub during: Phase,
    /// Ignore this much of the start of the part (time for a breaker to open, say).
    pub skip: Duration,
}

/// A checked steady-state hypothesis.
#[derive(Debug, Clone)]
pub struct Hypothesis {
    /// What it claims, in words.
    pub name: String,
    /// The requests it looks at.
    pub selection: Selection,
    /// The claim.
    pub check: Check,
}

/// The claim a hypothesis makes over the measured series.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// At least this share of requests succeeds (2xx).
    SuccessRate {
        /// Lowest share.
        at_least: f64,
    },
    /// The latency percentile of answered requests stays under a bound.
    Latency {
        /// 0–100.
        percentile: f64,
        /// Highest latency.
        at_most: Duration,
    },
    /// The share of requests ending in `outcome` stays within bounds.
    OutcomeShare {
        /// The outcome counted.
        outcome: Outcome,
        /// Lowest share.
        at_least: Option<f64>,
        /// Highest share.
        at_most: Option<f64>,
    },
    /// The first breaker-open answer comes this soon after the first fault starts.
    BreakerOpensWithin(Duration),
    /// The last breaker-open answer comes this soon after the last fault ends.
    BreakerClosesWithin(Duration),
    /// The upstream sees at most this many requests per second on average.
    UpstreamRate {
        /// Highest mean rate.
        at_most: f64,
    },
    /// Every answer carries a correlation ID: the caller's own when it sent one.
    CorrelationIds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StopMetric {
    SuccessRate,
    P99Latency,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopSpec {
    metric: StopMetric,
    #[serde(default)]
    class: Option<Class>,
    over: ConfigDuration,
    #[serde(default)]
    below: Option<f64>,
    #[serde(default)]
    above: Option<ConfigDuration>,
}

/// A stop condition: the blast radius was exceeded, abort the run.
#[derive(Debug, Clone, Copy)]
pub struct StopCondition {
    /// Only this class; `None`: every class.
    pub class: Option<Class>,
    /// The sliding window it looks at.
    pub over: Duration,
    /// The bound.
    pub limit: StopLimit,
}

/// What a stop condition bounds.
#[derive(Debug, Clone, Copy)]
pub enum StopLimit {
    /// Abort when the success share falls below this.
    SuccessRateBelow(f64),
    /// Abort when the p99 latency rises above this.
    P99Above(Duration),
}

/// How long the run lasts and how times are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Every time as written.
    Full,
    /// Times scaled by the scenario's `short_scale` (CI).
    Short,
}

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// File stem.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Where its file is.
    pub path: PathBuf,
    /// The topology it runs on.
    pub topology: Topology,
    /// The offered load (its duration already scaled by the profile).
    pub load: Load,
    /// The fault schedule (times already scaled).
    pub faults: Vec<ScheduledFault>,
    /// The steady-state hypotheses.
    pub hypotheses: Vec<Hypothesis>,
    /// When to abort early.
    pub stop_when: Vec<StopCondition>,
}

impl Scenario {
    /// Reads and checks a scenario file, with times scaled for `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&name, path, &text, profile)
    }

    /// Parses a scenario's text; `path` locates the topology file.
    pub fn parse(
        name: &str,
        path: &Path,
        text: &str,
        profile: Profile,
    ) -> Result<Scenario, String> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let topology = Topology::load(&dir.join(&file.topology))?;
        let mut errors = Vec::new();
        if !(file.short_scale > 0.0 && file.short_scale <= 1.0) {
            errors.push("short_scale: must be in (0, 1]".to_owned());
        }
        let scale = match profile {
            Profile::Full => 1.0,
            Profile::Short => file.short_scale.clamp(0.01, 1.0),
        };
        let scaled = |d: ConfigDuration| d.0.mul_f64(scale);
        let mut load = file.load.clone();
        load.duration = ConfigDuration(scaled(load.duration));
        check_load(&load, &mut errors);
        if topology.route_for(&load.path).is_none() {
            errors.push(format!(
                "load.path: {:?} matches no route of the topology",
                load.path
            ));
        }
        let faults = file
            .faults
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| {
                let at = format!("faults[{i}]");
                if !topology.upstreams.iter().any(|u| u.name == spec.upstream) {
                    errors.push(format!(
                        "{at}.upstream: no upstream named {:?} in the topology",
                        spec.upstream
                    ));
                }
                if spec.until <= spec.from {
                    errors.push(format!("{at}.until: must be after `from`"));
                }
                if spec.until.0 > file.load.duration.0 {
                    errors.push(format!("{at}.until: after the end of the load"));
                }
                let action = fault_action(spec, &at, &mut errors)?;
                Some(ScheduledFault {
                    upstream: spec.upstream.clone(),
                    action,
                    from: scaled(spec.from),
                    until: scaled(spec.until),
                })
            })
            .collect();
        let hypotheses = file
            .hypotheses
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| hypothesis(spec, &format!("hypotheses[{i}]"), &mut errors))
            .collect::<Vec<_>>();
        if hypotheses.is_empty() && errors.is_empty() {
            errors.push("hypotheses: a scenario must claim something".to_owned());
        }
        let stop_when = file
            .stop_when
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| stop_condition(spec, &format!("stop_when[{i}]"), &mut errors))
            .collect();
        if !errors.is_empty() {
            return Err(format!(
                "{} is invalid:\n  {}",
                path.display(),
                errors.join("\n  ")
            ));
        }
        Ok(Scenario {
            name: name.to_owned(),
            description: file.description.trim().to_owned(),
            path: path.to_owned(),
            topology,
            load,
            faults,
            hypotheses,
            stop_when,
        })
    }

    /// Start of the first fault and end of the last one, if there are faults.
    pub fn fault_span(&self) -> Option<(Duration, Duration)> {
        let from = self.faults.iter().map(|f| f.from).min()?;
        let until = self.faults.iter().map(|f| f.until).max()?;
        Some((from, until))
    }

    /// The run-time window a phase covers.
    pub fn window(&self, phase: Phase) -> (Duration, Duration) {
        let end = self.load.duration.0;
        match (phase, self.fault_span()) {
            (Phase::All, _) => (Duration::ZERO, end),
            (Phase::Before, Some((from, _))) => (Duration::ZERO, from),
            (Phase::Fault, Some((from, until))) => (from, until),
            (Phase::After, Some((_, until))) => (until, end),
            // Without faults, every phase is the whole run.
            (_, None) => (Duration::ZERO, end),
        }
    }
}

fn check_load(load: &Load, errors: &mut Vec<String>) {
    if !(load.rate > 0.0 && load.rate <= 5_000.0) {
        errors.push("load.rate: must be in (0, 5000] requests per second".to_owned());
    }
    if load.duration.0.is_zero() {
        errors.push("load.duration: must be positive".to_owned());
    }
    if load.client_timeout.0.is_zero() {
        errors.push("load.client_timeout: must be positive".to_owned());
    }
    if !load.path.starts_with('/') {
        errors.push("load.path: must start with `/`".to_owned());
    }
    for (class, share) in &load.priorities {
        if !(share.is_finite() && *share >= 0.0) {
            errors.push(format!("load.priorities.{}: must be ≥ 0", class.name()));
        }
    }
    if !load.priorities.is_empty() && load.priorities.values().sum::<f64>() <= 0.0 {
        errors.push("load.priorities: shares must add up to more than 0".to_owned());
    }
    if !load.priorities.is_empty() && load.priority_header.is_none() {
        errors.push("load.priority_header: needed to send `priorities`".to_owned());
    }
    if !(0.0..=1.0).contains(&load.own_correlation_ids) {
        errors.push("load.own_correlation_ids: must be in [0, 1]".to_owned());
    }
    if let Some(deadline) = &load.caller_deadline {
        if !(0.0..=1.0).contains(&deadline.share) {
            errors.push("load.caller_deadline.share: must be in [0, 1]".to_owned());
        }
    }
    if let Some(retries) = &load.retries {
        if retries.max > 10 {
            errors.push("load.retries.max: at most 10".to_owned());
        }
    }
}

fn fault_action(spec: &FaultSpec, at: &str, errors: &mut Vec<String>) -> Option<FaultAction> {
    let mut needs = |field: &str, present: bool| {
        if !present {
            errors.push(format!("{at}.{field}: required for this kind of fault"));
        }
        present
    };
    let action = match spec.kind {
        FaultKind::Crash => FaultAction::Crash,
        FaultKind::Hang => FaultAction::Inject(Fault::Hang),
        FaultKind::Blackhole => FaultAction::Inject(Fault::Blackhole),
        FaultKind::Latency => {
            needs("ms", spec.ms.is_some());
            FaultAction::Inject(Fault::Latency { ms: spec.ms? })
        }
        FaultKind::SlowDrain => {
            needs("ms", spec.ms.is_some());
            FaultAction::Inject(Fault::SlowDrain { ms: spec.ms? })
        }
        FaultKind::Errors => {
            let has_status = needs("status", spec.status.is_some());
            let has_rate = needs("rate", spec.rate.is_some());
            if !(has_status && has_rate) {
                return None;
            }
            let (status, rate) = (spec.status?, spec.rate?);
            if !(200..=599).contains(&status) {
                errors.push(format!("{at}.status: not an HTTP status"));
            }
            if !(0.0..=1.0).contains(&rate) {
                errors.push(format!("{at}.rate: must be in [0, 1]"));
            }
            FaultAction::Inject(Fault::Errors { status, rate })
        }
    };
    Some(action)
}

fn hypothesis(spec: &HypothesisSpec, at: &str, errors: &mut Vec<String>) -> Option<Hypothesis> {
    let missing = |errors: &mut Vec<String>, field: &str| {
        errors.push(format!("{at}.{field}: required by check {:?}", spec.check));
        None
    };
    let share = |value: f64, field: &str, errors: &mut Vec<String>| {
        if !(0.0..=1.0).contains(&value) {
            errors.push(format!("{at}.{field}: a share, must be in [0, 1]"));
        }
        value
    };
    let number = |threshold: Option<Threshold>, errors: &mut Vec<String>| match threshold {
        Some(Threshold::Number(n)) => Some(n),
        Some(Threshold::Duration(_)) => {
            errors.push(format!("{at}.at_most: a number here, not a duration"));
            None
        }
        None => None,
    };
    let check = match spec.check {
        CheckKind::SuccessRate => match spec.at_least {
            Some(value) => Check::SuccessRate {
                at_least: share(value, "at_least", errors),
            },
            None => return missing(errors, "at_least"),
        },
        CheckKind::Latency => {
            let Some(percentile) = spec.percentile else {
                return missing(errors, "percentile");
            };
            if !(percentile > 0.0 && percentile <= 100.0) {
                errors.push(format!("{at}.percentile: must be in (0, 100]"));
            }
            match spec.at_most {
                Some(Threshold::Duration(at_most)) => Check::Latency {
                    percentile,
                    at_most: at_most.0,
                },
                Some(Threshold::Number(_)) => {
                    errors.push(format!("{at}.at_most: a duration here, e.g. \"300ms\""));
                    return None;
                }
                None => return missing(errors, "at_most"),
            }
        }
        CheckKind::OutcomeShare => {
            let Some(outcome) = spec.outcome else {
                return missing(errors, "outcome");
            };
            let at_most = number(spec.at_most, errors).map(|v| share(v, "at_most", errors));
            let at_least = spec.at_least.map(|v| share(v, "at_least", errors));
            if at_most.is_none() && at_least.is_none() {
                return missing(errors, "at_least` or `at_most");
            }
            Check::OutcomeShare {
                outcome,
                at_least,
                at_most,
            }
        }
        CheckKind::BreakerOpensWithin => match spec.within {
            Some(within) => Check::BreakerOpensWithin(within.0),
            None => return missing(errors, "within"),
        },
        CheckKind::BreakerClosesWithin => match spec.within {
            Some(within) => Check::BreakerClosesWithin(within.0),
            None => return missing(errors, "within"),
        },
        CheckKind::UpstreamRate => match number(spec.at_most, errors) {
            Some(at_most) => Check::UpstreamRate { at_most },
            None => return missing(errors, "at_most"),
        },
        CheckKind::CorrelationIds => Check::CorrelationIds,
    };
    let selection = Selection {
        class: spec.class,
        during: spec.during,
        skip: spec.skip.map(|s| s.0).unwrap_or_default(),
    };
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| describe(&check, &selection));
    Some(Hypothesis {
        name,
        selection,
        check,
    })
}

/// A hypothesis in words, for reports when the file gives it no name.
fn describe(check: &Check, selection: &Selection) -> String {
    let who = selection
        .class
        .map(|c| format!("{} requests", c.name()))
        .unwrap_or_else(|| "requests".to_owned());
    match check {
        Check::SuccessRate { at_least } => {
            format!("≥ {:.1}% of {who} succeed", at_least * 100.0)
        }
        Check::Latency {
            percentile,
            at_most,
        } => format!("p{percentile} latency of {who} ≤ {at_most:?}"),
        Check::OutcomeShare {
            outcome,
            at_least,
            at_most,
        } => {
            let bounds = match (at_least, at_most) {
                (Some(l), Some(m)) => format!("between {:.1}% and {:.1}%", l * 100.0, m * 100.0),
                (Some(l), None) => format!("≥ {:.1}%", l * 100.0),
                (None, Some(m)) => format!("≤ {:.1}%", m * 100.0),
                (None, None) => String::new(),
            };
            format!("{bounds} of {who} end in {}", outcome.name())
        }
        Check::BreakerOpensWithin(within) => {
            format!("the breaker opens within {within:?} of the fault")
        }
        Check::BreakerClosesWithin(within) => {
            format!("the breaker closes within {within:?} of the recovery")
        }
        Check::UpstreamRate { at_most } => {
            format!("the upstream sees ≤ {at_most} requests/s")
        }
        Check::CorrelationIds => format!("every answer to {who} carries its correlation ID"),
    }
}

fn stop_condition(spec: &StopSpec, at: &str, errors: &mut Vec<String>) -> Option<StopCondition> {
    let limit = match (spec.metric, spec.below, spec.above) {
        (StopMetric::SuccessRate, Some(below), None) => StopLimit::SuccessRateBelow(below),
        (StopMetric::P99Latency, None, Some(above)) => StopLimit::P99Above(above.0),
        (StopMetric::SuccessRate, _, _) => {
            errors.push(format!("{at}: success_rate takes `below` (a share) only"));
            return None;
        }
        (StopMetric::P99Latency, _, _) => {
            errors.push(format!("{at}: p99_latency takes `above` (a duration) only"));
            return None;
        }
    };
    if spec.over.0.is_zero() {
        errors.push(format!("{at}.over: must be positive"));
    }
    Some(StopCondition {
        class: spec.class,
        over: spec.over.0,
        limit,
    })
}

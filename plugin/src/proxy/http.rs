//! One HTTP stream: correlation, then the policy's decisions on the way in; echo on the way
//! out; one log line at the end.

use std::rc::Rc;
use std::time::Duration;

use fusebox_policy_schema::{
    CorrelationConfig, Mode, Policy, Priority, RequestLogging, ShedConfig, NO_POLICY,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::breaker::{Gate, Reporter, Ticket};
use super::budget;
use super::host;
use super::log_lines;
use super::root::Runtime;
use super::shed::{ShedGate, ShedReporter};
use crate::policy::breaker::{classify, Outcome};
use crate::policy::budget::{plan, BudgetOutcome, CallerDeadline};
use crate::policy::correlation::{judge_incoming_id, mint_id, IdVerdict, ID_ENTROPY_LEN};
use crate::policy::counters::Counter;
use crate::policy::reject::{
    retry_after_secs, Reject, BREAKER_OPEN_BODY, BULKHEAD_FULL_BODY, DEADLINE_EXCEEDED_BODY,
    DECISION_HEADER, SHED_BODY,
};
use crate::policy::request_log::{duration_millis, nanos_to_millis, RequestLog, UnixTime};
use crate::policy::response_flags;
use crate::policy::selection::{select_policy, Selection};
use crate::policy::shed::priority_name;
use crate::policy::traceparent::{
    judge_traceparent, mint_traceparent, TraceparentVerdict, TRACEPARENT_ENTROPY_LEN,
};

const ROUTE_NAME: [&str; 2] = ["xds", "route_name"];
const ROUTE_POLICY: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    "fusebox",
    "policy",
];
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

pub struct FuseboxHttp {
    runtime: Option<Rc<Runtime>>,
    request: Option<RequestState>,
}

/// What the request path decided, kept for the response and the log line.
struct RequestState {
    started_nanos: u64,
    route: String,
    selection: Selection,
    /// The ID sent upstream; `None` only if one was needed and none could be generated.
    correlation_id: Option<String>,
    id_verdict: IdVerdict,
    traceparent: Option<TraceparentVerdict>,
    decision: &'static str,
    budget: Option<BudgetRecord>,
    breaker: Option<BreakerRecord>,
    shed: Option<ShedRecord>,
    /// Fusebox answered the request itself: its status says nothing about the upstream.
    local_reply: bool,
    /// The response status, once response headers passed.
    status: Option<u64>,
}

/// Shedding's view of the request.
struct ShedRecord {
    priority: Priority,
    /// The request claimed a priority its peer is not trusted with.
    priority_untrusted: bool,
    tokens_left: Option<u64>,
    /// Holds a bulkhead slot, to give back when the stream ends.
    holds_slot: bool,
}

/// The breaker's view of the request, for recording its outcome and for the log line.
struct BreakerRecord {
    /// `admitted`, `probe`, `rejected`, `unavailable`.
    gate: &'static str,
    ticket: Option<Ticket>,
    outcome: Option<Outcome>,
}

/// The budget as decided, for the log line.
struct BudgetRecord {
    remaining: Duration,
    caller: CallerDeadline,
    retries: Option<u32>,
}

impl FuseboxHttp {
    pub fn new(runtime: Option<Rc<Runtime>>) -> Self {
        FuseboxHttp {
            runtime,
            request: None,
        }
    }
}

impl Context for FuseboxHttp {}

impl HttpContext for FuseboxHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        host::snapshot_request_headers();
        let started_nanos = host::now_nanos();
        let route = host::property_string(&ROUTE_NAME).unwrap_or_default();
        let metadata_policy = runtime
            .route_metadata
            .get_or_read(&route, || host::property(&ROUTE_POLICY));
        let selection = select_policy(&runtime.config, metadata_policy.as_deref(), Some(&route));
        let policy = selection.policy.and_then(|id| runtime.config.policy(id));
        let count = |counter: Counter| runtime.metrics.increment(selection.policy, counter);
        count(Counter::Requests);
        if selection.metadata_policy_unknown {
            count(Counter::MetadataPolicyUnknown);
        }

        // The decision header is Fusebox's answer to the client: one a client sends is
        // a forgery the upstream must not act on.
        if host::request_header(DECISION_HEADER).is_some() {
            match host::remove_request_header(DECISION_HEADER) {
                Ok(()) => count(Counter::DecisionHeaderStripped),
                Err(host::HostError) => count(Counter::HostCallErrors),
            }
        }

        let correlation = &runtime.config.correlation;
        let (correlation_id, id_verdict) = correlate(correlation, started_nanos, &count);
        count(id_verdict.into());
        if correlation_id.is_none() {
            count(Counter::IdGenerationFailed);
        }
        let traceparent = correlation.traceparent.then(|| ensure_traceparent(&count));
        if let Some(verdict) = traceparent {
            count(verdict.into());
        }

        let mut state = RequestState {
            started_nanos,
            route,
            selection,
            correlation_id,
            id_verdict,
            traceparent,
            decision: "allow",
            budget: None,
            breaker: None,
            shed: None,
            local_reply: false,
            status: None,
        };
        // Cheap local refusals first: a request the budget or the breaker refuses never takes
        // a bulkhead slot or a token.
        let rejection = policy.and_then(|policy| {
            decide_budget(policy, started_nanos, &mut state, &count)
                .or_else(|| decide_breaker(&runtime, policy, started_nanos, &mut state))
                .or_else(|| decide_shed(&runtime, policy, started_nanos, &mut state))
        });

        let action = match (rejection, policy.map(|policy| policy.mode)) {
            (Some(reject), Some(Mode::Enforce)) => {
                if send_local_reply(reject, policy, correlation, &state).is_ok() {
                    count(Counter::rejected(reject));
                    state.decision = reject.decision();
                    state.local_reply = true;
                    Action::Pause
                } else {
                    // Paused without a reply, the request would hang until the client gives
                    // up: let it through instead, like every other host failure.
                    count(Counter::HostCallErrors);
                    Action::Continue
                }
            }
            (Some(reject), _) => {
                count(Counter::would_reject(reject));
                state.decision = reject.would_decision();
                Action::Continue
            }
            (None, _) => Action::Continue,
        };
        self.request = Some(state);
        host::forget_request_headers();
        action
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let (Some(runtime), Some(request)) = (&self.runtime, &mut self.request) else {
            return Action::Continue;
        };
        // Record the breaker outcome as soon as it is known, before the client sees the
        // response: a client that retries at once must meet the breaker its failure moved.
        let status = host::response_header(":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok());
        request.status = status;
        let flags = if breaker_needs_flags(runtime, request, status) {
            host::property_u64(&["response", "flags"]).unwrap_or(0)
        } else {
            0
        };
        record_breaker_outcome(runtime, request, status, flags);
        let count = |counter: Counter| runtime.metrics.increment(request.selection.policy, counter);
        let counted = |result: Result<(), host::HostError>| {
            if result.is_err() {
                count(Counter::HostCallErrors);
            }
        };
        // Only a local reply carries Fusebox's own decision header; an upstream's would claim
        // a decision Fusebox never made.
        if !request.local_reply && host::response_header(DECISION_HEADER).is_some() {
            match host::remove_response_header(DECISION_HEADER) {
                Ok(()) => count(Counter::DecisionHeaderStripped),
                Err(host::HostError) => count(Counter::HostCallErrors),
            }
        }
        let correlation = &runtime.config.correlation;
        if let (true, Some(id)) = (correlation.echo_in_response, &request.correlation_id) {
            counted(host::set_response_header(&correlation.header, id));
        }
        let policy = request
            .selection
            .policy
            .and_then(|id| runtime.config.policy(id));
        if let (
            Some(config),
            Some(ShedRecord {
                tokens_left: Some(left),
                ..
            }),
            false,
        ) = (
            policy.and_then(|p| p.shed.as_ref()),
            &request.shed,
            request.local_reply,
        ) {
            if config.rate_limit_headers {
                for (name, value) in rate_limit_headers(config, *left, None) {
                    counted(host::set_response_header(name, &value));
                }
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(runtime), Some(request)) = (&self.runtime, &mut self.request) else {
            return;
        };
        let now_nanos = host::now_nanos();
        let policy = request
            .selection
            .policy
            .and_then(|id| runtime.config.policy(id));
        // Properties are dear (see route_cache): an ordinary answer that passed through is
        // described by its status alone. Flags and details are read when something went wrong
        // (no response headers, an error status), where they say what.
        let status = request
            .status
            .or_else(|| host::property_u64(&["response", "code"]));
        let unusual = request.status.is_none_or(|status| status >= 400);
        let flags = if unusual {
            host::property_u64(&["response", "flags"])
        } else {
            None
        };
        // The bulkhead slot is given back exactly once, however the stream ended: on_log runs
        // for every stream, completed, reset, timed out or abandoned by the client.
        let holds_slot = request
            .shed
            .as_mut()
            .is_some_and(|shed| std::mem::take(&mut shed.holds_slot));
        if let (true, Some(policy_id)) = (holds_slot, request.selection.policy) {
            if let Some(Some(shed)) = runtime.shed.get(policy_id.index()) {
                ShedReporter {
                    metrics: &runtime.metrics,
                    policy_id,
                }
                .release(shed);
            }
        }
        if flags.is_some_and(response_flags::is_upstream_timeout) {
            runtime
                .metrics
                .increment(request.selection.policy, Counter::UpstreamTimeout);
        }
        // Streams that ended without response headers (the client went away, the upstream
        // reset first) are recorded here.
        record_breaker_outcome(runtime, request, status, flags.unwrap_or(0));
        let request = &*request;
        let code_details = if unusual {
            host::property_string(&["response", "code_details"])
        } else {
            None
        };
        let budget = request.budget.as_ref();
        let line = RequestLog {
            start_time: UnixTime(request.started_nanos),
            correlation_id: request.correlation_id.as_deref(),
            correlation: Some(if request.correlation_id.is_some() {
                request.id_verdict.as_str()
            } else {
                "generation_failed"
            }),
            correlation_invalid: match request.id_verdict {
                IdVerdict::Replace(reason) => Some(reason.as_str()),
                _ => None,
            },
            traceparent: request.traceparent.map(TraceparentVerdict::as_str),
            route: &request.route,
            policy: policy.map_or(NO_POLICY, |policy| policy.name.as_str()),
            policy_source: request.selection.source.as_str(),
            metadata_policy_unknown: request.selection.metadata_policy_unknown,
            mode: policy.map(|policy| match policy.mode {
                Mode::Enforce => "enforce",
                Mode::DryRun => "dry_run",
            }),
            decision: request.decision,
            remaining_ms: budget.map(|b| duration_millis(b.remaining)),
            caller_deadline_ms: budget.and_then(|b| match b.caller {
                CallerDeadline::Honored(deadline) => Some(duration_millis(deadline)),
                _ => None,
            }),
            caller_deadline_ignored: budget.and_then(|b| match b.caller {
                CallerDeadline::Ignored(defect) => Some(defect.as_str()),
                _ => None,
            }),
            retries: budget.and_then(|b| b.retries),
            breaker: request.breaker.as_ref().map(|b| b.gate),
            breaker_outcome: request
                .breaker
                .as_ref()
                .and_then(|b| b.outcome)
                .map(Outcome::as_str),
            priority: request.shed.as_ref().map(|s| priority_name(s.priority)),
            priority_untrusted: request.shed.as_ref().is_some_and(|s| s.priority_untrusted),
            tokens_left: request.shed.as_ref().and_then(|s| s.tokens_left),
            status,
            code_details: code_details.as_deref(),
            response_flags: flags.map(response_flags::describe),
            duration_ms: nanos_to_millis(now_nanos.saturating_sub(request.started_nanos)),
        };
        if runtime.config.log == RequestLogging::All || line.is_noteworthy() {
            log_lines::hold(line.to_json());
        }
    }
}

/// Plans the request against the policy's budget; applies the plan in enforce mode. Returns
/// the rejection, if the budget refuses the request.
fn decide_budget(
    policy: &Policy,
    now_nanos: u64,
    state: &mut RequestState,
    count: &dyn Fn(Counter),
) -> Option<Reject> {
    let config = policy.budget.as_ref()?;
    let caller = budget::caller_deadline(config);
    match caller {
        CallerDeadline::Honored(_) => count(Counter::CallerDeadlineHonored),
        CallerDeadline::Ignored(_) => count(Counter::CallerDeadlineIgnored),
        CallerDeadline::Absent => {}
    }
    let elapsed = budget::elapsed_since_request_start(now_nanos);
    let plan = plan(config, caller, elapsed);
    let mut record = BudgetRecord {
        remaining: plan.remaining,
        caller,
        retries: None,
    };
    let rejection = match plan.outcome {
        BudgetOutcome::DeadlineExceeded => Some(Reject::DeadlineExceeded),
        BudgetOutcome::Proceed {
            upstream_timeout_ms,
            retries,
        } => {
            record.retries = retries.map(|retries| retries.retries);
            if retries.is_some_and(|retries| retries.retries < retries.max) {
                count(Counter::RetriesLimited);
            }
            if policy.mode == Mode::Enforce {
                let retries = retries.zip(config.retries.as_ref());
                let failed = budget::apply(plan.remaining, upstream_timeout_ms, retries);
                for _ in 0..failed {
                    count(Counter::HostCallErrors);
                }
                count(Counter::BudgetApplied);
            }
            None
        }
    };
    state.budget = Some(record);
    rejection
}

/// Whether classifying this response needs Envoy's response flags: only a pending breaker
/// outcome whose status alone does not already say "failure". The flags that count (upstream
/// timeout, reset, connection failure, overflow) only come with Envoy's own 5xx replies.
fn breaker_needs_flags(runtime: &Runtime, request: &RequestState, status: Option<u64>) -> bool {
    let pending = request
        .breaker
        .as_ref()
        .is_some_and(|record| record.ticket.is_some());
    let config = request
        .selection
        .policy
        .and_then(|id| runtime.config.policy(id))
        .and_then(|policy| policy.breaker.as_ref());
    match (pending, config, status) {
        (true, Some(config), Some(status)) => {
            status >= 500
                && !config
                    .failure_statuses
                    .iter()
                    .any(|failure| u64::from(*failure) == status)
        }
        (true, Some(_), None) => true,
        _ => false,
    }
}

/// Records how an admitted request ended, once.
fn record_breaker_outcome(
    runtime: &Runtime,
    request: &mut RequestState,
    status: Option<u64>,
    flags: u64,
) {
    let (Some(policy_id), Some(record)) = (request.selection.policy, request.breaker.as_mut())
    else {
        return;
    };
    let Some(policy) = runtime.config.policy(policy_id) else {
        return;
    };
    let (Some(config), Some(ticket)) = (policy.breaker.as_ref(), record.ticket.take()) else {
        return;
    };
    let now_nanos = host::now_nanos();
    let outcome = if request.local_reply {
        // Refused by a later Fusebox check (shedding): the upstream was never asked.
        Outcome::Abandoned
    } else {
        classify(config, status, flags)
    };
    let elapsed = Duration::from_nanos(now_nanos.saturating_sub(request.started_nanos));
    let slow = config
        .slow_call
        .is_some_and(|(threshold, _)| elapsed > threshold);
    let reporter = Reporter {
        metrics: &runtime.metrics,
        policy,
        policy_id,
        correlation_id: request.correlation_id.as_deref(),
    };
    reporter.record(config, &ticket, now_nanos / 1_000_000, outcome, slow);
    record.outcome = Some(outcome);
}

/// Asks the policy's breaker whether the request may call the upstream.
fn decide_breaker(
    runtime: &Runtime,
    policy: &Policy,
    now_nanos: u64,
    state: &mut RequestState,
) -> Option<Reject> {
    let config = policy.breaker.as_ref()?;
    let policy_id = state.selection.policy?;
    let home = runtime.breakers.get(policy_id.index())?;
    let reporter = Reporter {
        metrics: &runtime.metrics,
        policy,
        policy_id,
        correlation_id: state.correlation_id.as_deref(),
    };
    let record = |gate, ticket| BreakerRecord {
        gate,
        ticket,
        outcome: None,
    };
    let (record, rejection) = match reporter.admit(config, home, now_nanos / 1_000_000) {
        Gate::Admitted(ticket) => {
            let gate = if ticket.probe { "probe" } else { "admitted" };
            (record(gate, Some(ticket)), None)
        }
        Gate::Rejected { retry_after_ms } => (
            record("rejected", None),
            Some(Reject::BreakerOpen {
                retry_after_secs: retry_after_secs(retry_after_ms),
            }),
        ),
        Gate::Unavailable => (record("unavailable", None), None),
    };
    state.breaker = Some(record);
    rejection
}

/// Asks the policy's bulkhead and token bucket whether the request may proceed.
fn decide_shed(
    runtime: &Runtime,
    policy: &Policy,
    now_nanos: u64,
    state: &mut RequestState,
) -> Option<Reject> {
    let config = policy.shed.as_ref()?;
    let policy_id = state.selection.policy?;
    let shed_runtime = runtime.shed.get(policy_id.index())?.as_ref()?;
    let reporter = ShedReporter {
        metrics: &runtime.metrics,
        policy_id,
    };
    let (priority, priority_untrusted) = reporter.priority(config);
    // Refused claims are counted (priority_untrusted) and flagged in the request's log line.
    let mut record = ShedRecord {
        priority,
        priority_untrusted,
        tokens_left: None,
        holds_slot: false,
    };
    let rejection = match reporter.admit(config, shed_runtime, priority, now_nanos / 1_000) {
        ShedGate::Admitted {
            tokens_left,
            holds_slot,
        } => {
            runtime
                .metrics
                .increment(Some(policy_id), Counter::shed_admitted(priority));
            record.tokens_left = tokens_left;
            record.holds_slot = holds_slot;
            None
        }
        ShedGate::Shed { retry_after_ms } => Some(Reject::Shed {
            retry_after_secs: retry_after_secs(retry_after_ms),
            priority,
        }),
        ShedGate::BulkheadFull => Some(Reject::BulkheadFull),
    };
    state.shed = Some(record);
    rejection
}

/// IETF `RateLimit-Policy` and `RateLimit` header values for a bucket with `left` whole
/// tokens: the quota is the burst over the time the bucket takes to fill, `t` the seconds
/// until it is full again (or, for a refused request, until its next token).
fn rate_limit_headers(
    config: &ShedConfig,
    left: u64,
    retry_after_secs: Option<u64>,
) -> [(&'static str, String); 2] {
    let window = (f64::from(config.burst) / config.rate).ceil().max(1.0) as u64;
    let missing = u64::from(config.burst).saturating_sub(left) as f64;
    let reset = retry_after_secs.unwrap_or((missing / config.rate).ceil() as u64);
    [
        (
            "ratelimit-policy",
            format!("\"fusebox\";q={};w={window}", config.burst),
        ),
        ("ratelimit", format!("\"fusebox\";r={left};t={reset}")),
    ]
}

/// Answers the request locally: the upstream is never called. An error means Envoy took no
/// reply and the request must go on.
fn send_local_reply(
    reject: Reject,
    policy: Option<&Policy>,
    correlation: &CorrelationConfig,
    state: &RequestState,
) -> Result<(), host::HostError> {
    let retry_after;
    let rate_limit;
    let mut headers: Vec<(&str, &str)> = vec![(DECISION_HEADER, reject.decision())];
    let breaker = policy.and_then(|p| p.breaker.as_ref());
    let shed = policy.and_then(|p| p.shed.as_ref());
    let (status, body) = match reject {
        Reject::BreakerOpen { retry_after_secs } => {
            retry_after = retry_after_secs.to_string();
            headers.push(("retry-after", &retry_after));
            match breaker {
                Some(breaker) => {
                    let fallback = &breaker.fallback;
                    headers.extend(
                        fallback
                            .headers
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.as_str())),
                    );
                    (u32::from(fallback.status), fallback.body.as_str())
                }
                None => (503, BREAKER_OPEN_BODY),
            }
        }
        Reject::Shed {
            retry_after_secs, ..
        } => {
            retry_after = retry_after_secs.to_string();
            headers.push(("retry-after", &retry_after));
            if let Some(config) = shed.filter(|config| config.rate_limit_headers) {
                rate_limit = rate_limit_headers(config, 0, Some(retry_after_secs));
                headers.extend(rate_limit.iter().map(|(n, v)| (*n, v.as_str())));
            }
            (
                u32::from(shed.map_or(429, |config| config.status)),
                SHED_BODY,
            )
        }
        Reject::BulkheadFull => {
            headers.push(("retry-after", "1"));
            (503, BULKHEAD_FULL_BODY)
        }
        Reject::DeadlineExceeded => (504, DEADLINE_EXCEEDED_BODY),
    };
    if !headers.iter().any(|(name, _)| *name == "content-type") {
        headers.push(("content-type", "text/plain"));
    }
    if let (true, Some(id)) = (
        correlation.echo_in_response,
        state.correlation_id.as_deref(),
    ) {
        headers.push((correlation.header.as_str(), id));
    }
    hostcalls::send_http_response(status, headers, Some(body.as_bytes())).map_err(|_| {
        host::log(
            LogLevel::Warn,
            "cannot send a local reply; the request continues",
        );
        host::HostError
    })
}

/// Keeps, generates or replaces the correlation ID; returns the ID that goes upstream.
fn correlate(
    config: &CorrelationConfig,
    now_nanos: u64,
    count: &dyn Fn(Counter),
) -> (Option<String>, IdVerdict) {
    let incoming = host::request_header(&config.header);
    let verdict = judge_incoming_id(config, incoming.as_deref());
    if verdict == IdVerdict::Keep {
        // A kept ID is visible ASCII, hence UTF-8.
        return (incoming.and_then(|id| String::from_utf8(id).ok()), verdict);
    }
    match host::random_bytes::<ID_ENTROPY_LEN>() {
        Some(random) => {
            let id = mint_id(config.generate, now_nanos / 1_000_000, random);
            if host::set_request_header(&config.header, id.as_str()).is_err() {
                count(Counter::HostCallErrors);
                // The upstream did not get the minted ID; it must not get the refused one.
                if incoming.is_some() && host::remove_request_header(&config.header).is_err() {
                    count(Counter::HostCallErrors);
                }
                return (None, verdict);
            }
            (Some(id.as_str().to_owned()), verdict)
        }
        None => {
            // Never invent an ID from the clock or a counter; never forward one we refused.
            if incoming.is_some() && host::remove_request_header(&config.header).is_err() {
                count(Counter::HostCallErrors);
            }
            (None, verdict)
        }
    }
}

/// Keeps a valid `traceparent`, otherwise sets a fresh one and drops `tracestate`.
fn ensure_traceparent(count: &dyn Fn(Counter)) -> TraceparentVerdict {
    let verdict = judge_traceparent(host::request_header(TRACEPARENT).as_deref());
    if verdict != TraceparentVerdict::Keep {
        let written = match host::random_bytes::<TRACEPARENT_ENTROPY_LEN>() {
            Some(random) => {
                host::set_request_header(TRACEPARENT, mint_traceparent(random).as_str())
            }
            None => host::remove_request_header(TRACEPARENT),
        };
        if written.is_err() {
            count(Counter::HostCallErrors);
        }
        if host::remove_request_header(TRACESTATE).is_err() {
            count(Counter::HostCallErrors);
        }
    }
    verdict
}

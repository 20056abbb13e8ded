//! Breaker glue: finds the request's breaker in shared data, asks its gate, records the
//! outcome, and reports every transition as a stat and a log line.

use std::rc::Rc;

use fusebox_policy_schema::{BreakerConfig, BreakerScope, Policy, PolicyId};

use super::host;
use super::log_lines;
use super::metrics::Metrics;
use super::shared::HostStore;
use crate::policy::breaker::codec::breaker_key;
use crate::policy::breaker::{Admission, BreakerState, Call, Outcome, Transition};
use crate::policy::counters::Counter;
use crate::policy::request_log::{BreakerTransitionLog, UnixTime};
use crate::policy::shared::{update, UpdateError};

/// What a request holds after the gate let it through: where to record its outcome.
pub struct Ticket {
    pub key: Rc<str>,
    pub scope: Rc<str>,
    pub probe: bool,
}

/// The gate's answer for one request.
pub enum Gate {
    /// Go ahead; record the outcome on the ticket.
    Admitted(Ticket),
    /// Refused: probes resume in this many milliseconds.
    Rejected { retry_after_ms: u64 },
    /// The breaker's state could not be read or written: the request goes through unrecorded.
    Unavailable,
}

/// Where a policy's breaker lives in shared data, worked out at configure time: its
/// configuration's fingerprint, part of every key, and a route-scoped breaker's whole key, so
/// that a request formats no key (a cluster-scoped breaker's depends on the request's cluster).
#[derive(Default)]
pub struct BreakerHome {
    fingerprint: u64,
    /// `Some` for a route-scoped breaker.
    route: Option<(Rc<str>, Rc<str>)>,
}

impl BreakerHome {
    /// The policy's breaker home; creates a route-scoped breaker's key, so no two workers
    /// ever race to insert it (an insert is not compare-and-swap).
    pub fn initialise(policy: &Policy) -> BreakerHome {
        let Some(config) = policy.breaker.as_ref() else {
            return BreakerHome::default();
        };
        let fingerprint = config.fingerprint();
        let route = (config.scope == BreakerScope::Route).then(|| {
            let key = breaker_key(&policy.name, fingerprint, "route");
            let _ = update(&HostStore, &key, |_: &mut BreakerState| ());
            (Rc::from(key), Rc::from("route"))
        });
        BreakerHome { fingerprint, route }
    }

    /// The request's breaker key and scope.
    fn key_and_scope(&self, policy: &Policy, config: &BreakerConfig) -> (Rc<str>, Rc<str>) {
        match (&self.route, config.scope) {
            (Some((key, scope)), BreakerScope::Route) => (Rc::clone(key), Rc::clone(scope)),
            _ => {
                let scope = match config.scope {
                    BreakerScope::Route => "route".to_owned(),
                    BreakerScope::Cluster => {
                        host::property_string(&["xds", "cluster_name"]).unwrap_or_default()
                    }
                };
                let key = breaker_key(&policy.name, self.fingerprint, &scope);
                (Rc::from(key), Rc::from(scope))
            }
        }
    }
}

/// Context for reporting on one policy's breaker.
pub struct Reporter<'a> {
    pub metrics: &'a Metrics,
    pub policy: &'a Policy,
    pub policy_id: PolicyId,
    pub correlation_id: Option<&'a str>,
}

impl Reporter<'_> {
    fn count(&self, counter: Counter) {
        self.metrics.increment(Some(self.policy_id), counter);
    }

    fn transition(
        &self,
        scope: &str,
        transition: Transition,
        state_after: &BreakerState,
        config: &BreakerConfig,
        now_ms: u64,
    ) {
        self.count(Counter::transition(transition));
        let (name, reason, open_for_ms) = match transition {
            Transition::Opened(reason) => (
                "opened",
                Some(reason.as_str()),
                Some(state_after.open_duration_ms(config)),
            ),
            Transition::HalfOpened => ("half_opened", None, None),
            Transition::Closed => ("closed", None, None),
        };
        self.metrics
            .set_breaker_state(self.policy_id, state_after.phase.gauge());
        let line = BreakerTransitionLog {
            time: UnixTime(now_ms.saturating_mul(1_000_000)),
            event: "breaker_transition",
            policy: &self.policy.name,
            scope,
            transition: name,
            reason,
            open_for_ms,
            correlation_id: self.correlation_id,
        };
        log_lines::hold(line.to_json());
    }

    /// Asks the policy's breaker whether the request may call the upstream.
    pub fn admit(&self, config: &BreakerConfig, home: &BreakerHome, now_ms: u64) -> Gate {
        let (key, scope) = home.key_and_scope(self.policy, config);
        let (result, stats) = update(&HostStore, &key, |state: &mut BreakerState| {
            let (admission, transition) = state.admit(config, now_ms);
            (admission, transition.map(|t| (t, state.clone())))
        });
        self.metrics.shared_update(self.policy_id, stats);
        let Ok((admission, transition)) = result else {
            self.count(Counter::BreakerStateErrors);
            return Gate::Unavailable;
        };
        if let Some((transition, state)) = transition {
            self.transition(&scope, transition, &state, config, now_ms);
        }
        match admission {
            Admission::Allowed => Gate::Admitted(Ticket {
                key,
                scope,
                probe: false,
            }),
            Admission::Probe => Gate::Admitted(Ticket {
                key,
                scope,
                probe: true,
            }),
            Admission::Rejected { retry_after_ms } => Gate::Rejected { retry_after_ms },
        }
    }

    /// Records how an admitted request ended.
    pub fn record(
        &self,
        config: &BreakerConfig,
        ticket: &Ticket,
        now_ms: u64,
        outcome: Outcome,
        slow: bool,
    ) {
        if outcome == Outcome::Failure {
            self.count(Counter::BreakerFailures);
        }
        let call = Call {
            outcome,
            slow,
            probe: ticket.probe,
        };
        let (result, stats) = update(&HostStore, &ticket.key, |state: &mut BreakerState| {
            state
                .record(config, now_ms, call)
                .map(|t| (t, state.clone()))
        });
        self.metrics.shared_update(self.policy_id, stats);
        match result {
            Ok(Some((transition, state))) => {
                self.transition(&ticket.scope, transition, &state, config, now_ms)
            }
            Ok(None) => {}
            Err(UpdateError::Contended | UpdateError::Host) => {
                self.count(Counter::BreakerStateErrors)
            }
        }
    }
}

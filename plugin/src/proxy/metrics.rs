//! Envoy stats for every [`Counter`], per policy: `fusebox.<policy>.<counter>`, defined once at
//! configure time (Envoy puts them under `wasmcustom.`; the shipped `stats_config` turns the
//! policy segment into a Prometheus label).
//!
//! Every stat update is a host call, and a request makes several, so updates are gathered in
//! the VM and handed to Envoy on the root context's tick ([`FLUSH_PERIOD`]): stats trail the
//! traffic by at most that long, and the request path makes no stat host calls at all.

use std::cell::RefCell;
use std::time::Duration;

use fusebox_policy_schema::{Config, PolicyId, NO_POLICY};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};

use super::host;
use crate::policy::counters::Counter;
use crate::policy::shared::UpdateStats;

const COUNTERS: usize = Counter::ALL.len();

/// How often gathered stat updates are handed to Envoy.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// Metric ids, one row per policy plus a last row for requests without a policy.
pub struct Metrics {
    rows: Vec<[Option<u32>; COUNTERS]>,
    /// `fusebox.<policy>.breaker_state` gauges (0 closed, 1 open, 2 half-open), per policy.
    breaker_state: Vec<Option<u32>>,
    /// `fusebox.<policy>.shed_tokens` gauges: whole tokens left in the policy's bucket.
    shed_tokens: Vec<Option<u32>>,
    /// `fusebox.<policy>.in_flight` gauges: requests holding a bulkhead slot.
    in_flight: Vec<Option<u32>>,
    /// Counter increments not yet handed to Envoy, per row.
    pending: RefCell<Vec<[u64; COUNTERS]>>,
    /// Gauge values not yet handed to Envoy, by metric id (the latest value wins).
    pending_gauges: RefCell<Vec<(u32, u64)>>,
}

fn define(metric_type: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(metric_type, name) {
        Ok(id) => Some(id),
        Err(status) => {
            host::log(
                LogLevel::Warn,
                &format!("cannot define stat {name}: {status:?}"),
            );
            None
        }
    }
}

impl Metrics {
    /// Defines every counter for every policy of `config`.
    pub fn define(config: &Config) -> Metrics {
        let names = config
            .policies()
            .iter()
            .map(|policy| policy.name.as_str())
            .chain(std::iter::once(NO_POLICY));
        let rows: Vec<[Option<u32>; COUNTERS]> = names
            .map(|policy| {
                Counter::ALL.map(|counter| {
                    define(
                        MetricType::Counter,
                        &format!("fusebox.{policy}.{}", counter.name()),
                    )
                })
            })
            .collect();
        let breaker_state = config
            .policies()
            .iter()
            .map(|policy| {
                policy.breaker.as_ref().and_then(|_| {
                    define(
                        MetricType::Gauge,
                        &format!("fusebox.{}.breaker_state", policy.name),
                    )
                })
            })
            .collect();
        let gauge = |enabled: fn(&fusebox_policy_schema::Policy) -> bool, name: &str| {
            config
                .policies()
                .iter()
                .map(|policy| {
                    enabled(policy)
                        .then(|| {
                            define(
                                MetricType::Gauge,
                                &format!("fusebox.{}.{name}", policy.name),
                            )
                        })
                        .flatten()
                })
                .collect::<Vec<_>>()
        };
        let shed_tokens = gauge(
            |p| p.shed.as_ref().is_some_and(|s| s.key_header.is_none()),
            "shed_tokens",
        );
        let in_flight = gauge(
            |p| p.shed.as_ref().is_some_and(|s| s.max_in_flight.is_some()),
            "in_flight",
        );
        let pending = RefCell::new(vec![[0; COUNTERS]; rows.len()]);
        Metrics {
            rows,
            breaker_state,
            shed_tokens,
            in_flight,
            pending,
            pending_gauges: RefCell::new(Vec::new()),
        }
    }

    /// Sets a policy's token gauge (process-wide: the last worker to take a token sets it).
    pub fn set_shed_tokens(&self, policy: PolicyId, value: u64) {
        self.set_gauge(&self.shed_tokens, policy, value);
    }

    /// Sets a policy's in-flight gauge.
    pub fn set_in_flight(&self, policy: PolicyId, value: u64) {
        self.set_gauge(&self.in_flight, policy, value);
    }

    /// Sets a policy's breaker-state gauge. Gauges are process-wide, so the last worker to see
    /// a transition sets the value every worker reports.
    pub fn set_breaker_state(&self, policy: PolicyId, value: u64) {
        self.set_gauge(&self.breaker_state, policy, value);
    }

    /// Counts what a shared-data update cost: lost compare-and-swap races, values reset.
    pub fn shared_update(&self, policy: PolicyId, stats: UpdateStats) {
        for _ in 0..stats.cas_retries {
            self.increment(Some(policy), Counter::SharedCasRetries);
        }
        if stats.reset {
            self.increment(Some(policy), Counter::SharedStateResets);
        }
    }

    /// Adds one to `counter` of `policy` (`None`: the no-policy row).
    pub fn increment(&self, policy: Option<PolicyId>, counter: Counter) {
        let mut pending = self.pending.borrow_mut();
        let row = match policy {
            Some(policy) => pending.get_mut(policy.index()),
            None => pending.last_mut(),
        };
        if let Some(count) = row.and_then(|row| row.get_mut(counter.index())) {
            *count += 1;
        }
    }

    fn set_gauge(&self, gauges: &[Option<u32>], policy: PolicyId, value: u64) {
        if let Some(Some(id)) = gauges.get(policy.index()) {
            let mut pending = self.pending_gauges.borrow_mut();
            match pending.iter_mut().find(|(pending_id, _)| pending_id == id) {
                Some(entry) => entry.1 = value,
                None => pending.push((*id, value)),
            }
        }
    }

    /// Hands every gathered update to Envoy. An update Envoy refuses is kept for the next
    /// flush (counters) or superseded by a later value (gauges), and reported once per flush.
    pub fn flush(&self) {
        let mut failed = 0u32;
        let mut pending = self.pending.borrow_mut();
        for (row, ids) in pending.iter_mut().zip(&self.rows) {
            for (count, id) in row.iter_mut().zip(ids) {
                if let (Some(id), true) = (id, *count > 0) {
                    let offset = i64::try_from(*count).unwrap_or(i64::MAX);
                    if hostcalls::increment_metric(*id, offset).is_err() {
                        failed += 1;
                        continue;
                    }
                }
                *count = 0;
            }
        }
        for (id, value) in self.pending_gauges.borrow_mut().drain(..) {
            if hostcalls::record_metric(id, value).is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            host::log(
                LogLevel::Warn,
                &format!("Envoy refused {failed} stat updates; counters are retried next flush"),
            );
        }
    }
}

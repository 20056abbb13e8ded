//! Shedding glue: the request's priority and key from its headers, the bulkhead and the token
//! bucket in shared data, and the gauges that show them.

use fusebox_policy_schema::{Policy, PolicyId, Priority, ShedConfig};

use super::host;
use super::metrics::Metrics;
use super::shared::HostStore;
use crate::policy::counters::Counter;
use crate::policy::shared::update;
use crate::policy::shed::slots::{self, take_from_slot, SlotTake};
use crate::policy::shed::{
    effective_priority, parse_priority, peer_address, Bucket, InFlight, Limits, Take,
};

/// What a policy's shedding needs on every request, computed once at configure time.
pub struct ShedRuntime {
    pub limits: Limits,
    /// Shared-data key prefix of the buckets: versioned, per policy and configuration.
    pub prefix: String,
    /// Shared-data key of the bulkhead count: per policy only, so a reload that changes the
    /// limit keeps counting the requests already in flight.
    pub in_flight_key: String,
}

impl ShedRuntime {
    pub fn new(policy: &Policy) -> Option<ShedRuntime> {
        let config = policy.shed.as_ref()?;
        Some(ShedRuntime {
            limits: Limits::new(config),
            prefix: format!(
                "fusebox/shed/v1/{}/{:016x}",
                policy.name,
                config.fingerprint()
            ),
            in_flight_key: format!("fusebox/in_flight/v1/{}", policy.name),
        })
    }
}

/// The outcome of shedding for one request.
pub enum ShedGate {
    /// Admitted; holds a bulkhead slot under this key, if the policy has a bulkhead.
    Admitted {
        tokens_left: Option<u64>,
        in_flight_key: Option<String>,
    },
    /// No token for this priority for this many milliseconds.
    Shed { retry_after_ms: u64 },
    /// Too many requests in flight.
    BulkheadFull,
}

/// Counts and gauges for one policy.
pub struct ShedReporter<'a> {
    pub metrics: &'a Metrics,
    pub policy_id: PolicyId,
}

impl ShedReporter<'_> {
    fn count(&self, counter: Counter) {
        self.metrics.increment(Some(self.policy_id), counter);
    }

    /// The request's criticality: its priority header if the policy reads one, it is valid and
    /// its peer is trusted with it (or it only lowers the priority), otherwise the policy's
    /// default. The flag says a claim was refused (and counted).
    pub fn priority(&self, config: &ShedConfig) -> (Priority, bool) {
        let claimed = config
            .priority_header
            .as_deref()
            .and_then(host::request_header)
            .and_then(|value| parse_priority(&value));
        // The peer is only looked up when it could matter.
        let peer = match (claimed, &config.trust_priority_from) {
            (Some(_), Some(_)) => host::property(&["source", "address"])
                .as_deref()
                .and_then(peer_address),
            _ => None,
        };
        let (priority, refused) = effective_priority(config, claimed, peer);
        if refused {
            self.count(Counter::PriorityUntrusted);
        }
        (priority, refused)
    }

    /// Bulkhead first (a request refused for concurrency must not burn a token), then the
    /// bucket; a bulkhead slot is given back at once if the bucket then sheds.
    pub fn admit(
        &self,
        config: &ShedConfig,
        runtime: &ShedRuntime,
        priority: Priority,
        now_us: u64,
    ) -> ShedGate {
        let in_flight_key = match config.max_in_flight {
            Some(max) => {
                let key = runtime.in_flight_key.clone();
                let (result, stats) = update(&HostStore, &key, |in_flight: &mut InFlight| {
                    (in_flight.acquire(max), in_flight.count)
                });
                self.metrics.shared_update(self.policy_id, stats);
                match result {
                    Ok((true, _)) => Some(key),
                    Ok((false, _)) => return ShedGate::BulkheadFull,
                    Err(_) => {
                        self.count(Counter::ShedStateErrors);
                        None
                    }
                }
            }
            None => None,
        };
        match self.take(config, runtime, priority, now_us) {
            Some(Take::Shed { retry_after_ms }) => {
                if let Some(key) = in_flight_key {
                    self.release(&key);
                }
                ShedGate::Shed { retry_after_ms }
            }
            Some(Take::Admitted { remaining }) => ShedGate::Admitted {
                tokens_left: Some(remaining),
                in_flight_key,
            },
            None => ShedGate::Admitted {
                tokens_left: None,
                in_flight_key,
            },
        }
    }

    /// Takes a token from the request's bucket; `None` if the bucket state was unavailable.
    fn take(
        &self,
        config: &ShedConfig,
        runtime: &ShedRuntime,
        priority: Priority,
        now_us: u64,
    ) -> Option<Take> {
        let limits = &runtime.limits;
        let plain = |name: &str| {
            let key = format!("{}/{name}", runtime.prefix);
            let (result, stats) = update(&HostStore, &key, |bucket: &mut Bucket| {
                bucket.take(limits, priority, now_us)
            });
            self.metrics.shared_update(self.policy_id, stats);
            result.ok()
        };
        let taken = match &config.key_header {
            None => {
                let taken = plain("all");
                if let Some(Take::Admitted { remaining }) = taken {
                    self.metrics.set_shed_tokens(self.policy_id, remaining);
                }
                taken
            }
            Some(header) => match host::request_header(header) {
                None => plain("unkeyed"),
                Some(value) => {
                    let owner = slots::fingerprint(&value);
                    let mut taken = None;
                    for slot in slots::candidate_slots(owner, config.max_keys) {
                        let key = format!("{}/slot/{slot}", runtime.prefix);
                        let (result, stats) = update(&HostStore, &key, |bucket: &mut Bucket| {
                            take_from_slot(bucket, owner, limits, priority, now_us)
                        });
                        self.metrics.shared_update(self.policy_id, stats);
                        match result {
                            Ok(SlotTake::Taken(take)) => {
                                taken = Some(Some(take));
                                break;
                            }
                            Ok(SlotTake::Occupied) => {}
                            Err(_) => {
                                taken = Some(None);
                                break;
                            }
                        }
                    }
                    taken.unwrap_or_else(|| {
                        self.count(Counter::ShedKeysOverflow);
                        plain("overflow")
                    })
                }
            },
        };
        if taken.is_none() {
            self.count(Counter::ShedStateErrors);
        }
        taken
    }

    /// Gives a bulkhead slot back.
    pub fn release(&self, key: &str) {
        let (result, stats) = update(&HostStore, key, |in_flight: &mut InFlight| {
            in_flight.release();
            in_flight.count
        });
        self.metrics.shared_update(self.policy_id, stats);
        match result {
            Ok(_) => {}
            Err(_) => self.count(Counter::ShedStateErrors),
        }
    }
}

//! Shedding glue: the request's priority and key from its headers, the bulkhead and the token
//! bucket in shared data, and the gauges that show them.

use std::cell::RefCell;

use fusebox_policy_schema::{Policy, PolicyId, Priority, ShedConfig};

use super::host;
use super::metrics::Metrics;
use super::shared::HostStore;
use crate::policy::counters::Counter;
use crate::policy::shared::{update, UpdateError, UpdateStats};
use crate::policy::shed::lease::{slot_batch, token_batch, SlotLease, TokenLease};
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
    /// Extra tokens this worker leases per trip to the shared (unkeyed) bucket; 0 for none.
    token_batch: u64,
    /// Bulkhead slots this worker leases per trip to the shared count.
    slot_batch: u32,
    /// This worker's leases (one VM per worker: nothing here is shared between threads).
    tokens: RefCell<TokenLease>,
    slots: RefCell<SlotLease>,
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
            token_batch: token_batch(config.burst),
            slot_batch: config.max_in_flight.map_or(1, slot_batch),
            tokens: RefCell::default(),
            slots: RefCell::default(),
        })
    }

    /// Creates the policy's shared keys at configure time: Envoy's shared data has no
    /// compare-and-swap for a key that does not exist yet, so two workers creating one on their
    /// first requests could both write it and one write would be lost (a bulkhead count short
    /// by one, a bucket refilled by a whole lease). Creating the same empty value twice is
    /// harmless; every later update is a real compare-and-swap. Tenant slots are created on
    /// first use: there can be thousands, and a lost race there costs at most one token.
    pub fn initialise(&self, config: &ShedConfig) {
        if config.max_in_flight.is_some() {
            let _ = update(&HostStore, &self.in_flight_key, |_: &mut InFlight| ());
        }
        // Keys are never freed: only the buckets this policy uses.
        let buckets: &[&str] = match config.key_header {
            None => &["all"],
            Some(_) => &["unkeyed", "overflow"],
        };
        for name in buckets {
            let key = format!("{}/{name}", self.prefix);
            let _ = update(&HostStore, &key, |_: &mut Bucket| ());
        }
    }

    /// Takes `slots` off the shared bulkhead count.
    fn release_slots(&self, slots: u32) -> (Result<(), UpdateError>, UpdateStats) {
        update(
            &HostStore,
            &self.in_flight_key,
            |in_flight: &mut InFlight| in_flight.release_many(slots),
        )
    }

    /// Gives this worker's idle bulkhead slots back to the shared count (on every tick, so
    /// no slot stays idle here for long while another worker might need it).
    pub fn return_idle_slots(&self, reporter: &ShedReporter<'_>) {
        let idle = self
            .slots
            .try_borrow_mut()
            .map(|mut slots| slots.drain_idle())
            .unwrap_or(0);
        reporter.give_back(self, idle);
    }
}

/// A runtime outlives its configuration only until its last stream ends (the streams hold
/// it): what is still leased then is idle, and goes back so a reload leaks no slot.
impl Drop for ShedRuntime {
    fn drop(&mut self) {
        let idle = self.slots.get_mut().drain_idle();
        if idle > 0 {
            let _ = self.release_slots(idle);
        }
    }
}

/// The outcome of shedding for one request.
pub enum ShedGate {
    /// Admitted; holds a bulkhead slot (to give back when the stream ends) if the policy has
    /// a bulkhead.
    Admitted {
        tokens_left: Option<u64>,
        holds_slot: bool,
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
        let holds_slot = match config.max_in_flight {
            Some(max) => match self.acquire_slot(runtime, max) {
                Some(true) => true,
                Some(false) => return ShedGate::BulkheadFull,
                None => false,
            },
            None => false,
        };
        match self.take(config, runtime, priority, now_us) {
            Some(Take::Shed { retry_after_ms }) => {
                if holds_slot {
                    self.release(runtime);
                }
                ShedGate::Shed { retry_after_ms }
            }
            Some(Take::Admitted { remaining }) => ShedGate::Admitted {
                tokens_left: Some(remaining),
                holds_slot,
            },
            None => ShedGate::Admitted {
                tokens_left: None,
                holds_slot,
            },
        }
    }

    /// A bulkhead slot: one this worker leased earlier, else a batch from the shared count.
    /// `Some(false)` when the bulkhead is full, `None` when its state is unavailable.
    fn acquire_slot(&self, runtime: &ShedRuntime, max: u32) -> Option<bool> {
        let Ok(mut slots) = runtime.slots.try_borrow_mut() else {
            self.count(Counter::ShedStateErrors);
            return None;
        };
        if slots.acquire() {
            return Some(true);
        }
        let (result, stats) = update(
            &HostStore,
            &runtime.in_flight_key,
            |in_flight: &mut InFlight| in_flight.acquire_up_to(max, runtime.slot_batch),
        );
        self.metrics.shared_update(self.policy_id, stats);
        match result {
            Ok(0) => Some(false),
            Ok(granted) => {
                slots.granted(granted);
                Some(true)
            }
            Err(_) => {
                self.count(Counter::ShedStateErrors);
                None
            }
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
        // A bucket take that also leases up to `batch` tokens (none with a batch of 0).
        let from_bucket = |name: &str, batch: u64| {
            let key = format!("{}/{name}", runtime.prefix);
            let (result, stats) = update(&HostStore, &key, |bucket: &mut Bucket| {
                bucket.take_and_lease(limits, priority, now_us, batch)
            });
            self.metrics.shared_update(self.policy_id, stats);
            result.ok()
        };
        let plain = |name: &str| from_bucket(name, 0).map(|(take, _)| take);
        // The unkeyed bucket: this worker's lease first, else the shared bucket, renewing the
        // lease when it grants one.
        let leased = || {
            let mut lease = runtime.tokens.try_borrow_mut().ok()?;
            if let Some(remaining) = lease.take(now_us) {
                return Some(Take::Admitted { remaining });
            }
            let (take, tokens) = from_bucket("all", runtime.token_batch)?;
            if let (Take::Admitted { remaining }, 1..) = (take, tokens) {
                lease.renew(tokens, remaining, now_us);
            }
            Some(take)
        };
        let taken = match &config.key_header {
            None => {
                let taken = leased();
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

    /// Gives a request's bulkhead slot back: to this worker's lease, and from there to the
    /// shared count once too many sit idle here.
    pub fn release(&self, runtime: &ShedRuntime) {
        let give_back = runtime
            .slots
            .try_borrow_mut()
            .map(|mut slots| slots.release(runtime.slot_batch))
            .unwrap_or(1);
        self.give_back(runtime, give_back);
    }

    fn give_back(&self, runtime: &ShedRuntime, slots: u32) {
        if slots == 0 {
            return;
        }
        let (result, stats) = runtime.release_slots(slots);
        self.metrics.shared_update(self.policy_id, stats);
        if result.is_err() {
            self.count(Counter::ShedStateErrors);
        }
    }
}

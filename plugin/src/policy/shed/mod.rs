//! Token-bucket load shedding, criticality-aware.
//!
//! One bucket holds at most `burst` tokens and refills at `rate` per second, lazily: the
//! refill is computed from the clock when a token is taken, so no timer runs on the request
//! path. Criticality decides how deep into the bucket a request may dig: sheddable work only
//! while more than the normal reserve is left, normal work while more than the critical
//! reserve is left, critical work while any token remains. When capacity runs short,
//! sheddable work goes first and critical work keeps a reserve.
//!
//! Tokens are counted in millionths so the bucket is exact integer arithmetic; only the refill
//! multiplies by the (fractional) rate.

pub mod lease;
pub mod slots;

use std::net::{IpAddr, SocketAddr};

use fusebox_policy_schema::{Priority, ShedConfig};

use crate::policy::shared::SharedValue;

/// Millionths of a token per token.
pub const MICRO: u64 = 1_000_000;

/// A bucket's limits, precomputed from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Tokens per second (= millionths of a token per microsecond).
    pub rate: f64,
    /// Capacity, in millionths.
    pub burst_micro: u64,
    /// Kept for critical work, in millionths.
    pub reserve_critical_micro: u64,
    /// Kept for normal and critical work, in millionths.
    pub reserve_normal_micro: u64,
}

impl Limits {
    /// The limits of a shed configuration. Reserves only exist when requests can say how
    /// critical they are: without a priority header every request is of one class, and
    /// holding tokens back from it would only make the burst smaller than configured.
    pub fn new(config: &ShedConfig) -> Limits {
        let burst_micro = u64::from(config.burst) * MICRO;
        let classes = config.priority_header.is_some();
        let fraction = |f: f64| {
            if classes {
                (burst_micro as f64 * f.clamp(0.0, 1.0)) as u64
            } else {
                0
            }
        };
        Limits {
            rate: config.rate,
            burst_micro,
            reserve_critical_micro: fraction(config.reserve_critical),
            reserve_normal_micro: fraction(config.reserve_normal),
        }
    }

    /// Tokens that must remain after a request of this priority takes one.
    pub fn floor_micro(&self, priority: Priority) -> u64 {
        match priority {
            Priority::Critical => 0,
            Priority::Normal => self.reserve_critical_micro,
            Priority::Sheddable => self.reserve_normal_micro,
        }
    }

    /// The highest floor of any priority: tokens above it are anyone's.
    pub fn top_floor_micro(&self) -> u64 {
        self.reserve_critical_micro.max(self.reserve_normal_micro)
    }

    /// Microseconds for an empty bucket to fill: a bucket idle that long is full whoever
    /// owned it, which is what makes taking over an idle keyed slot lossless.
    pub fn fill_time_us(&self) -> u64 {
        (self.burst_micro as f64 / self.rate).ceil() as u64
    }
}

/// One token bucket, as stored in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Fingerprint of the key value that owns this slot (0: unowned). Unkeyed buckets leave it 0.
    pub owner: u64,
    /// Tokens, in millionths.
    pub tokens_micro: u64,
    /// When the bucket was last refilled, in microseconds since the Unix epoch; 0: never used,
    /// which means full.
    pub last_refill_us: u64,
}

/// The result of asking a bucket for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted; this many whole tokens are left.
    Admitted {
        /// Whole tokens left.
        remaining: u64,
    },
    /// Shed; a token for this priority will be there in this many milliseconds.
    Shed {
        /// Milliseconds until a token for this priority class is available.
        retry_after_ms: u64,
    },
}

impl Bucket {
    /// Adds the tokens earned since the last refill, capped at the burst. A clock that went
    /// backwards earns nothing and re-anchors, so a step back and forth cannot mint tokens.
    pub fn refill(&mut self, limits: &Limits, now_us: u64) {
        if self.last_refill_us == 0 {
            self.tokens_micro = limits.burst_micro;
            self.last_refill_us = now_us;
            return;
        }
        let elapsed_us = now_us.saturating_sub(self.last_refill_us);
        let earned = (elapsed_us as f64 * limits.rate).min(limits.burst_micro as f64) as u64;
        self.tokens_micro = self
            .tokens_micro
            .saturating_add(earned)
            .min(limits.burst_micro);
        self.last_refill_us = now_us;
    }

    /// Takes one token for a request of `priority`, if its reserve allows.
    pub fn take(&mut self, limits: &Limits, priority: Priority, now_us: u64) -> Take {
        self.refill(limits, now_us);
        let needed = limits.floor_micro(priority) + MICRO;
        if self.tokens_micro >= needed {
            self.tokens_micro -= MICRO;
            Take::Admitted {
                remaining: self.tokens_micro / MICRO,
            }
        } else {
            let missing = (needed - self.tokens_micro) as f64;
            let retry_after_ms = (missing / limits.rate / 1_000.0).ceil() as u64;
            Take::Shed { retry_after_ms }
        }
    }

    /// Takes a token like [`Bucket::take`], and on success up to `batch` more for a worker's
    /// lease, only if the bucket stays above every priority's floor without them. Returns the
    /// take and the tokens leased.
    pub fn take_and_lease(
        &mut self,
        limits: &Limits,
        priority: Priority,
        now_us: u64,
        batch: u64,
    ) -> (Take, u64) {
        let take = self.take(limits, priority, now_us);
        let wanted = batch.saturating_mul(MICRO);
        if batch == 0
            || !matches!(take, Take::Admitted { .. })
            || self.tokens_micro < limits.top_floor_micro().saturating_add(wanted)
        {
            return (take, 0);
        }
        self.tokens_micro -= wanted;
        (
            Take::Admitted {
                remaining: self.tokens_micro / MICRO,
            },
            batch,
        )
    }

    /// Whole tokens in the bucket as of its last refill.
    pub fn whole_tokens(&self) -> u64 {
        self.tokens_micro / MICRO
    }
}

/// Layout version of [`Bucket`] in shared data.
pub const BUCKET_VERSION: u8 = 1;
const BUCKET_LEN: usize = 25;

impl SharedValue for Bucket {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&[version], rest) = bytes.split_first_chunk::<1>()?;
        if version != BUCKET_VERSION || bytes.len() != BUCKET_LEN {
            return None;
        }
        let (owner, rest) = rest.split_first_chunk::<8>()?;
        let (tokens, rest) = rest.split_first_chunk::<8>()?;
        let (last, _) = rest.split_first_chunk::<8>()?;
        Some(Bucket {
            owner: u64::from_le_bytes(*owner),
            tokens_micro: u64::from_le_bytes(*tokens),
            last_refill_us: u64::from_le_bytes(*last),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUCKET_LEN);
        out.push(BUCKET_VERSION);
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.tokens_micro.to_le_bytes());
        out.extend_from_slice(&self.last_refill_us.to_le_bytes());
        out
    }
}

/// Parses a priority header value (case-insensitive); anything else is `None`.
pub fn parse_priority(value: &[u8]) -> Option<Priority> {
    if value.eq_ignore_ascii_case(b"critical") {
        Some(Priority::Critical)
    } else if value.eq_ignore_ascii_case(b"normal") {
        Some(Priority::Normal)
    } else if value.eq_ignore_ascii_case(b"sheddable") {
        Some(Priority::Sheddable)
    } else {
        None
    }
}

/// How critical a priority is: a higher rank is served longer.
fn rank(priority: Priority) -> u8 {
    match priority {
        Priority::Sheddable => 0,
        Priority::Normal => 1,
        Priority::Critical => 2,
    }
}

/// The priority a request gets from what it claimed (`None`: no valid priority header) and
/// the peer it came from. A peer outside `trust_priority_from` may lower its priority below the
/// default, never raise it: the caller can only make its own request less important, like a
/// caller deadline can only shorten the budget. The flag says a claim was refused.
pub fn effective_priority(
    config: &ShedConfig,
    claimed: Option<Priority>,
    peer: Option<IpAddr>,
) -> (Priority, bool) {
    let Some(claimed) = claimed else {
        return (config.default_priority, false);
    };
    let trusted = match &config.trust_priority_from {
        None => true,
        Some(ranges) => peer.is_some_and(|peer| ranges.iter().any(|range| range.contains(peer))),
    };
    if trusted || rank(claimed) <= rank(config.default_priority) {
        (claimed, false)
    } else {
        (config.default_priority, true)
    }
}

/// The IP address in Envoy's `source.address` property (`10.0.0.1:5000`, `[::1]:5000`);
/// `None` for anything else (a pipe, an internal listener).
pub fn peer_address(source_address: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(source_address).ok()?;
    text.parse::<SocketAddr>()
        .map(|address| address.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
}

/// Name used in logs and stats.
pub fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "critical",
        Priority::Normal => "normal",
        Priority::Sheddable => "sheddable",
    }
}

/// The in-flight count of a bulkhead, as stored in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Requests admitted and not yet finished, across all workers.
    pub count: u32,
}

impl InFlight {
    /// Takes a slot if one is free.
    pub fn acquire(&mut self, max: u32) -> bool {
        if self.count < max {
            self.count += 1;
            true
        } else {
            false
        }
    }

    /// Gives a slot back.
    pub fn release(&mut self) {
        self.count = self.count.saturating_sub(1);
    }

    /// Takes up to `wanted` slots, as many as are free; returns how many.
    pub fn acquire_up_to(&mut self, max: u32, wanted: u32) -> u32 {
        let granted = wanted.min(max.saturating_sub(self.count));
        self.count += granted;
        granted
    }

    /// Gives back `slots` slots.
    pub fn release_many(&mut self, slots: u32) {
        self.count = self.count.saturating_sub(slots);
    }
}

impl SharedValue for InFlight {
    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [1, a, b, c, d] => Some(InFlight {
                count: u32::from_le_bytes([*a, *b, *c, *d]),
            }),
            _ => None,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![1];
        out.extend_from_slice(&self.count.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests;

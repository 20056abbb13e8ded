//! Stable fingerprints of the settings that shape shared state.
//!
//! Shared data outlives configuration reloads, so state is keyed by a fingerprint of the
//! settings it was counted under: a breaker whose thresholds change starts clean instead of
//! inheriting counts of another meaning, while a change that does not touch the state (a new
//! fallback body, say) keeps it. FNV-1a over the fields' bytes: stable across builds and
//! platforms, unlike `Debug` output or std's randomly keyed hashers.

use std::time::Duration;

use crate::config::{BreakerConfig, BreakerScope, ShedConfig};

/// An FNV-1a 64-bit hash under construction.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Mixes in raw bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Mixes in an integer.
    pub fn u64(self, value: u64) -> Self {
        self.bytes(&value.to_le_bytes())
    }

    /// Mixes in a float, by its bits.
    pub fn f64(self, value: f64) -> Self {
        self.u64(value.to_bits())
    }

    /// Mixes in a duration, in nanoseconds.
    pub fn duration(self, value: Duration) -> Self {
        self.u64(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Mixes in a string, length first so that ("ab", "c") and ("a", "bc") differ.
    pub fn str(self, value: &str) -> Self {
        self.u64(value.len() as u64).bytes(value.as_bytes())
    }

    /// Mixes in an optional value: a tag, then the value.
    pub fn option<T>(self, value: Option<T>, mix: impl FnOnce(Self, T) -> Self) -> Self {
        match value {
            Some(value) => mix(self.u64(1), value),
            None => self.u64(0),
        }
    }

    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl BreakerConfig {
    /// Fingerprint of everything that gives the breaker's counts their meaning (not the
    /// fallback reply, which can change without resetting the breaker).
    pub fn fingerprint(&self) -> u64 {
        let scope = match self.scope {
            BreakerScope::Route => 0,
            BreakerScope::Cluster => 1,
        };
        let statuses = self
            .failure_statuses
            .iter()
            .fold(Fingerprint::default(), |f, s| f.u64(u64::from(*s)));
        Fingerprint::default()
            .u64(scope)
            .option(self.consecutive_failures, |f, n| f.u64(u64::from(n)))
            .option(self.failure_rate, Fingerprint::f64)
            .u64(u64::from(self.minimum_requests))
            .duration(self.window)
            .option(self.slow_call, |f, (slow, rate)| f.duration(slow).f64(rate))
            .duration(self.open_for)
            .duration(self.max_open_for)
            .u64(u64::from(self.half_open_requests))
            .u64(statuses.finish())
            .finish()
    }
}

impl ShedConfig {
    /// Fingerprint of what the buckets' contents mean: rate, burst and keying.
    pub fn fingerprint(&self) -> u64 {
        Fingerprint::default()
            .f64(self.rate)
            .u64(u64::from(self.burst))
            .option(self.key_header.as_deref(), Fingerprint::str)
            .u64(u64::from(self.max_keys))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    fn fingerprints(breaker: &str, shed: &str) -> (u64, u64) {
        let document =
            format!(r#"{{"policies": {{"p": {{"breaker": {breaker}, "shed": {shed}}}}}}}"#);
        let config = parse(document.as_bytes()).unwrap();
        let policy = &config.policies()[0];
        (
            policy.breaker.as_ref().unwrap().fingerprint(),
            policy.shed.as_ref().unwrap().fingerprint(),
        )
    }

    #[test]
    fn state_shaping_changes_change_the_fingerprint_and_others_do_not() {
        let base = fingerprints(
            r#"{"consecutive_failures": 5}"#,
            r#"{"rate": 10, "burst": 20}"#,
        );
        assert_eq!(
            base,
            fingerprints(
                r#"{"consecutive_failures": 5}"#,
                r#"{"rate": 10, "burst": 20}"#
            )
        );
        assert_ne!(
            base.0,
            fingerprints(
                r#"{"consecutive_failures": 6}"#,
                "{\"rate\": 10, \"burst\": 20}"
            )
            .0
        );
        assert_ne!(
            base.0,
            fingerprints(
                r#"{"consecutive_failures": 5, "open_for": "1s"}"#,
                "{\"rate\": 10, \"burst\": 20}"
            )
            .0
        );
        assert_eq!(
            base.0,
            fingerprints(
                r#"{"consecutive_failures": 5, "fallback": {"body": "x"}}"#,
                "{\"rate\": 10, \"burst\": 20}"
            )
            .0,
            "a new fallback keeps the breaker's state"
        );
        assert_ne!(
            base.1,
            fingerprints(
                r#"{"consecutive_failures": 5}"#,
                r#"{"rate": 11, "burst": 20}"#
            )
            .1
        );
        assert_eq!(
            base.1,
            fingerprints(
                r#"{"consecutive_failures": 5}"#,
                r#"{"rate": 10, "burst": 20, "status": 503}"#
            )
            .1,
            "a new shed status keeps the buckets"
        );
    }
}

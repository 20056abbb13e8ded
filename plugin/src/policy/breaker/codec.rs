//! The breaker's shared-data layout: fixed-size little-endian binary, version byte first.
//! Read and written on every request, so no JSON; a value of any other length or version
//! decodes to nothing and is replaced by a fresh breaker.

use super::window::{Bucket, Window, BUCKETS};
use super::{BreakerState, Phase};
use crate::policy::shared::SharedValue;

/// Layout version; bump it (and the key prefix) whenever the layout changes.
pub const VERSION: u8 = 1;

const HEADER_LEN: usize = 34;
const BUCKET_LEN: usize = 20;
/// Size of an encoded breaker.
pub const ENCODED_LEN: usize = HEADER_LEN + BUCKETS * BUCKET_LEN;

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

impl SharedValue for BreakerState {
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let mut r = Reader { bytes };
        if r.u8()? != VERSION {
            return None;
        }
        let phase = match r.u8()? {
            0 => Phase::Closed,
            1 => Phase::Open,
            2 => Phase::HalfOpen,
            _ => return None,
        };
        let mut state = BreakerState {
            phase,
            consecutive_failures: r.u32()?,
            reopen_count: r.u32()?,
            open_until_ms: r.u64()?,
            half_open_since_ms: r.u64()?,
            probes_admitted: r.u32()?,
            probe_successes: r.u32()?,
            window: Window::default(),
        };
        for bucket in &mut state.window.buckets {
            *bucket = Bucket {
                epoch: r.u64()?,
                calls: r.u32()?,
                failures: r.u32()?,
                slow: r.u32()?,
            };
        }
        Some(state)
    }

    fn encode(&self) -> Vec<u8> {
        // Filled in place: this runs on every breaker update.
        let mut out = [0u8; ENCODED_LEN];
        let mut writer = Writer {
            out: &mut out,
            at: 0,
        };
        writer.put(&[VERSION]);
        writer.put(&[match self.phase {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        }]);
        writer.put(&self.consecutive_failures.to_le_bytes());
        writer.put(&self.reopen_count.to_le_bytes());
        writer.put(&self.open_until_ms.to_le_bytes());
        writer.put(&self.half_open_since_ms.to_le_bytes());
        writer.put(&self.probes_admitted.to_le_bytes());
        writer.put(&self.probe_successes.to_le_bytes());
        for bucket in &self.window.buckets {
            writer.put(&bucket.epoch.to_le_bytes());
            writer.put(&bucket.calls.to_le_bytes());
            writer.put(&bucket.failures.to_le_bytes());
            writer.put(&bucket.slow.to_le_bytes());
        }
        out.to_vec()
    }
}

struct Writer<'a> {
    out: &'a mut [u8; ENCODED_LEN],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.out.get_mut(self.at..self.at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

/// The shared-data key of one breaker: versioned, per policy and configuration, per scope
/// (`route`, or the upstream cluster's name, a bounded set that Envoy's config defines).
pub fn breaker_key(policy: &str, config_fingerprint: u64, scope: &str) -> String {
    format!("fusebox/breaker/v{VERSION}/{policy}/{config_fingerprint:016x}/{scope}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn sample() -> BreakerState {
        let mut state = BreakerState {
            phase: Phase::HalfOpen,
            consecutive_failures: 3,
            reopen_count: 2,
            open_until_ms: 1_732_000_000_123,
            half_open_since_ms: 1_732_000_000_456,
            probes_admitted: 1,
            probe_successes: 0,
            window: Window::default(),
        };
        state.window.record(1_000, 100, true, true);
        state.window.record(1_550, 100, false, false);
        state
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips_every_field() {
        let state = sample();
        let bytes = state.encode();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(BreakerState::decode(&bytes), Some(state));
        assert_eq!(
            BreakerState::decode(&BreakerState::default().encode()),
            Some(BreakerState::default())
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_anything_but_its_own_layout() {
        let bytes = sample().encode();
        assert_eq!(BreakerState::decode(&[]), None);
        assert_eq!(BreakerState::decode(&bytes[..ENCODED_LEN - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(BreakerState::decode(&longer), None);
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(BreakerState::decode(&other_version), None);
        let mut bad_phase = bytes;
        bad_phase[1] = 3;
        assert_eq!(BreakerState::decode(&bad_phase), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_are_versioned_per_policy_configuration_and_scope() {
        assert_eq!(
            breaker_key("p", 0xab, "route"),
            "fusebox/breaker/v1/p/00000000000000ab/route"
        );
    }
}

//! Keyed buckets in bounded memory.
//!
//! Envoy never frees shared-data keys, so a bucket per header value would let clients mint
//! keys without bound. Values are mapped instead into a fixed table of `max_keys` slots. A slot
//! remembers which value owns it (a 64-bit fingerprint), so two tenants whose values hash alike
//! do not silently share a bucket: the second probes a few other slots. A slot whose owner has
//! been idle long enough for its bucket to be full again can be taken over without anyone
//! losing tokens. A value that finds no slot shares one overflow bucket, and is counted.

use super::{Bucket, Limits, Take};
use fusebox_policy_schema::fingerprint::Fingerprint;
use fusebox_policy_schema::Priority;

/// Slots probed per value before falling back to the overflow bucket.
pub const PROBES: u32 = 4;

/// A non-zero 64-bit fingerprint of a key value (0 marks a free slot).
pub fn fingerprint(value: &[u8]) -> u64 {
    Fingerprint::default().bytes(value).finish().max(1)
}

/// The slots a value may use, in probing order (double hashing, so values colliding on the
/// first slot part ways on the next).
pub fn candidate_slots(fingerprint: u64, max_keys: u32) -> impl Iterator<Item = u32> {
    let n = u64::from(max_keys.max(1));
    let start = fingerprint % n;
    let step = if n > 1 {
        1 + (fingerprint >> 32) % (n - 1)
    } else {
        1
    };
    (0..u64::from(PROBES.min(max_keys.max(1)))).map(move |i| ((start + i * step) % n) as u32)
}

/// What happened when a value tried a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTake {
    /// The slot is this value's (now): the take's result.
    Taken(Take),
    /// Another value owns it and is active: try the next slot.
    Occupied,
}

/// Takes a token from `slot` for the value `owner`, claiming the slot if it is free or its
/// owner has been idle for longer than the bucket takes to fill.
pub fn take_from_slot(
    slot: &mut Bucket,
    owner: u64,
    limits: &Limits,
    priority: Priority,
    now_us: u64,
) -> SlotTake {
    if slot.owner != owner {
        let idle = slot.last_refill_us == 0
            || now_us.saturating_sub(slot.last_refill_us) > limits.fill_time_us();
        if slot.owner != 0 && !idle {
            return SlotTake::Occupied;
        }
        *slot = Bucket {
            owner,
            ..Bucket::default()
        };
    }
    SlotTake::Taken(slot.take(limits, priority, now_us))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn limits() -> Limits {
        Limits {
            rate: 1.0,
            burst_micro: 2 * super::super::MICRO,
            reserve_critical_micro: 0,
            reserve_normal_micro: 0,
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn candidates_stay_in_range_and_differ() {
        for max_keys in [1, 2, 7, 64, 4096] {
            let slots: Vec<u32> = candidate_slots(fingerprint(b"tenant-a"), max_keys).collect();
            assert!(slots.iter().all(|s| *s < max_keys));
            assert_eq!(slots.len() as u32, PROBES.min(max_keys));
            if max_keys >= PROBES {
                let mut unique = slots.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), slots.len(), "{max_keys}: {slots:?}");
            }
        }
        assert_ne!(fingerprint(b""), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_active_owner_keeps_its_slot_and_an_idle_one_is_taken_over() {
        let l = limits();
        let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
        let mut slot = Bucket::default();
        let t0 = 1_000_000_000;
        assert_eq!(
            take_from_slot(&mut slot, a, &l, Priority::Normal, t0),
            SlotTake::Taken(Take::Admitted { remaining: 1 })
        );
        assert_eq!(
            take_from_slot(&mut slot, b, &l, Priority::Normal, t0 + 1),
            SlotTake::Occupied,
            "a is active"
        );
        // After the fill time (2 s at 1 token/s) a's bucket would be full anyway: b takes over.
        let later = t0 + l.fill_time_us() + 1;
        assert_eq!(
            take_from_slot(&mut slot, b, &l, Priority::Normal, later),
            SlotTake::Taken(Take::Admitted { remaining: 1 })
        );
        assert_eq!(slot.owner, b);
    }
}

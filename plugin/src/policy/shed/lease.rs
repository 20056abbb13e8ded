//! Worker leases on the shared bucket and the shared bulkhead count.
//!
//! Every shared-data update is a host call pair and a compare-and-swap that the other workers
//! race (see the README's performance section), and shedding would otherwise make two of them
//! per request for the bucket and four for the bulkhead. So a worker takes a small batch at a
//! time — tokens or slots — and hands them out locally until the batch is spent.
//!
//! What this costs in exactness, and why it stays small:
//! - A batch is at most 1/64 of the burst (or of `max_in_flight`) and at most 64 tokens (16
//!   slots); limits too small for a batch of 2 are never leased, so small limits stay exact.
//! - Tokens are leased only while the bucket stays above every priority's reserve after the
//!   batch is taken, so a leased token is one any priority could have had: reserves hold.
//!   Under pressure (the bucket near a reserve) every request goes to the shared bucket.
//! - Leased tokens expire after [`TOKEN_LEASE_TTL_US`], so a quiet worker cannot add a stale
//!   batch to a later burst: at most one batch per worker beyond the bucket's own limit.
//! - Idle leased slots beyond one batch go back at once, and all of them on every tick, so a
//!   worker keeps at most one batch of slots another worker cannot use, for at most a tick.

/// The largest share of a limit one batch may take: 1/64.
pub const LEASE_FRACTION: u64 = 64;
/// The most tokens leased at once.
pub const MAX_TOKEN_BATCH: u64 = 64;
/// The most bulkhead slots leased at once.
pub const MAX_SLOT_BATCH: u32 = 16;
/// How long leased tokens stay usable, in µs.
pub const TOKEN_LEASE_TTL_US: u64 = 1_000_000;

/// Extra tokens a worker leases per trip to a bucket of `burst` tokens; 0 for none.
pub fn token_batch(burst: u32) -> u64 {
    let batch = (u64::from(burst) / LEASE_FRACTION).min(MAX_TOKEN_BATCH);
    if batch < 2 {
        0
    } else {
        batch
    }
}

/// Slots a worker leases per trip to a bulkhead of `max_in_flight`; 1 means no batching.
pub fn slot_batch(max_in_flight: u32) -> u32 {
    let batch = (u64::from(max_in_flight) / LEASE_FRACTION).min(u64::from(MAX_SLOT_BATCH)) as u32;
    batch.max(1)
}

/// Tokens a worker took from the shared bucket ahead of its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenLease {
    tokens: u64,
    expires_us: u64,
    /// Whole tokens the shared bucket had when the batch was taken.
    shared_left: u64,
}

impl TokenLease {
    /// Takes a leased token; the whole tokens this worker knows of afterwards (the shared
    /// bucket as last seen plus its own lease). `None` when the lease is spent or expired.
    pub fn take(&mut self, now_us: u64) -> Option<u64> {
        if self.tokens == 0 || now_us >= self.expires_us {
            self.tokens = 0;
            return None;
        }
        self.tokens -= 1;
        Some(self.shared_left + self.tokens)
    }

    /// A new batch of `tokens`, taken when the shared bucket had `shared_left` left.
    pub fn renew(&mut self, tokens: u64, shared_left: u64, now_us: u64) {
        *self = TokenLease {
            tokens,
            expires_us: now_us.saturating_add(TOKEN_LEASE_TTL_US),
            shared_left,
        };
    }

    /// Tokens left in the lease.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// Bulkhead slots a worker holds in the shared count: `used` by its requests, the rest idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotLease {
    held: u32,
    used: u32,
}

impl SlotLease {
    /// Hands an idle held slot to a request.
    pub fn acquire(&mut self) -> bool {
        if self.used < self.held {
            self.used += 1;
            true
        } else {
            false
        }
    }

    /// Records `granted` slots just taken from the shared count, one of them for the request
    /// that asked.
    pub fn granted(&mut self, granted: u32) {
        if granted > 0 {
            self.held = self.held.saturating_add(granted);
            self.used = self.used.saturating_add(1);
        }
    }

    /// A request gives its slot back; returns how many slots to give back to the shared count:
    /// the idle ones beyond one `batch`, once more than two batches are idle (without
    /// batching, the slot itself).
    pub fn release(&mut self, batch: u32) -> u32 {
        self.used = self.used.saturating_sub(1);
        let idle = self.held.saturating_sub(self.used);
        let keep = if batch > 1 { batch } else { 0 };
        if idle > keep.saturating_mul(2) {
            let give_back = idle - keep;
            self.held -= give_back;
            give_back
        } else {
            0
        }
    }

    /// Gives up every idle slot (on the tick); returns how many.
    pub fn drain_idle(&mut self) -> u32 {
        let idle = self.held.saturating_sub(self.used);
        self.held = self.used;
        idle
    }

    /// Slots held, used or idle.
    pub fn held(&self) -> u32 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn small_limits_are_never_batched() {
        assert_eq!(token_batch(10), 0);
        assert_eq!(token_batch(127), 0);
        assert_eq!(token_batch(128), 2);
        assert_eq!(token_batch(1_000), 15);
        assert_eq!(token_batch(1_000_000), MAX_TOKEN_BATCH);
        assert_eq!(slot_batch(2), 1);
        assert_eq!(slot_batch(127), 1);
        assert_eq!(slot_batch(640), 10);
        assert_eq!(slot_batch(100_000), MAX_SLOT_BATCH);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_token_lease_hands_out_its_batch_then_expires() {
        let mut lease = TokenLease::default();
        assert_eq!(lease.take(0), None, "no lease yet");
        lease.renew(3, 100, 10);
        assert_eq!(lease.take(11), Some(102));
        assert_eq!(lease.take(12), Some(101));
        assert_eq!(lease.take(13), Some(100));
        assert_eq!(lease.take(14), None, "spent");
        lease.renew(3, 100, 10);
        assert_eq!(lease.take(10 + TOKEN_LEASE_TTL_US), None, "expired");
        assert_eq!(
            lease.tokens(),
            0,
            "an expired lease is dropped, not kept for later"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_batching_every_slot_goes_straight_back() {
        let mut lease = SlotLease::default();
        assert!(!lease.acquire(), "nothing held yet");
        lease.granted(1);
        assert!(!lease.acquire(), "the one slot is in use");
        assert_eq!(lease.release(1), 1);
        assert_eq!(lease.held(), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_batch_of_slots_serves_requests_locally_and_the_surplus_goes_back() {
        let batch = 4;
        let mut lease = SlotLease::default();
        let mut trips = 0;
        for _ in 0..9 {
            if !lease.acquire() {
                lease.granted(batch);
                trips += 1;
            }
        }
        assert_eq!(
            trips, 3,
            "each trip to the shared count serves a batch of requests"
        );
        assert_eq!(lease.held(), 12);
        // The nine requests finish one by one.
        let given_back: Vec<u32> = (0..9).map(|_| lease.release(batch)).collect();
        assert_eq!(
            given_back,
            [0, 0, 0, 0, 0, 5, 0, 0, 0],
            "once more than two batches sit idle, all but one batch goes back"
        );
        assert_eq!(lease.held(), 7);
        assert_eq!(lease.drain_idle(), 7, "the tick takes back the rest");
        assert_eq!(lease.held(), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn released_slots_are_never_more_than_were_held() {
        let mut lease = SlotLease::default();
        for batch in [1, 3, 16] {
            let mut returned = 0;
            let mut taken = 0;
            for step in 0..200u32 {
                if step % 3 != 2 {
                    if !lease.acquire() {
                        lease.granted(batch);
                        taken += batch;
                    }
                } else if lease.used > 0 {
                    returned += lease.release(batch);
                }
            }
            while lease.used > 0 {
                returned += lease.release(batch);
            }
            returned += lease.drain_idle();
            assert_eq!(
                returned, taken,
                "batch {batch}: every slot taken goes back once"
            );
        }
    }
}

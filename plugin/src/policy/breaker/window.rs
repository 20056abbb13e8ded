//! The breaker's sliding window: calls, failures and slow calls over the last `window`,
//! in ten buckets.
//!
//! Buckets are stamped with the epoch (time / bucket width) they count, so a bucket left over
//! from an earlier pass of the ring is recognised and ignored instead of needing a timer to
//! clear it. The window therefore slides by one bucket width at a time: a rate is over the last
//! 9 to 10 bucket widths, never over stale calls.

/// Buckets per window.
pub const BUCKETS: usize = 10;

/// One bucket's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Which bucket-width interval since the epoch these counts are for.
    pub epoch: u64,
    /// Calls recorded.
    pub calls: u32,
    /// Calls that failed.
    pub failures: u32,
    /// Calls that were slow.
    pub slow: u32,
}

/// Sums over the live buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow: u64,
}

/// The ring of buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// The buckets, indexed by epoch modulo [`BUCKETS`].
    pub buckets: [Bucket; BUCKETS],
}

impl Window {
    /// Records one call at `now_ms`.
    pub fn record(&mut self, now_ms: u64, bucket_ms: u64, failure: bool, slow: bool) {
        let epoch = now_ms / bucket_ms.max(1);
        let slot = (epoch % BUCKETS as u64) as usize;
        if let Some(bucket) = self.buckets.get_mut(slot) {
            if bucket.epoch != epoch {
                *bucket = Bucket {
                    epoch,
                    ..Bucket::default()
                };
            }
            bucket.calls = bucket.calls.saturating_add(1);
            bucket.failures = bucket.failures.saturating_add(u32::from(failure));
            bucket.slow = bucket.slow.saturating_add(u32::from(slow));
        }
    }

    /// Sums the buckets of the last [`BUCKETS`] epochs up to `now_ms`.
    pub fn totals(&self, now_ms: u64, bucket_ms: u64) -> Totals {
        let current = now_ms / bucket_ms.max(1);
        self.buckets
            .iter()
            .filter(|bucket| bucket.epoch <= current && current - bucket.epoch < BUCKETS as u64)
            .fold(Totals::default(), |sum, bucket| Totals {
                calls: sum.calls + u64::from(bucket.calls),
                failures: sum.failures + u64::from(bucket.failures),
                slow: sum.slow + u64::from(bucket.slow),
            })
    }

    /// Forgets every call.
    pub fn clear(&mut self) {
        *self = Window::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn counts_within_the_window_and_forgets_what_slid_out() {
        let mut window = Window::default();
        // 1 s window, 100 ms buckets.
        window.record(1_000, 100, true, false);
        window.record(1_050, 100, false, true);
        window.record(1_950, 100, true, false);
        assert_eq!(
            window.totals(1_999, 100),
            Totals {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // At 2 000 ms the bucket of 1 000..1 100 is ten buckets old: gone.
        assert_eq!(
            window.totals(2_000, 100),
            Totals {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(
            window.totals(2_999, 100),
            Totals::default(),
            "everything slid out"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_reused_slot_starts_from_zero() {
        let mut window = Window::default();
        window.record(0, 100, true, false);
        window.record(1_000, 100, false, false); // same slot, ten buckets later
        assert_eq!(
            window.totals(1_000, 100),
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_clock_step_backwards_ignores_future_buckets() {
        let mut window = Window::default();
        window.record(5_000, 100, true, false);
        assert_eq!(window.totals(4_000, 100), Totals::default());
    }
}

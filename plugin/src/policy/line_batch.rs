//! Log lines held back and written together.
//!
//! Inside a request, one log line costs Envoy about as much as all of Fusebox's other host
//! calls for the request's correlation: each call runs a cold code path in Envoy (see the
//! README's performance section). The same calls made in a row cost a fraction of that. So
//! lines wait in the VM and are written together: when the batch is full, and on every tick,
//! the way Envoy's own access logs are buffered and flushed.

/// A batch is written once it holds this many lines: a worker busy enough to fill it writes
/// it from a request's log callback rather than waiting for the tick, and a flush never
/// stalls the worker's event loop for long.
pub const MAX_BATCH_LINES: usize = 128;

/// ... or this many bytes, whichever comes first: memory per worker stays bounded however
/// long the lines are.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// The lines waiting to be written, oldest first.
#[derive(Debug, Default)]
pub struct LineBatch {
    lines: Vec<String>,
    bytes: usize,
}

impl LineBatch {
    /// Holds `line`; `true` when the batch is now full and must be written.
    pub fn push(&mut self, line: String) -> bool {
        self.bytes = self.bytes.saturating_add(line.len());
        self.lines.push(line);
        self.lines.len() >= MAX_BATCH_LINES || self.bytes >= MAX_BATCH_BYTES
    }

    /// Every line held, oldest first; the batch is empty afterwards.
    pub fn take(&mut self) -> Vec<String> {
        self.bytes = 0;
        std::mem::take(&mut self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_batch_is_full_at_its_line_limit_and_keeps_the_order() {
        let mut batch = LineBatch::default();
        for n in 1..MAX_BATCH_LINES {
            assert!(!batch.push(format!("line {n}")), "full after {n} lines");
        }
        assert!(batch.push("last".to_owned()));
        let lines = batch.take();
        assert_eq!(lines.len(), MAX_BATCH_LINES);
        assert_eq!(lines.first().map(String::as_str), Some("line 1"));
        assert_eq!(lines.last().map(String::as_str), Some("last"));
        assert!(batch.take().is_empty(), "take empties the batch");
        assert!(!batch.push("after a take".to_owned()), "take starts over");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_batch_is_full_at_its_byte_limit() {
        let mut batch = LineBatch::default();
        let half = "x".repeat(MAX_BATCH_BYTES / 2);
        assert!(!batch.push(half.clone()));
        assert!(batch.push(half), "two halves fill it");
        assert_eq!(batch.take().len(), 2);
        assert!(
            batch.push("y".repeat(MAX_BATCH_BYTES + 1)),
            "one oversized line is written at once"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn taking_an_empty_batch_gives_nothing() {
        let mut batch = LineBatch::default();
        assert!(batch.take().is_empty());
    }
}

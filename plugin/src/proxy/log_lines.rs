//! The request and breaker lines, held in this worker's batch and written to Envoy's log
//! together (see `policy::line_batch` for why): when the batch fills up, on every tick, and
//! when a plugin stops. One batch per VM, hence per worker, whatever configurations it runs,
//! so lines leave in the order they were made.

use std::cell::RefCell;

use proxy_wasm::types::LogLevel;

use super::host;
use crate::policy::line_batch::LineBatch;

thread_local! {
    static BATCH: RefCell<LineBatch> = RefCell::new(LineBatch::default());
}

/// Holds an info line for the next write, writing the batch now if it is full.
pub fn hold(line: String) {
    let full = BATCH.with(|batch| match batch.try_borrow_mut() {
        Ok(mut batch) => Some(batch.push(line)),
        // Not reachable on one thread without re-entry; write the line rather than lose it.
        Err(_) => {
            host::log(LogLevel::Info, &line);
            None
        }
    });
    if full == Some(true) {
        write_held();
    }
}

/// Writes every held line to Envoy's log, oldest first.
pub fn write_held() {
    let lines = BATCH.with(|batch| {
        batch
            .try_borrow_mut()
            .map(|mut batch| batch.take())
            .unwrap_or_default()
    });
    for line in &lines {
        host::log(LogLevel::Info, line);
    }
}

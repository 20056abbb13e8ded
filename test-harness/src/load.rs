//! A small HTTP/1.1 load generator for the overhead benchmark: keep-alive connections on
//! loopback, closed-loop (each connection sends its next request when the last one is
//! answered: throughput) or open-loop (requests at fixed times whatever the answers:
//! latency, measured from when each request was due so a slow server cannot hide queueing).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::read_response;

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Responses with status 200.
    pub ok: u64,
    /// Failed requests: connection errors and non-200 statuses.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile (0–100), in microseconds.
    pub fn percentile_us(&self, percentile: f64) -> u32 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    fn merge(mut self, other: LoadResult) -> LoadResult {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.latencies_us.extend(other.latencies_us);
        self
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    std::str::from_utf8(response.get(9..12)?).ok()?.parse().ok()
}

/// One keep-alive connection sending requests until `until`; `schedule` gives each request's
/// due time (None: as soon as the previous one is answered).
fn connection(
    addr: SocketAddr,
    path: &str,
    until: Instant,
    schedule: Option<(Instant, Duration)>,
) -> LoadResult {
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes();
    let mut result = LoadResult::default();
    let started = Instant::now();
    let mut stream: Option<TcpStream> = None;
    let mut sent = 0u32;
    loop {
        let due = match schedule {
            Some((first, interval)) => first + interval * sent,
            None => Instant::now(),
        };
        if due >= until {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent += 1;
        if stream.is_none() {
            stream = TcpStream::connect(addr).ok();
            if let Some(s) = &stream {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            }
        }
        let outcome = stream.as_mut().and_then(|s| {
            s.write_all(&request).ok()?;
            read_response(s).ok()
        });
        match outcome.as_deref().and_then(status_of) {
            Some(200) => {
                result.ok += 1;
                let latency = Instant::now().duration_since(due);
                result
                    .latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            _ => {
                result.errors += 1;
                stream = None;
            }
        }
    }
    result.elapsed = started.elapsed();
    result
}

/// Closed loop: `connections` connections, each sending back to back for `duration`.
pub fn closed_loop(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> LoadResult {
    let until = Instant::now() + duration;
    run(connections, |_| connection(addr, path, until, None))
}

/// Open loop: `rate` requests per second in total, spread over `connections` connections.
pub fn open_loop(
    addr: SocketAddr,
    path: &str,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> LoadResult {
    let start = Instant::now() + Duration::from_millis(20);
    let until = start + duration;
    let interval = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    run(connections, |i| {
        let first = start + interval.mul_f64(i as f64 / connections as f64);
        connection(addr, path, until, Some((first, interval)))
    })
}

fn run(connections: usize, work: impl Fn(usize) -> LoadResult + Sync) -> LoadResult {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|i| {
                let work = &work;
                scope.spawn(move || work(i))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| handle.join().ok())
            .fold(LoadResult::default(), LoadResult::merge)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let result = LoadResult {
            latencies_us: (1..=100).rev().collect(),
            ..LoadResult::default()
        };
        assert_eq!(result.percentile_us(50.0), 50);
        assert_eq!(result.percentile_us(99.0), 99);
        assert_eq!(result.percentile_us(100.0), 100);
        assert_eq!(LoadResult::default().percentile_us(99.0), 0);
        assert_eq!(status_of(b"HTTP/1.1 429 Too Many"), Some(429));
    }
}

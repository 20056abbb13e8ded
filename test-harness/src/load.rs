//! Load for the overhead benchmark, on keep-alive connections over loopback.
//!
//! Closed loop (each connection sends its next request when the last one is answered:
//! throughput and CPU per request) is `wrk`'s: one thread on epoll, light enough that Envoy
//! runs warm, as on a machine of its own. A client of a thread per connection, as this module
//! once was, switched the two cores between a dozen threads so often that every filter's cost
//! per request read several times higher (an empty wasm filter's 20–26 µs instead of 3–5).
//! Open loop (requests at fixed times whatever the answers: latency, measured from when each
//! request was due so a slow server cannot hide queueing) is this module's own; `wrk` has none.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::read_response;
use crate::provision;

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

/// One keep-alive connection sending requests until `until`, the first due at `first`, then
/// one every `interval`.
fn connection(
    addr: SocketAddr,
    path: &str,
    until: Instant,
    (first, interval): (Instant, Duration),
) -> LoadResult {
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes();
    let mut result = LoadResult::default();
    let started = Instant::now();
    let mut stream: Option<TcpStream> = None;
    let mut sent = 0u32;
    loop {
        let due = first + interval * sent;
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

/// `count` requests on one keep-alive connection, each sent when the last was answered;
/// every one must be answered 200.
pub fn in_sequence(addr: SocketAddr, count: u32) -> Result<(), String> {
    let request = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    for sent in 0..count {
        stream
            .write_all(request)
            .map_err(|e| format!("request {sent} to {addr}: {e}"))?;
        let response =
            read_response(&mut stream).map_err(|e| format!("response {sent} from {addr}: {e}"))?;
        if status_of(&response) != Some(200) {
            return Err(format!(
                "response {sent} from {addr}: {}",
                String::from_utf8_lossy(response.get(..12).unwrap_or(&response))
            ));
        }
    }
    Ok(())
}

/// Closed loop with `wrk`: `connections` connections, each sending back to back for
/// `duration` (whole seconds, at least one: `wrk` takes no less).
pub fn closed_loop(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> Result<LoadResult, String> {
    let seconds = duration.as_secs_f64().ceil().max(1.0);
    let output = provision::wrk()?
        .args(["--threads", "1", "--connections"])
        .arg(connections.max(1).to_string())
        .arg("--duration")
        .arg(format!("{seconds}s"))
        .args(["--timeout", "5s"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .map_err(|error| format!("cannot run wrk: {error}"))?;
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk against {addr} failed ({}): {}{}",
            output.status,
            report.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    wrk_result(&report).ok_or_else(|| format!("cannot read wrk's report: {report}"))
}

/// The counts in `wrk`'s report: every response that is not a 2xx or 3xx, and every socket
/// error (connect, read, write, timeout), is an error.
fn wrk_result(report: &str) -> Option<LoadResult> {
    let mut completed = None;
    let mut elapsed = None;
    let mut errors = 0;
    for line in report.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            completed = count.trim().parse::<u64>().ok();
            elapsed = rest.split(',').next().and_then(wrk_duration);
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += count.trim().parse::<u64>().ok()?;
        } else if let Some(kinds) = line.strip_prefix("Socket errors:") {
            for kind in kinds.split(',') {
                errors += kind.split_whitespace().last()?.parse::<u64>().ok()?;
            }
        }
    }
    let completed = completed?;
    Some(LoadResult {
        ok: completed.checked_sub(errors.min(completed))?,
        errors,
        elapsed: elapsed?,
        latencies_us: Vec::new(),
    })
}

/// A duration as `wrk` prints one: `5.00s`, `812.34ms`, `1.00m`, `950.00us`.
fn wrk_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
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
        connection(addr, path, until, (first, interval))
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

    const WRK_CLEAN: &str = "Running 5s test @ http://127.0.0.1:19000/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   570.12us  180.55us   9.87ms   92.40%
    Req/Sec    14.03k     1.02k   15.20k    78.00%
  69751 requests in 5.00s, 19.16MB read
Requests/sec:  13950.20
Transfer/sec:      3.83MB
";

    #[test]
    fn wrk_report_gives_counts_and_time() {
        let result = wrk_result(WRK_CLEAN).expect("a clean report");
        assert_eq!((result.ok, result.errors), (69751, 0));
        assert_eq!(result.elapsed, Duration::from_secs(5));
    }

    #[test]
    fn wrk_report_counts_bad_statuses_and_socket_errors() {
        let report = WRK_CLEAN.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 2, write 1, timeout 4\n  Non-2xx or 3xx responses: 30\nRequests/sec",
        );
        let result = wrk_result(&report).expect("a report with errors");
        assert_eq!((result.ok, result.errors), (69751 - 37, 37));
        let short = "  5242 requests in 812.50ms, 1.44MB read\n";
        assert_eq!(
            wrk_result(short).map(|r| r.elapsed),
            Some(Duration::from_micros(812_500))
        );
    }

    #[test]
    fn wrk_report_without_counts_is_refused() {
        assert!(wrk_result("unable to connect to 127.0.0.1:19999 Connection refused").is_none());
        assert!(wrk_result("  12 requests in soon, 1KB read").is_none());
        assert_eq!(wrk_duration("1.00m"), Some(Duration::from_secs(60)));
        assert_eq!(wrk_duration("3parsecs"), None);
    }
}

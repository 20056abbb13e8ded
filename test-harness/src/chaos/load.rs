//! The open-loop load of a scenario: requests arrive at fixed times whatever the answers (a
//! slow system cannot hide behind fewer requests), each on a new connection (so Envoy spreads
//! them over its workers), and every attempt's outcome, latency and decision is recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scenario::{Class, Load, Outcome};
use crate::client::{parse_response, response_complete, Response};

/// One attempt of one request, as the client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The logical request (retries share it).
    pub request: u64,
    /// 0 for the first attempt, then each retry.
    pub attempt: u32,
    /// Its class.
    pub class: Class,
    /// When it was due, in seconds since the start of the run.
    pub start_s: f64,
    /// Time from when it was due to its answer (or to the client giving up), in seconds.
    pub latency_s: f64,
    /// The status, if an answer came.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether the answer carried the right correlation ID (none: no answer).
    pub id_ok: Option<bool>,
}

/// Attempts shared between the load and the runner watching it.
pub type Records = Arc<Mutex<Vec<Attempt>>>;

/// Everything a request task needs, shared.
struct Shared {
    target: SocketAddr,
    load: Load,
    correlation_header: String,
    t0: Instant,
    records: Records,
    in_flight: AtomicUsize,
}

/// A running load; [`RunningLoad::stop`] ends new arrivals.
pub struct RunningLoad {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    done_arriving: Arc<AtomicBool>,
}

impl RunningLoad {
    /// Starts the arrivals on `runtime`: the first is due at `t0`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        target: SocketAddr,
        load: &Load,
        correlation_header: &str,
        seed: u64,
        t0: Instant,
    ) -> RunningLoad {
        let shared = Arc::new(Shared {
            target,
            load: load.clone(),
            correlation_header: correlation_header.to_owned(),
            t0,
            records: Arc::new(Mutex::new(Vec::new())),
            in_flight: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let done_arriving = Arc::new(AtomicBool::new(false));
        runtime.spawn(arrivals(
            shared.clone(),
            stop.clone(),
            done_arriving.clone(),
            seed,
        ));
        RunningLoad {
            shared,
            stop,
            done_arriving,
        }
    }

    /// The attempts recorded so far.
    pub fn records(&self) -> Records {
        self.shared.records.clone()
    }

    /// Ends new arrivals (requests in flight finish).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether every arrival has been sent and every request has ended.
    pub fn finished(&self) -> bool {
        self.done_arriving.load(Ordering::Relaxed)
            && self.shared.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// Picks a class by the configured shares.
fn pick_class(load: &Load, rng: &mut fastrand::Rng) -> Class {
    let total: f64 = load.priorities.values().sum();
    if total <= 0.0 {
        return Class::Normal;
    }
    let mut roll = rng.f64() * total;
    for (class, share) in &load.priorities {
        if roll < *share {
            return *class;
        }
        roll -= share;
    }
    load.priorities
        .keys()
        .last()
        .copied()
        .unwrap_or(Class::Normal)
}

async fn arrivals(shared: Arc<Shared>, stop: Arc<AtomicBool>, done: Arc<AtomicBool>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let interval = Duration::from_secs_f64(1.0 / shared.load.rate);
    let duration = shared.load.duration.0;
    let mut next = 0u64;
    loop {
        let offset = interval.mul_f64(next as f64);
        if offset >= duration || stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until((shared.t0 + offset).into()).await;
        let class = pick_class(&shared.load, &mut rng);
        let own_id = rng.f64() < shared.load.own_correlation_ids;
        let deadline = shared
            .load
            .caller_deadline
            .as_ref()
            .is_some_and(|d| rng.f64() < d.share);
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(request(
            shared.clone(),
            next,
            class,
            own_id,
            deadline,
            offset,
        ));
        next += 1;
    }
    done.store(true, Ordering::Relaxed);
}

fn request_bytes(shared: &Shared, class: Class, id: Option<&str>, deadline: bool) -> Vec<u8> {
    let load = &shared.load;
    let mut text = format!(
        "GET {} HTTP/1.1\r\nhost: fusebox-chaos\r\nconnection: close\r\n",
        load.path
    );
    if let Some(id) = id {
        text.push_str(&format!("{}: {id}\r\n", shared.correlation_header));
    }
    if let Some(header) = &load.priority_header {
        if !load.priorities.is_empty() {
            text.push_str(&format!("{header}: {}\r\n", class.name()));
        }
    }
    if let Some(caller) = load.caller_deadline.as_ref().filter(|_| deadline) {
        text.push_str(&format!("{}: {}\r\n", caller.header, caller.value));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

async fn exchange(target: SocketAddr, bytes: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(target).await?;
    let _ = stream.set_nodelay(true);
    stream.write_all(bytes).await?;
    // Up to the end of the response as its framing says: after a local reply Envoy waits up
    // to a second for the client to close first, which is not the system's latency.
    let mut raw = Vec::new();
    let mut buffer = [0u8; 8 * 1024];
    while !response_complete(&raw) {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        raw.extend_from_slice(buffer.get(..read).unwrap_or_default());
    }
    parse_response(&raw)
}

fn classify(response: &Response) -> Outcome {
    match response.header("x-fusebox-decision").as_deref() {
        Some("shed") => Outcome::Shed,
        Some("bulkhead_full") => Outcome::BulkheadFull,
        Some("breaker_open") => Outcome::BreakerOpen,
        Some("deadline_exceeded") => Outcome::DeadlineExceeded,
        _ if (200..300).contains(&response.status) => Outcome::Ok,
        _ => Outcome::UpstreamError,
    }
}

async fn request(
    shared: Arc<Shared>,
    number: u64,
    class: Class,
    own_id: bool,
    deadline: bool,
    offset: Duration,
) {
    let id = own_id.then(|| format!("chaos-{number}"));
    let bytes = request_bytes(&shared, class, id.as_deref(), deadline);
    let retries = shared.load.retries.clone();
    let max_attempts = retries.as_ref().map_or(0, |r| r.max) + 1;
    let client_timeout = shared.load.client_timeout.0;
    let mut due = shared.t0 + offset;
    for attempt in 0..max_attempts {
        let answer = tokio::time::timeout(client_timeout, exchange(shared.target, &bytes))
            .await
            .ok()
            .and_then(Result::ok);
        let ended = Instant::now();
        let outcome = answer.as_ref().map_or(Outcome::NoResponse, classify);
        let id_ok = answer.as_ref().map(|response| {
            let echoed = response.header(&shared.correlation_header);
            match (&id, echoed) {
                (Some(sent), Some(echoed)) => *sent == echoed,
                (None, Some(echoed)) => !echoed.is_empty(),
                (_, None) => false,
            }
        });
        let status = answer.as_ref().map(|r| r.status);
        if let Ok(mut records) = shared.records.lock() {
            records.push(Attempt {
                request: number,
                attempt,
                class,
                start_s: due.saturating_duration_since(shared.t0).as_secs_f64(),
                latency_s: ended.saturating_duration_since(due).as_secs_f64(),
                status,
                outcome,
                id_ok,
            });
        }
        let retry = retries.as_ref().is_some_and(|r| match status {
            None => true,
            Some(status) => r.on.contains(&status),
        });
        if !retry || attempt + 1 == max_attempts {
            break;
        }
        if let Some(backoff) = retries.as_ref().and_then(|r| r.backoff) {
            tokio::time::sleep(backoff.0).await;
        }
        due = Instant::now();
    }
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
}

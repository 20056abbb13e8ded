//! A controllable HTTP upstream. Each request picks the behaviour through its path, so one
//! upstream serves every test case and Envoy's routes can forward paths unchanged:
//!
//! | path contains | behaviour |
//! |---|---|
//! | `/status/<code>` | reply with that status |
//! | `/delay/<ms>` | wait, then reply 200 |
//! | `/hang` | accept and never answer |
//! | `/close` | close the connection without a response |
//! | `/respond-header/<name>/<value>` | reply 200 with that response header added |
//! | anything else | 200 with a JSON echo of the request |
//!
//! On top of that, a [`Fault`] switched at run time (through [`Upstream::set_fault`] or the
//! HTTP control endpoint of [`Upstream::serve_control`]) overrides the behaviour for every
//! request: the fault-injection scenarios use it to make a healthy upstream hang, slow down,
//! fail, disappear from the network or drain.
//!
//! Every request is recorded (method, path, headers) before it is answered, so a test can
//! assert what reached the upstream, and that nothing did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in arrival order; values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Received {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        crate::client::first_header(&self.headers, name)
    }
}

/// A failure the upstream shows until it is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Requests are accepted and never answered (a deadlock, a stuck GC).
    Hang,
    /// Every answer is delayed by `ms` milliseconds.
    Latency {
        /// Added delay.
        ms: u64,
    },
    /// A share `rate` (0–1) of requests is answered with `status`.
    Errors {
        /// The failure status.
        status: u16,
        /// The share of requests that fail.
        rate: f64,
    },
    /// The host vanishes from the network: new connections time out in the TCP handshake and
    /// requests on open connections are never answered.
    Blackhole,
    /// The upstream is shutting down: new connections are refused, requests on open
    /// connections are answered after `ms` milliseconds with `connection: close`.
    SlowDrain {
        /// Delay of each answer while draining.
        ms: u64,
    },
}

impl Fault {
    /// Whether new connections are accepted while this fault is on.
    fn listening(fault: Option<Fault>) -> Listening {
        match fault {
            Some(Fault::Blackhole) => Listening::Blackhole,
            Some(Fault::SlowDrain { .. }) => Listening::Closed,
            _ => Listening::Open,
        }
    }
}

/// What the listening socket does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listening {
    Open,
    /// No listener: connections are refused.
    Closed,
    /// A listener whose accept queue is full: the kernel drops SYNs, connects time out.
    Blackhole,
}

struct State {
    /// Keep every request for [`Upstream::received`] (tests); long runs only count them.
    record: bool,
    received: Mutex<Vec<Received>>,
    hits: AtomicU64,
    fault: watch::Sender<Option<Fault>>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Starts an upstream on an ephemeral loopback port, keeping every request it receives.
    pub fn start() -> std::io::Result<Upstream> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?)
    }

    /// Starts an upstream on `addr`, keeping every request it receives.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Upstream> {
        Self::launch(addr, true)
    }

    /// Starts an upstream on an ephemeral loopback port that only counts what it receives
    /// ([`Upstream::hits`]): for runs of many requests (the benchmark), where keeping each
    /// would grow without bound and cost the machine CPU that Envoy is measured on.
    pub fn start_unrecorded() -> std::io::Result<Upstream> {
        Self::start_unrecorded_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?)
    }

    /// Starts an upstream on `addr` that only counts what it receives: for long runs (the
    /// demo, the `upstream` command, the benchmark).
    pub fn start_unrecorded_on(addr: SocketAddr) -> std::io::Result<Upstream> {
        Self::launch(addr, false)
    }

    fn launch(addr: SocketAddr, record: bool) -> std::io::Result<Upstream> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(async { bind(addr, 1024) })?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            record,
            received: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            fault: watch::channel(None).0,
        });
        runtime.spawn(serve(listener, addr, state.clone()));
        Ok(Upstream {
            addr,
            state,
            runtime,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far (none for an unrecorded upstream).
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The requests received so far whose header `name` equals `value`.
    pub fn received_with(&self, name: &str, value: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.header(name).as_deref() == Some(value))
            .collect()
    }

    /// Number of requests received so far.
    pub fn hits(&self) -> usize {
        usize::try_from(self.state.hits.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Switches a fault on (`Some`) or off (`None`).
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.state.fault.send_replace(fault);
    }

    /// Serves the control endpoint on `addr` and returns where it listens:
    /// `PUT /fault` with a JSON [`Fault`] switches it on, `DELETE /fault` off, `GET /stats`
    /// answers `{"hits": n, "fault": ...}`.
    pub fn serve_control(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = self.runtime.block_on(async { bind(addr, 128) })?;
        let bound = listener.local_addr()?;
        self.runtime
            .spawn(serve_control(listener, self.state.clone()));
        Ok(bound)
    }
}

/// Binds a listener with `SO_REUSEADDR` (a restarted upstream takes its port back at once) and
/// the given accept backlog.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts connections while the fault allows, until the runtime is dropped.
async fn serve(listener: TcpListener, addr: SocketAddr, state: Arc<State>) {
    let mut faults = state.fault.subscribe();
    let mut listener = Some(listener);
    // Holds the accept queue of a blackholed listener full.
    let mut _filler: Option<TcpStream> = None;
    let mut mode = Listening::Open;
    loop {
        let wanted = Fault::listening(*faults.borrow_and_update());
        if wanted != mode {
            listener = None;
            _filler = None;
            match wanted {
                Listening::Open => listener = bind(addr, 1024).ok(),
                Listening::Closed => {}
                Listening::Blackhole => {
                    // Backlog 0: one queued, never accepted connection fills the queue and the
                    // kernel silently drops every later SYN, exactly like a dead route.
                    listener = bind(addr, 0).ok();
                    _filler = TcpStream::connect(addr).await.ok();
                }
            }
            mode = wanted;
        }
        let accepting = mode == Listening::Open;
        tokio::select! {
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = accept(listener.as_ref().filter(|_| accepting)) => {
                if let Some(stream) = accepted {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| handle(request, state.clone()));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    }
}

/// The next connection, or never when there is nothing to accept from.
async fn accept(listener: Option<&TcpListener>) -> Option<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.ok().map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn serve_control(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| control(request, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn control(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let (status, text) = match (&parts.method, parts.uri.path()) {
        (&Method::PUT, "/fault") => match serde_json::from_slice::<Fault>(&body) {
            Ok(fault) => {
                state.fault.send_replace(Some(fault));
                (StatusCode::OK, String::from("{}"))
            }
            Err(e) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        },
        (&Method::DELETE, "/fault") => {
            state.fault.send_replace(None);
            (StatusCode::OK, String::from("{}"))
        }
        (&Method::GET, "/stats") => (
            StatusCode::OK,
            serde_json::json!({
                "hits": state.hits.load(Ordering::Relaxed),
                "fault": *state.fault.borrow(),
            })
            .to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, String::from("{}")),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    Ok(response)
}

/// The number following `/<marker>/` in a path.
fn path_number(path: &str, marker: &str) -> Option<u64> {
    let rest = path.split(marker).nth(1)?;
    rest.split(['/', '?']).next()?.parse().ok()
}

/// The `<name>` and `<value>` following `/respond-header/` in a path.
fn path_header(path: &str) -> Option<(&str, &str)> {
    let rest = path.split("/respond-header/").nth(1)?;
    let mut parts = rest.split(['/', '?']);
    Some((parts.next()?, parts.next()?))
}

#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closing the connection on purpose")
    }
}

impl std::error::Error for CloseConnection {}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let received = Received {
        method: request.method().to_string(),
        path: path.clone(),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
    };
    let echo = echo_body(&received);
    state.hits.fetch_add(1, Ordering::Relaxed);
    if state.record {
        if let Ok(mut all) = state.received.lock() {
            all.push(received);
        }
    }

    let fault = *state.fault.borrow();
    let mut closing = false;
    match fault {
        Some(Fault::Hang | Fault::Blackhole) => {
            std::future::pending::<()>().await;
        }
        Some(Fault::Latency { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::SlowDrain { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            closing = true;
        }
        Some(Fault::Errors { status, rate }) if fastrand::f64() < rate => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"injected fault")));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Ok(response);
        }
        Some(Fault::Errors { .. }) | None => {}
    }

    if path.contains("/hang") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path.contains("/close") {
        return Err(CloseConnection);
    }
    if let Some(ms) = path_number(&path, "/delay/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path_number(&path, "/status/")
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if closing {
        response = response.header("connection", "close");
    }
    if let Some((name, value)) = path_header(&path) {
        response = response.header(name, value);
    }
    let response = response.body(Full::new(Bytes::from(echo)));
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn echo_body(received: &Received) -> String {
    let headers: BTreeMap<&str, String> = received
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value).into_owned()))
        .collect();
    serde_json::json!({"method": received.method, "path": received.path, "headers": headers})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_anywhere_in_the_path() {
        assert_eq!(path_number("/api/status/503", "/status/"), Some(503));
        assert_eq!(path_number("/delay/250/x", "/delay/"), Some(250));
        assert_eq!(path_number("/delay/250?x=1", "/delay/"), Some(250));
        assert_eq!(path_number("/status/abc", "/status/"), None);
        assert_eq!(path_number("/other", "/status/"), None);
    }

    #[test]
    fn a_response_header_is_read_from_the_path() {
        assert_eq!(path_header("/p/respond-header/x-a/b?q"), Some(("x-a", "b")));
        assert_eq!(path_header("/p/respond-header/x-a"), None);
        assert_eq!(path_header("/p"), None);
    }
}

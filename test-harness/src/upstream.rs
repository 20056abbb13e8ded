//! A controllable HTTP upstream. Each request picks the behaviour through its path, so one
//! upstream serves every test case and Envoy's routes can forward paths unchanged:
//!
//! | path contains | behaviour |
//! |---|---|
//! | `/status/<code>` | reply with that status |
//! | `/delay/<ms>` | wait, then reply 200 |
//! | `/hang` | accept and never answer |
//! | `/close` | close the connection without a response |
//! | anything else | 200 with a JSON echo of the request |
//!
//! Every request is recorded (method, path, headers) before it is answered, so a test can
//! assert what reached the upstream, and that nothing did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Starts an upstream on an ephemeral loopback port.
    pub fn start() -> std::io::Result<Upstream> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?)
    }

    /// Starts an upstream on `addr`.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Upstream> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        runtime.spawn(serve(listener, state.clone()));
        Ok(Upstream {
            addr,
            state,
            _runtime: runtime,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
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
        self.state.received.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// Serves until the runtime is dropped.
async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The number following `/<marker>/` in a path.
fn path_number(path: &str, marker: &str) -> Option<u64> {
    let rest = path.split(marker).nth(1)?;
    rest.split(['/', '?']).next()?.parse().ok()
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
    if let Ok(mut all) = state.received.lock() {
        all.push(received);
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
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(echo)));
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
}

//! The few host calls Fusebox makes, each turned into a value, `None` or a `Result` the caller
//! must look at: a host error on the request path degrades one decision and is
//! counted (`host_call_errors`), it never panics the VM.
//!
//! One limit is the SDK's, not ours: its `hostcalls` wrappers panic on a status they do not
//! expect instead of returning it (e.g. anything but `Ok` from a header write). Envoy 1.40
//! returns those statuses only for a header map that does not exist in the current callback,
//! which Fusebox never asks for; avoiding the wrappers would take `unsafe` FFI, which this
//! workspace forbids. Should one ever fire, the panic hook logs it and `FAIL_RELOAD` replaces
//! the VM.

use std::cell::RefCell;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

/// The host's wall clock in nanoseconds since the Unix epoch (0 if unavailable).
pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .and_then(|since_epoch| u64::try_from(since_epoch.as_nanos()).ok())
        .unwrap_or(0)
}

/// A property's raw bytes.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// A string property; invalid UTF-8 is replaced rather than refused.
pub fn property_string(path: &[&str]) -> Option<String> {
    // Valid UTF-8 keeps the host's buffer; only a property that needs mending is copied.
    property(path).map(|bytes| {
        String::from_utf8(bytes)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
    })
}

/// An integer property (Envoy encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes: [u8; 8] = property(path)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The request's headers, fetched with one host call when the request-headers callback
/// starts and read from wasm memory after that: each host call costs microseconds here (see
/// the README's performance section) and a request asks for five or six headers. Kept for one
/// callback only, never across streams, and kept in step with what Fusebox sets or removes.
/// `None` outside that callback, or when the host could not hand the map over; reads then go
/// to the host one by one.
type HeaderSnapshot = Vec<(String, Vec<u8>)>;

thread_local! {
    static REQUEST_HEADERS: RefCell<Option<HeaderSnapshot>> = const { RefCell::new(None) };
}

/// Takes the snapshot the request-headers callback reads from.
pub fn snapshot_request_headers() {
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok();
    with_snapshot(|snapshot| *snapshot = headers);
}

/// Drops the snapshot at the end of the callback.
pub fn forget_request_headers() {
    with_snapshot(|snapshot| *snapshot = None);
}

fn with_snapshot<T>(f: impl FnOnce(&mut Option<HeaderSnapshot>) -> T) -> Option<T> {
    REQUEST_HEADERS.with(|cell| {
        cell.try_borrow_mut()
            .ok()
            .map(|mut snapshot| f(&mut snapshot))
    })
}

/// A request header's raw bytes (its first value, as Envoy's own lookup gives). Raw on
/// purpose: header values may hold bytes that are not UTF-8, and the SDK's `String`
/// accessors panic on those.
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    let cached = with_snapshot(|snapshot| {
        snapshot.as_ref().map(|headers| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        })
    })
    .flatten();
    match cached {
        Some(found) => found,
        None => hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten(),
    }
}

/// Keeps the snapshot equal to the request after Fusebox set (`Some`) or removed a header.
fn update_snapshot(name: &str, value: Option<&str>) {
    with_snapshot(|snapshot| {
        if let Some(headers) = snapshot.as_mut() {
            headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
            }
        }
    });
}

/// A response header's raw bytes.
pub fn response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// A host call that did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

/// Sets a request header, replacing every value it had.
pub fn set_request_header(name: &str, value: &str) -> Result<(), HostError> {
    hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value.as_bytes()))
        .map_err(|_| HostError)?;
    update_snapshot(name, Some(value));
    Ok(())
}

/// Removes a request header (every value of it); no host call when the snapshot shows it is
/// not there.
pub fn remove_request_header(name: &str) -> Result<(), HostError> {
    let known_absent = with_snapshot(|snapshot| {
        snapshot.as_ref().map(|headers| {
            !headers
                .iter()
                .any(|(key, _)| key.eq_ignore_ascii_case(name))
        })
    })
    .flatten()
    .unwrap_or(false);
    if known_absent {
        return Ok(());
    }
    hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None)
        .map_err(|_| HostError)?;
    update_snapshot(name, None);
    Ok(())
}

/// Sets a response header, replacing every value it had.
pub fn set_response_header(name: &str, value: &str) -> Result<(), HostError> {
    hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, Some(value.as_bytes()))
        .map_err(|_| HostError)
}

/// Removes a response header (every value of it).
pub fn remove_response_header(name: &str) -> Result<(), HostError> {
    hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, None).map_err(|_| HostError)
}

/// The plugin configuration document (empty when there is none). An error is not an empty
/// document: treating it as one would run the filter on defaults instead of its configuration.
pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .map(Option::unwrap_or_default)
        .map_err(|_| HostError)
}

/// Random bytes fetched from the host per `random_get` call: each call costs a round trip
/// into Envoy (microseconds), so bytes are fetched in bulk and each is handed
/// out once. They are the host CSPRNG's own bytes, never stretched or reused.
const ENTROPY_POOL: usize = 4096;

struct EntropyPool {
    bytes: [u8; ENTROPY_POOL],
    next: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<EntropyPool> =
        const { std::cell::RefCell::new(EntropyPool { bytes: [0; ENTROPY_POOL], next: ENTROPY_POOL }) };
}

/// `N` bytes from the host's CSPRNG (WASI `random_get`), `None` if it fails.
pub fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    POOL.with(|pool| {
        let mut pool = pool.try_borrow_mut().ok()?;
        if pool.next + N > ENTROPY_POOL {
            getrandom::fill(&mut pool.bytes).ok()?;
            pool.next = 0;
        }
        let start = pool.next;
        let taken: [u8; N] = pool.bytes.get(start..start + N)?.try_into().ok()?;
        // Handed out once: wipe what was taken.
        if let Some(used) = pool.bytes.get_mut(start..start + N) {
            used.fill(0);
        }
        pool.next += N;
        Some(taken)
    })
}

/// Writes a line to Envoy's log. If Envoy cannot take it there is nowhere left to report
/// that, so the error ends here.
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

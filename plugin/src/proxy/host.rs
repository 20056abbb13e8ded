//! The few host calls Fusebox makes, each turned into a value or `None`: a host error on the
//! request path degrades one decision, it never panics the VM.

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
    property(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// An integer property (Envoy encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes: [u8; 8] = property(path)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A request header's raw bytes. Raw on purpose: header values may hold bytes that are not
/// UTF-8, and the SDK's `String` accessors panic on those.
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

/// A response header's raw bytes.
pub fn response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// Sets a request header, replacing any value it had.
pub fn set_request_header(name: &str, value: &str) {
    let _ =
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value.as_bytes()));
}

/// Removes a request header.
pub fn remove_request_header(name: &str) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
}

/// Sets a response header, replacing any value it had.
pub fn set_response_header(name: &str, value: &str) {
    let _ =
        hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, Some(value.as_bytes()));
}

/// The plugin configuration document.
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Random bytes fetched from the host per `random_get` call: each call costs a round trip
/// into Envoy (tens of microseconds here), so bytes are fetched in bulk and each is handed
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

/// Writes a line to Envoy's log.
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

//! W3C Trace Context `traceparent`: check an incoming header, mint a fresh one.
//!
//! Format (version 00): `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, lower-case
//! hex, trace-id and parent-id not all zeros. Higher versions may append fields after a `-`;
//! version `ff` is forbidden. A minted header has flags `00`: Fusebox starts the trace context
//! but makes no sampling decision for the tracers downstream.

/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// Random bytes needed to mint one `traceparent`: 16 for the trace-id, 8 for the parent-id.
pub const TRACEPARENT_ENTROPY_LEN: usize = 24;

/// What to do with the `traceparent` header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceparentVerdict {
    /// Valid: keep it (and its `tracestate`).
    Keep,
    /// Absent: mint one.
    Generate,
    /// Invalid: mint one, and drop `tracestate`, which belongs to the invalid context.
    Replace,
}

impl TraceparentVerdict {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceparentVerdict::Keep => "kept",
            TraceparentVerdict::Generate => "generated",
            TraceparentVerdict::Replace => "replaced",
        }
    }
}

/// Judges the `traceparent` header of a request (`None` when absent).
pub fn judge_traceparent(incoming: Option<&[u8]>) -> TraceparentVerdict {
    match incoming {
        None => TraceparentVerdict::Generate,
        Some(value) if is_valid_traceparent(value) => TraceparentVerdict::Keep,
        Some(_) => TraceparentVerdict::Replace,
    }
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn is_all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == b'0')
}

/// True for a `traceparent` a W3C-conforming tracer would accept.
pub fn is_valid_traceparent(value: &[u8]) -> bool {
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) = (
        value.get(0..2),
        value.get(3..35),
        value.get(36..52),
        value.get(53..55),
    ) else {
        return false;
    };
    let dashes = [2, 35, 52].iter().all(|&at| value.get(at) == Some(&b'-'));
    let rest_ok = match version {
        b"00" => value.len() == TRACEPARENT_LEN,
        // Future versions may only extend the header, after a dash.
        _ => value.len() == TRACEPARENT_LEN || value.get(TRACEPARENT_LEN) == Some(&b'-'),
    };
    dashes
        && rest_ok
        && version != b"ff"
        && is_lower_hex(version)
        && is_lower_hex(trace_id)
        && is_lower_hex(parent_id)
        && is_lower_hex(flags)
        && !is_all_zero(trace_id)
        && !is_all_zero(parent_id)
}

/// A minted `traceparent`, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Traceparent([u8; TRACEPARENT_LEN]);

impl Traceparent {
    /// The header value.
    pub fn as_str(&self) -> &str {
        // Only ever filled with ASCII hex digits and dashes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mints a version-00 `traceparent` from random bytes.
pub fn mint_traceparent(random: [u8; TRACEPARENT_ENTROPY_LEN]) -> Traceparent {
    let (mut trace_id, mut parent_id) = ([0u8; 16], [0u8; 8]);
    for (slot, byte) in trace_id.iter_mut().chain(parent_id.iter_mut()).zip(random) {
        *slot = byte;
    }
    // All-zero ids are invalid; the chance is 2^-128 (2^-64), but it costs nothing to rule out.
    if trace_id == [0; 16] {
        trace_id[15] = 1;
    }
    if parent_id == [0; 8] {
        parent_id[7] = 1;
    }
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    write_hex(text.get_mut(3..35), &trace_id);
    write_hex(text.get_mut(36..52), &parent_id);
    Traceparent(text)
}

fn write_hex(out: Option<&mut [u8]>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let Some(out) = out else { return };
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        for (slot, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0f]) {
            *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[wasm_bindgen_test(unsupported = test)]
    fn accepts_the_spec_example_and_future_versions() {
        assert!(is_valid_traceparent(VALID));
        assert!(is_valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(is_valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        assert_eq!(judge_traceparent(Some(VALID)), TraceparentVerdict::Keep);
        assert_eq!(judge_traceparent(None), TraceparentVerdict::Generate);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_every_malformation() {
        let cases: [&[u8]; 12] = [
            b"",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            b"0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ];
        for case in cases {
            assert!(
                !is_valid_traceparent(case),
                "{:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(judge_traceparent(Some(case)), TraceparentVerdict::Replace);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn minted_headers_are_valid_and_carry_the_random_bytes() {
        let mut random = [0u8; TRACEPARENT_ENTROPY_LEN];
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = i as u8 * 11;
        }
        let minted = mint_traceparent(random);
        assert_eq!(
            minted.as_str(),
            "00-000b16212c37424d58636e79848f9aa5-b0bbc6d1dce7f2fd-00"
        );
        assert!(is_valid_traceparent(minted.as_str().as_bytes()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn all_zero_randomness_still_gives_a_valid_header() {
        let minted = mint_traceparent([0; TRACEPARENT_ENTROPY_LEN]);
        assert!(
            is_valid_traceparent(minted.as_str().as_bytes()),
            "{minted:?}"
        );
    }
}

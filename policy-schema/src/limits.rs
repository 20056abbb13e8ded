//! What a configuration may hold at most. Every limit protects Envoy from its own
//! configuration: the document is parsed by every worker's VM, every policy defines stats on
//! every worker, and shared data is never freed. A document over a limit is refused whole,
//! with the limit in the message, never trimmed to fit.

/// Largest configuration document, in bytes (1 MiB). A real configuration is a few KiB; the
/// document is copied into and parsed by every worker's VM.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Deepest nesting of objects and arrays anywhere in the document. The deepest valid path
/// (`policies.<p>.breaker.fallback.headers.<h>`) is 6 levels.
pub const MAX_NESTING: usize = 32;

/// Most policies. Each defines about 40 Envoy stats, on every worker.
pub const MAX_POLICIES: usize = 1_000;

/// Most entries in `routes`. Policy lookup is measured flat up to here; larger meshes select
/// policies through route metadata, which needs no entry here.
pub const MAX_ROUTES: usize = 10_000;

/// Most `budget.caller_deadline_headers`: each is a header lookup on every request.
pub const MAX_DEADLINE_HEADERS: usize = 8;

/// Most `breaker.fallback.headers`.
pub const MAX_FALLBACK_HEADERS: usize = 32;

/// Most `breaker.failure_statuses`.
pub const MAX_FAILURE_STATUSES: usize = 100;

/// Most `shed.trust_priority_from` ranges: each is compared on every request that claims a
/// priority.
pub const MAX_TRUSTED_RANGES: usize = 64;

/// Most keyed token buckets across all policies (the sum of `shed.max_keys` of the policies
/// with a `shed.key`). Every bucket is a shared-data key that Envoy never frees, about 150
/// bytes each: 65,536 buckets is about 10 MB of shared data, whatever clients send.
pub const MAX_TOTAL_SHED_KEYS: u64 = 65_536;

/// Longest key or message quoted in an error, in bytes; longer ones are cut with `…`, so a
/// hostile document cannot make Envoy's log lines megabytes long.
pub const MAX_QUOTED_LEN: usize = 256;

/// Most errors written to Envoy's log for one refused document (all are still counted).
pub const MAX_LOGGED_ERRORS: usize = 100;

/// `text`, cut at a character boundary to at most `max` bytes (plus `…` when cut).
pub fn shorten(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_at_a_character_boundary() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("aé", 2), "a…");
    }
}

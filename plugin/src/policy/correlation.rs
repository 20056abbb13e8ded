//! Correlation IDs: decide whether an incoming ID can be kept, and mint new ones.
//!
//! An ID is kept only if it is something every log store and header parser downstream can
//! carry verbatim: non-empty, not longer than configured, visible ASCII only (no spaces, no
//! control characters, nothing a log line could be split or forged with). Anything else is
//! replaced, never repaired: a repaired ID would correlate with nothing.

use fusebox_policy_schema::{CorrelationConfig, IdFormat};
use uuid::Builder;

/// What to do with the correlation header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdVerdict {
    /// The incoming ID is valid and trusted: pass it on unchanged.
    Keep,
    /// There is no incoming ID: mint one.
    Generate,
    /// The incoming ID cannot be used: mint one in its place.
    Replace(InvalidId),
}

/// Why an incoming ID was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidId {
    /// The header was present but empty.
    Empty,
    /// Longer than `max_length`.
    TooLong,
    /// Holds a byte outside visible ASCII (0x21..=0x7E).
    NotVisibleAscii,
    /// `trust_incoming` is off: no incoming ID is kept.
    Untrusted,
}

impl InvalidId {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidId::Empty => "empty",
            InvalidId::TooLong => "too_long",
            InvalidId::NotVisibleAscii => "not_visible_ascii",
            InvalidId::Untrusted => "untrusted",
        }
    }
}

impl IdVerdict {
    /// Name used in logs: `kept`, `generated` or `replaced`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdVerdict::Keep => "kept",
            IdVerdict::Generate => "generated",
            IdVerdict::Replace(_) => "replaced",
        }
    }
}

/// Judges the correlation header of a request (`None` when absent).
pub fn judge_incoming_id(config: &CorrelationConfig, incoming: Option<&[u8]>) -> IdVerdict {
    let Some(id) = incoming else {
        return IdVerdict::Generate;
    };
    match check_id(id, config.max_length) {
        Err(invalid) => IdVerdict::Replace(invalid),
        Ok(()) if !config.trust_incoming => IdVerdict::Replace(InvalidId::Untrusted),
        Ok(()) => IdVerdict::Keep,
    }
}

/// Checks an ID's shape, whoever sent it.
pub fn check_id(id: &[u8], max_length: usize) -> Result<(), InvalidId> {
    if id.is_empty() {
        Err(InvalidId::Empty)
    } else if id.len() > max_length {
        Err(InvalidId::TooLong)
    } else if !id.iter().all(|b| (0x21..=0x7e).contains(b)) {
        Err(InvalidId::NotVisibleAscii)
    } else {
        Ok(())
    }
}

/// Random bytes needed to mint one ID.
pub const ID_ENTROPY_LEN: usize = 16;

/// A minted correlation ID: a lower-case hyphenated UUID, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; uuid::fmt::Hyphenated::LENGTH]);

impl RequestId {
    /// The ID as text.
    pub fn as_str(&self) -> &str {
        // Only ever filled by the UUID formatter, which writes ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mints an ID from the host's clock and random bytes (for v7, the first 10 bytes of
/// `random` fill the 74 random bits; the timestamp is the only non-random part).
pub fn mint_id(format: IdFormat, unix_millis: u64, random: [u8; ID_ENTROPY_LEN]) -> RequestId {
    let uuid = match format {
        IdFormat::UuidV4 => Builder::from_random_bytes(random).into_uuid(),
        IdFormat::UuidV7 => {
            let mut v7_random = [0u8; 10];
            for (slot, byte) in v7_random.iter_mut().zip(random) {
                *slot = byte;
            }
            Builder::from_unix_timestamp_millis(unix_millis, &v7_random).into_uuid()
        }
    };
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut text);
    RequestId(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn config() -> CorrelationConfig {
        CorrelationConfig::default()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_id_is_generated_and_valid_id_is_kept() {
        assert_eq!(judge_incoming_id(&config(), None), IdVerdict::Generate);
        assert_eq!(
            judge_incoming_id(&config(), Some(b"abc-123")),
            IdVerdict::Keep
        );
        assert_eq!(judge_incoming_id(&config(), Some(b"!~")), IdVerdict::Keep);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn invalid_ids_are_replaced_with_the_reason() {
        let c = config();
        assert_eq!(
            judge_incoming_id(&c, Some(b"")),
            IdVerdict::Replace(InvalidId::Empty)
        );
        let long = vec![b'a'; c.max_length + 1];
        assert_eq!(
            judge_incoming_id(&c, Some(&long)),
            IdVerdict::Replace(InvalidId::TooLong)
        );
        let exact = vec![b'a'; c.max_length];
        assert_eq!(judge_incoming_id(&c, Some(&exact)), IdVerdict::Keep);
        for bad in [
            &b"a b"[..],
            b"a\tb",
            b"a\r\nb",
            b"a\0b",
            b"caf\xc3\xa9",
            b"\x7f",
            b"\x80",
        ] {
            assert_eq!(
                judge_incoming_id(&c, Some(bad)),
                IdVerdict::Replace(InvalidId::NotVisibleAscii),
                "{bad:?}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn untrusted_ids_are_replaced_even_when_valid() {
        let c = CorrelationConfig {
            trust_incoming: false,
            ..config()
        };
        assert_eq!(
            judge_incoming_id(&c, Some(b"abc")),
            IdVerdict::Replace(InvalidId::Untrusted)
        );
        // A malformed ID reports its own defect, which is more useful in the log.
        assert_eq!(
            judge_incoming_id(&c, Some(b"")),
            IdVerdict::Replace(InvalidId::Empty)
        );
        assert_eq!(judge_incoming_id(&c, None), IdVerdict::Generate);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn v7_ids_carry_the_timestamp_and_the_random_bits() {
        let unix_millis = 0x0192_3456_789a;
        let id = mint_id(IdFormat::UuidV7, unix_millis, [0xab; 16]);
        let text = id.as_str();
        assert_eq!(text.len(), 36);
        assert!(text.starts_with("01923456-789a-7"), "{text}");
        let parsed = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        // Different randomness at the same millisecond gives a different ID.
        assert_ne!(mint_id(IdFormat::UuidV7, unix_millis, [0xac; 16]), id);
        assert!(check_id(text.as_bytes(), 36).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn v4_ids_are_random_only() {
        let a = mint_id(IdFormat::UuidV4, 1, [7; 16]);
        let b = mint_id(IdFormat::UuidV4, 2, [7; 16]);
        assert_eq!(a, b, "the clock must not enter a v4 ID");
        let parsed = uuid::Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(mint_id(IdFormat::UuidV4, 1, [8; 16]), a);
    }
}

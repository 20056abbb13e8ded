//! Durations written as strings with a unit, the way Envoy's own YAML writes them.
//!
//! A bare number is refused on purpose: `"timeout": 5` could mean seconds or milliseconds, and a
//! wrong guess in a timeout budget is an outage.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The longest duration accepted anywhere in the configuration: a day. Anything longer is
/// almost certainly a unit mistake (`"250000s"` for `"250ms"`).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// A non-negative duration parsed from a string such as `"250ms"`, `"1.5s"`, `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDuration(String);

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const UNITS: [(&str, u128); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl ConfigDuration {
    /// Parses `<number><unit>` where the number may have a fractional part and the unit is one
    /// of `ns`, `us`, `ms`, `s`, `m`, `h`.
    pub fn parse(text: &str) -> Result<Self, InvalidDuration> {
        let invalid = || {
            InvalidDuration(format!(
                "invalid duration {text:?}: expected a number and a unit (ns, us, ms, s, m, h), e.g. \"250ms\""
            ))
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, unit) = text.split_at(split);
        let unit_nanos = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, nanos)| *nanos)
            .ok_or_else(invalid)?;
        let (whole, fraction) = match number.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        // One dot at most: the fraction is digits only (`1.0.25s` is not a duration).
        if whole.is_empty()
            || (number.contains('.') && fraction.is_empty())
            || fraction.contains('.')
        {
            return Err(invalid());
        }
        let too_long = || {
            InvalidDuration(format!(
                "duration {text:?} is longer than the maximum of 24h"
            ))
        };
        // Digits beyond u128 range are far beyond MAX_DURATION anyway.
        let whole: u128 = whole.parse().map_err(|_| too_long())?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                return Err(InvalidDuration(format!(
                    "duration {text:?} is more precise than a nanosecond"
                )));
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        if nanos > MAX_DURATION.as_nanos() {
            return Err(too_long());
        }
        let nanos = u64::try_from(nanos).map_err(|_| too_long())?;
        Ok(ConfigDuration(Duration::from_nanos(nanos)))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit, e.g. \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                ConfigDuration::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h)$",
            "description": "A duration: a number and a unit (ns, us, ms, s, m, h), e.g. \"250ms\", \"1.5s\". At most 24h.",
            "examples": ["250ms", "5s"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, InvalidDuration> {
        ConfigDuration::parse(text).map(|d| d.0)
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_fractions_exactly() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0.001ms"), Ok(Duration::from_nanos(1000)));
        assert!(parse("1.5ns").is_err());
    }

    #[test]
    fn refuses_malformed_text() {
        for text in [
            "", "5", "ms", "5 s", "-5s", "5sec", "5S", "1.s", ".5s", "5s ", "1e3ms", "٥s",
            "1.0.25s", "1..5s", "1.5.s",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn refuses_more_than_a_day_without_overflowing() {
        assert_eq!(parse("24h"), Ok(MAX_DURATION));
        assert!(parse("86400001ms").is_err());
        assert!(parse("99999999999999999999999999999999999999999h").is_err());
        assert!(parse("340282366920938463463374607431768211455h").is_err());
    }

    #[test]
    fn refuses_numbers_with_a_message_that_names_the_fix() {
        let error = serde_json::from_str::<ConfigDuration>("5").unwrap_err();
        assert!(error.to_string().contains("\"250ms\""), "{error}");
    }
}

//! The one structured log line written for every request.
//!
//! Everything an SRE needs to follow a request through the mesh from a log search: the
//! correlation ID, where it came from, which policy governed the request and why, what was
//! decided and how the request ended. Values that came off the wire are escaped by the JSON
//! serializer, so a hostile header can never split or forge a log line.

use std::fmt;

use serde::{Serialize, Serializer};

/// A wall-clock instant (nanoseconds since the Unix epoch), written as RFC 3339 in UTC with
/// milliseconds, like Envoy's access logs: lines are written in batches (see `line_batch`),
/// so the time Envoy stamps on a line is when it was written, not when the request came.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, digit by digit: `write!` would cost as much as the rest
    /// of the line. Years stay below 10,000 (`u64` nanoseconds end in 2554).
    fn rfc3339(self) -> [u8; 24] {
        let millis = self.0 / 1_000_000;
        let (days, millis_of_day) = (millis / 86_400_000, millis % 86_400_000);
        let (year, month, day) = civil_from_days(days);
        let seconds = millis_of_day / 1_000;
        let fields = [
            (year, 4),
            (month, 2),
            (day, 2),
            (seconds / 3_600, 2),
            (seconds / 60 % 60, 2),
            (seconds % 60, 2),
            (millis_of_day % 1_000, 3),
        ];
        // Each field's digits, written last digit first, in the template's next run of zeros.
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut end = 0;
        for (mut value, width) in fields {
            end += width;
            for at in (end - width..end).rev() {
                if let Some(digit) = text.get_mut(at) {
                    *digit = b'0' + (value % 10) as u8;
                }
                value /= 10;
            }
            // The separator after the field.
            end += 1;
        }
        text
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.rfc3339()).unwrap_or_default())
    }
}

impl Serialize for UnixTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(std::str::from_utf8(&self.rfc3339()).unwrap_or_default())
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch: 400-year eras of 146,097 days, years counted from March so
/// the leap day ends the year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// One request's log record, serialized as a single JSON object.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestLog<'a> {
    /// When the request headers reached Fusebox.
    pub start_time: UnixTime,
    /// The correlation ID the request carried upstream.
    pub correlation_id: Option<&'a str>,
    /// `kept`, `generated` or `replaced`.
    pub correlation: Option<&'static str>,
    /// Why an incoming ID was replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_invalid: Option<&'static str>,
    /// `kept`, `generated`, `replaced`; absent when traceparent handling is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<&'static str>,
    /// Envoy route name (empty when the route has none or no route matched).
    pub route: &'a str,
    /// Governing policy, or `none`.
    pub policy: &'a str,
    /// Where the policy came from: `route_metadata`, `route_map`, `default`, `none`.
    pub policy_source: &'static str,
    /// The route's metadata named a policy that does not exist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub metadata_policy_unknown: bool,
    /// `enforce` or `dry_run`; absent without a policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// What Fusebox decided: `allow`, a rejection (`deadline_exceeded`), or in dry-run mode
    /// the rejection it would have made (`would_deadline_exceeded`).
    pub decision: &'static str,
    /// Budget left for the upstream when the request was decided, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<f64>,
    /// The caller's deadline, when one was honored, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_deadline_ms: Option<f64>,
    /// Why a caller's deadline header was ignored: `malformed`, `overflow`, `absurd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_deadline_ignored: Option<&'static str>,
    /// Retries granted within the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// How the breaker saw the request: `admitted`, `probe`, `rejected`, or `unavailable`
    /// when its state could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<&'static str>,
    /// How the breaker counted the outcome: `success`, `failure`, `abandoned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_outcome: Option<&'static str>,
    /// The request's criticality, when the policy sheds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<&'static str>,
    /// The request claimed a higher priority than its peer is trusted with, and got the default.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub priority_untrusted: bool,
    /// Whole tokens left in its bucket after it took one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_left: Option<u64>,
    /// HTTP status sent downstream.
    pub status: Option<u64>,
    /// Envoy's response code details, e.g. `response_timeout`; only for answers that went
    /// wrong (no response headers, or a status of 400 and above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_details: Option<&'a str>,
    /// Envoy's response flags as its access logs write them (`UT`, `UF,URX`, `-`); only for
    /// answers that went wrong, like `code_details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<String>,
    /// Time from the request headers reaching Fusebox to the end of the stream, in ms.
    pub duration_ms: f64,
}

/// The log line written when a breaker changes phase.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerTransitionLog<'a> {
    /// When the breaker changed.
    pub time: UnixTime,
    /// Always `breaker_transition`.
    pub event: &'static str,
    /// The breaker's policy.
    pub policy: &'a str,
    /// What the breaker covers: `route`, or the upstream cluster's name.
    pub scope: &'a str,
    /// `opened`, `half_opened`, `closed`.
    pub transition: &'static str,
    /// Why it opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// How long it stays open, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_for_ms: Option<u64>,
    /// The request whose admission or outcome caused the change.
    pub correlation_id: Option<&'a str>,
}

impl BreakerTransitionLog<'_> {
    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

impl RequestLog<'_> {
    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        // Sized for a whole line at once: growing from serde_json's default takes several
        // copies.
        let mut line = Vec::with_capacity(512);
        match serde_json::to_writer(&mut line, self) {
            Ok(()) => String::from_utf8(line).unwrap_or_else(|_| String::from("{}")),
            Err(_) => String::from("{}"),
        }
    }

    /// Whether the line says more than "passed through and answered": Fusebox decided
    /// something (a rejection or a `would_…`, an ID or traceparent replaced, an ID not
    /// generated, a caller deadline ignored, a metadata policy unknown, a breaker failure), or
    /// the answer went wrong (no response status, or 500 and above). What `log.requests:
    /// decisions` keeps.
    pub fn is_noteworthy(&self) -> bool {
        self.decision != "allow"
            || self.correlation_invalid.is_some()
            || self.correlation == Some("generation_failed")
            || self.traceparent == Some("replaced")
            || self.caller_deadline_ignored.is_some()
            || self.metadata_policy_unknown
            || self.breaker_outcome == Some("failure")
            || self.status.is_none_or(|status| status >= 500)
    }
}

/// Whole microseconds as fractional milliseconds, the unit of Envoy's own access logs.
pub fn nanos_to_millis(nanos: u64) -> f64 {
    (nanos / 1_000) as f64 / 1_000.0
}

/// A duration as fractional milliseconds, with microsecond resolution.
pub fn duration_millis(duration: std::time::Duration) -> f64 {
    nanos_to_millis(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn only_decisions_and_failures_are_noteworthy() {
        let ordinary = RequestLog {
            correlation: Some("generated"),
            traceparent: Some("generated"),
            route: "r",
            policy: "p",
            decision: "allow",
            status: Some(200),
            ..RequestLog::default()
        };
        assert!(!ordinary.is_noteworthy());
        assert!(!RequestLog {
            status: Some(404),
            ..ordinary.clone()
        }
        .is_noteworthy());
        let noteworthy = [
            RequestLog {
                decision: "shed",
                ..ordinary.clone()
            },
            RequestLog {
                decision: "would_breaker_open",
                ..ordinary.clone()
            },
            RequestLog {
                correlation_invalid: Some("too_long"),
                ..ordinary.clone()
            },
            RequestLog {
                correlation: Some("generation_failed"),
                ..ordinary.clone()
            },
            RequestLog {
                traceparent: Some("replaced"),
                ..ordinary.clone()
            },
            RequestLog {
                caller_deadline_ignored: Some("malformed"),
                ..ordinary.clone()
            },
            RequestLog {
                metadata_policy_unknown: true,
                ..ordinary.clone()
            },
            RequestLog {
                breaker_outcome: Some("failure"),
                ..ordinary.clone()
            },
            RequestLog {
                status: Some(503),
                ..ordinary.clone()
            },
            RequestLog {
                status: None,
                ..ordinary.clone()
            },
        ];
        for log in noteworthy {
            assert!(log.is_noteworthy(), "{}", log.to_json());
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hostile_values_stay_inside_one_valid_json_line() {
        let log = RequestLog {
            correlation_id: Some("abc"),
            route: "r\n{\"forged\":true}",
            policy: "none",
            code_details: Some("x\"y\u{0}"),
            ..RequestLog::default()
        };
        let line = log.to_json();
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["route"], "r\n{\"forged\":true}");
        assert_eq!(parsed["code_details"], "x\"y\u{0}");
        assert!(parsed.get("forged").is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn optional_fields_are_left_out_rather_than_null() {
        let line = RequestLog::default().to_json();
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(parsed.get("mode").is_none());
        assert!(parsed.get("metadata_policy_unknown").is_none());
        assert!(parsed.get("correlation_invalid").is_none());
        assert!(parsed.get("code_details").is_none());
        assert!(parsed.get("response_flags").is_none());
        assert!(parsed.get("priority_untrusted").is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn durations_are_milliseconds_with_microsecond_resolution() {
        assert_eq!(nanos_to_millis(1_234_567), 1.234);
        assert_eq!(nanos_to_millis(999), 0.0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (999_999, "1970-01-01T00:00:00.000Z"),
            (1_000_000, "1970-01-01T00:00:00.001Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999_000_000, "2000-02-29T23:59:59.999Z"),
            (4_107_542_400_000_000_000, "2100-03-01T00:00:00.000Z"),
            (1_795_437_711_123_456_789, "2026-11-23T12:41:51.123Z"),
            (u64::MAX, "2554-07-21T23:34:33.709Z"),
        ];
        for (nanos, expected) in cases {
            assert_eq!(UnixTime(nanos).to_string(), expected, "{nanos}");
        }
        let line = RequestLog {
            start_time: UnixTime(1_000_000),
            ..RequestLog::default()
        }
        .to_json();
        assert!(
            line.starts_with(r#"{"start_time":"1970-01-01T00:00:00.001Z","#),
            "{line}"
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn times_agree_with_a_reference_formatter(nanos in proptest::prelude::any::<u64>()) {
            let reference = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(
                UnixTime(nanos).to_string(),
                humantime::format_rfc3339_millis(reference).to_string()
            );
        }
    }
}

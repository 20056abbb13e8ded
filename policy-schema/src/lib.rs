//! Fusebox's configuration language.
//!
//! The plugin receives one JSON document from Envoy. This crate turns it into a validated
//! [`Config`] or into the complete list of problems, each with its JSON path, so that Envoy can
//! refuse the filter with a message an operator can act on. It also generates the JSON Schema
//! editors use to validate configs as they are written.
//!
//! Two stages, deliberately: [`spec`] mirrors the document (serde types, the source of the
//! schema), [`validate()`] checks ranges and references and builds [`config`] types that hold
//! their invariants. Nothing here talks to a proxy.

pub mod checked;
pub mod config;
pub mod duration;
pub mod error;
pub mod fingerprint;
pub mod limits;
pub mod spec;
mod structure;
pub mod validate;

pub use config::{
    BreakerConfig, BreakerScope, BudgetConfig, Config, CorrelationConfig, DeadlineFormat,
    DeadlineHeader, Fallback, IdFormat, IpRange, Mode, Policy, PolicyId, Priority, RequestLogging,
    RetryConfig, ShedConfig, NO_POLICY,
};
pub use duration::ConfigDuration;
pub use error::{ConfigError, ConfigErrors};
pub use validate::validate;

/// Parses and validates a configuration document. Empty or all-whitespace input means "all
/// defaults": correlation IDs on, no policies.
///
/// Refused whole, never half-applied: a document over [`limits::MAX_DOCUMENT_BYTES`], nested
/// deeper than [`limits::MAX_NESTING`], with a duplicate key anywhere, that is not JSON, or
/// that does not validate.
pub fn parse(document: &[u8]) -> Result<Config, ConfigErrors> {
    let refuse = |message: String| {
        ConfigErrors(vec![ConfigError {
            path: "$".to_owned(),
            message,
        }])
    };
    check_size(document.len())?;
    if document.iter().all(u8::is_ascii_whitespace) {
        return Ok(Config::default());
    }
    let structural = structure::check(document);
    if !structural.is_empty() {
        return Err(ConfigErrors(structural));
    }
    let spec: spec::ConfigSpec = serde_json::from_slice(document).map_err(|error| {
        refuse(format!(
            "not a valid configuration document: {}",
            limits::shorten(&error.to_string(), limits::MAX_QUOTED_LEN)
        ))
    })?;
    validate(&spec)
}

/// Refuses a document of `size` bytes over [`limits::MAX_DOCUMENT_BYTES`], before reading it.
pub fn check_size(size: usize) -> Result<(), ConfigErrors> {
    if size > limits::MAX_DOCUMENT_BYTES {
        return Err(ConfigErrors(vec![ConfigError {
            path: "$".to_owned(),
            message: format!(
                "the document is {size} bytes; at most {} (1 MiB) are accepted",
                limits::MAX_DOCUMENT_BYTES
            ),
        }]));
    }
    Ok(())
}

/// The JSON Schema of the configuration document, pretty-printed.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(spec::ConfigSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

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
pub mod spec;
pub mod validate;

pub use config::{
    BreakerConfig, BreakerScope, BudgetConfig, Config, CorrelationConfig, DeadlineFormat,
    DeadlineHeader, Fallback, IdFormat, Mode, Policy, PolicyId, Priority, RequestLogging,
    RetryConfig, ShedConfig, NO_POLICY,
};
pub use duration::ConfigDuration;
pub use error::{ConfigError, ConfigErrors};
pub use validate::validate;

/// Parses and validates a configuration document. Empty or all-whitespace input means "all
/// defaults": correlation IDs on, no policies.
pub fn parse(document: &[u8]) -> Result<Config, ConfigErrors> {
    if document.iter().all(u8::is_ascii_whitespace) {
        return Ok(Config::default());
    }
    let spec: spec::ConfigSpec = serde_json::from_slice(document).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            path: "$".to_owned(),
            message: format!("not a valid configuration document: {error}"),
        }])
    })?;
    validate(&spec)
}

/// The JSON Schema of the configuration document, pretty-printed.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(spec::ConfigSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

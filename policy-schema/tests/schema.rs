//! The checked-in JSON Schema is what editors validate configs against: it must match the types.

#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use fusebox_policy_schema::json_schema;
use fusebox_policy_schema::spec::{
    BreakerSpec, BudgetSpec, ConfigSpec, CorrelationSpec, FallbackSpec, PolicySpec, ReserveSpec,
    RetriesSpec, Section, ShedSpec,
};
use serde_json::Value;

const SCHEMA_FILE: &str = "fusebox-config.schema.json";

#[test]
fn checked_in_schema_matches_the_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_FILE);
    let generated = json_schema();
    if std::env::var_os("FUSEBOX_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{SCHEMA_FILE} is out of date; regenerate it with `FUSEBOX_UPDATE_SCHEMA=1 cargo test -p fusebox-policy-schema --test schema`"
    );
}

fn properties<'a>(schema: &'a Value, definition: Option<&str>) -> Vec<&'a str> {
    let object = match definition {
        Some(name) => &schema["$defs"][name],
        None => schema,
    };
    assert_eq!(
        object["additionalProperties"],
        Value::Bool(false),
        "{definition:?} must refuse unknown fields"
    );
    let mut names: Vec<&str> = object["properties"]
        .as_object()
        .map(|properties| properties.keys().map(String::as_str).collect())
        .unwrap_or_default();
    names.sort_unstable();
    names
}

fn sorted(fields: &[&'static str]) -> Vec<&'static str> {
    let mut fields = fields.to_vec();
    fields.sort_unstable();
    fields
}

#[test]
fn validation_knows_exactly_the_fields_the_schema_documents() {
    let schema: Value = serde_json::from_str(&json_schema()).unwrap();
    assert_eq!(properties(&schema, None), sorted(ConfigSpec::FIELDS));
    assert_eq!(
        properties(&schema, Some("CorrelationSpec")),
        sorted(CorrelationSpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("PolicySpec")),
        sorted(PolicySpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("BudgetSpec")),
        sorted(BudgetSpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("RetriesSpec")),
        sorted(RetriesSpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("FallbackSpec")),
        sorted(FallbackSpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("ReserveSpec")),
        sorted(ReserveSpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("BreakerSpec")),
        sorted(BreakerSpec::FIELDS)
    );
    assert_eq!(
        properties(&schema, Some("ShedSpec")),
        sorted(ShedSpec::FIELDS)
    );
}

//! A field value that keeps its own deserialization error.
//!
//! serde stops at the first error, but an operator fixing a config wants every problem in one
//! go. Each field is therefore deserialized on its own: a bad value becomes
//! [`Checked::Invalid`] and validation reports it with its JSON path, next to the errors of its
//! siblings.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{Deserialize, DeserializeOwned, Deserializer};

/// A field as written: either a value of the expected type, or why it is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked<T> {
    /// The value has the expected type.
    Valid(T),
    /// The value is present but has the wrong type or shape; the message says why.
    Invalid(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match T::deserialize(value) {
            Ok(valid) => Checked::Valid(valid),
            Err(error) => Checked::Invalid(error.to_string()),
        })
    }
}

// The schema of a checked field is the schema of the value it stands for.
impl<T: JsonSchema> JsonSchema for Checked<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

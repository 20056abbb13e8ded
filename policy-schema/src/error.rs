//! Configuration errors, each with the JSON path of the value at fault.

use std::fmt;

/// One problem in a configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, e.g. `policies.payments.mode`; `$` is the document itself.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration document, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never, for a refused document).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the error list mentions `path` exactly.
    pub fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|error| error.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Longest key quoted in a path, in bytes; longer ones are cut with `…`.
const MAX_PATH_KEY_LEN: usize = 128;

/// A JSON path under construction while validation walks the document.
#[derive(Debug, Clone)]
pub(crate) struct JsonPath(String);

impl JsonPath {
    pub(crate) fn root() -> Self {
        JsonPath(String::new())
    }

    /// The path of a member of the object at this path. Keys that are not plain identifiers
    /// (route names often hold `/` or `.`) are quoted so the path stays unambiguous.
    pub(crate) fn key(&self, key: &str) -> Self {
        // A hostile key cannot make a path (and Envoy's log line) arbitrarily long.
        let key = &*crate::limits::shorten(key, MAX_PATH_KEY_LEN);
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let mut path = self.0.clone();
        if plain {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        } else {
            path.push('[');
            path.push_str(&serde_json::Value::from(key).to_string());
            path.push(']');
        }
        JsonPath(path)
    }

    /// The path of an element of the array at this path.
    pub(crate) fn index(&self, index: usize) -> Self {
        JsonPath(format!("{}[{index}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "$"
        } else {
            &self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_use_dots_for_identifiers_and_brackets_for_anything_else() {
        let root = JsonPath::root();
        assert_eq!(root.as_str(), "$");
        assert_eq!(
            root.key("policies").key("pay-ments_2").as_str(),
            "policies.pay-ments_2"
        );
        assert_eq!(
            root.key("routes").key("api/v1.get").as_str(),
            r#"routes["api/v1.get"]"#
        );
        assert_eq!(root.key("routes").key("").as_str(), r#"routes[""]"#);
        assert_eq!(root.key("a\"b").as_str(), r#"["a\"b"]"#);
    }
}

//! Checks of the document's shape that serde cannot make: duplicate keys and nesting depth.
//!
//! JSON does not forbid duplicate keys, and parsers disagree on them: serde_json keeps the
//! last, others keep the first. A document whose meaning depends on the parser is refused, each
//! duplicate with its JSON path. Nesting is bounded well below serde_json's own recursion limit
//! so a hostile document is refused early, with a path, instead of exhausting the stack.
//!
//! One streaming pass over the document, before it is deserialized: nothing is built but the
//! set of keys of the object being read.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{ConfigError, JsonPath};
use crate::limits::MAX_NESTING;

/// The structural problems of `document`. A document that is not JSON at all yields none:
/// deserializing it reports the syntax error.
pub(crate) fn check(document: &[u8]) -> Vec<ConfigError> {
    let errors = RefCell::new(Vec::new());
    let walk = Walk {
        path: JsonPath::root(),
        depth: 0,
        errors: &errors,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(document);
    // A syntax error, or the nesting limit (already recorded), ends the walk.
    let _ = walk.deserialize(&mut deserializer);
    errors.into_inner()
}

struct Walk<'a> {
    path: JsonPath,
    depth: usize,
    errors: &'a RefCell<Vec<ConfigError>>,
}

impl Walk<'_> {
    fn error(&self, path: &JsonPath, message: String) {
        self.errors.borrow_mut().push(ConfigError {
            path: path.as_str().to_owned(),
            message,
        });
    }

    /// Enters an object or array; past the limit, records it and stops the walk.
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_NESTING {
            self.error(
                &self.path,
                format!("nested deeper than {MAX_NESTING} levels; a configuration needs 6"),
            );
            return Err(E::custom("nesting limit"));
        }
        Ok(depth)
    }

    fn child(&self, path: JsonPath, depth: usize) -> Walk<'_> {
        Walk {
            path,
            depth,
            errors: self.errors,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut index = 0;
        while seq
            .next_element_seed(self.child(self.path.index(index), depth))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut seen = HashSet::new();
        let mut reported = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.path.key(&key);
            if seen.contains(&key) {
                if reported.insert(key) {
                    self.error(
                        &path,
                        "duplicate key: JSON parsers disagree on which value counts, so neither \
                         is used; keep one"
                            .to_owned(),
                    );
                }
            } else {
                seen.insert(key);
            }
            map.next_value_seed(self.child(path, depth))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(document: &str) -> Vec<String> {
        check(document.as_bytes())
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn duplicates_are_reported_once_each_with_their_path() {
        assert!(paths(r#"{"a": 1, "b": {"a": 1}}"#).is_empty());
        assert_eq!(paths(r#"{"a": 1, "a": 2, "a": 3}"#), ["a"]);
        assert_eq!(
            paths(
                r#"{"policies": {"p": {"mode": "enforce", "mode": "dry_run"}}, "x": [{"k": 1, "k": 2}]}"#
            ),
            ["policies.p.mode", "x[0].k"]
        );
    }

    #[test]
    fn nesting_is_limited_and_the_walk_stops_there() {
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert!(paths(&ok).is_empty());
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let errors = check(deep.as_bytes());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].path.starts_with("a[0][0]"), "{}", errors[0].path);
    }

    #[test]
    fn documents_that_are_not_json_are_left_to_the_parser() {
        assert!(paths("not json").is_empty());
        assert!(
            paths(r#"{"a": 1, "a": "#).len() == 1,
            "what was read is still checked"
        );
    }
}

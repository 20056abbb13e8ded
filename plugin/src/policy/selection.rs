//! Which policy governs a request.
//!
//! Precedence, most specific first: the route's own metadata
//! (`filter_metadata.fusebox.policy`), then the `routes` map by Envoy route name, then
//! `default_policy`. A metadata entry naming an unknown policy cannot be caught at configure
//! time (routes come from Envoy, not from our config), so it is reported per request and the
//! next source decides: a typo must not silently drop a route's protection.

use fusebox_policy_schema::{Config, PolicyId};

/// Where the policy of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The route's metadata named it.
    RouteMetadata,
    /// The `routes` map named it for the route's name.
    RouteMap,
    /// `default_policy`.
    Default,
    /// No source named a policy.
    None,
}

impl PolicySource {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::RouteMetadata => "route_metadata",
            PolicySource::RouteMap => "route_map",
            PolicySource::Default => "default",
            PolicySource::None => "none",
        }
    }
}

/// The outcome of policy selection for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The governing policy, if any.
    pub policy: Option<PolicyId>,
    /// Which source named it.
    pub source: PolicySource,
    /// The route's metadata named a policy that does not exist.
    pub metadata_policy_unknown: bool,
}

/// Selects the policy for a request from its route's metadata entry and route name.
pub fn select_policy(
    config: &Config,
    metadata_policy: Option<&[u8]>,
    route_name: Option<&str>,
) -> Selection {
    let mut metadata_policy_unknown = false;
    if let Some(name) = metadata_policy {
        match std::str::from_utf8(name)
            .ok()
            .and_then(|name| config.policy_named(name))
        {
            Some(policy) => {
                return Selection {
                    policy: Some(policy),
                    source: PolicySource::RouteMetadata,
                    metadata_policy_unknown,
                }
            }
            None => metadata_policy_unknown = true,
        }
    }
    let (policy, source) = match route_name.and_then(|route| config.route_policy(route)) {
        Some(policy) => (Some(policy), PolicySource::RouteMap),
        None => match config.default_policy() {
            Some(policy) => (Some(policy), PolicySource::Default),
            None => (None, PolicySource::None),
        },
    };
    Selection {
        policy,
        source,
        metadata_policy_unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn config(default: bool) -> Config {
        let default = if default {
            r#", "default_policy": "fallback""#
        } else {
            ""
        };
        fusebox_policy_schema::parse(
            format!(
                r#"{{"policies": {{"meta": {{}}, "mapped": {{}}, "fallback": {{}}}},
                    "routes": {{"r1": "mapped"}}{default}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn metadata_beats_route_map_beats_default() {
        let c = config(true);
        let meta = c.policy_named("meta");
        let mapped = c.policy_named("mapped");
        let fallback = c.policy_named("fallback");

        let s = select_policy(&c, Some(b"meta"), Some("r1"));
        assert_eq!((s.policy, s.source), (meta, PolicySource::RouteMetadata));
        let s = select_policy(&c, None, Some("r1"));
        assert_eq!((s.policy, s.source), (mapped, PolicySource::RouteMap));
        let s = select_policy(&c, None, Some("r2"));
        assert_eq!((s.policy, s.source), (fallback, PolicySource::Default));
        let s = select_policy(&c, None, None);
        assert_eq!((s.policy, s.source), (fallback, PolicySource::Default));
        assert!(!s.metadata_policy_unknown);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_match_means_no_policy() {
        let s = select_policy(&config(false), None, Some("r2"));
        assert_eq!((s.policy, s.source), (None, PolicySource::None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_metadata_policy_is_flagged_and_the_next_source_decides() {
        let c = config(false);
        let s = select_policy(&c, Some(b"typo"), Some("r1"));
        assert_eq!(
            (s.policy, s.source),
            (c.policy_named("mapped"), PolicySource::RouteMap)
        );
        assert!(s.metadata_policy_unknown);
        let s = select_policy(&c, Some(b"\xff\xfe"), Some("r2"));
        assert_eq!((s.policy, s.source), (None, PolicySource::None));
        assert!(s.metadata_policy_unknown);
    }
}

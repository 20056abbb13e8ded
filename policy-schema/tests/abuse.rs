//! Configuration abuse: documents too big, too deep, too many, ambiguous. Each is refused
//! whole with an error that says which limit and where, or accepted within the stated limits;
//! none exhausts memory or time, none is half-applied.

#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fusebox_policy_schema::limits::{
    MAX_DOCUMENT_BYTES, MAX_NESTING, MAX_POLICIES, MAX_ROUTES, MAX_TOTAL_SHED_KEYS,
};
use fusebox_policy_schema::{parse, ConfigErrors, IpRange};

fn errors(document: &str) -> ConfigErrors {
    match parse(document.as_bytes()) {
        Ok(_) => panic!("expected a refusal"),
        Err(errors) => errors,
    }
}

fn policies(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"p{i}\": {{}}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `n` policies with names as short as they can be, so that 100,000 fit in 1 MiB.
fn compact_policies(n: usize) -> String {
    const DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..n)
        .map(|mut i| {
            let mut name = String::new();
            loop {
                name.push(DIGITS[i % DIGITS.len()] as char);
                i /= DIGITS.len();
                if i == 0 {
                    break;
                }
            }
            format!("\"{name}\":{{}}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn routes(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"route_{i}\": \"p{}\"", i % 10))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_10_mb_document_is_refused_by_its_size_before_it_is_read() {
    let padding = " ".repeat(10 * 1024 * 1024);
    let document = format!("{{\"policies\": {{}}{padding}}}");
    let started = Instant::now();
    let errors = errors(&document);
    assert_eq!(errors.len(), 1);
    let message = errors.to_string();
    assert!(
        message.starts_with("$: the document is 10485")
            && message.contains(&format!("at most {MAX_DOCUMENT_BYTES}")),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without parsing"
    );
    // Whitespace counts too: an empty-looking document over the limit is no exception.
    assert!(parse(" ".repeat(MAX_DOCUMENT_BYTES + 1).as_bytes()).is_err());
    assert!(parse(" ".repeat(MAX_DOCUMENT_BYTES).as_bytes()).is_ok());
}

#[test]
fn deep_nesting_is_refused_with_its_path_without_exhausting_the_stack() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let deep = format!(
            "{{\"policies\": {{\"p\": {{\"x\": {}1{}}}}}}}",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let errors = errors(&deep);
        assert_eq!(errors.len(), 1, "{errors}");
        let error = errors.iter().next().unwrap();
        assert!(error.path.starts_with("policies.p.x"), "{}", error.path);
        assert!(
            error
                .message
                .contains(&format!("deeper than {MAX_NESTING} levels")),
            "{error}"
        );
    }
    // Nesting up to the limit is not a structural problem (the value is still unknown).
    let at_limit = format!(
        "{{\"x\": {}{}}}",
        "[".repeat(MAX_NESTING - 1),
        "]".repeat(MAX_NESTING - 1)
    );
    assert!(errors(&at_limit).has_path("x"));
}

#[test]
fn policies_and_routes_are_accepted_up_to_their_limits_and_refused_beyond() {
    let at_limits = format!(
        "{{\"policies\": {{{}}}, \"routes\": {{{}}}, \"default_policy\": \"p0\"}}",
        policies(MAX_POLICIES),
        routes(MAX_ROUTES)
    );
    let config = parse(at_limits.as_bytes()).unwrap();
    assert_eq!(config.policies().len(), MAX_POLICIES);
    assert_eq!(config.route_policy("route_9999"), config.policy_named("p9"));

    let too_many_policies = format!("{{\"policies\":{{{}}}}}", compact_policies(100_000));
    assert!(too_many_policies.len() < MAX_DOCUMENT_BYTES);
    let started = Instant::now();
    let errors_found = errors(&too_many_policies);
    assert_eq!(
        errors_found.to_string(),
        format!(
            "policies: 100000 policies; at most {MAX_POLICIES} (each defines about 40 Envoy stats on every worker)"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let too_many_routes = format!(
        "{{\"policies\": {{{}}}, \"routes\": {{{}}}}}",
        policies(10),
        routes(MAX_ROUTES + 1)
    );
    let errors_found = errors(&too_many_routes);
    assert_eq!(errors_found.len(), 1, "{errors_found}");
    assert!(errors_found.has_path("routes"));
}

#[test]
fn many_misspelt_references_do_not_make_validation_quadratic() {
    let typos: Vec<String> = (0..MAX_ROUTES)
        .map(|i| format!("\"route_{i}\": \"q{i}\""))
        .collect();
    let document = format!(
        "{{\"policies\": {{{}}}, \"routes\": {{{}}}}}",
        policies(MAX_POLICIES),
        typos.join(",")
    );
    let started = Instant::now();
    let errors = errors(&document);
    assert_eq!(errors.len(), MAX_ROUTES);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let long = errors.iter().map(|e| e.message.len()).max().unwrap();
    assert!(long < 300, "messages stay short: {long} bytes");
}

#[test]
fn duplicate_keys_are_refused_with_their_json_paths() {
    let errors = errors(
        r#"{
          "correlation": {"header": "x-a", "header": "x-b"},
          "policies": {
            "p": {"mode": "enforce"},
            "p": {"mode": "dry_run"},
            "q": {"breaker": {"consecutive_failures": 1,
                              "fallback": {"headers": {"x-a": "1", "x-a": "2"}}}}
          },
          "routes": {"r": "p", "r": "q"},
          "default_policy": "p",
          "default_policy": "q"
        }"#,
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "correlation.header",
            "policies.p",
            "policies.q.breaker.fallback.headers.x-a",
            "routes.r",
            "default_policy"
        ]
    );
    assert!(errors
        .iter()
        .all(|e| e.message.starts_with("duplicate key")));
    // The same names in different objects are not duplicates.
    assert!(
        parse(br#"{"policies": {"p": {}}, "routes": {"p": "p"}, "default_policy": "p"}"#).is_ok()
    );
}

#[test]
fn hostile_names_and_values_cannot_blow_up_the_error_text() {
    let huge = "x".repeat(200_000);
    let document = format!(
        r#"{{"{huge}": 1, "policies": {{"{huge}": {{"mode": "{huge}"}}}}, "routes": {{"r": "{huge}"}}}}"#
    );
    let errors = errors(&document);
    assert!(errors.len() >= 3, "{errors}");
    for error in errors.iter() {
        assert!(
            error.path.len() <= 256,
            "{} bytes of path",
            error.path.len()
        );
        assert!(
            error.message.len() <= 1100,
            "{} bytes of message",
            error.message.len()
        );
    }
}

#[test]
fn list_fields_are_bounded() {
    let headers: Vec<String> = (0..9).map(|i| format!("\"x-d{i}\"")).collect();
    let statuses: Vec<String> = (0..101).map(|_| "500".to_owned()).collect();
    let fallback: Vec<String> = (0..33).map(|i| format!("\"x-h{i}\": \"v\"")).collect();
    let document = format!(
        r#"{{"policies": {{"p": {{
            "budget": {{"timeout": "1s", "caller_deadline_headers": [{}]}},
            "breaker": {{"consecutive_failures": 1, "failure_statuses": [{}],
                        "fallback": {{"headers": {{{}}}}}}}}}}}}}"#,
        headers.join(","),
        statuses.join(","),
        fallback.join(",")
    );
    let errors = errors(&document);
    for path in [
        "policies.p.budget.caller_deadline_headers",
        "policies.p.breaker.failure_statuses",
        "policies.p.breaker.fallback.headers",
    ] {
        assert!(errors.has_path(path), "{path} in {errors}");
    }
}

#[test]
fn keyed_shed_buckets_are_bounded_across_policies() {
    let keyed = |n: usize| {
        (0..n)
            .map(|i| {
                format!(r#""k{i}": {{"shed": {{"rate": 1, "burst": 1, "key": "header:x-t", "max_keys": 4096}}}}"#)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let fits = (MAX_TOTAL_SHED_KEYS / 4096) as usize;
    assert!(parse(format!("{{\"policies\": {{{}}}}}", keyed(fits)).as_bytes()).is_ok());
    let errors = errors(&format!("{{\"policies\": {{{}}}}}", keyed(fits + 1)));
    assert!(errors.to_string().contains("buckets"), "{errors}");
    assert!(errors.has_path("policies"));
}

#[test]
fn trusted_priority_ranges_are_cidr_ranges_and_need_a_priority_header() {
    let config = parse(
        br#"{"policies": {"p": {"shed": {"rate": 1, "burst": 1, "priority_header": "x-priority",
             "trust_priority_from": ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]}}}}"#,
    )
    .unwrap();
    let shed = config.policies()[0].shed.as_ref().unwrap();
    let ranges = shed.trust_priority_from.as_ref().unwrap();
    let trusted = |address: &str| {
        let address: IpAddr = address.parse().unwrap();
        ranges.iter().any(|range| range.contains(address))
    };
    assert!(trusted("10.1.2.3"));
    assert!(trusted("127.0.0.1"));
    assert!(
        trusted("::ffff:127.0.0.1"),
        "IPv4-mapped IPv6 counts as IPv4"
    );
    assert!(trusted("fd12::1"));
    assert!(!trusted("127.0.0.2"));
    assert!(!trusted("11.0.0.1"));
    assert!(!trusted("::1"));

    let errors = errors(
        r#"{"policies": {
             "a": {"shed": {"rate": 1, "burst": 1, "trust_priority_from": ["10.0.0.0/8"]}},
             "b": {"shed": {"rate": 1, "burst": 1, "priority_header": "x-priority",
                            "trust_priority_from": ["10.0.0.1/8", "10.0.0.0", "::1/129", "nope/8"]}}}}"#,
    );
    assert!(errors.has_path("policies.a.shed.trust_priority_from"));
    for index in 0..4 {
        assert!(
            errors.has_path(&format!("policies.b.shed.trust_priority_from[{index}]")),
            "{index}: {errors}"
        );
    }
    assert!(errors.to_string().contains("`10.0.0.0/8`"), "{errors}");

    assert!(IpRange::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!(IpRange::parse("::/0")
        .unwrap()
        .contains("::1".parse().unwrap()));
}

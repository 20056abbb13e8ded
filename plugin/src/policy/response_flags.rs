//! Envoy's response flags (the `response.flags` property, the legacy bitmask), decoded into
//! the short names of Envoy's access logs (`UT`, `UF`, ...), and classified for policies.

/// Upstream request timeout (`UT`): the router's timeout fired.
pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
/// Upstream remote reset (`UR`).
pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
/// Upstream connection failure (`UF`), e.g. connection refused.
pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
/// Upstream connection termination (`UC`).
pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
/// Upstream overflow (`UO`): Envoy's own circuit breaker.
pub const UPSTREAM_OVERFLOW: u64 = 0x80;

/// Bit → access-log name, in bit order, for the flags whose bits are stable in Envoy.
const NAMES: [(u64, &str); 19] = [
    (0x1, "LH"),
    (0x2, "UH"),
    (UPSTREAM_REQUEST_TIMEOUT, "UT"),
    (0x8, "LR"),
    (UPSTREAM_REMOTE_RESET, "UR"),
    (UPSTREAM_CONNECTION_FAILURE, "UF"),
    (UPSTREAM_CONNECTION_TERMINATION, "UC"),
    (UPSTREAM_OVERFLOW, "UO"),
    (0x100, "NR"),
    (0x200, "DI"),
    (0x400, "FI"),
    (0x800, "RL"),
    (0x1000, "UAEX"),
    (0x2000, "RLSE"),
    (0x4000, "DC"),
    (0x8000, "URX"),
    (0x10000, "SI"),
    (0x20000, "IH"),
    (0x40000, "DPE"),
];

/// True when the router's upstream timeout ended the request.
pub fn is_upstream_timeout(flags: u64) -> bool {
    flags & UPSTREAM_REQUEST_TIMEOUT != 0
}

/// The flags as Envoy's access logs write them: comma-separated names, unnamed bits in hex,
/// `-` for none.
pub fn describe(flags: u64) -> String {
    if flags == 0 {
        return "-".to_owned();
    }
    let mut names: Vec<String> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    let known = NAMES.iter().fold(0, |all, (bit, _)| all | bit);
    if flags & !known != 0 {
        names.push(format!("{:#x}", flags & !known));
    }
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn flags_read_like_envoys_access_log() {
        assert_eq!(describe(0), "-");
        assert_eq!(describe(UPSTREAM_REQUEST_TIMEOUT), "UT");
        assert_eq!(describe(UPSTREAM_CONNECTION_FAILURE | 0x8000), "UF,URX");
        assert_eq!(describe(0x100_0000 | 0x1), "LH,0x1000000");
        assert!(is_upstream_timeout(0x4 | 0x8000));
        assert!(!is_upstream_timeout(0x20));
    }
}

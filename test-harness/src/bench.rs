//! The end-to-end overhead benchmark: what fusebox costs a request in real Envoy, measured
//! side by side with the baselines in one run.
//!
//! One Envoy process with one worker serves five listeners in front of the same upstream: no
//! filter, an empty proxy-wasm filter (the floor any wasm filter pays), fusebox with all four
//! features on and nothing tripping, the same with `log.requests: decisions` (so the price of a
//! log line per request shows on its own), and the nearest Envoy-native setup (local rate
//! limit, route timeout, request ID). `wrk` loads one listener at a time; rounds alternate
//! between the listeners so drift on a shared machine spreads evenly. Envoy's own CPU time per
//! request (from the kernel's per-thread accounting) is the main figure.
//!
//! Other work on the machine moves that figure by more than an empty filter costs, for seconds
//! at a time. So a figure that is a difference (what a setup adds over no filter, each
//! feature's price, each host call's, `--compare`) is the median of per-round differences
//! between setups measured back to back, where both saw the same spell of the machine. Never
//! at once: two Envoys loaded together on two cores both run cold, and every filter then
//! costs several times what it costs on a core of its own.
//!
//! Last, each setup runs again in an Envoy of its own under callgrind, which counts the
//! instructions Envoy runs per request (see [`crate::instructions`]): a figure that does not
//! move with the machine, for ranking changes too small for CPU time to show.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::envoy::Envoy;
use crate::instructions::{self, CountedEnvoy};
use crate::load::{closed_loop, open_loop, LoadResult};
use crate::provision::{self, repo_root};
use crate::upstream::Upstream;
use fusebox_hostcall_probe::Call;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Rounds over the listeners; each listener's figures are its median round's.
    pub rounds: usize,
    /// Closed-loop time per listener per round.
    pub duration: Duration,
    /// Requests whose instructions are counted, per setup (see [`instructions`]).
    pub counted_requests: u32,
    /// Whether instructions are also counted feature by feature ([`FEATURES`]).
    pub count_features: bool,
}

impl BenchOptions {
    /// A smoke run: proves the benchmark works, measures little.
    pub const QUICK: BenchOptions = BenchOptions {
        rounds: 1,
        duration: Duration::from_millis(800),
        counted_requests: 200,
        count_features: false,
    };
    /// The run whose figures go in the README.
    pub const FULL: BenchOptions = BenchOptions {
        rounds: 7,
        duration: Duration::from_secs(3),
        counted_requests: 1_000,
        count_features: true,
    };
}

const LISTENERS: [&str; 5] = [
    "no_filter",
    "empty_wasm",
    "fusebox",
    "fusebox_log_decisions",
    "envoy_native",
];
const CONNECTIONS: usize = 8;

/// The plugin configuration measured: `$FUSEBOX_BENCH_CONFIG` (a file) to measure your own,
/// otherwise [`FUSEBOX_CONFIG`].
fn plugin_config() -> Result<String, String> {
    match std::env::var_os("FUSEBOX_BENCH_CONFIG") {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| format!("{path:?}: {e}")),
        None => Ok(FUSEBOX_CONFIG.to_owned()),
    }
}

/// `config` with a log line only for requests where Fusebox decided something.
fn log_decisions_only(config: &str) -> Result<String, String> {
    let mut document: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("plugin configuration: {e}"))?;
    let object = document
        .as_object_mut()
        .ok_or("plugin configuration: not a JSON object")?;
    object.insert("log".to_owned(), json!({"requests": "decisions"}));
    Ok(document.to_string())
}

/// Every feature on, nothing tripping: a policy named `bench` for every request.
const FUSEBOX_CONFIG: &str = r#"{"policies": {"bench": {
  "budget": {"timeout": "5s"},
  "breaker": {"consecutive_failures": 1000},
  "shed": {"rate": 1000000, "burst": 1000000, "max_in_flight": 100000}}},
  "default_policy": "bench"}"#;

fn listener(name: &str, filters: &str, hcm_extra: &str) -> String {
    format!(
        r#"    - name: {name}
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {name}{hcm_extra}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - name: bench
                          match: {{ prefix: "/" }}
                          route: {{ cluster: upstream, timeout: 5s }}
                http_filters:
{filters}                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

fn wasm_filter(vm_id: &str, path: &str, configuration: &str) -> String {
    let configuration = serde_json::Value::from(configuration).to_string();
    format!(
        r#"                  - name: {vm_id}
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: {vm_id}
                        root_id: {vm_id}
                        failure_policy: FAIL_RELOAD
                        vm_config:
                          vm_id: {vm_id}
                          runtime: envoy.wasm.runtime.v8
                          code: {{ local: {{ filename: "{path}" }} }}
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: {configuration}
"#
    )
}

/// Envoy leaves the request ID to the filter, as Fusebox's users configure it (the native
/// setup, which has no filter for it, lets Envoy generate it).
const OWNED_ID: &str =
    "\n                generate_request_id: false\n                preserve_external_request_id: true";

/// The benchmark's Envoy: one listener per setup, all in front of `upstream`.
fn bootstrap(
    upstream: std::net::SocketAddr,
    fusebox: &str,
    empty: &str,
    plugin_config: &str,
    quiet_config: &str,
) -> String {
    let native = r#"                  - name: envoy.filters.http.local_ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                      stat_prefix: native
                      token_bucket: { max_tokens: 1000000, tokens_per_fill: 1000000, fill_interval: 1s }
                      filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
                      filter_enforced: { default_value: { numerator: 100, denominator: HUNDRED } }
"#;
    let listeners = [
        listener("no_filter", "", OWNED_ID),
        listener("empty_wasm", &wasm_filter("empty", empty, ""), OWNED_ID),
        listener(
            "fusebox",
            &wasm_filter("fusebox", fusebox, plugin_config),
            OWNED_ID,
        ),
        listener(
            "fusebox_log_decisions",
            &wasm_filter("fusebox_quiet", fusebox, quiet_config),
            OWNED_ID,
        ),
        listener("envoy_native", native, ""),
    ]
    .concat();
    with_upstream(&listeners, upstream)
}

/// A whole Envoy configuration: an admin port, `listeners`, and the `upstream` cluster.
fn with_upstream(listeners: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
{listeners}  clusters:
    - name: upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}
"#,
        ip = upstream.ip(),
        port = upstream.port()
    )
}

#[derive(Debug, Default, Clone)]
struct Tally {
    ok: u64,
    errors: u64,
    seconds: f64,
    cpu: Duration,
    user_cpu: Duration,
    open_loop: LoadResult,
}

/// An Envoy's CPU time so far, all of it and user space's.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    cpu: Duration,
    user_cpu: Duration,
}

impl CpuReading {
    fn of(envoy: &Envoy) -> CpuReading {
        CpuReading {
            cpu: envoy.cpu_time(),
            user_cpu: envoy.user_cpu_time(),
        }
    }
}

impl Tally {
    /// What `envoy` spent on the load that gave `result`, since `before`.
    fn since(envoy: &Envoy, before: CpuReading, result: &LoadResult) -> Tally {
        let now = CpuReading::of(envoy);
        Tally {
            cpu: now.cpu.saturating_sub(before.cpu),
            user_cpu: now.user_cpu.saturating_sub(before.user_cpu),
            ok: result.ok,
            errors: result.errors,
            seconds: result.elapsed.as_secs_f64(),
            ..Tally::default()
        }
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
    fn user_us_per_request(&self) -> f64 {
        self.user_cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
    fn throughput(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
}

/// Runs the benchmark and writes `target/fusebox-bench/overhead.{json,svg}`.
pub fn run(options: BenchOptions) -> Result<(), String> {
    provision::wasm_targets()?;
    let fusebox = provision::plugin_wasm()?;
    let empty = provision::build_wasm("fusebox-empty-filter", "fusebox_empty_filter")?;
    let upstream = Upstream::start_unrecorded().map_err(|e| e.to_string())?;
    let plugin_config = plugin_config()?;
    let yaml = bootstrap(
        upstream.addr(),
        &fusebox.to_string_lossy(),
        &empty.to_string_lossy(),
        &plugin_config,
        &log_decisions_only(&plugin_config)?,
    );
    let envoy = Envoy::start_yaml(&yaml, 1)?;
    let addresses = envoy.listeners();
    let address = |name: &str| addresses.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
    let group = LISTENERS
        .iter()
        .map(|name| {
            Ok((
                &envoy,
                address(name).ok_or(format!("listener {name} missing"))?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let rounds = rounds_in_turn(&group, options.rounds, options.duration)?;
    let added = added_by_rounds(&rounds);
    let mut tallies: Vec<Tally> = (0..LISTENERS.len())
        .map(|index| {
            median_round(
                rounds
                    .iter()
                    .filter_map(|round| round.get(index).cloned())
                    .collect(),
            )
        })
        .collect();
    // Latency at a fixed rate well below the slowest setup's capacity, same for all.
    let rate = tallies
        .iter()
        .map(Tally::throughput)
        .fold(f64::INFINITY, f64::min)
        * 0.5;
    for (name, tally) in LISTENERS.iter().zip(tallies.iter_mut()) {
        let addr = address(name).ok_or(format!("listener {name} missing"))?;
        tally.open_loop = open_loop(addr, "/", rate, CONNECTIONS, options.duration);
    }
    let memory = envoy.resident_bytes();
    drop(group);
    drop(envoy);

    let cas = cas_contention(&yaml, options.duration)?;
    let features = feature_costs(upstream.addr(), &fusebox, &empty, options)?;
    let host_calls = host_call_costs(upstream.addr(), options)?;
    report(
        &Findings {
            tallies,
            added,
            rate,
            memory,
            cas,
            features,
            host_calls,
        },
        &fusebox,
    )?;
    count_instructions(upstream.addr(), &fusebox, &empty, &plugin_config, options)
}

/// `cargo harness bench --instructions`: only the instruction counts (see
/// [`count_instructions`]).
pub fn instructions(options: BenchOptions) -> Result<(), String> {
    provision::wasm_targets()?;
    let fusebox = provision::plugin_wasm()?;
    let empty = provision::build_wasm("fusebox-empty-filter", "fusebox_empty_filter")?;
    let upstream = Upstream::start_unrecorded().map_err(|e| e.to_string())?;
    count_instructions(
        upstream.addr(),
        &fusebox,
        &empty,
        &plugin_config()?,
        options,
    )
}

/// One setup whose instructions are counted: its listener's name, the module it runs (none
/// for no filter) and the module's configuration.
struct CountedSetup<'a> {
    name: String,
    wasm: Option<&'a std::path::Path>,
    config: String,
}

/// Instructions per request of each setup, each in its own one-worker Envoy under callgrind,
/// one after the other (see [`crate::instructions`]).
fn instructions_per_request(
    setups: &[CountedSetup<'_>],
    upstream: std::net::SocketAddr,
    requests: u32,
) -> Result<Vec<f64>, String> {
    setups
        .iter()
        .map(|setup| {
            let yaml = single_filter_yaml(&setup.name, setup.wasm, &setup.config, upstream);
            let counted = CountedEnvoy::start(&yaml)?;
            let count = counted.per_request(counted.listener(&setup.name)?, requests)?;
            eprintln!(
                "  {:<24} {count:>10.0} instructions per request",
                setup.name
            );
            Ok(count)
        })
        .collect()
}

/// Counts the instructions Envoy runs per request with no filter, the empty filter and
/// fusebox (and, for a full run, fusebox feature by feature), prints them with the ratio of
/// what fusebox and the empty filter add, and writes `target/fusebox-bench/instructions.json`.
fn count_instructions(
    upstream: std::net::SocketAddr,
    fusebox: &std::path::Path,
    empty: &std::path::Path,
    plugin_config: &str,
    options: BenchOptions,
) -> Result<(), String> {
    let setup = |name: &str, wasm, config: &str| CountedSetup {
        name: name.to_owned(),
        wasm,
        config: config.to_owned(),
    };
    let mut setups = vec![
        setup("no_filter", None, ""),
        setup("empty_wasm", Some(empty), ""),
        setup("fusebox", Some(fusebox), plugin_config),
    ];
    if options.count_features {
        setups.push(setup(
            "fusebox_log_decisions",
            Some(fusebox),
            &log_decisions_only(plugin_config)?,
        ));
    }
    // The whole-filter setups come first, the feature lines (if any) after them.
    let whole_filters = setups.len();
    if options.count_features {
        for (index, (_, config)) in FEATURES.iter().enumerate() {
            setups.push(setup(&format!("feature_{index}"), Some(fusebox), config));
        }
    }
    eprintln!(
        "counting instructions under callgrind ({} requests per setup after {}; tens of seconds per setup):",
        options.counted_requests,
        instructions::WARM_UP
    );
    let counts = instructions_per_request(&setups, upstream, options.counted_requests)?;
    let count = |index: usize| counts.get(index).copied().unwrap_or(0.0);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\nEnvoy instructions per request (callgrind; {} requests in sequence on one connection, \
         after {} uncounted; one worker; each setup in its own Envoy):",
        options.counted_requests,
        instructions::WARM_UP
    );
    let _ = writeln!(
        table,
        "{:<24} {:>14} {:>12}",
        "setup", "instructions", "added"
    );
    // Indices of the first three setups, always counted.
    let (no_filter, empty_filter, whole_fusebox) = (0, 1, 2);
    for (index, setup) in setups.iter().enumerate().take(whole_filters) {
        let _ = writeln!(
            table,
            "{:<24} {:>14.0} {:>+12.0}",
            setup.name,
            count(index),
            count(index) - count(no_filter)
        );
    }
    let empty_added = count(empty_filter) - count(no_filter);
    let ratio =
        (empty_added > 0.0).then(|| (count(whole_fusebox) - count(no_filter)) / empty_added);
    let _ = writeln!(
        table,
        "fusebox's added instructions / the empty filter's: {}",
        ratio.map_or("unmeasurable".to_owned(), |ratio| format!("{ratio:.1}x"))
    );
    let features: Vec<(&str, f64)> = FEATURES
        .iter()
        .enumerate()
        .filter_map(|(index, (name, _))| {
            Some((
                *name,
                counts.get(whole_filters + index)? - count(empty_filter),
            ))
        })
        .collect();
    if !features.is_empty() {
        let _ = writeln!(
            table,
            "instructions per request fusebox adds over the empty filter, feature by feature:"
        );
        for (name, added) in &features {
            let _ = writeln!(table, "  {name:<22} {added:>+10.0}");
        }
    }
    println!("{table}");
    let document = json!({
        "counted_requests": options.counted_requests,
        "instructions_per_request": by_name(setups.iter().map(|setup| setup.name.as_str()).zip(counts.iter().copied())),
        "overhead_vs_empty_wasm": ratio,
        "feature_added_instructions": by_name(features.iter().copied()),
    });
    let path = write_result("instructions.json", &document)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Figures as a JSON object keyed by their names.
fn by_name<'a>(figures: impl Iterator<Item = (&'a str, f64)>) -> serde_json::Value {
    serde_json::Value::Object(
        figures
            .map(|(name, figure)| (name.to_owned(), json!(figure)))
            .collect(),
    )
}

/// Writes `document` as `target/fusebox-bench/<name>` and returns its path.
fn write_result(name: &str, document: &serde_json::Value) -> Result<std::path::PathBuf, String> {
    let dir = repo_root().join("target").join("fusebox-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(document).unwrap_or_default(),
    )
    .map_err(|e| format!("{path:?}: {e}"))?;
    Ok(path)
}

/// `cargo harness bench --compare OTHER.wasm --instructions`: the instructions per request of
/// this build and another, same configuration, each in its own Envoy under callgrind.
pub fn compare_instructions(other: &std::path::Path, options: BenchOptions) -> Result<(), String> {
    let Comparison {
        other,
        fusebox,
        upstream,
        config,
    } = Comparison::prepare(other)?;
    let setups = [
        CountedSetup {
            name: "compare_this".to_owned(),
            wasm: Some(&fusebox),
            config: config.clone(),
        },
        CountedSetup {
            name: "compare_other".to_owned(),
            wasm: Some(&other),
            config,
        },
    ];
    let counts = instructions_per_request(&setups, upstream.addr(), options.counted_requests)?;
    let (this, that) = (figure(&counts, 0), figure(&counts, 1));
    println!(
        "Envoy instructions per request (callgrind): this build {this:.0}, {} {that:.0}; \
         difference {:+.0} ({:+.2}%)",
        other.display(),
        this - that,
        (this - that) / that.max(1.0) * 100.0
    );
    Ok(())
}

/// Everything one run measured, for the report.
struct Findings {
    /// One per [`LISTENERS`] entry, its median round.
    tallies: Vec<Tally>,
    /// What each of [`LISTENERS`] adds over no filter: the median of the per-round differences.
    added: Vec<f64>,
    /// The open-loop rate latency was measured at.
    rate: f64,
    /// Envoy's resident memory with every listener loaded.
    memory: Option<u64>,
    /// Compare-and-swap retries and requests at two workers.
    cas: (u64, u64),
    /// What each feature adds over the empty filter.
    features: Vec<(&'static str, f64)>,
    /// What each kind of host call costs.
    host_calls: Vec<(&'static str, f64)>,
}

/// Fusebox with one feature at a time, so each feature's price shows on its own. Correlation
/// has no switch, so every line includes it; every line but the second writes the log line.
const FEATURES: [(&str, &str); 6] = [
    ("correlation, log line", r#"{}"#),
    (
        "correlation, no line",
        r#"{"log": {"requests": "decisions"}}"#,
    ),
    (
        "+ budget",
        r#"{"policies": {"bench": {"budget": {"timeout": "5s"}}}, "default_policy": "bench"}"#,
    ),
    (
        "+ breaker",
        r#"{"policies": {"bench": {"breaker": {"consecutive_failures": 1000}}}, "default_policy": "bench"}"#,
    ),
    (
        "+ token bucket",
        r#"{"policies": {"bench": {"shed": {"rate": 1000000, "burst": 1000000}}}, "default_policy": "bench"}"#,
    ),
    (
        "+ bucket, bulkhead",
        r#"{"policies": {"bench": {"shed": {"rate": 1000000, "burst": 1000000, "max_in_flight": 100000}}}, "default_policy": "bench"}"#,
    ),
];

/// What each setup adds over the first (no filter), in user CPU µs per request: for each, the
/// median of its per-round differences. Measured back to back, a setup and no filter see the
/// same spell of the machine; each figure alone moves by more than the empty filter costs.
fn added_by_rounds(rounds: &[Vec<Tally>]) -> Vec<f64> {
    let setups = rounds.first().map_or(0, Vec::len);
    (0..setups)
        .map(|index| {
            median(
                rounds
                    .iter()
                    .map(|round| {
                        let figures: Vec<f64> =
                            round.iter().map(Tally::user_us_per_request).collect();
                        difference(&figures, index, 0)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Envoy user CPU per request each [`FEATURES`] line adds over the empty wasm filter, in µs.
fn feature_costs(
    upstream: std::net::SocketAddr,
    fusebox: &std::path::Path,
    empty: &std::path::Path,
    options: BenchOptions,
) -> Result<Vec<(&'static str, f64)>, String> {
    let baseline = single_filter_envoy("feature_empty", Some(empty), "", upstream)?;
    let lines = FEATURES
        .iter()
        .enumerate()
        .map(|(index, (_, config))| {
            single_filter_envoy(&format!("feature_{index}"), Some(fusebox), config, upstream)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let added = added_over(&baseline, &lines, options)?;
    Ok(FEATURES
        .iter()
        .zip(added)
        .map(|((name, _), us)| (*name, us))
        .collect())
}

/// What each of `lines` adds over `baseline`, in user CPU µs per request. Each line is
/// measured right after (or, every other round, right before) the baseline, and the rounds
/// go over every line in turn, so a slow spell on the machine spreads over the lines instead
/// of falling on one: each line's figure is the median of its per-round differences.
fn added_over(
    baseline: &(Envoy, std::net::SocketAddr),
    lines: &[(Envoy, std::net::SocketAddr)],
    options: BenchOptions,
) -> Result<Vec<f64>, String> {
    let pairs: Vec<[(&Envoy, std::net::SocketAddr); 2]> = lines
        .iter()
        .map(|line| [(&line.0, line.1), (&baseline.0, baseline.1)])
        .collect();
    for pair in &pairs {
        measure_in_turn(pair, false, WARM_UP)?;
    }
    let mut differences = vec![Vec::with_capacity(options.rounds); pairs.len()];
    for round in 0..options.rounds {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            if let (Some(pair), Some(line)) = (pairs.get(index), differences.get_mut(index)) {
                let tallies = measure_in_turn(pair, round % 2 == 1, PAIR_DURATION)?;
                let figures: Vec<f64> = tallies.iter().map(Tally::user_us_per_request).collect();
                line.push(difference(&figures, 0, 1));
            }
        }
    }
    Ok(differences.into_iter().map(median).collect())
}

/// Closed-loop time per side of an [`added_over`] pair.
const PAIR_DURATION: Duration = Duration::from_secs(2);

/// Warm-up per listener before the rounds.
const WARM_UP: Duration = Duration::from_secs(1);

/// The round with the median CPU per request, with the errors of every round: a round that
/// something else on the machine slowed (they come and go, tens of µs per request here) moves
/// a median less than a sum.
fn median_round(mut tallies: Vec<Tally>) -> Tally {
    let errors = tallies.iter().map(|tally| tally.errors).sum();
    tallies.sort_by(|a, b| a.cpu_us_per_request().total_cmp(&b.cpu_us_per_request()));
    let middle = tallies.len() / 2;
    let mut median = tallies.into_iter().nth(middle).unwrap_or_default();
    median.errors = errors;
    median
}

/// What `--compare` needs: both builds, an upstream and the plugin configuration.
struct Comparison {
    other: std::path::PathBuf,
    fusebox: std::path::PathBuf,
    upstream: Upstream,
    config: String,
}

impl Comparison {
    fn prepare(other: &std::path::Path) -> Result<Comparison, String> {
        // Envoy runs in a scratch directory: the path must not be relative.
        let other = other
            .canonicalize()
            .map_err(|e| format!("{}: {e}", other.display()))?;
        provision::wasm_targets()?;
        Ok(Comparison {
            other,
            fusebox: provision::plugin_wasm()?,
            upstream: Upstream::start_unrecorded().map_err(|e| e.to_string())?,
            config: plugin_config()?,
        })
    }
}

/// Rounds for `--compare`: enough that the median of the per-round differences stands still.
const COMPARE_ROUNDS: usize = 12;

/// `cargo harness bench --compare OTHER.wasm`: this build of fusebox against another build
/// (an older commit's, say), with the same plugin configuration. Each build runs in its own
/// one-worker Envoy; they are loaded one after the other, back to back, for
/// [`COMPARE_ROUNDS`] rounds. Prints each build's user CPU per request, round by round, and
/// the median of the per-round differences.
pub fn compare(other: &std::path::Path, options: BenchOptions) -> Result<(), String> {
    let Comparison {
        other,
        fusebox,
        upstream,
        config,
    } = Comparison::prepare(other)?;
    let this = single_filter_envoy("compare_this", Some(&fusebox), &config, upstream.addr())?;
    let that = single_filter_envoy("compare_other", Some(&other), &config, upstream.addr())?;
    let rounds = options.rounds.max(COMPARE_ROUNDS);
    println!("Envoy user CPU µs per request, the builds one after the other, {rounds} rounds:");
    println!(
        "{:>5} {:>12} {:>12} {:>12}",
        "round", "this build", "other", "difference"
    );
    let pair = [(&this.0, this.1), (&that.0, that.1)];
    let mut differences = Vec::with_capacity(rounds);
    for (round, tallies) in rounds_in_turn(&pair, rounds, options.duration)?
        .iter()
        .enumerate()
    {
        let figures: Vec<f64> = tallies.iter().map(Tally::user_us_per_request).collect();
        let (this, other) = (figure(&figures, 0), figure(&figures, 1));
        println!(
            "{round:>5} {this:>12.1} {other:>12.1} {:>+12.1}",
            this - other
        );
        differences.push(this - other);
    }
    let (lowest, highest) = differences
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &d| {
            (low.min(d), high.max(d))
        });
    println!(
        "this build minus {}: median {:+.1} µs per request (rounds from {lowest:+.1} to {highest:+.1})",
        other.display(),
        median(differences),
    );
    Ok(())
}

/// The `index`th figure of a round (0 if missing).
fn figure(round: &[f64], index: usize) -> f64 {
    round.get(index).copied().unwrap_or(0.0)
}

/// A round's `minuend`th figure minus its `subtrahend`th.
fn difference(round: &[f64], minuend: usize, subtrahend: usize) -> f64 {
    figure(round, minuend) - figure(round, subtrahend)
}

/// The middle value (the upper one of an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// An Envoy configuration whose one listener, `name`, runs `wasm` with `config` (no filter
/// for `None`) in front of `upstream`.
fn single_filter_yaml(
    name: &str,
    wasm: Option<&std::path::Path>,
    config: &str,
    upstream: std::net::SocketAddr,
) -> String {
    let filter = wasm.map_or(String::new(), |wasm| {
        wasm_filter(name, &wasm.to_string_lossy(), config)
    });
    with_upstream(&listener(name, &filter, OWNED_ID), upstream)
}

/// A one-worker Envoy running [`single_filter_yaml`], and its listener's address.
fn single_filter_envoy(
    name: &str,
    wasm: Option<&std::path::Path>,
    config: &str,
    upstream: std::net::SocketAddr,
) -> Result<(Envoy, std::net::SocketAddr), String> {
    let envoy = Envoy::start_yaml(&single_filter_yaml(name, wasm, config, upstream), 1)?;
    let address = envoy
        .listeners()
        .into_iter()
        .find_map(|(listener, address)| (listener == name).then_some(address))
        .ok_or(format!("listener {name} missing"))?;
    Ok((envoy, address))
}

/// Closed-loop load on each member of `group` (an Envoy and the listener to load), one after
/// the other, after a warm-up, for `rounds` rounds of `duration` each, the order reversed
/// every other round so drift on a shared machine spreads evenly: each round's tallies, in
/// `group`'s order. One at a time, because two loaded at once on two cores each run cold (a
/// context switch between every request), and that costs every filter several times what it
/// costs an Envoy on a core of its own: measured at once, the empty filter read 20 to 40 µs.
fn rounds_in_turn(
    group: &[(&Envoy, std::net::SocketAddr)],
    rounds: usize,
    duration: Duration,
) -> Result<Vec<Vec<Tally>>, String> {
    measure_in_turn(group, false, WARM_UP)?;
    (0..rounds)
        .map(|round| measure_in_turn(group, round % 2 == 1, duration))
        .collect()
}

/// One closed-loop run of `duration` on each member of `group` in turn (last first if
/// `reversed`): one tally per member, in `group`'s order.
fn measure_in_turn(
    group: &[(&Envoy, std::net::SocketAddr)],
    reversed: bool,
    duration: Duration,
) -> Result<Vec<Tally>, String> {
    let mut tallies = vec![Tally::default(); group.len()];
    let mut order: Vec<usize> = (0..group.len()).collect();
    if reversed {
        order.reverse();
    }
    for index in order {
        if let (Some((envoy, address)), Some(tally)) = (group.get(index), tallies.get_mut(index)) {
            let before = CpuReading::of(envoy);
            let result = closed_loop(*address, "/", CONNECTIONS, duration)?;
            *tally = Tally::since(envoy, before, &result);
        }
    }
    Ok(tallies)
}

/// Calls each probe listener makes per request: enough that their cost stands well above the
/// noise of one request's own.
const PROBE_CALLS: u32 = 20;

/// How many calls the probe for `call` makes per request: one mix (one call of each kind, as
/// a real request makes them), [`PROBE_CALLS`] of every other kind.
fn probe_calls(call: Call) -> u32 {
    match call {
        Call::None => 0,
        Call::Mix => 1,
        _ => PROBE_CALLS,
    }
}

/// What one host call of each kind costs Envoy, in user CPU µs: the probe filter making
/// [`probe_calls`] of them per request, against the same probe making none (see
/// [`added_over`]).
fn host_call_costs(
    upstream: std::net::SocketAddr,
    options: BenchOptions,
) -> Result<Vec<(&'static str, f64)>, String> {
    let probe = provision::build_wasm("fusebox-hostcall-probe", "fusebox_hostcall_probe")?;
    // Each probe in its own VM, so one probe's shared-data key is its own.
    let start = |call: Call| {
        let config = format!("{} {}", call.name(), probe_calls(call));
        single_filter_envoy(
            &format!("probe_{}", call.name()),
            Some(&probe),
            &config,
            upstream,
        )
    };
    let baseline = start(Call::None)?;
    let calls: Vec<Call> = Call::ALL
        .into_iter()
        .filter(|call| *call != Call::None)
        .collect();
    let lines = calls
        .iter()
        .map(|call| start(*call))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(calls
        .iter()
        .zip(added_over(&baseline, &lines, options)?)
        .map(|(call, us)| (call.name(), us / f64::from(probe_calls(*call).max(1))))
        .collect())
}

/// Shared-data compare-and-swap races lost per request with two workers under load.
fn cas_contention(yaml: &str, duration: Duration) -> Result<(u64, u64), String> {
    let envoy = Envoy::start_yaml(yaml, 2)?;
    let addr = envoy
        .listeners()
        .into_iter()
        .find(|(name, _)| name == "fusebox")
        .map(|(_, addr)| addr)
        .ok_or("listener fusebox missing")?;
    closed_loop(addr, "/", CONNECTIONS * 2, duration)?;
    let requests = envoy
        .wait_for_stat("wasmcustom.fusebox.bench.requests", 1)
        .unwrap_or(0);
    let retries = envoy
        .stat("wasmcustom.fusebox.bench.shared_cas_retries")
        .unwrap_or(0);
    Ok((retries, requests))
}

fn verdict(held: bool) -> &'static str {
    if held {
        "held"
    } else {
        "MISSED"
    }
}

fn report(findings: &Findings, fusebox: &std::path::Path) -> Result<(), String> {
    let &Findings {
        ref tallies,
        ref added,
        rate,
        memory,
        cas: (cas_retries, cas_requests),
        ref features,
        ref host_calls,
    } = findings;
    let get = |i: usize| tallies.get(i).cloned().unwrap_or_default();
    let (none, fb, quiet, native) = (get(0), get(2), get(3), get(4));
    let added_by = |index: usize| added.get(index).copied().unwrap_or(0.0);
    // A ratio to what the empty filter adds, none when that measured nothing (noise).
    let over_empty = |index: usize| (added_by(1) > 0.0).then(|| added_by(index) / added_by(1));
    let shown = |ratio: Option<f64>| {
        ratio.map_or(
            "unmeasurable (the empty filter's cost read <= 0)".to_owned(),
            |r| format!("{r:.2}x"),
        )
    };
    let overhead_ratio = over_empty(2);
    let throughput_ratio = fb.throughput() / none.throughput().max(1e-9);
    let quiet_overhead_ratio = over_empty(3);
    let quiet_throughput_ratio = quiet.throughput() / none.throughput().max(1e-9);
    let wasm_bytes = std::fs::metadata(fusebox).map(|m| m.len()).unwrap_or(0);
    let cas_rate = cas_retries as f64 / cas_requests.max(1) as f64;

    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<13} {:>10} {:>12} {:>12} {:>13} {:>9} {:>9} {:>7}",
        "setup",
        "req/s",
        "CPU µs/req",
        "user µs/req",
        "added user µs",
        "p50 µs",
        "p99 µs",
        "errors"
    );
    for (index, (name, tally)) in LISTENERS.iter().zip(tallies).enumerate() {
        let _ = writeln!(
            table,
            "{:<13} {:>10.0} {:>12.2} {:>12.2} {:>13.2} {:>9} {:>9} {:>7}",
            name,
            tally.throughput(),
            tally.cpu_us_per_request(),
            tally.user_us_per_request(),
            added_by(index),
            tally.open_loop.percentile_us(50.0),
            tally.open_loop.percentile_us(99.0),
            tally.errors + tally.open_loop.errors,
        );
    }
    let _ = writeln!(table, "\nlatency measured open-loop at {rate:.0} req/s; one Envoy worker; {CONNECTIONS} connections");
    let _ = writeln!(
        table,
        "(req/s, CPU and user: each setup's median round; added: the median of the per-round \
         differences to no filter, measured back to back)"
    );
    let _ = writeln!(
        table,
        "fusebox added user CPU / empty wasm filter's: {} (target <= 1.5x: {}; \
         empty filter +{:.1} µs, fusebox +{:.1} µs)",
        shown(overhead_ratio),
        verdict(overhead_ratio.is_some_and(|ratio| ratio <= 1.5)),
        added_by(1),
        added_by(2)
    );
    let _ = writeln!(
        table,
        "fusebox throughput / no filter: {:.1}% (target >= 88%: {})",
        throughput_ratio * 100.0,
        verdict(throughput_ratio >= 0.88)
    );
    let _ = writeln!(
        table,
        "with log.requests = decisions: added user CPU {} the empty filter's, throughput {:.1}% of no filter",
        shown(quiet_overhead_ratio),
        quiet_throughput_ratio * 100.0
    );
    let _ = writeln!(
        table,
        "fusebox.wasm: {} KB (target <= 350 KB: {})",
        wasm_bytes / 1000,
        verdict(wasm_bytes <= 350_000)
    );
    let _ = writeln!(table, "shared-data CAS retries at 2 workers: {cas_retries} in {cas_requests} requests ({:.3}%, target < 1%: {})", cas_rate * 100.0, verdict(cas_rate < 0.01));
    if let Some(memory) = memory {
        let _ = writeln!(
            table,
            "Envoy resident memory with both wasm filters loaded: {} MB",
            memory / 1_000_000
        );
    }
    let _ = writeln!(
        table,
        "\nEnvoy user CPU per request fusebox adds over the empty wasm filter, feature by feature \
         (each in its own Envoy, measured back to back with one running the empty filter; median of the rounds' differences):"
    );
    for (name, us) in features {
        let _ = writeln!(table, "  {name:<20} {us:>7.1} µs");
    }
    let _ = writeln!(
        table,
        "\nEnvoy user CPU per host call (a probe filter making {PROBE_CALLS} per request, minus the same probe making none; each in its own Envoy, measured back to back; median of the rounds' differences):"
    );
    let price = |name: &str| {
        host_calls
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, us)| *us)
    };
    for (name, us) in host_calls
        .iter()
        .filter(|(name, _)| *name != Call::Mix.name())
    {
        let _ = writeln!(table, "  {name:<20} {us:>7.2} µs");
    }
    let mix: Vec<&str> = Call::MIX.iter().map(|call| call.name()).collect();
    let _ = writeln!(
        table,
        "  one each of {} in one request: {:.2} µs (their prices above add up to {:.2} µs)",
        mix.join(", "),
        price(Call::Mix.name()),
        mix.iter().map(|name| price(name)).sum::<f64>()
    );
    println!("{table}");

    let setups: Vec<_> = LISTENERS
        .iter()
        .zip(tallies)
        .enumerate()
        .map(|(index, (name, t))| {
            json!({"setup": name, "requests_per_second": t.throughput(), "cpu_us_per_request": t.cpu_us_per_request(), "user_cpu_us_per_request": t.user_us_per_request(),
                   "added_user_cpu_us_per_request": added_by(index), "p50_us": t.open_loop.percentile_us(50.0),
                   "p99_us": t.open_loop.percentile_us(99.0), "errors": t.errors + t.open_loop.errors})
        })
        .collect();
    let document = json!({
        "setups": setups,
        "open_loop_rate": rate,
        "overhead_vs_empty_wasm": overhead_ratio,
        "throughput_vs_no_filter": throughput_ratio,
        "log_decisions_overhead_vs_empty_wasm": quiet_overhead_ratio,
        "log_decisions_throughput_vs_no_filter": quiet_throughput_ratio,
        "wasm_bytes": wasm_bytes,
        "cas_retries": cas_retries,
        "cas_requests": cas_requests,
        "envoy_resident_bytes": memory,
        "native_cpu_us_per_request": native.cpu_us_per_request(),
        "feature_added_user_cpu_us": by_name(features.iter().copied()),
        "host_call_cpu_us": by_name(host_calls.iter().copied()),
    });
    let json_path = write_result("overhead.json", &document)?;
    let svg_path = json_path.with_file_name("overhead.svg");
    std::fs::write(&svg_path, svg(tallies)).map_err(|e| e.to_string())?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// Two bar charts side by side: Envoy CPU per request, and open-loop p99 latency.
fn svg(tallies: &[Tally]) -> String {
    let panels: [(&str, Vec<f64>); 2] = [
        (
            "Envoy CPU per request (µs)",
            tallies.iter().map(Tally::cpu_us_per_request).collect(),
        ),
        (
            "p99 latency, open loop (µs)",
            tallies
                .iter()
                .map(|t| f64::from(t.open_loop.percentile_us(99.0)))
                .collect(),
        ),
    ];
    let mut out = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="880" height="320" font-family="sans-serif" font-size="12">"#,
    );
    out.push_str(r##"<rect width="880" height="320" fill="#ffffff"/>"##);
    let colors = ["#9e9e9e", "#64b5f6", "#e65100", "#ffb74d", "#81c784"];
    for (panel, (title, values)) in panels.iter().enumerate() {
        let x0 = 20.0 + panel as f64 * 440.0;
        let max = values.iter().cloned().fold(0.0_f64, f64::max).max(1e-9);
        let _ = write!(
            out,
            r#"<text x="{}" y="24" font-size="14">{title}</text>"#,
            x0 + 10.0
        );
        for (i, value) in values.iter().enumerate() {
            let height = 220.0 * value / max;
            let x = x0 + 20.0 + i as f64 * 82.0;
            let y = 270.0 - height;
            let color = colors.get(i).copied().unwrap_or("#000000");
            let name = LISTENERS.get(i).copied().unwrap_or("");
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="62" height="{height:.1}" fill="{color}"/>"#
            );
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{value:.1}</text>"#,
                x + 31.0,
                y - 4.0
            );
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="290" text-anchor="middle" font-size="9">{name}</text>"#,
                x + 35.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

//! Fault injection ("game days"): a scenario file names a topology, an open-loop load, a fault
//! schedule, steady-state hypotheses and stop conditions; the runner plays it against real
//! Envoy with fusebox and our controllable upstreams, and writes a report per scenario.
//!
//! - [`scenario`]: the scenario file, read and checked.
//! - [`topology`]: the topology, rendered for the native backend and for docker-compose.
//! - [`native`]: upstream processes, crashed and restarted for real.
//! - [`load`]: the open-loop generator recording every attempt.
//! - [`analysis`]: series, verdicts, stop conditions.
//! - [`report`] and [`plot`]: Markdown, HTML, SVG, PNG, CSV, JSON.

pub mod analysis;
pub mod load;
pub mod native;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::envoy::Envoy;
use crate::envoy_config::Endpoint;
use crate::provision::{self, repo_root};
use analysis::{judge, requests, series, stop_reason, HitSamples};
use load::RunningLoad;
use native::UpstreamProcess;
use report::{write_report, ScenarioReport};
use scenario::{FaultAction, Outcome, Profile, Scenario};

/// Where the checked-in scenarios are, relative to the repository root.
pub const SCENARIO_DIR: &str = "test-harness/scenarios";
/// The topology every checked-in scenario runs on.
pub const TOPOLOGY_FILE: &str = "test-harness/scenarios/topology.toml";

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Full length, or the short CI profile.
    pub profile: Profile,
    /// The `fusebox-harness` binary, started once per upstream.
    pub upstream_exe: PathBuf,
    /// A policy file to run instead of the topology's (to prove your own policy).
    pub policy: Option<PathBuf>,
    /// Reports go to `<report_dir>/<scenario>/`.
    pub report_dir: PathBuf,
}

impl ChaosOptions {
    /// Defaults: reports under `reports/chaos`, upstreams from this very binary.
    pub fn new(profile: Profile) -> Result<ChaosOptions, String> {
        Ok(ChaosOptions {
            profile,
            upstream_exe: this_binary()?,
            policy: None,
            report_dir: repo_root().join("reports").join("chaos"),
        })
    }
}

/// This very binary. `cargo test-all` runs its own `cargo test` step, which rebuilds the harness
/// binary (with dev-dependency features) over the running one; Linux then names the running
/// file `<path> (deleted)`, and the new build at `<path>` is the same program.
fn this_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    if exe.exists() {
        return Ok(exe);
    }
    let rebuilt = exe
        .to_str()
        .and_then(|path| path.strip_suffix(" (deleted)"))
        .map(PathBuf::from)
        .filter(|path| path.exists());
    Ok(rebuilt.unwrap_or(exe))
}

/// Every checked-in scenario file, sorted.
pub fn scenario_files() -> Result<Vec<PathBuf>, String> {
    let dir = repo_root().join(SCENARIO_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .filter(|path| path.file_name().is_some_and(|n| n != "topology.toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The scenario file called `name` (a path, or a file stem in the scenario directory).
pub fn find_scenario(name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    if path.is_file() {
        return Ok(path.to_owned());
    }
    let checked_in = repo_root().join(SCENARIO_DIR).join(format!("{name}.toml"));
    if checked_in.is_file() {
        Ok(checked_in)
    } else {
        Err(format!(
            "no scenario {name:?} (neither a file nor {})",
            checked_in.display()
        ))
    }
}

/// A seed from the scenario name: the same scenario offers the same load every run.
fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A fault switching on or off at a time.
struct FaultEvent {
    at: Duration,
    upstream: usize,
    action: FaultAction,
    on: bool,
}

fn apply(event: &FaultEvent, upstreams: &mut [UpstreamProcess]) -> Result<(), String> {
    let Some(upstream) = upstreams.get_mut(event.upstream) else {
        return Ok(());
    };
    match (event.action, event.on) {
        (FaultAction::Crash, true) => {
            upstream.crash();
            Ok(())
        }
        (FaultAction::Crash, false) => upstream.restart(),
        (FaultAction::Inject(fault), true) => upstream.set_fault(Some(fault)),
        (FaultAction::Inject(_), false) => upstream.set_fault(None),
    }
}

/// Runs one scenario against real Envoy and writes its report.
pub fn run_scenario(scenario: &Scenario, options: &ChaosOptions) -> Result<ScenarioReport, String> {
    let policy_source = options
        .policy
        .clone()
        .unwrap_or_else(|| scenario.topology.policy_path.clone());
    let plugin_config = match &options.policy {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?
        }
        None => scenario.topology.plugin_config.clone(),
    };
    let config = fusebox_policy_schema::parse(plugin_config.as_bytes())
        .map_err(|errors| format!("{} is invalid:\n{errors}", policy_source.display()))?;

    let mut upstreams = scenario
        .topology
        .upstreams
        .iter()
        .map(|u| UpstreamProcess::start(&options.upstream_exe, &u.name))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoints: BTreeMap<String, Endpoint> = upstreams
        .iter()
        .map(|u| (u.name.clone(), u.addr().into()))
        .collect();
    let wasm = provision::plugin_wasm()?;
    let spec = scenario.topology.envoy_spec(
        "127.0.0.1",
        (0, 0),
        &wasm.to_string_lossy(),
        &plugin_config,
        &endpoints,
    );
    let envoy = Envoy::start(&spec)?;

    let mut events: Vec<FaultEvent> = scenario
        .faults
        .iter()
        .filter_map(|fault| {
            let upstream = upstreams.iter().position(|u| u.name == fault.upstream)?;
            Some([
                FaultEvent {
                    at: fault.from,
                    upstream,
                    action: fault.action,
                    on: true,
                },
                FaultEvent {
                    at: fault.until,
                    upstream,
                    action: fault.action,
                    on: false,
                },
            ])
        })
        .flatten()
        .collect();
    events.sort_by_key(|e| e.at);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now() + Duration::from_millis(100);
    let load = RunningLoad::start(
        &runtime,
        envoy.listener(),
        &scenario.load,
        &config.correlation.header,
        seed(&scenario.name),
        t0,
    );
    let records = load.records();
    let mut hits: HitSamples = Vec::new();
    let mut next_event = 0;
    let mut aborted: Option<String> = None;
    let mut last_stop_check = Duration::ZERO;
    let hard_end =
        scenario.load.duration.0 + scenario.load.client_timeout.0 * 12 + Duration::from_secs(5);
    let result = loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = t0.elapsed();
        let mut fault_error = None;
        while let Some(event) = events.get(next_event).filter(|e| e.at <= now) {
            next_event += 1;
            if let Err(e) = apply(event, &mut upstreams) {
                fault_error = Some(e);
                break;
            }
        }
        if let Some(e) = fault_error {
            load.stop();
            break Err(format!("injecting a fault: {e}"));
        }
        let total_hits = upstreams.iter_mut().map(UpstreamProcess::hits).sum();
        hits.push((now.as_secs_f64(), total_hits));
        if aborted.is_none() && now >= last_stop_check + Duration::from_millis(250) {
            last_stop_check = now;
            let attempts = records.lock().map(|r| r.clone()).unwrap_or_default();
            aborted = scenario
                .stop_when
                .iter()
                .find_map(|condition| stop_reason(condition, &attempts, now.as_secs_f64()));
            if aborted.is_some() {
                load.stop();
            }
        }
        if load.finished() {
            break Ok(());
        }
        if now > hard_end {
            break Err(
                "the load did not finish: requests outlived their client timeout".to_owned(),
            );
        }
    };
    // Leave nothing broken behind, whatever happened.
    for event in events.iter().skip(next_event).filter(|e| !e.on) {
        let _ = apply(event, &mut upstreams);
    }
    result?;
    drop(envoy);
    drop(upstreams);
    drop(runtime);

    let mut attempts = records.lock().map(|r| r.clone()).unwrap_or_default();
    attempts.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let folded = requests(&attempts);
    let verdicts = scenario
        .hypotheses
        .iter()
        .map(|h| judge(h, scenario, &attempts, &folded, &hits))
        .collect();
    let duration = scenario.load.duration.0.as_secs_f64();
    let width = (duration / 60.0).clamp(0.2, 1.0);
    let buckets = series(&attempts, &hits, duration, width);
    let totals = Outcome::ALL
        .iter()
        .map(|o| (*o, attempts.iter().filter(|a| a.outcome == *o).count()))
        .collect();
    let report = ScenarioReport {
        scenario: scenario.name.clone(),
        verdicts,
        aborted,
        totals,
        requests: folded.len(),
        dir: options.report_dir.join(&scenario.name),
    };
    write_report(
        &report,
        scenario,
        options.profile,
        &attempts,
        &buckets,
        &policy_source,
    )?;
    Ok(report)
}

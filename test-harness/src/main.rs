//! `fusebox-harness`: the commands behind `cargo demo`, `cargo test-all` and the Justfile.

use std::path::Path;
use std::process::{Command, ExitCode};

use fusebox_harness::bench::{self, BenchOptions};
use fusebox_harness::chaos::scenario::{Profile, Scenario};
use fusebox_harness::chaos::topology::{Topology, COMPOSE_DIR};
use fusebox_harness::chaos::{self, ChaosOptions, TOPOLOGY_FILE};
use fusebox_harness::envoy_config::{
    demo_spec, render, render_istio_wasm_plugin, DEMO_CONFIG, DEMO_PLUGIN_CONFIG, ISTIO_WASM_PLUGIN,
};
use fusebox_harness::fuzz;
use fusebox_harness::provision::{self, repo_root};
use fusebox_harness::upstream::Upstream;

const USAGE: &str = "usage: fusebox-harness <command>

commands:
  demo        build the plugin and run Envoy + fusebox + the demo upstream (127.0.0.1:10000)
  test        provision everything and run the whole test suite (what CI runs)
  fuzz        run every fuzz target in fuzz/ for --seconds N each (default 60; nightly + cargo-fuzz)
  provision   install the wasm targets, Envoy and the wasm test runner into .tools/
  build       build fusebox.wasm (release, wasm32-wasip1)
  bench       end-to-end overhead: fusebox vs no filter, an empty wasm filter, Envoy-native
              filters, in one Envoy (--quick for a smoke run)
                [--compare OTHER.wasm] (this build against another, alternating rounds)
                [--instructions] (only the instructions per request, counted under callgrind)
  chaos       run fault-injection scenarios against real Envoy and write reports to
              reports/chaos/<scenario>/; exits non-zero when a hypothesis breaks
                [--short] (CI's scaled-down profile) [--policy FILE] (your own policy)
                [SCENARIO...] (names in test-harness/scenarios/ or paths; default: all)
  render      rewrite envoy-config/ (demo Envoy config, Istio WasmPlugin, docker-compose)
              from their description
  upstream    run the controllable test upstream
                [--listen ADDR] (default 127.0.0.1:8081) [--control ADDR] (fault switch)";

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "demo" => demo(),
        "test" => test(),
        "fuzz" => {
            let args: Vec<String> = std::env::args().collect();
            fuzz::seconds_from_args(&args).and_then(fuzz::fuzz)
        }
        "provision" => provision_all().map(|_| ()),
        "build" => provision::plugin_wasm().map(|path| println!("{}", path.display())),
        "render" => render_checked_in(),
        "bench" => {
            let quick = std::env::args().any(|arg| arg == "--quick");
            let options = if quick {
                BenchOptions::QUICK
            } else {
                BenchOptions::FULL
            };
            let args: Vec<String> = std::env::args().collect();
            let compare = args
                .iter()
                .position(|arg| arg == "--compare")
                .map(|at| args.get(at + 1).ok_or("--compare needs a .wasm path"));
            let instructions = args.iter().any(|arg| arg == "--instructions");
            match (compare, instructions) {
                (None, false) => provision::envoy_bin().and_then(|_| bench::run(options)),
                (None, true) => provision::envoy_bin().and_then(|_| bench::instructions(options)),
                (Some(Ok(other)), false) => {
                    provision::envoy_bin().and_then(|_| bench::compare(Path::new(other), options))
                }
                (Some(Ok(other)), true) => provision::envoy_bin()
                    .and_then(|_| bench::compare_instructions(Path::new(other), options)),
                (Some(Err(message)), _) => Err(message.to_owned()),
            }
        }
        "upstream" => upstream(),
        "chaos" => chaos(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fusebox-harness {command}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo_root());
    command
}

fn run_step(name: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("\n=== fusebox: {name}");
    let status = command.status().map_err(|e| format!("{name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

struct Tools {
    envoy: std::path::PathBuf,
    wasm: std::path::PathBuf,
    wasm_bindgen_test_runner: std::path::PathBuf,
    node_dir: std::path::PathBuf,
}

fn provision_all() -> Result<Tools, String> {
    provision::wasm_targets()?;
    let envoy = provision::envoy_bin()?;
    let wasm_bindgen_test_runner = provision::wasm_bindgen_test_runner()?;
    let node_dir = provision::node_dir()?;
    let wasm = provision::plugin_wasm()?;
    Ok(Tools {
        envoy,
        wasm,
        wasm_bindgen_test_runner,
        node_dir,
    })
}

/// The whole suite, in the order that fails fastest on the commonest mistakes.
fn test() -> Result<(), String> {
    // Formatting first: it needs nothing provisioned and is the commonest slip.
    run_step("format", cargo().args(["fmt", "--all", "--check"]))?;
    let tools = provision_all()?;
    run_step(
        "lint (native)",
        cargo().args([
            "clippy",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run_step(
        "lint (plugin on wasm32-wasip1, with the proxy-wasm glue)",
        cargo().args([
            "clippy",
            "--quiet",
            "-p",
            "fusebox",
            "--target",
            "wasm32-wasip1",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run_step(
        "tests (native core, schema, and the plugin in real Envoy)",
        cargo()
            .args(["test", "--workspace"])
            .env("FUSEBOX_WASM", &tools.wasm)
            .env("ENVOY_BIN", &tools.envoy),
    )?;
    eprintln!(
        "\n=== fusebox: overhead benchmark, smoke run (proves it runs; its figures mean little)"
    );
    bench::run(BenchOptions::QUICK)?;
    let path = std::env::join_paths(
        std::iter::once(tools.node_dir.clone()).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .map_err(|e| e.to_string())?;
    run_step(
        "tests (policy core compiled to wasm32, wasm-bindgen-test)",
        cargo()
            .args([
                "test",
                "-p",
                "fusebox",
                "--lib",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                &tools.wasm_bindgen_test_runner,
            )
            .env("PATH", path),
    )?;
    eprintln!("\n=== fusebox: fault-injection scenarios, short profile");
    chaos(&["--short".to_owned()])?;
    eprintln!("\n=== fusebox: fuzzing, {}s per target", fuzz::TEST_SECONDS);
    fuzz::fuzz(fuzz::TEST_SECONDS)?;
    eprintln!("\n=== fusebox: every check passed");
    Ok(())
}

fn demo() -> Result<(), String> {
    provision::wasm_targets()?;
    let envoy = provision::envoy_bin()?;
    provision::plugin_wasm()?;
    let spec = demo_spec().map_err(|e| format!("reading {DEMO_PLUGIN_CONFIG}: {e}"))?;
    fusebox_policy_schema::parse(spec.plugin_config.as_bytes())
        .map_err(|errors| format!("{DEMO_PLUGIN_CONFIG} is invalid:\n{errors}"))?;
    let upstream_addr = fusebox_harness::envoy_config::DEMO_UPSTREAM
        .parse()
        .map_err(|e| format!("{e}"))?;
    let upstream = Upstream::start_unrecorded_on(upstream_addr)
        .map_err(|e| format!("demo upstream on {upstream_addr}: {e}"))?;
    let dir = repo_root().join("target").join("fusebox-demo");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, render(&spec)).map_err(|e| e.to_string())?;

    println!(
        "fusebox demo: Envoy {} with fusebox on http://127.0.0.1:{listener} (admin http://127.0.0.1:{admin}), upstream {upstream}

Try:
  curl -si http://127.0.0.1:{listener}/payments/hello           # a fresh UUIDv7 in x-request-id, echoed back
  curl -si -H 'x-request-id: my-id-42' http://127.0.0.1:{listener}/search
  curl -si -H 'x-request-id: bad id with spaces' http://127.0.0.1:{listener}/   # replaced
  curl -s  http://127.0.0.1:{admin}/stats/prometheus | grep fusebox
Envoy's log (one JSON line per request) follows; Ctrl-C stops the demo.
",
        provision::ENVOY_VERSION,
        listener = spec.listener_port,
        admin = spec.admin_port,
        upstream = upstream.addr(),
    );
    let status = Command::new(envoy)
        .arg("-c")
        .arg(&config)
        .args([
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "info",
        ])
        .current_dir(repo_root())
        .status()
        .map_err(|e| format!("starting Envoy: {e}"))?;
    drop(upstream);
    if status.success() {
        Ok(())
    } else {
        Err(format!("Envoy exited with {status}"))
    }
}

fn write(path: &Path, content: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, content).map_err(|e| format!("writing {path:?}: {e}"))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn render_checked_in() -> Result<(), String> {
    let spec = demo_spec().map_err(|e| e.to_string())?;
    write(&repo_root().join(DEMO_CONFIG), &render(&spec))?;
    write(
        &repo_root().join(ISTIO_WASM_PLUGIN),
        &render_istio_wasm_plugin(&spec.plugin_config),
    )?;
    let topology = Topology::load(&repo_root().join(TOPOLOGY_FILE))?;
    let compose = repo_root().join(COMPOSE_DIR);
    write(
        &compose.join("docker-compose.yaml"),
        &topology.compose_file(),
    )?;
    write(&compose.join("envoy.yaml"), &topology.compose_envoy_yaml())
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn upstream() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let listen = flag_value(&args, "--listen")
        .or_else(|| {
            args.first()
                .map(String::as_str)
                .filter(|a| !a.starts_with("--"))
        })
        .unwrap_or(fusebox_harness::envoy_config::DEMO_UPSTREAM);
    let listen = listen.parse().map_err(|e| format!("{listen}: {e}"))?;
    let upstream = Upstream::start_unrecorded_on(listen).map_err(|e| format!("{listen}: {e}"))?;
    let control = match flag_value(&args, "--control") {
        Some(addr) => {
            let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            Some(
                upstream
                    .serve_control(addr)
                    .map_err(|e| format!("{addr}: {e}"))?,
            )
        }
        None => None,
    };
    // One JSON line saying where it listens: the chaos runner reads it.
    println!(
        "{}",
        serde_json::json!({ "listen": upstream.addr(), "control": control })
    );
    loop {
        std::thread::park();
    }
}

fn chaos(args: &[String]) -> Result<(), String> {
    let profile = if args.iter().any(|a| a == "--short") {
        Profile::Short
    } else {
        Profile::Full
    };
    let mut options = ChaosOptions::new(profile)?;
    let policy = flag_value(args, "--policy");
    options.policy = policy.map(Into::into);
    let names: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && Some(a.as_str()) != policy)
        .collect();
    let files = if names.is_empty() {
        chaos::scenario_files()?
    } else {
        names
            .iter()
            .map(|name| chaos::find_scenario(name))
            .collect::<Result<_, _>>()?
    };
    // Every file is checked before the first one runs: a typo fails in a second, not after
    // minutes of other scenarios.
    let scenarios = files
        .iter()
        .map(|file| Scenario::load(file, profile))
        .collect::<Result<Vec<_>, _>>()?;
    provision::envoy_bin()?;
    let mut broken = Vec::new();
    for scenario in &scenarios {
        eprintln!(
            "chaos: {} ({:.0} s): {}",
            scenario.name,
            scenario.load.duration.0.as_secs_f64(),
            scenario.description.lines().next().unwrap_or_default()
        );
        let report = chaos::run_scenario(scenario, &options)?;
        for verdict in &report.verdicts {
            let mark = if verdict.held { "held  " } else { "BROKEN" };
            eprintln!("  {mark} {} — {}", verdict.name, verdict.measured);
        }
        if let Some(reason) = &report.aborted {
            eprintln!("  STOPPED EARLY: {reason}");
        }
        eprintln!("  report: {}", report.dir.join("report.md").display());
        if !report.passed() {
            broken.push(report.scenario.clone());
        }
    }
    if broken.is_empty() {
        eprintln!(
            "chaos: every hypothesis of {} scenario(s) held",
            scenarios.len()
        );
        Ok(())
    } else {
        Err(format!("hypotheses broken in: {}", broken.join(", ")))
    }
}

//! `fusebox-harness fuzz`: runs every cargo-fuzz target in `fuzz/` for a while.
//!
//! cargo-fuzz is installed from crates.io into the project-local `.tools/` (never globally) and
//! needs the nightly toolchain. Targets run two at a time (the machine's cores are few and the
//! targets are single-threaded), each from a scratch corpus under `target/fuzz/` seeded with
//! the checked-in `fuzz/corpus/<target>/`, so a run never rewrites checked-in files. A crash is
//! written to `target/fuzz/artifacts/<target>/`; once fixed, check it in under
//! `fuzz/regressions/<target>/`, where plain `cargo test` replays it from then on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use crate::provision::{repo_root, run, tools_dir, Result};

/// The cargo-fuzz release installed into `.tools/`.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when none are given.
pub const DEFAULT_SECONDS: u64 = 60;

/// Targets fuzzed at once.
const PARALLEL: usize = 2;

/// The fuzz targets: one per file in `fuzz/fuzz_targets/`.
pub fn targets() -> Result<Vec<String>> {
    let dir = repo_root().join("fuzz").join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir:?}: {e}"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    targets.sort();
    Ok(targets)
}

/// `.tools/bin`, holding cargo-fuzz, installed from crates.io on first use; the nightly
/// toolchain it needs is installed through rustup when missing.
pub fn cargo_fuzz() -> Result<PathBuf> {
    let bin = tools_dir().join("bin");
    let installed = Command::new(bin.join("cargo-fuzz"))
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(CARGO_FUZZ_VERSION))
        .unwrap_or(false);
    if !installed {
        eprintln!(
            "fusebox: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {bin:?} (first run only)"
        );
        run(
            Command::new("cargo")
                .args(["install", "--quiet", "--locked", "cargo-fuzz", "--version"])
                .arg(CARGO_FUZZ_VERSION)
                .arg("--root")
                .arg(tools_dir())
                .env_remove("CARGO_TARGET_DIR"),
            "cargo install cargo-fuzz",
        )?;
    }
    if !nightly_installed() {
        // A fresh machine: the smallest nightly that builds the targets.
        eprintln!("fusebox: installing the nightly toolchain for cargo-fuzz (first run only)");
        run(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
            "rustup toolchain install nightly",
        )?;
    }
    Ok(bin)
}

/// Whether rustup has a nightly toolchain (`nightly-<host>` in `rustup toolchain list`).
fn nightly_installed() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .is_some_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.starts_with("nightly"))
        })
}

/// `cargo +nightly fuzz <args>` in the repository, with `.tools/bin` first on `PATH`.
fn cargo_fuzz_command(bin: &Path, args: &[&str]) -> Result<Command> {
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .map_err(|e| e.to_string())?;
    // The rustup proxy, not the `cargo` that runs this harness (`$CARGO` is stable's).
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(repo_root())
        .env("PATH", path)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    Ok(command)
}

/// Every sanitizer adds nothing to safe Rust's own checks here (the workspace forbids
/// `unsafe`), and costs build and run time: panics, overflows and failed assertions are what
/// the targets look for, and debug assertions stay on.
const SANITIZER: [&str; 2] = ["--sanitizer", "none"];

/// Builds every target, then fuzzes each for `seconds`, two at a time.
pub fn fuzz(seconds: u64) -> Result<()> {
    let started = Instant::now();
    let bin = cargo_fuzz()?;
    let targets = targets()?;
    let mut build_args = vec!["build"];
    build_args.extend(SANITIZER);
    run(
        &mut cargo_fuzz_command(&bin, &build_args)?,
        "building the fuzz targets",
    )?;
    let built = started.elapsed();
    eprintln!(
        "fusebox: fuzz targets built in {:.0?}; fuzzing {} targets for {seconds}s each",
        built,
        targets.len()
    );

    let scratch = repo_root().join("target").join("fuzz");
    let mut failed = Vec::new();
    for batch in targets.chunks(PARALLEL) {
        let mut running: Vec<(String, Child)> = Vec::new();
        for target in batch {
            let corpus = scratch.join("corpus").join(target);
            let artifacts = scratch.join("artifacts").join(target);
            for dir in [&corpus, &artifacts] {
                std::fs::create_dir_all(dir).map_err(|e| format!("{dir:?}: {e}"))?;
            }
            let corpus = corpus.to_string_lossy().into_owned();
            let seeds = format!("fuzz/corpus/{target}");
            let max_time = format!("-max_total_time={seconds}");
            let artifact_prefix = format!("-artifact_prefix={}/", artifacts.to_string_lossy());
            let mut args = vec!["run"];
            args.extend(SANITIZER);
            args.extend([
                target.as_str(),
                &corpus,
                &seeds,
                "--",
                &max_time,
                &artifact_prefix,
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-print_final_stats=0",
            ]);
            let log = std::fs::File::create(scratch.join(format!("{target}.log")))
                .map_err(|e| e.to_string())?;
            let child = cargo_fuzz_command(&bin, &args)?
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("fuzzing {target}: {e}"))?;
            running.push((target.clone(), child));
        }
        for (target, mut child) in running {
            let status = child.wait().map_err(|e| e.to_string())?;
            let log_path = scratch.join(format!("{target}.log"));
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let runs = log
                .lines()
                .rev()
                .find(|line| line.starts_with("Done "))
                .unwrap_or("no summary")
                .to_owned();
            if status.success() {
                eprintln!("fusebox: fuzz {target}: ok ({runs})");
            } else {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!(
                    "fusebox: fuzz {target}: FAILED ({status}); log {log_path:?}, last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                failed.push(target);
            }
        }
    }
    eprintln!(
        "fusebox: fuzz step took {:.0?} (building {:.0?})",
        started.elapsed(),
        built
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz targets failed: {} (crashing inputs in target/fuzz/artifacts/<target>/; once \
             fixed, check them in under fuzz/regressions/<target>/)",
            failed.join(", ")
        ))
    }
}

/// `--seconds N` from the command line, or the default.
pub fn seconds_from_args(args: &[String]) -> Result<u64> {
    match args.iter().position(|arg| arg == "--seconds") {
        None => Ok(DEFAULT_SECONDS),
        Some(at) => args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| "--seconds needs a positive whole number".to_owned()),
    }
}

/// Seconds per target in `fusebox-harness test`: enough to catch what a change broke in the
/// parsers, short enough that the whole step stays around two minutes.
pub const TEST_SECONDS: u64 = 20;

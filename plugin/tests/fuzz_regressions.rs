//! Every input checked in under `fuzz/` is replayed here through its fuzz target's checks, with
//! plain `cargo test` (no nightly, no cargo-fuzz): the crashes fuzzing once found
//! (`fuzz/regressions/<target>/`) stay fixed, and the seed corpus (`fuzz/corpus/<target>/`)
//! keeps passing. `cargo harness fuzz` explores from there.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Replays every file under `fuzz/<kind>/<target>/`; returns how many were replayed.
fn replay(kind: &str) -> usize {
    let root = fuzz_dir().join(kind);
    let mut replayed = 0;
    let mut failures = Vec::new();
    let mut targets: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{root:?}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    targets.sort();
    for dir in targets {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some((_, check)) = checks::TARGETS.iter().find(|(target, _)| *target == name) else {
            panic!("{dir:?}: no fuzz target called {name}");
        };
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect();
        inputs.sort();
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(input.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "these inputs fail their fuzz target's checks:\n{}",
        failures.join("\n")
    );
    replayed
}

#[test]
fn every_crash_fuzzing_found_stays_fixed() {
    assert!(replay("regressions") > 0, "no regression inputs found");
}

#[test]
fn the_seed_corpus_passes_every_check() {
    let replayed = replay("corpus");
    assert!(replayed >= checks::TARGETS.len(), "{replayed} seeds");
}

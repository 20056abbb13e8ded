//! Instructions per request: Envoy run under valgrind's callgrind, which counts every
//! instruction Envoy executes, V8's compiled wasm included.
//!
//! CPU time moves with whatever else the machine does, by several µs per request from one
//! round to the next, so a change worth a few hundred instructions drowns in it. The count
//! does not move: the same build reads the same to within 0.1 % run after run, so two builds
//! or two setups compare exactly, one Envoy after the other. It counts instructions, not time
//! (a cache miss is free here, and Envoy runs some fifty times slower), so it ranks changes to
//! the same work; CPU time stays the figure the targets are held to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::envoy::Envoy;
use crate::load::in_sequence;
use crate::provision::{self, Valgrind};

/// Requests before counting starts: V8 first runs a module's functions through its baseline
/// compiler and recompiles the hot ones with its optimising one, and Envoy fills its caches.
pub const WARM_UP: u32 = 300;

/// A one-worker Envoy under callgrind.
pub struct CountedEnvoy {
    envoy: Envoy,
    valgrind: Valgrind,
    /// Where callgrind writes its counts (one file per dump).
    dumps: PathBuf,
}

impl CountedEnvoy {
    /// Starts Envoy with `yaml`, one worker, under callgrind (it takes tens of seconds).
    pub fn start(yaml: &str) -> Result<CountedEnvoy, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let valgrind = provision::valgrind()?;
        let dumps = std::env::temp_dir().join(format!(
            "fusebox-callgrind-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dumps);
        std::fs::create_dir_all(&dumps).map_err(|e| format!("creating {dumps:?}: {e}"))?;
        let mut launcher = valgrind.valgrind();
        launcher
            .args(["--tool=callgrind", "--dump-instr=no", "--vgdb=yes"])
            // V8 writes code and then runs it: valgrind must look for that everywhere.
            .arg("--smc-check=all-non-file")
            .arg(format!(
                "--callgrind-out-file={}",
                dumps.join("callgrind.out.%p").display()
            ));
        let envoy = Envoy::start_yaml_under(yaml, 1, Some(launcher)).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dumps);
        })?;
        Ok(CountedEnvoy {
            envoy,
            valgrind,
            dumps,
        })
    }

    /// The address of the listener called `name`.
    pub fn listener(&self, name: &str) -> Result<SocketAddr, String> {
        self.envoy
            .listeners()
            .into_iter()
            .find_map(|(listener, address)| (listener == name).then_some(address))
            .ok_or(format!("listener {name} missing"))
    }

    /// Instructions Envoy runs per request to `addr`: [`WARM_UP`] requests, then `requests`
    /// more on one keep-alive connection, counted from the first to the last. Everything
    /// Envoy does meanwhile counts, its timers and the plugin's tick included.
    pub fn per_request(&self, addr: SocketAddr, requests: u32) -> Result<f64, String> {
        in_sequence(addr, WARM_UP)?;
        self.command("zero")?;
        in_sequence(addr, requests)?;
        let before = self.dump_files();
        self.command("dump")?;
        // vgdb returns once valgrind took the command; the file follows.
        let deadline = Instant::now() + Duration::from_secs(30);
        let dump = loop {
            if let Some(dump) = self
                .dump_files()
                .into_iter()
                .find(|file| !before.contains(file))
            {
                break dump;
            }
            if Instant::now() > deadline {
                return Err(format!("callgrind wrote no counts into {:?}", self.dumps));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let total = read_total(&dump, deadline)?;
        Ok(total as f64 / f64::from(requests.max(1)))
    }

    /// Sends callgrind a monitor command through `vgdb`.
    fn command(&self, command: &str) -> Result<(), String> {
        let output = self
            .valgrind
            .vgdb()
            .arg(format!("--pid={}", self.envoy.pid()))
            .arg(command)
            .output()
            .map_err(|e| format!("vgdb: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "vgdb {command}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn dump_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dumps)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect()
    }
}

impl Drop for CountedEnvoy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dumps);
    }
}

/// The total of a dump once callgrind has written all of it.
fn read_total(dump: &Path, deadline: Instant) -> Result<u64, String> {
    loop {
        let text = std::fs::read_to_string(dump).unwrap_or_default();
        if let Some(total) = total_instructions(&text) {
            return Ok(total);
        }
        if Instant::now() > deadline {
            return Err(format!("{dump:?} holds no total"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The instruction total of a callgrind profile: its `totals:` line, which callgrind writes
/// last, or a `summary:` line. `None` for a profile not (yet) complete.
pub fn total_instructions(profile: &str) -> Option<u64> {
    let events = profile
        .lines()
        .find_map(|line| line.strip_prefix("events:"))?;
    // Only instructions (`Ir`) are collected, the first event when there are several.
    if events.split_whitespace().next() != Some("Ir") {
        return None;
    }
    let total = |prefix: &str| {
        profile
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|figures| figures.split_whitespace().next()?.parse().ok())
    };
    total("totals:").or_else(|| total("summary:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_total_is_its_instruction_count() {
        let profile = "# callgrind format\nversion: 1\npositions: line\nevents: Ir\n\
                       summary: 298619054\n\nob=(1) /bin/envoy\nfn=(1) 0x1\n0 22\n\
                       totals: 298619054\n";
        assert_eq!(total_instructions(profile), Some(298_619_054));
        let without_totals = "events: Ir\nsummary: 12\nfn=(1) a\n0 12\n";
        assert_eq!(total_instructions(without_totals), Some(12));
        let with_more_events = "events: Ir Dr\nsummary: 7 3\n";
        assert_eq!(total_instructions(with_more_events), Some(7));
    }

    #[test]
    fn a_profile_without_instructions_or_a_total_has_no_total() {
        assert_eq!(total_instructions(""), None);
        assert_eq!(total_instructions("events: Ir\nfn=(1) a\n0 5\n"), None);
        assert_eq!(total_instructions("events: Dr\nsummary: 5\n"), None);
        assert_eq!(total_instructions("events: Ir\nsummary: many\n"), None);
    }
}

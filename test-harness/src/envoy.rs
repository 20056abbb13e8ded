//! Runs Envoy with the plugin: each instance on ephemeral ports in its own directory, at
//! `--concurrency 2` (two workers, so shared-state bugs show), stopped when dropped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Request, Response};
use crate::envoy_config::{render, EnvoySpec, RouteSpec};
use crate::provision;

/// Worker threads every test Envoy runs with.
pub const CONCURRENCY: u32 = 2;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Envoy.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
}

/// How a start that should fail ended.
#[derive(Debug)]
pub struct Refusal {
    /// Envoy's exit status.
    pub status: std::process::ExitStatus,
    /// Everything Envoy logged.
    pub log: String,
}

fn scratch_dir() -> std::io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fusebox-envoy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A test Envoy's description: ephemeral ports, the freshly built plugin, the given
/// plugin configuration and routes, in front of `upstream`.
pub fn test_spec(
    upstream: SocketAddr,
    plugin_config: &str,
    routes: Vec<RouteSpec>,
) -> Result<EnvoySpec, String> {
    let wasm = provision::plugin_wasm()?;
    Ok(EnvoySpec {
        bind_address: "127.0.0.1".to_owned(),
        admin_port: 0,
        listener_port: 0,
        upstream: upstream.into(),
        connect_timeout: "1s".to_owned(),
        wasm_path: wasm.to_string_lossy().into_owned(),
        plugin_config: plugin_config.to_owned(),
        routes,
        loopback_is_internal: false,
        extra_clusters: Vec::new(),
    })
}

/// Starts Envoy, or `launcher` with Envoy's command line after its own arguments (a profiler
/// that runs Envoy, say).
fn spawn(
    yaml: &str,
    concurrency: u32,
    dir: &Path,
    launcher: Option<Command>,
) -> Result<Child, String> {
    let envoy = provision::envoy_bin()?;
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, yaml).map_err(|e| format!("writing {config:?}: {e}"))?;
    let log = File::create(dir.join("envoy.log")).map_err(|e| format!("creating log: {e}"))?;
    let mut command = match launcher {
        Some(mut launcher) => {
            launcher.arg(envoy);
            launcher
        }
        None => Command::new(envoy),
    };
    command
        .arg("-c")
        .arg(&config)
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--disable-hot-restart",
        ])
        .args(["--log-level", "info"])
        .arg("--admin-address-path")
        .arg(dir.join("admin.address"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting Envoy: {e}"))
}

/// How long the `wait_for_*` helpers wait for a log line or a stat. Both usually trail a
/// response by well under a second (stats are flushed once a second); the margin is for a
/// two-core CI machine running several Envoys at once, where an admin request alone can take
/// seconds.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// How often each worker writes the log lines Fusebox held back (the plugin's tick).
const LINE_TICK: Duration = Duration::from_secs(1);

impl Envoy {
    /// Starts Envoy and waits until it serves traffic.
    pub fn start(spec: &EnvoySpec) -> Result<Envoy, String> {
        Self::start_yaml(&render(spec), CONCURRENCY)
    }

    /// Starts Envoy with a bootstrap of its own and waits until it serves traffic.
    pub fn start_yaml(yaml: &str, concurrency: u32) -> Result<Envoy, String> {
        Self::start_yaml_under(yaml, concurrency, None)
    }

    /// Like [`Envoy::start_yaml`], with Envoy run by `launcher` (see [`spawn`]).
    pub fn start_yaml_under(
        yaml: &str,
        concurrency: u32,
        launcher: Option<Command>,
    ) -> Result<Envoy, String> {
        let dir = scratch_dir().map_err(|e| e.to_string())?;
        let mut child = spawn(yaml, concurrency, &dir, launcher)?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let log_path = dir.join("envoy.log");
        let fail = |child: &mut Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("{why}\n--- Envoy log ---\n{log}")
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(
                    &mut child,
                    format!("Envoy exited during start-up ({status})"),
                ));
            }
            if Instant::now() > deadline {
                return Err(fail(
                    &mut child,
                    "Envoy did not become ready in time".to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
            let Some(admin) = std::fs::read_to_string(dir.join("admin.address"))
                .ok()
                .and_then(|text| text.trim().parse::<SocketAddr>().ok())
            else {
                continue;
            };
            let ready = Request::get("/ready")
                .timeout(Duration::from_secs(2))
                .send(admin);
            if !matches!(ready, Ok(ref response) if response.status == 200) {
                continue;
            }
            let Some(listener) = listener_address(admin) else {
                continue;
            };
            return Ok(Envoy {
                child,
                dir,
                admin,
                listener,
            });
        }
    }

    /// Starts Envoy expecting it to refuse the configuration and exit.
    pub fn start_expecting_refusal(spec: &EnvoySpec) -> Result<Refusal, String> {
        let dir = scratch_dir().map_err(|e| e.to_string())?;
        let mut child = spawn(&render(spec), CONCURRENCY, &dir, None)?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(Refusal { status, log });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
                return Err(format!(
                    "Envoy accepted a configuration it should refuse\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The listener's address.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// Every listener's address, by listener name.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        listener_addresses(self.admin)
    }

    /// CPU time Envoy's threads have used so far (from the kernel's per-thread schedstat, in
    /// nanoseconds): what a request costs, independent of what else the machine is doing.
    pub fn cpu_time(&self) -> Duration {
        let tasks = format!("/proc/{}/task", self.child.id());
        let nanos: u64 = std::fs::read_dir(tasks)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }

    /// CPU time Envoy's threads have spent in user space (from `/proc/<pid>/task/*/stat`, in
    /// clock ticks of 10 ms): where a filter's own work shows, without the kernel's network
    /// stack, which costs every setup the same and dominates the noise.
    pub fn user_cpu_time(&self) -> Duration {
        let tasks = format!("/proc/{}/task", self.child.id());
        let ticks: u64 = std::fs::read_dir(tasks)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
            .filter_map(|stat| {
                // Fields after the command name, which is in parentheses and may hold spaces.
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().nth(11)?.parse::<u64>().ok()
            })
            .sum();
        Duration::from_millis(ticks * 10)
    }

    /// Envoy's resident memory, in bytes.
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// The process started: Envoy's, or its launcher's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin interface's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Sends a request to the listener on a new connection.
    pub fn send(&self, request: &Request) -> std::io::Result<Response> {
        request.send(self.listener)
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Waits until Envoy's log satisfies `condition` and returns the log as it then was (as
    /// it is at the time limit otherwise). Fusebox's lines trail their requests: each worker
    /// writes its lines in batches, at the latest on its next tick.
    pub fn wait_for_log(&self, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let log = self.log();
            if condition(&log) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every line Fusebox held back when this was called has been written: past
    /// a tick of every worker. For checks that a line is absent, which waiting for it cannot
    /// do.
    pub fn settle_log(&self) {
        std::thread::sleep(LINE_TICK + LINE_TICK / 2);
    }

    /// Fusebox's per-request JSON log lines so far.
    pub fn request_logs(&self) -> Vec<Value> {
        self.log().lines().filter_map(request_log_json).collect()
    }

    /// Waits for the request log line carrying `correlation_id` (lines trail their
    /// responses: see [`Envoy::wait_for_log`]).
    pub fn wait_for_request_log(&self, correlation_id: &str) -> Option<Value> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let found = self
                .request_logs()
                .into_iter()
                .find(|line| line["correlation_id"] == correlation_id);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A GET on the admin interface.
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        Request::get(path).send(self.admin)
    }

    /// The value of a stat, by its full Envoy name (e.g. `wasmcustom.fusebox.p.requests`).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let response = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .ok()?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        text.lines()
            .filter_map(|line| line.split_once(": "))
            .find(|(stat, _)| *stat == name)
            .and_then(|(_, value)| value.trim().parse().ok())
    }

    /// Waits until a stat reaches `at_least` and returns its value (stats trail responses
    /// the same way logs do).
    pub fn wait_for_stat(&self, name: &str, at_least: u64) -> Option<u64> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let value = self.stat(name);
            if value.is_some_and(|v| v >= at_least) || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Envoy {
    /// Waits until a stat (a gauge) falls to `at_most` and returns its value.
    pub fn wait_for_stat_at_most(&self, name: &str, at_most: u64) -> Option<u64> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let value = self.stat(name);
            if value.is_some_and(|v| v <= at_most) || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("Envoy's files are kept for inspection in {:?}", self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The JSON object of a Fusebox request log line, if `line` is one.
pub fn request_log_json(line: &str) -> Option<Value> {
    let (_, rest) = line.split_once("wasm log")?;
    let json = &rest[rest.find('{')?..];
    let value: Value = serde_json::from_str(json).ok()?;
    value.get("policy_source").is_some().then_some(value)
}

fn listener_addresses(admin: SocketAddr) -> Vec<(String, SocketAddr)> {
    let Ok(response) = Request::get("/listeners?format=json").send(admin) else {
        return Vec::new();
    };
    let listeners = response.json();
    listeners["listener_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|listener| {
            let address = &listener["local_address"]["socket_address"];
            let port = u16::try_from(address["port_value"].as_u64()?).ok()?;
            let ip = address["address"].as_str()?.parse().ok()?;
            Some((
                listener["name"].as_str()?.to_owned(),
                SocketAddr::new(ip, port),
            ))
        })
        .collect()
}

fn listener_address(admin: SocketAddr) -> Option<SocketAddr> {
    listener_addresses(admin).first().map(|(_, addr)| *addr)
}

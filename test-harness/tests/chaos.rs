//! The fault-injection harness itself: scenario files are checked before anything runs, the
//! upstream's faults do what they say, the compose files stay equal to the topology, and a
//! broken policy makes its scenario fail (a harness that cannot fail proves nothing).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fusebox_harness::chaos::scenario::{Profile, Scenario};
use fusebox_harness::chaos::topology::{Topology, COMPOSE_DIR};
use fusebox_harness::chaos::{
    find_scenario, run_scenario, scenario_files, ChaosOptions, TOPOLOGY_FILE,
};
use fusebox_harness::client::Request;
use fusebox_harness::provision::repo_root;
use fusebox_harness::upstream::{Fault, Upstream};

#[test]
fn every_checked_in_scenario_is_valid_in_both_profiles() {
    let files = scenario_files().unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "baseline",
        "upstream-crash",
        "upstream-hang",
        "latency-spike",
        "error-burst",
        "overload",
        "blackhole",
        "retry-storm",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing scenario {required}"
        );
    }
    for file in &files {
        let full = Scenario::load(file, Profile::Full).unwrap_or_else(|e| panic!("{e}"));
        let short = Scenario::load(file, Profile::Short).unwrap_or_else(|e| panic!("{e}"));
        assert!(short.load.duration < full.load.duration);
        assert!(!full.hypotheses.is_empty());
        if let (Some((from, until)), Some((short_from, short_until))) =
            (full.fault_span(), short.fault_span())
        {
            assert!(from < until && short_from < short_until);
            assert!(short_until <= short.load.duration.0);
        }
    }
}

#[test]
fn a_scenario_with_mistakes_is_refused_with_every_wrong_field() {
    let topology = repo_root().join(TOPOLOGY_FILE);
    let text = format!(
        r#"
description = "broken on purpose"
topology = {topology:?}
[load]
path = "/nowhere"
rate = 0
duration = "10s"
[[faults]]
upstream = "ghost"
kind = "errors"
from = "5s"
until = "2s"
[[hypotheses]]
check = "latency"
at_most = "100ms"
[[hypotheses]]
check = "success_rate"
at_least = 1.5
"#
    );
    let path = std::env::temp_dir().join("fusebox-broken-scenario.toml");
    let error = Scenario::parse("broken", &path, &text, Profile::Full).unwrap_err();
    for expected in [
        "load.rate",
        "load.path",
        "faults[0].upstream",
        "faults[0].until",
        "faults[0].status",
        "faults[0].rate",
        "hypotheses[0].percentile",
        "hypotheses[1].at_least",
    ] {
        assert!(
            error.contains(expected),
            "{expected} not reported in:\n{error}"
        );
    }
    let unknown = Scenario::parse(
        "typo",
        &path,
        &format!("description = \"x\"\ntopology = {topology:?}\nload = {{ path = \"/api\", rate = 1, duration = \"1s\", rat = 2 }}\n"),
        Profile::Full,
    )
    .unwrap_err();
    assert!(unknown.contains("rat"), "{unknown}");
}

#[test]
fn the_checked_in_compose_files_match_the_topology() {
    let topology = Topology::load(&repo_root().join(TOPOLOGY_FILE)).unwrap();
    let fix = "run `cargo harness render`";
    let dir = repo_root().join(COMPOSE_DIR);
    let compose = std::fs::read_to_string(dir.join("docker-compose.yaml")).unwrap_or_default();
    assert!(
        compose == topology.compose_file(),
        "docker-compose.yaml is out of date; {fix}"
    );
    let envoy = std::fs::read_to_string(dir.join("envoy.yaml")).unwrap_or_default();
    assert!(
        envoy == topology.compose_envoy_yaml(),
        "compose envoy.yaml is out of date; {fix}"
    );
    assert!(compose.contains("image: envoyproxy/envoy:v1.40.0"));
    assert!(envoy.contains("type: STRICT_DNS") && envoy.contains("address: backend"));
}

fn connect_outcome(addr: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300))
}

#[test]
fn the_upstream_switches_faults_through_its_control_endpoint() {
    let upstream = Upstream::start().unwrap();
    let control = upstream
        .serve_control("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let put = |fault: &str| {
        let mut stream = TcpStream::connect(control).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "PUT /fault HTTP/1.1\r\nhost: c\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{fault}",
            fault.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let addr = upstream.addr();
    let get = |path: &str| {
        Request::get(path)
            .timeout(Duration::from_millis(500))
            .send(addr)
    };

    assert_eq!(get("/").unwrap().status, 200);
    assert!(put(r#"{"kind": "errors", "status": 503, "rate": 1.0}"#).starts_with("HTTP/1.1 200"));
    assert_eq!(get("/").unwrap().status, 503);
    assert!(put(r#"{"kind": "latency", "ms": 200}"#).starts_with("HTTP/1.1 200"));
    let answer = get("/").unwrap();
    assert!(answer.status == 200 && answer.elapsed >= Duration::from_millis(200));
    assert!(put(r#"{"kind": "hang"}"#).starts_with("HTTP/1.1 200"));
    assert!(get("/").is_err(), "a hung upstream never answers");
    assert!(put(r#"{"kind": "nonsense"}"#).starts_with("HTTP/1.1 400"));

    // Blackhole: the handshake itself times out, as for a host gone from the network.
    upstream.set_fault(Some(Fault::Blackhole));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let error = connect_outcome(addr).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Slow drain: new connections refused.
    upstream.set_fault(Some(Fault::SlowDrain { ms: 50 }));
    std::thread::sleep(Duration::from_millis(100));
    let error = connect_outcome(addr).unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );

    upstream.set_fault(None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get("/").unwrap().status, 200, "healthy again once cleared");
}

/// The policy file with every breaker removed: what a team that forgot its breaker runs.
fn policy_without_breakers() -> std::path::PathBuf {
    let topology = Topology::load(&repo_root().join(TOPOLOGY_FILE)).unwrap();
    let mut policy: serde_json::Value = serde_json::from_str(&topology.plugin_config).unwrap();
    for (_, p) in policy["policies"].as_object_mut().unwrap() {
        p.as_object_mut().unwrap().remove("breaker");
    }
    let path = std::env::temp_dir().join(format!("fusebox-no-breaker-{}.json", std::process::id()));
    std::fs::write(&path, policy.to_string()).unwrap();
    path
}

#[test]
fn a_policy_without_its_breaker_fails_the_error_burst_scenario() {
    let scenario = Scenario::load(&find_scenario("error-burst").unwrap(), Profile::Short).unwrap();
    let mut options = ChaosOptions::new(Profile::Short).unwrap();
    options.upstream_exe = env!("CARGO_BIN_EXE_fusebox-harness").into();
    options.policy = Some(policy_without_breakers());
    options.report_dir = std::env::temp_dir().join(format!("fusebox-chaos-{}", std::process::id()));
    let report = run_scenario(&scenario, &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.passed(), "the scenario must fail without a breaker");
    let broken: Vec<&str> = report
        .verdicts
        .iter()
        .filter(|v| !v.held)
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        broken.iter().any(|n| n.contains("breaker opens"))
            && broken.iter().any(|n| n.contains("keeps most traffic off")),
        "broken: {broken:?}"
    );
    for file in [
        "report.md",
        "report.html",
        "timeline.svg",
        "timeline.png",
        "attempts.csv",
        "summary.json",
    ] {
        assert!(report.dir.join(file).is_file(), "{file} written");
    }
    let md = std::fs::read_to_string(report.dir.join("report.md")).unwrap();
    assert!(md.contains("BROKEN"));
    let png = std::fs::read(report.dir.join("timeline.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}

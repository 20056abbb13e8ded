//! Load shedding and the bulkhead in real Envoy at --concurrency 2, one new connection per
//! request: the buckets are process-wide, criticality decides who is shed first, tenants do
//! not shed each other, and bulkhead slots are given back however a request ends.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{start_with_routes, Setup};
use fusebox_harness::client::{Request, Response};
use fusebox_harness::envoy_config::RouteSpec;

const CONFIG: &str = r#"{
  "policies": {
    "burst": {"shed": {"rate": 5, "burst": 10}},
    "prio": {"shed": {"rate": 0.01, "burst": 10, "priority_header": "x-priority",
                      "reserve": {"critical": 0.2, "normal": 0.5}, "rate_limit_headers": true}},
    "tenant": {"shed": {"rate": 0.01, "burst": 3, "key": "header:x-tenant", "max_keys": 16}},
    "bulkhead": {"shed": {"rate": 1000, "burst": 1000, "max_in_flight": 2}},
    "dry": {"mode": "dry_run", "shed": {"rate": 0.01, "burst": 2}},
    "budgeted": {"budget": {"timeout": "1s"}, "shed": {"rate": 0.01, "burst": 2}},
    "leased": {"shed": {"rate": 0.01, "burst": 1280, "max_in_flight": 640}}
  },
  "routes": {"burst": "burst", "prio": "prio", "tenant": "tenant", "bulkhead": "bulkhead", "dry": "dry",
             "budgeted": "budgeted", "leased": "leased"}
}"#;

fn start() -> Setup {
    let routes = [
        "burst", "prio", "tenant", "bulkhead", "dry", "budgeted", "leased",
    ]
    .iter()
    .map(|name| RouteSpec::new(name, &format!("/{name}")))
    .collect();
    start_with_routes(CONFIG, routes)
}

fn shed(response: &Response) -> bool {
    response.header("x-fusebox-decision").as_deref() == Some("shed")
}

#[test]
fn a_burst_is_cut_to_the_bucket_plus_what_refills_meanwhile() {
    let s = start();
    let (burst, rate) = (10.0, 5.0);
    let started = Instant::now();
    let responses: Vec<Response> = (0..40)
        .map(|_| s.envoy.send(&Request::get("/burst/x")).unwrap())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = responses.iter().filter(|r| r.status == 200).count() as f64;
    // Every request either got a token or was shed; nothing else.
    assert!(responses
        .iter()
        .all(|r| r.status == 200 || (r.status == 429 && shed(r))));
    let most = burst + (rate * elapsed).floor() + 1.0;
    assert!(
        admitted >= burst && admitted <= most,
        "admitted {admitted}, expected {burst}..={most} over {elapsed:.3}s"
    );
    assert_eq!(s.upstream.hits() as f64, admitted);
    for response in responses.iter().filter(|r| shed(r)) {
        let retry_after: u64 = response
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(retry_after >= 1, "a shed reply says when to come back");
        assert!(response.header("x-request-id").is_some());
    }
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.burst.shed_normal", 40 - admitted as u64),
        Some(40 - admitted as u64)
    );
}

/// Large limits are leased to the workers in batches (1/64 of the limit: 20 tokens, 10 slots
/// here): the bucket still never admits more than its burst, loses at most a batch per worker
/// to tokens stranded in a lease, and every leased bulkhead slot goes back.
#[test]
fn leased_batches_neither_add_tokens_nor_keep_slots() {
    let s = start();
    let (burst, batch, workers) = (1280, 20, 2);
    let addr = s.envoy.listener();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..350)
                    .map(|_| Request::get("/leased/x").send(addr).unwrap())
                    .map(|r| (r.status, shed(&r)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(u16, bool)> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    let admitted = answers.iter().filter(|(status, _)| *status == 200).count();
    assert!(answers
        .iter()
        .all(|answer| *answer == (200, false) || *answer == (429, true)));
    assert!(
        admitted <= burst && admitted >= burst - batch * workers,
        "admitted {admitted} of a {burst}-token burst"
    );
    assert_eq!(s.upstream.hits(), admitted);
    assert_eq!(
        s.envoy
            .wait_for_stat_at_most("wasmcustom.fusebox.leased.in_flight", 0),
        Some(0),
        "leased bulkhead slots go back once the traffic stops"
    );
}

#[test]
fn critical_work_passes_while_normal_and_sheddable_work_is_shed() {
    let s = start();
    let send = |priority: &str| {
        s.envoy
            .send(&Request::get("/prio/x").header("x-priority", priority))
            .unwrap()
    };
    let passed = |priority: &str, n: usize| (0..n).filter(|_| send(priority).status == 200).count();
    // Burst 10: sheddable work stops at the normal reserve (5 left), normal work at the critical
    // reserve (2 left), critical work takes the rest.
    assert_eq!(passed("sheddable", 8), 5);
    assert_eq!(passed("normal", 8), 3);
    let normal = send("normal");
    assert_eq!(normal.status, 429, "normal work is being shed now");
    assert_eq!(
        normal
            .header("ratelimit")
            .as_deref()
            .map(|v| v.starts_with("\"fusebox\";r=0;t=")),
        Some(true)
    );
    assert_eq!(
        normal.header("ratelimit-policy").as_deref(),
        Some("\"fusebox\";q=10;w=1000")
    );
    let critical = send("critical");
    assert_eq!(critical.status, 200, "while critical work still passes");
    assert_eq!(
        critical
            .header("ratelimit")
            .as_deref()
            .map(|v| v.starts_with("\"fusebox\";r=1;")),
        Some(true)
    );
    assert_eq!(send("CRITICAL").status, 200);
    assert_eq!(send("critical").status, 429, "until the bucket is empty");
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.prio.shed_admitted_critical", 2),
        Some(2)
    );
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.prio.shed_sheddable", 3),
        Some(3)
    );
}

#[test]
fn one_noisy_tenant_does_not_shed_another() {
    let s = start();
    let send = |tenant: Option<&str>| {
        let mut request = Request::get("/tenant/x");
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        s.envoy.send(&request).unwrap().status
    };
    let noisy: Vec<u16> = (0..6).map(|_| send(Some("noisy"))).collect();
    assert_eq!(noisy.iter().filter(|s| **s == 200).count(), 3, "{noisy:?}");
    let quiet: Vec<u16> = (0..3).map(|_| send(Some("quiet"))).collect();
    assert_eq!(
        quiet,
        [200, 200, 200],
        "the quiet tenant has its own bucket"
    );
    let anonymous: Vec<u16> = (0..4).map(|_| send(None)).collect();
    assert_eq!(
        anonymous,
        [200, 200, 200, 429],
        "requests without the header share one bucket"
    );
}

#[test]
fn the_bulkhead_caps_concurrency_and_releases_slots_after_aborts() {
    let s = start();
    let addr = s.envoy.listener();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                Request::get("/bulkhead/delay/1500")
                    .send(addr)
                    .unwrap()
                    .status
            })
        })
        .collect();
    // Both slow requests hold their slots once the upstream has them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.upstream.hits() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = s.envoy.send(&Request::get("/bulkhead/x")).unwrap();
    assert_eq!(third.status, 503);
    assert_eq!(
        third.header("x-fusebox-decision").as_deref(),
        Some("bulkhead_full")
    );
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.bulkhead.in_flight", 2),
        Some(2)
    );
    for handle in slow {
        assert_eq!(handle.join().unwrap(), 200);
    }
    assert_eq!(
        s.envoy
            .wait_for_stat_at_most("wasmcustom.fusebox.bulkhead.in_flight", 0),
        Some(0)
    );

    // Clients that give up mid-request still give their slots back.
    let abandoned: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /bulkhead/hang HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        s.envoy.send(&Request::get("/bulkhead/x")).unwrap().status,
        503,
        "both slots are held"
    );
    drop(abandoned);
    assert_eq!(
        s.envoy
            .wait_for_stat_at_most("wasmcustom.fusebox.bulkhead.in_flight", 0),
        Some(0)
    );
    assert_eq!(
        s.envoy.send(&Request::get("/bulkhead/x")).unwrap().status,
        200
    );
}

#[test]
fn dry_run_counts_what_would_be_shed_and_lets_it_through() {
    let s = start();
    let statuses: Vec<u16> = (0..4)
        .map(|_| s.envoy.send(&Request::get("/dry/x")).unwrap().status)
        .collect();
    assert_eq!(statuses, [200; 4]);
    assert_eq!(
        s.envoy
            .wait_for_stat("wasmcustom.fusebox.dry.would_shed", 2),
        Some(2)
    );
    assert_eq!(s.envoy.stat("wasmcustom.fusebox.dry.shed_normal"), Some(0));
}

#[test]
fn a_request_refused_by_its_budget_takes_no_token() {
    let s = start();
    for _ in 0..5 {
        let response = s
            .envoy
            .send(&Request::get("/budgeted/x").header("grpc-timeout", "1m"))
            .unwrap();
        assert_eq!(
            response.header("x-fusebox-decision").as_deref(),
            Some("deadline_exceeded")
        );
    }
    let statuses: Vec<u16> = (0..3)
        .map(|_| s.envoy.send(&Request::get("/budgeted/x")).unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 429], "both tokens were still there");
}

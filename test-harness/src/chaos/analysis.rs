//! Judging a run: the measured series, each hypothesis held or broken with the value that
//! decided it, and the stop conditions checked while the run goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::load::Attempt;
use super::scenario::{
    Check, Hypothesis, Outcome, Phase, Scenario, Selection, StopCondition, StopLimit,
};

/// A logical request: its first attempt's start, its last attempt's end and outcome.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    /// The attempt that ended it.
    pub last: Attempt,
    /// When the first attempt was due (seconds since the start of the run).
    pub start_s: f64,
    /// From the first attempt's due time to the last attempt's end, in seconds.
    pub latency_s: f64,
    /// Attempts made.
    pub attempts: u32,
}

/// Folds attempts into requests.
pub fn requests(attempts: &[Attempt]) -> Vec<RequestOutcome> {
    let mut by_request: BTreeMap<u64, RequestOutcome> = BTreeMap::new();
    for attempt in attempts {
        let end = attempt.start_s + attempt.latency_s;
        by_request
            .entry(attempt.request)
            .and_modify(|r| {
                r.attempts += 1;
                if attempt.attempt >= r.last.attempt {
                    r.last = attempt.clone();
                }
                r.start_s = r.start_s.min(attempt.start_s);
                r.latency_s = r.latency_s.max(end - r.start_s);
            })
            .or_insert_with(|| RequestOutcome {
                last: attempt.clone(),
                start_s: attempt.start_s,
                latency_s: attempt.latency_s,
                attempts: 1,
            });
    }
    by_request.into_values().collect()
}

/// Upstream hits sampled over the run: (seconds since start, hits so far).
pub type HitSamples = Vec<(f64, u64)>;

/// Hits so far at `t`, from the last sample at or before it.
fn hits_at(samples: &HitSamples, t: f64) -> u64 {
    samples
        .iter()
        .take_while(|(at, _)| *at <= t)
        .last()
        .or(samples.first())
        .map_or(0, |(_, hits)| *hits)
}

/// A percentile (0–100) of `values`, by rank.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values
        .get(rank.saturating_sub(1).min(values.len() - 1))
        .copied()
}

/// A hypothesis's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What it claims.
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// What was measured, in words.
    pub measured: String,
}

/// The window of run time a selection covers, in seconds.
fn window(scenario: &Scenario, selection: &Selection) -> (f64, f64) {
    let (from, until) = scenario.window(selection.during);
    ((from + selection.skip).as_secs_f64(), until.as_secs_f64())
}

fn selected<'a>(
    requests: &'a [RequestOutcome],
    scenario: &Scenario,
    selection: &Selection,
) -> Vec<&'a RequestOutcome> {
    let (from, until) = window(scenario, selection);
    requests
        .iter()
        .filter(|r| r.start_s >= from && r.start_s < until)
        .filter(|r| selection.class.is_none_or(|c| r.last.class == c))
        .collect()
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Judges one hypothesis against the run.
pub fn judge(
    hypothesis: &Hypothesis,
    scenario: &Scenario,
    attempts: &[Attempt],
    requests: &[RequestOutcome],
    hits: &HitSamples,
) -> Verdict {
    let selection = &hypothesis.selection;
    let chosen = selected(requests, scenario, selection);
    let n = chosen.len();
    let (held, measured) = match hypothesis.check {
        Check::SuccessRate { at_least } => {
            let ok = chosen
                .iter()
                .filter(|r| r.last.outcome == Outcome::Ok)
                .count();
            let rate = share(ok, n);
            (
                n > 0 && rate >= at_least,
                format!("{:.2}% ({ok} of {n})", rate * 100.0),
            )
        }
        Check::Latency {
            percentile: p,
            at_most,
        } => {
            let mut latencies: Vec<f64> = chosen.iter().map(|r| r.latency_s).collect();
            match percentile(&mut latencies, p) {
                Some(value) => (
                    value <= at_most.as_secs_f64(),
                    format!("p{p} = {:.1} ms over {n} requests", value * 1e3),
                ),
                None => (false, "no requests in the window".to_owned()),
            }
        }
        Check::OutcomeShare {
            outcome,
            at_least,
            at_most,
        } => {
            let count = chosen.iter().filter(|r| r.last.outcome == outcome).count();
            let rate = share(count, n);
            let held =
                n > 0 && at_least.is_none_or(|l| rate >= l) && at_most.is_none_or(|m| rate <= m);
            (held, format!("{:.2}% ({count} of {n})", rate * 100.0))
        }
        Check::BreakerOpensWithin(within) => {
            let (fault_start, _) = window(
                scenario,
                &Selection {
                    class: None,
                    during: Phase::Fault,
                    skip: Duration::ZERO,
                },
            );
            let first_open = attempts
                .iter()
                .filter(|a| a.outcome == Outcome::BreakerOpen && a.start_s >= fault_start)
                .map(|a| a.start_s)
                .min_by(f64::total_cmp);
            match first_open {
                Some(at) => {
                    let after = at - fault_start;
                    (
                        after <= within.as_secs_f64(),
                        format!(
                            "first breaker_open answer {:.0} ms into the fault",
                            after * 1e3
                        ),
                    )
                }
                None => (false, "the breaker never opened".to_owned()),
            }
        }
        Check::BreakerClosesWithin(within) => {
            let fault_end = scenario.window(Phase::After).0.as_secs_f64();
            let last_open = attempts
                .iter()
                .filter(|a| a.outcome == Outcome::BreakerOpen && a.start_s >= fault_end)
                .map(|a| a.start_s)
                .max_by(f64::total_cmp);
            let closed_at = last_open.unwrap_or(fault_end);
            let served_after = attempts
                .iter()
                .any(|a| a.outcome == Outcome::Ok && a.start_s > closed_at);
            let after = (closed_at - fault_end).max(0.0);
            if served_after {
                (
                    after <= within.as_secs_f64(),
                    format!(
                        "last breaker_open answer {:.0} ms after the recovery, successes after it",
                        after * 1e3
                    ),
                )
            } else {
                (
                    false,
                    "no success after the recovery: still open".to_owned(),
                )
            }
        }
        Check::UpstreamRate { at_most } => {
            let (from, until) = window(scenario, selection);
            let span = (until - from).max(1e-3);
            let count = hits_at(hits, until).saturating_sub(hits_at(hits, from));
            let rate = count as f64 / span;
            (
                rate <= at_most,
                format!("{rate:.1} requests/s ({count} in {span:.1} s)"),
            )
        }
        Check::CorrelationIds => {
            let (from, until) = window(scenario, selection);
            let answered: Vec<&Attempt> = attempts
                .iter()
                .filter(|a| a.start_s >= from && a.start_s < until)
                .filter(|a| selection.class.is_none_or(|c| a.class == c))
                .filter(|a| a.id_ok.is_some())
                .collect();
            let wrong = answered.iter().filter(|a| a.id_ok == Some(false)).count();
            (
                !answered.is_empty() && wrong == 0,
                format!("{wrong} of {} answers without the right ID", answered.len()),
            )
        }
    };
    Verdict {
        name: hypothesis.name.clone(),
        held,
        measured,
    }
}

/// The fewest requests a stop condition judges on: fewer say nothing.
const STOP_MIN_REQUESTS: usize = 10;

/// Whether a stop condition fires at `now` (seconds into the run); the reason if so.
pub fn stop_reason(condition: &StopCondition, attempts: &[Attempt], now: f64) -> Option<String> {
    let from = now - condition.over.as_secs_f64();
    let recent: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.start_s + a.latency_s >= from)
        .filter(|a| condition.class.is_none_or(|c| a.class == c))
        .collect();
    if recent.len() < STOP_MIN_REQUESTS {
        return None;
    }
    let who = condition.class.map_or("all", |c| c.name());
    match condition.limit {
        StopLimit::SuccessRateBelow(below) => {
            let ok = recent.iter().filter(|a| a.outcome == Outcome::Ok).count();
            let rate = share(ok, recent.len());
            (rate < below).then(|| {
                format!(
                    "success rate of {who} requests {:.1}% < {:.1}% over {:?} at t = {now:.1} s",
                    rate * 100.0,
                    below * 100.0,
                    condition.over
                )
            })
        }
        StopLimit::P99Above(above) => {
            let mut latencies: Vec<f64> = recent.iter().map(|a| a.latency_s).collect();
            let p99 = percentile(&mut latencies, 99.0)?;
            (p99 > above.as_secs_f64()).then(|| {
                format!(
                    "p99 latency of {who} requests {:.0} ms > {above:?} over {:?} at t = {now:.1} s",
                    p99 * 1e3,
                    condition.over
                )
            })
        }
    }
}

/// One time bucket of the series plotted.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Start of the bucket, seconds since the start of the run.
    pub t: f64,
    /// Attempts per second by outcome.
    pub outcomes: BTreeMap<Outcome, f64>,
    /// Attempts per second offered (arrivals and retries).
    pub offered: f64,
    /// Requests per second that reached the upstream.
    pub upstream: f64,
    /// Latency percentiles of the attempts started in the bucket, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// Cuts the run into buckets of `width` seconds.
pub fn series(attempts: &[Attempt], hits: &HitSamples, duration: f64, width: f64) -> Vec<Bucket> {
    let count = (duration / width).ceil().max(1.0) as usize;
    (0..count)
        .map(|i| {
            let t = i as f64 * width;
            let inside: Vec<&Attempt> = attempts
                .iter()
                .filter(|a| a.start_s >= t && a.start_s < t + width)
                .collect();
            let mut outcomes = BTreeMap::new();
            for outcome in Outcome::ALL {
                let n = inside.iter().filter(|a| a.outcome == outcome).count();
                outcomes.insert(outcome, n as f64 / width);
            }
            let mut latencies: Vec<f64> = inside.iter().map(|a| a.latency_s * 1e3).collect();
            let upstream = hits_at(hits, t + width).saturating_sub(hits_at(hits, t)) as f64 / width;
            Bucket {
                t,
                offered: inside.len() as f64 / width,
                outcomes,
                upstream,
                p50_ms: percentile(&mut latencies, 50.0),
                p90_ms: percentile(&mut latencies, 90.0),
                p99_ms: percentile(&mut latencies, 99.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::scenario::Class;

    fn attempt(request: u64, attempt: u32, start_s: f64, outcome: Outcome) -> Attempt {
        Attempt {
            request,
            attempt,
            class: Class::Normal,
            start_s,
            latency_s: 0.1,
            status: Some(200),
            outcome,
            id_ok: Some(true),
        }
    }

    #[test]
    fn retries_fold_into_their_request() {
        let attempts = vec![
            attempt(1, 0, 1.0, Outcome::UpstreamError),
            attempt(1, 1, 1.2, Outcome::Ok),
            attempt(2, 0, 2.0, Outcome::Shed),
        ];
        let folded = requests(&attempts);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[0].attempts, 2);
        assert_eq!(folded[0].last.outcome, Outcome::Ok);
        assert!((folded[0].latency_s - 0.3).abs() < 1e-9);
        assert_eq!(folded[1].last.outcome, Outcome::Shed);
    }

    #[test]
    fn hits_are_read_from_the_last_sample_before() {
        let samples = vec![(0.0, 0), (1.0, 10), (2.0, 30)];
        assert_eq!(hits_at(&samples, 1.5), 10);
        assert_eq!(hits_at(&samples, 2.0), 30);
        assert_eq!(hits_at(&samples, 9.0), 30);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}

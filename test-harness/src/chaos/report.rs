//! A scenario's report: a Markdown and an HTML summary (each hypothesis held or broken, with
//! what was measured), the timeline as SVG and PNG, every attempt as CSV and the verdicts and
//! series as JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::analysis::{Bucket, Verdict};
use super::load::Attempt;
use super::plot::{svg_to_png, timeline_svg};
use super::scenario::{Outcome, Profile, Scenario};

/// What a scenario run came to.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// Every hypothesis's verdict.
    pub verdicts: Vec<Verdict>,
    /// Why the run was stopped early, if it was.
    pub aborted: Option<String>,
    /// Attempts by outcome.
    pub totals: Vec<(Outcome, usize)>,
    /// Logical requests.
    pub requests: usize,
    /// Where the report files are.
    pub dir: PathBuf,
}

impl ScenarioReport {
    /// Whether every hypothesis held and the run was not stopped.
    pub fn passed(&self) -> bool {
        self.aborted.is_none() && self.verdicts.iter().all(|v| v.held)
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes every report file into `report.dir`.
pub fn write_report(
    report: &ScenarioReport,
    scenario: &Scenario,
    profile: Profile,
    attempts: &[Attempt],
    buckets: &[Bucket],
    policy_source: &Path,
) -> Result<(), String> {
    let dir = &report.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let duration = scenario.load.duration.0.as_secs_f64();
    let verdict = if report.passed() { "HELD" } else { "BROKEN" };
    let title = format!("{}: {verdict}", scenario.name);
    let svg = timeline_svg(&title, buckets, duration, &scenario.faults)?;
    write(&dir.join("timeline.svg"), &svg)?;
    write(&dir.join("timeline.png"), svg_to_png(&svg)?)?;

    let mut csv = String::from("request,attempt,class,start_s,latency_s,status,outcome,id_ok\n");
    for a in attempts {
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{:.6},{},{},{}",
            a.request,
            a.attempt,
            a.class.name(),
            a.start_s,
            a.latency_s,
            a.status.map(|s| s.to_string()).unwrap_or_default(),
            a.outcome.name(),
            a.id_ok.map(|ok| ok.to_string()).unwrap_or_default()
        );
    }
    write(&dir.join("attempts.csv"), csv)?;
    let summary = serde_json::json!({ "report": report, "series": buckets });
    write(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?,
    )?;

    let load = &scenario.load;
    let route = scenario
        .topology
        .route_for(&load.path)
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let profile_text = match profile {
        Profile::Full => "full".to_owned(),
        Profile::Short => "short (CI: every time of the scenario scaled down)".to_owned(),
    };
    let mut md = format!(
        "# Chaos scenario `{name}`: {verdict}\n\n{description}\n\n\
         - Profile: {profile_text}; load: {rate} requests/s, open loop, for {duration:.1} s on \
         `{path}` (Envoy route `{route}`), a new connection per request\n\
         - Policy file: `{policy}`; Envoy 1.40 at `--concurrency 2`\n\
         - Requests: {requests} ({attempts} attempts with retries)\n",
        name = scenario.name,
        description = scenario.description,
        rate = load.rate,
        path = load.path,
        policy = policy_source.display(),
        requests = report.requests,
        attempts = attempts.len(),
    );
    if let Some(reason) = &report.aborted {
        let _ = writeln!(md, "\n**Stopped early: {reason}**");
    }
    md.push_str("\n## Fault schedule\n\n");
    if scenario.faults.is_empty() {
        md.push_str("No faults: the baseline.\n");
    } else {
        md.push_str("| upstream | fault | from | until |\n|---|---|---|---|\n");
        for f in &scenario.faults {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} s | {:.1} s |",
                f.upstream,
                f.action.label(),
                f.from.as_secs_f64(),
                f.until.as_secs_f64()
            );
        }
    }
    md.push_str(
        "\n## Steady-state hypotheses\n\n| verdict | hypothesis | measured |\n|---|---|---|\n",
    );
    for v in &report.verdicts {
        let mark = if v.held { "held" } else { "**BROKEN**" };
        let _ = writeln!(md, "| {mark} | {} | {} |", v.name, v.measured);
    }
    md.push_str("\n## Outcomes (attempts)\n\n| outcome | attempts | share |\n|---|---|---|\n");
    let total: usize = report.totals.iter().map(|(_, n)| n).sum();
    for (outcome, n) in &report.totals {
        let _ = writeln!(
            md,
            "| {} | {n} | {:.1}% |",
            outcome.name(),
            100.0 * *n as f64 / total.max(1) as f64
        );
    }
    md.push_str(
        "\n## Timeline\n\n![timeline](timeline.svg)\n\nAlso as `timeline.png`; every attempt in \
         `attempts.csv`; verdicts and series in `summary.json`.\n",
    );
    write(&dir.join("report.md"), &md)?;

    let mut html = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:1150px;margin:auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px}}.broken{{color:#b00;font-weight:bold}}</style>\
         <h1>Chaos scenario <code>{name}</code>: {verdict}</h1><p>{description}</p>",
        title = html_escape(&title),
        name = html_escape(&scenario.name),
        description = html_escape(&scenario.description),
    );
    if let Some(reason) = &report.aborted {
        let _ = write!(
            html,
            "<p class=\"broken\">Stopped early: {}</p>",
            html_escape(reason)
        );
    }
    html.push_str(
        "<h2>Steady-state hypotheses</h2><table><tr><th>verdict<th>hypothesis<th>measured",
    );
    for v in &report.verdicts {
        let (class, mark) = if v.held {
            ("", "held")
        } else {
            ("broken", "BROKEN")
        };
        let _ = write!(
            html,
            "<tr><td class=\"{class}\">{mark}<td>{}<td>{}",
            html_escape(&v.name),
            html_escape(&v.measured)
        );
    }
    html.push_str("</table><h2>Timeline</h2><img src=\"timeline.svg\" width=\"1100\">");
    write(&dir.join("report.html"), html)?;
    Ok(())
}

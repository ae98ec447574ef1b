//! The Markdown report (`benchmarks.md`, plots in `benchmarks/` beside it)
//! and the check that a written report has every section, table and plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::figures::{ratio, Figure, LoadPoint};
use crate::suite::{Benchmark, Outcome, Suite, LATENCY_PLOT, SECTIONS, SERVICES};

/// The report's file name; plots go to the folder named like it without `.md`.
pub const REPORT: &str = "benchmarks.md";
/// The folder of the plots, beside the report.
pub const PLOTS: &str = "benchmarks";

/// The ratios the report opens with: (benchmark, subject, baseline).
const HEADLINES: &[(&str, &str, &str)] = &[
    ("agent-gateway", "agent-gateway, flat out", "kafka-producer-perf-test"),
    ("runtime", "consume loop", "kafka-consumer-perf-test"),
    ("agent-gateway", "agent-gateway, flat out", "seed AgentEventProducer"),
    ("runtime", "platform Producer", "kafka-producer-perf-test"),
    ("runtime", "platform Producer", "bare rdkafka"),
    ("runtime", "consume loop", "bare rdkafka"),
];

fn find<'a>(b: &'a Benchmark, name: &str) -> Option<&'a Figure> {
    b.figures().iter().find(|f| f.name.starts_with(name))
}

/// The headline ratios that could be computed: (subject, baseline, ratio).
pub fn headlines(suite: &Suite) -> Vec<(String, String, f64)> {
    HEADLINES
        .iter()
        .filter_map(|(id, subject, baseline)| {
            let b = suite.benchmark(id)?;
            let s = find(b, subject)?;
            // The baseline of the subject's own group (both paths have a "bare rdkafka").
            let base = b.figures().iter().find(|f| f.group == s.group && f.baseline && f.name.starts_with(baseline))?;
            Some((s.name.clone(), base.name.clone(), ratio(s, base)?))
        })
        .collect()
}

/// `12345.6` -> `12 346`; small rates keep a decimal.
pub fn rate_text(rate: f64) -> String {
    if rate < 100.0 {
        return format!("{rate:.1}");
    }
    let digits = format!("{:.0}", rate);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| if v < 10.0 { format!("{v:.2}") } else { format!("{v:.0}") })
}

/// The report for `suite`.
pub fn render(suite: &Suite) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    if suite.quick {
        let _ = writeln!(md, "> **Quick run** (`cargo xtask bench --quick`): tiny sizes and a debug build; it checks that every benchmark runs and the report is complete. The figures mean nothing.\n");
    }
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench` at {} from commit `{}`; the benchmarks took {:.0} s. \
         Every benchmark runs with its baselines in the same run, against the same local broker \
         (Apache Kafka, one KRaft node on this machine), so each ratio compares figures taken minutes \
         apart under the same conditions. A figure is the best of its rounds where there are several: \
         other work on the machine only ever slows a round down.\n",
        suite.started, suite.commit, suite.seconds
    );
    render_machine(&mut md, suite);
    let heads = headlines(suite);
    if !heads.is_empty() {
        let _ = writeln!(md, "## Headline ratios\n\n| platform | baseline | ratio |\n|---|---|---:|");
        for (s, b, r) in heads {
            let _ = writeln!(md, "| {s} | {b} | {r:.2}× |");
        }
        md.push('\n');
    }
    for (id, _) in SECTIONS {
        if let Some(b) = suite.benchmark(id) {
            render_benchmark(&mut md, b);
        }
    }
    md
}

fn render_machine(md: &mut String, suite: &Suite) {
    let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &suite.machine.rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "| load average (1, 5, 15 min) before / after | {} / {} |\n", suite.load.0, suite.load.1);
}

fn render_benchmark(md: &mut String, b: &Benchmark) {
    let _ = writeln!(md, "## {}\n\n{}\n", b.title(), b.about);
    match &b.outcome {
        Outcome::NoBenchmark { reason } => {
            let _ = writeln!(md, "No benchmark yet: {reason}\n");
        }
        Outcome::Failed { error } => {
            let _ = writeln!(md, "**FAILED** after {:.0} s:\n\n```text\n{}\n```\n", b.seconds, error.trim());
        }
        Outcome::Measured(out) => {
            let _ = writeln!(md, "<!-- measured -->");
            render_table(md, &out.figures);
            if !out.curve.is_empty() {
                render_curve(md, &out.curve);
            }
            if !out.details.is_empty() {
                let details: Vec<String> = out.details.iter().map(|(k, v)| format!("{k} `{v}`")).collect();
                let _ = writeln!(md, "Run details: {}.\n", details.join(", "));
            }
            let _ = writeln!(md, "![{} throughput]({PLOTS}/{}.png)\n", b.id, b.id);
            if !out.curve.is_empty() {
                let _ = writeln!(md, "![{} latency against offered load]({PLOTS}/{LATENCY_PLOT}.png)\n", b.id);
            }
            let _ = writeln!(md, "Took {:.0} s.\n", b.seconds);
        }
    }
}

fn render_table(md: &mut String, figures: &[Figure]) {
    let _ = writeln!(md, "| what | client | rate | p50 ms | p99 ms | ratio to each baseline | rounds |\n|---|---|---:|---:|---:|---|---|");
    let mut groups: Vec<&str> = Vec::new();
    for f in figures {
        if !groups.contains(&f.group.as_str()) {
            groups.push(&f.group);
        }
    }
    for g in groups {
        let members: Vec<&Figure> = figures.iter().filter(|f| f.group == g).collect();
        let baselines: Vec<&Figure> = members.iter().copied().filter(|f| f.baseline).collect();
        for f in members.iter().filter(|f| !f.baseline).chain(baselines.iter()) {
            let ratios = if f.baseline {
                "baseline".to_string()
            } else {
                let r: Vec<String> = baselines
                    .iter()
                    .filter_map(|b| ratio(f, b).map(|r| format!("**{r:.2}×** {}", b.name)))
                    .collect();
                if r.is_empty() { "–".into() } else { r.join("; ") }
            };
            let rounds: Vec<String> = f.runs.iter().map(|r| rate_text(*r)).collect();
            let _ = writeln!(
                md,
                "| {g} | {} | {} {} | {} | {} | {ratios} | {} |",
                f.name,
                rate_text(f.rate),
                f.unit,
                ms(f.p50_ms),
                ms(f.p99_ms),
                rounds.join(" / ")
            );
        }
    }
    md.push('\n');
}

fn render_curve(md: &mut String, curve: &[LoadPoint]) {
    let _ = writeln!(md, "Latency against offered load:\n\n| offered /s | acknowledged /s | p50 ms | p99 ms | p99.9 ms |\n|---:|---:|---:|---:|---:|");
    for p in curve {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            rate_text(p.offered_per_s),
            rate_text(p.acked_per_s),
            ms(Some(p.p50_ms)),
            ms(Some(p.p99_ms)),
            ms(p.p999_ms)
        );
    }
    md.push('\n');
}

/// Checks the report in `dir`: a section for every benchmark; for each one that
/// must or did run, a table and its plot (a PNG file); services without a
/// benchmark say so. Returns what is missing.
pub fn check(dir: &Path) -> Result<()> {
    let md = std::fs::read_to_string(dir.join(REPORT)).with_context(|| format!("reading {}", dir.join(REPORT).display()))?;
    let mut missing = Vec::new();
    for (id, title) in SECTIONS {
        let heading = format!("\n## {title}\n");
        let Some(start) = md.find(&heading) else {
            missing.push(format!("no section `## {title}`"));
            continue;
        };
        let body = &md[start + heading.len()..];
        let section = &body[..body.find("\n## ").unwrap_or(body.len())];
        if section.contains("No benchmark yet:") && SERVICES.contains(id) {
            continue;
        }
        if !section.contains("<!-- measured -->") || !section.contains("\n| ") {
            missing.push(format!("section {id}: no table of figures"));
            continue;
        }
        let mut plots = vec![*id];
        if section.contains(&format!("({PLOTS}/{LATENCY_PLOT}.png)")) || *id == "agent-gateway" {
            plots.push(LATENCY_PLOT);
        }
        for plot in plots {
            let link = format!("({PLOTS}/{plot}.png)");
            let file = dir.join(PLOTS).join(format!("{plot}.png"));
            if !section.contains(&link) {
                missing.push(format!("section {id}: no link to {PLOTS}/{plot}.png"));
            } else if !is_png(&file) {
                missing.push(format!("section {id}: {} is not a PNG", file.display()));
            }
        }
    }
    if !missing.is_empty() {
        bail!("the report in {} is incomplete:\n  {}", dir.display(), missing.join("\n  "));
    }
    Ok(())
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 100 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

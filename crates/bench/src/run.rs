//! One run of every benchmark, in order, with progress: the runtime's
//! throughput bench, the seed's Python client, agent-gateway, the schema
//! codec, then each service's own benchmark command as it exists.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::process::Command;

use crate::figures::{parse_output, BenchOutput, Figure};
use crate::suite::{Benchmark, Outcome, Suite, SERVICES};
use crate::{codec, command, gateway, machine, seed};

/// How to run.
pub struct Options {
    /// Tiny sizes, figures without meaning.
    pub quick: bool,
    /// Cargo profile the binaries were built with (`release`, or `dev` for a quick run).
    pub profile: String,
    /// Folder of the built binaries (`target/<release|debug>`).
    pub bins: PathBuf,
}

impl Options {
    fn deadline(&self, quick_secs: u64, full_secs: u64) -> Duration {
        Duration::from_secs(if self.quick { quick_secs } else { full_secs })
    }

    /// The bench target `bench` of `package`, run with `args`: `cargo bench`
    /// in release; in a quick run `cargo test --workspace --bench`, which reuses
    /// what `cargo test --workspace` built (same profile and features), with
    /// `--bench` passed on so criterion measures instead of smoke-testing.
    pub fn cargo_bench(&self, package: &str, bench: &str, args: &[&str]) -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(crate::repo_root());
        if self.quick {
            cmd.args(["test", "--quiet", "--locked", "--workspace", "--bench", bench, "--", "--bench"]);
            cmd.env("DORA_BENCH_QUICK", "1");
        } else {
            cmd.args(["bench", "--quiet", "--locked", "-p", package, "--bench", bench, "--"]);
        }
        cmd.args(args);
        cmd
    }
}

/// Numbered, timed progress lines.
struct Progress {
    started: Instant,
    step: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!("\n  [bench {}/{}] {what} (at {}s)", self.step, self.total, self.started.elapsed().as_secs());
    }
}

async fn timed(id: &str, about: String, work: impl Future<Output = Result<Outcome>>) -> Benchmark {
    let started = Instant::now();
    let outcome = work.await.unwrap_or_else(|e| Outcome::Failed { error: format!("{e:#}") });
    let seconds = started.elapsed().as_secs_f64();
    match &outcome {
        Outcome::Measured(_) => println!("    {id}: measured in {seconds:.0} s"),
        Outcome::NoBenchmark { reason } => println!("    {id}: no benchmark yet ({reason})"),
        Outcome::Failed { error } => println!("    {id}: FAILED: {}", error.lines().next().unwrap_or_default()),
    }
    Benchmark { id: id.to_string(), about, outcome, seconds }
}

fn measured(out: Option<BenchOutput>, what: &str) -> Result<Outcome> {
    Ok(Outcome::Measured(out.with_context(|| format!("{what} printed no result line"))?))
}

/// Runs every benchmark; the suite to report.
pub async fn run(opts: &Options) -> Result<Suite> {
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let started = Instant::now();
    let load_before = machine::load_average();
    let mut progress = Progress { started, step: 0, total: 4 + SERVICES.len() };
    let mut benchmarks = Vec::new();

    progress.step("runtime: cargo bench -p dora-kafka --bench throughput");
    benchmarks.push(timed("runtime", crate::about::RUNTIME.into(), async {
        let cmd = opts.cargo_bench("dora-kafka", "throughput", &[]);
        let out = command::run(cmd, "the throughput bench", opts.deadline(240, 1200)).await?;
        measured(parse_output(&out)?, "the throughput bench")
    })
    .await);

    progress.step("the seed's Python client: kafka-python, AgentEventProducer and ComplianceReportProducer");
    let seed = seed_run(opts.quick).await;
    if let Err(e) = &seed {
        println!("    the seed's Python client FAILED: {e:#}");
    }

    progress.step("agent-gateway: the service as a process, agent-bench, kafka-producer-perf-test");
    let plan = gateway::GatewayPlan { quick: opts.quick, perf_records: if opts.quick { 5_000 } else { 200_000 } };
    let seed_events = seed_figure(&seed, "agent events", None);
    benchmarks.push(timed("agent-gateway", crate::about::GATEWAY.into(), async {
        let mut out = gateway::measure(&opts.bins, &plan).await?;
        out.figures.push(seed_events?);
        Ok(Outcome::Measured(out))
    })
    .await);

    progress.step("schema codec: cargo bench -p dora-schema --bench codec (criterion)");
    benchmarks.push(timed("schema-codec", crate::about::CODEC.into(), codec::measure(opts)).await);

    for service in SERVICES {
        progress.step(&format!("{service}: its own benchmark command"));
        let mut b = timed(service, crate::about::service(service), service_bench(opts, service)).await;
        add_seed_reports(&mut b, &seed);
        benchmarks.push(b);
    }
    Ok(Suite {
        quick: opts.quick,
        started: started_at,
        seconds: started.elapsed().as_secs_f64(),
        commit: commit(),
        machine: machine::describe(&kafka_version(), &opts.profile, &versions(&seed, &benchmarks[0])),
        load: (load_before, machine::load_average()),
        benchmarks,
    })
}

/// The seed's reports are the baseline of a service's gRPC submissions (report-ingest).
fn add_seed_reports(b: &mut Benchmark, seed: &Result<BenchOutput>) {
    let Outcome::Measured(out) = &mut b.outcome else { return };
    let Some(target) = out.figures.iter().find(|f| f.group.contains("gRPC")).map(|f| (f.group.clone(), f.unit.clone()))
    else {
        return;
    };
    if let Ok(f) = seed_figure(seed, "reports", Some(target)) {
        out.figures.push(f);
    }
}

/// Versions the benchmarks reported: Python, kafka-python, librdkafka.
fn versions(seed: &Result<BenchOutput>, runtime: &Benchmark) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Ok(seed) = seed {
        for (k, label) in [("python", "Python (seed baseline)"), ("kafka_python", "kafka-python (seed baseline)")] {
            if let Some(v) = seed.details.get(k).and_then(|v| v.as_str()) {
                rows.push((label.to_string(), v.to_string()));
            }
        }
    }
    if let Some(v) = runtime.outcome_detail("librdkafka") {
        rows.push(("librdkafka (platform and bare baselines)".into(), v));
    }
    rows
}

impl Benchmark {
    fn outcome_detail(&self, key: &str) -> Option<String> {
        match &self.outcome {
            Outcome::Measured(out) => out.details.get(key).and_then(|v| v.as_str()).map(str::to_string),
            _ => None,
        }
    }
}

/// The seed's Python producers on topics of their own.
async fn seed_run(quick: bool) -> Result<BenchOutput> {
    let python = seed::environment().await?;
    let kafka = dora_testkit::kafka();
    let mut topics = Vec::new();
    for seed_topic in ["agent-events", "gap-assessments", "risk-assessments"] {
        let topic = dora_testkit::unique(&format!("bench-seed-{seed_topic}"));
        dora_testkit::create_topic(&kafka, &topic, 6).await?;
        topics.push((seed_topic, topic));
    }
    let (events, reports) = if quick { (2_000, 500) } else { (50_000, 10_000) };
    seed::measure(&python, &kafka.bootstrap_servers, &seed::SeedPlan { events, reports, topics: &topics }).await
}

/// The seed's figure of `group`, moved to another (group, unit) if given.
fn seed_figure(seed: &Result<BenchOutput>, group: &str, into: Option<(String, String)>) -> Result<Figure> {
    let seed = seed.as_ref().map_err(|e| anyhow::anyhow!("the seed's Python client failed: {e:#}"))?;
    let mut f = seed.figures.iter().find(|f| f.group == group).cloned().with_context(|| format!("no seed figure for {group}"))?;
    if let Some((group, unit)) = into {
        (f.group, f.unit) = (group, unit);
    }
    Ok(f)
}

/// `services/<service>/src/bin/*-bench.rs`: the service's benchmark command, if any.
pub fn bench_command(service: &str) -> Option<String> {
    let dir = crate::repo_root().join("services").join(service).join("src/bin");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .filter(|n| n.ends_with("-bench"))
        .collect();
    names.sort();
    names.into_iter().next()
}

async fn service_bench(opts: &Options, service: &str) -> Result<Outcome> {
    let Some(name) = bench_command(service) else {
        return Ok(Outcome::NoBenchmark { reason: format!("services/{service} has no `*-bench` command") });
    };
    let mut cmd = Command::new(opts.bins.join(&name));
    if opts.quick {
        cmd.env("DORA_BENCH_QUICK", "1");
    }
    let out = command::run(cmd, &name, opts.deadline(180, 900)).await?;
    Ok(match parse_output(&out)? {
        Some(out) => Outcome::Measured(out),
        None => Outcome::NoBenchmark { reason: format!("`{name}` ran and printed no result line (a placeholder)") },
    })
}

fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(crate::repo_root())
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{head} + uncommitted changes") } else { head }
}

fn kafka_version() -> String {
    std::process::Command::new("bash")
        .arg(dora_testkit::perf_tools::kafka_tool())
        .args(["topics", "--version"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Writes the report, its plots and the raw figures (`benchmarks/results.json`) into `dir`.
pub fn write(suite: &Suite, dir: &Path) -> Result<()> {
    let plots = dir.join(crate::report::PLOTS);
    std::fs::create_dir_all(&plots)?;
    for b in &suite.benchmarks {
        if let Outcome::Measured(out) = &b.outcome {
            crate::plot::throughput(&plots.join(format!("{}.png", b.id)), b.title(), &out.figures)?;
            if !out.curve.is_empty() {
                let path = plots.join(format!("{}.png", crate::suite::LATENCY_PLOT));
                crate::plot::latency_curve(&path, "agent-gateway: latency against offered load", &out.curve)?;
            }
        }
    }
    std::fs::write(plots.join("results.json"), serde_json::to_string_pretty(suite)?)?;
    std::fs::write(dir.join(crate::report::REPORT), crate::report::render(suite))?;
    Ok(())
}

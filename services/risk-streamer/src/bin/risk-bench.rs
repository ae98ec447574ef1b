//! `risk-bench`: risk-streamer's benchmark command (see `risk_streamer::bench`),
//! with the service's settings (`DORA_*`) against the local stack
//! (`eval "$(deploy/local/stack.sh env)"`). Prints one
//! JSON line (for `cargo xtask bench`) and a readable summary on stderr.

use anyhow::Context;
use clap::Parser;
use risk_streamer::bench::{self, Plan};

/// Benchmark risk-streamer: window and alerts vs a bare transactional
/// consume-decode-commit loop, the rebuild, memory per organisation.
#[derive(Debug, Parser)]
struct Args {
    /// Organisations.
    #[arg(long, default_value_t = 100_000)]
    orgs: usize,
    /// Assessments per organisation over the 5 minutes of input.
    #[arg(long, default_value_t = 3)]
    per_org: usize,
    /// Records per transaction, both sides.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Alternating rounds of each side (medians reported; the shared
    /// machine's noise swings single rounds by 2x).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Every N-th organisation has a sustained breach (alerts in the transactions).
    #[arg(long, default_value_t = 1000)]
    at_risk_every: usize,
    /// A few seconds' run with tiny sizes (CI checks that it runs and prints
    /// its line); also `DORA_BENCH_QUICK=1`.
    #[arg(long)]
    quick: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.quick |= std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
    if args.quick {
        (args.orgs, args.per_org, args.rounds, args.batch, args.at_risk_every) = (300, 2, 1, 100, 50);
    }
    let settings: risk_streamer::Settings = dora_config::load().context("settings")?;
    let plan = Plan {
        orgs: args.orgs,
        per_org: args.per_org,
        batch: args.batch,
        span_secs: settings.risk.window_ms as i64 / 1000,
        rounds: args.rounds.max(1),
        at_risk_every: args.at_risk_every.max(1),
    };
    let line = bench::run(settings, plan).await?;
    println!("{line}");
    eprintln!(
        "live: {:.0} assessments/s vs bare decode+commit {:.0}/s: ratio {:.2}",
        line["assessments_per_s"].as_f64().unwrap_or(0.0),
        line["bare_decode_commit_per_s"].as_f64().unwrap_or(0.0),
        line["ratio"].as_f64().unwrap_or(0.0)
    );
    eprintln!(
        "rebuild: {} s of input ({:.0}/s) replayed in {:.1} s: {:.0}x",
        line["input_span_s"],
        line["input_per_s"].as_f64().unwrap_or(0.0),
        line["rebuild_s"].as_f64().unwrap_or(0.0),
        line["rebuild_speedup"].as_f64().unwrap_or(0.0)
    );
    eprintln!("memory: {}", line["memory"]);
    Ok(())
}

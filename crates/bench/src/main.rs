//! `dora-bench`, run by `cargo xtask bench`: `dora-bench run [--quick] [--out DIR]`
//! runs every benchmark against the local stack (its addresses in the
//! environment, as `stack.sh env` prints them) and writes `DIR/benchmarks.md`
//! with plots in `DIR/benchmarks/`; `dora-bench check DIR` checks a written
//! report has every section, table and plot.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use dora_bench::{report, run};

const USAGE: &str = "usage: dora-bench run [--quick] [--out DIR] | dora-bench check DIR";

#[tokio::main]
async fn main() -> ExitCode {
    match cli(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dora-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn cli(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("check") => {
            let dir = args.get(1).context(USAGE)?;
            report::check(&PathBuf::from(dir))?;
            println!("{dir}/{}: every section, table and plot is there", report::REPORT);
            Ok(())
        }
        Some("run") => {
            let quick = args.iter().any(|a| a == "--quick");
            let out = match args.iter().position(|a| a == "--out") {
                Some(i) => PathBuf::from(args.get(i + 1).context(USAGE)?),
                None if quick => dora_bench::repo_root().join("target/bench-quick"),
                None => dora_bench::repo_root().join("docs"),
            };
            let bins = std::env::current_exe()?.parent().context("dora-bench has no folder")?.to_path_buf();
            let profile = match bins.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev".to_string(),
                Some(other) => other.to_string(),
                None => bail!("dora-bench runs from target/<profile>/"),
            };
            let opts = run::Options { quick, profile, bins };
            let suite = run::run(&opts).await?;
            run::write(&suite, &out)?;
            println!("\n  report: {}/{} (plots in {}/{})", out.display(), report::REPORT, out.display(), report::PLOTS);
            for (s, b, r) in report::headlines(&suite) {
                println!("    {s} vs {b}: {r:.2}x");
            }
            let failed: Vec<&str> = suite.benchmarks.iter().filter(|b| matches!(b.outcome, dora_bench::suite::Outcome::Failed { .. })).map(|b| b.id.as_str()).collect();
            if !failed.is_empty() {
                bail!("benchmarks failed: {} (see the report)", failed.join(", "));
            }
            report::check(&out)?;
            println!("  the report has every section, table and plot");
            Ok(())
        }
        _ => bail!(USAGE),
    }
}

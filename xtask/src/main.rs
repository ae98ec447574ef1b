//! Developer tasks, run as `cargo xtask <task>`:
//!
//! - `demo`: install missing prerequisites, bring the local stack up, build
//!   the services, create the topics, run the pipeline end to end with
//!   simulated agents (`dora-demo`), print what happened, stop everything;
//! - `test`: install missing prerequisites, bring the local stack up, create
//!   the topics, run clippy and every test of the workspace against the real
//!   stack, then the quick benchmarks (`bench --quick`);
//! - `bench [--quick]`: install missing prerequisites, bring the local stack
//!   up, build in release, run every benchmark with its baselines
//!   (`dora-bench`) and write `docs/benchmarks.md` with plots in
//!   `docs/benchmarks/`; `--quick` uses the debug build and tiny sizes, writes
//!   to `target/bench-quick/` and checks the report is complete (part of `test`);
//! - `stack <up|down|status|env>`: the local stack script;
//! - `provision`: bring the stack up and create the platform's topics.
//!
//! This crate depends on nothing heavy (see Cargo.toml): it prints its first
//! line seconds after a fresh clone, and everything that needs librdkafka is
//! built by the steps it runs.

mod steps;

use std::process::ExitCode;

use steps::Steps;

const USAGE: &str = "usage: cargo xtask <demo|test|bench [--quick]|provision|stack up|down|status|env>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        Some("provision") => provision(),
        Some("stack") => steps::stack(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> anyhow::Result<()> {
    let mut steps = Steps::new("demo", 5);
    steps.prerequisites()?;
    let stack = steps.stack_up()?;
    steps.build_binaries(&stack)?;
    steps.provision(&stack)?;
    steps.binary(&stack, "running the pipeline with simulated agents", "dora-demo", &[])?;
    steps.done();
    Ok(())
}

fn test() -> anyhow::Result<()> {
    let mut steps = Steps::new("test", 8);
    steps.prerequisites()?;
    let stack = steps.stack_up()?;
    steps.build_binaries(&stack)?;
    steps.provision(&stack)?;
    steps.cargo(
        &stack,
        "clippy",
        &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
    )?;
    // Tests that restart a broker start one of their own (dora_testkit::PrivateKafka).
    steps.cargo(&stack, "every test of the workspace", &["test", "--workspace", "--locked", "--no-fail-fast"])?;
    benchmarks(&mut steps, &stack, true)?;
    steps.done();
    Ok(())
}

fn bench(quick: bool) -> anyhow::Result<()> {
    let mut steps = Steps::new(if quick { "bench --quick" } else { "bench" }, 4);
    steps.prerequisites()?;
    let stack = steps.stack_up()?;
    benchmarks(&mut steps, &stack, quick)?;
    steps.done();
    Ok(())
}

/// Builds the benchmarks and runs them all (`dora-bench run`): in release
/// into `docs/`, or `quick`ly with the debug build into `target/bench-quick/`,
/// where only the report's completeness counts. The quick build is
/// `cargo test`'s (same profile and features), so after the test step it
/// builds next to nothing.
fn benchmarks(steps: &mut Steps, stack: &steps::StackEnv, quick: bool) -> anyhow::Result<()> {
    let bench_targets = ["--bench", "throughput", "--bench", "codec"];
    let folder = if quick {
        let mut build = vec!["test", "--workspace", "--locked", "--no-run", "--tests"];
        build.extend(bench_targets);
        steps.cargo(stack, "building the benchmarks (debug, as cargo test builds)", &build)?;
        "debug"
    } else {
        let mut build = vec!["build", "--release", "--locked", "--bins", "-p", "dora-bench"];
        for service in ["agent-gateway", "report-ingest", "audit-sink", "risk-streamer", "dlq-replayer"] {
            build.extend(["-p", service]);
        }
        steps.cargo(stack, "building the benchmarks (release)", &build)?;
        // One package per command, as dora-bench runs them: cargo unifies
        // features over the packages of one command, so a combined build
        // would leave dora-bench to rebuild both with their own features.
        for (package, bench) in [("dora-kafka", "throughput"), ("dora-schema", "codec")] {
            steps.cargo_more(stack, &["bench", "--no-run", "--locked", "-p", package, "--bench", bench])?;
        }
        "release"
    };
    let dora_bench = steps::target_dir().join(folder).join("dora-bench");
    let mut args = vec!["run"];
    if quick {
        args.push("--quick");
    }
    let what = if quick {
        "benchmarks, quick: every benchmark and baseline runs, the report has every table and plot"
    } else {
        "benchmarks: every benchmark with its baselines -> docs/benchmarks.md"
    };
    steps.program(stack, what, &dora_bench, &args)
}

fn provision() -> anyhow::Result<()> {
    let mut steps = Steps::new("provision", 4);
    steps.prerequisites()?;
    let stack = steps.stack_up()?;
    steps.build_binaries(&stack)?;
    steps.provision(&stack)?;
    steps.done();
    Ok(())
}

//! Developer tasks, run as `cargo xtask <task>`:
//!
//! - `demo`: install missing prerequisites, bring the local stack up, build
//!   the services, create the topics, run the pipeline end to end with
//!   simulated agents (`dora-demo`), print what happened, stop everything;
//! - `test`: install missing prerequisites, bring the local stack up, create
//!   the topics, run clippy and every test of the workspace against the real
//!   stack, then the broker-restart test alone;
//! - `stack <up|down|status|env>`: the local stack script;
//! - `provision`: bring the stack up and create the platform's topics.
//!
//! This crate depends on nothing heavy (see Cargo.toml): it prints its first
//! line seconds after a fresh clone, and everything that needs librdkafka is
//! built by the steps it runs.

mod steps;

use std::process::ExitCode;

use steps::Steps;

const USAGE: &str = "usage: cargo xtask <demo|test|provision|stack up|down|status|env>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo(),
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
    let mut steps = Steps::new("test", 6);
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
    steps.done();
    Ok(())
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

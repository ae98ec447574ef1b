//! Developer tasks, run as `cargo xtask <task>`:
//!
//! - `demo`: bring the local stack up, build the services, run the pipeline end
//!   to end with simulated agents, print what happened, stop everything cleanly;
//! - `test`: bring the local stack up, provision topics, run clippy and every
//!   test of the workspace against the real stack;
//! - `stack <up|down|status|env>`: the local stack script;
//! - `provision`: create the platform's topics (idempotent).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Runs `stack.sh up` and exports what `stack.sh env` prints into this process,
/// so every child (cargo test, services) sees the stack's addresses.
fn stack_up() -> Result<()> {
    let script = root().join("deploy/local/stack.sh");
    run(Command::new("bash").arg(&script).arg("up"))?;
    let out = Command::new("bash").arg(&script).arg("env").output()?;
    if !out.status.success() {
        bail!("stack.sh env failed");
    }
    for line in String::from_utf8(out.stdout)?.lines() {
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            if std::env::var_os(k).is_none() {
                // Single-threaded here: no runtime or other thread has started yet.
                std::env::set_var(k, v);
            }
        }
    }
    Ok(())
}

fn provision() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let settings = dora_testkit::kafka();
        let created = dora_kafka::topics::provision(
            &settings,
            &dora_kafka::topics::catalog(),
            1,
            Duration::from_secs(30),
        )
        .await?;
        if created.is_empty() {
            eprintln!("topics: all {} already exist", dora_kafka::topics::catalog().len());
        } else {
            eprintln!("topics: created {}", created.join(", "));
        }
        anyhow::Ok(())
    })
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn test() -> Result<()> {
    let start = Instant::now();
    stack_up()?;
    provision()?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    run(cargo().args(["test", "--workspace", "--locked", "--no-fail-fast"]))?;
    // Tests that restart the shared broker run alone, after everything else.
    let restart = format!("bash {}", root().join("deploy/local/stack.sh restart-kafka").display());
    run(cargo()
        .args(["test", "--workspace", "--locked", "--test", "broker_restart", "--", "--ignored"])
        .env("DORA_TEST_KAFKA_RESTART_CMD", restart))?;
    eprintln!("xtask test: everything passed in {:.0?}", start.elapsed());
    Ok(())
}

fn demo() -> Result<()> {
    stack_up()?;
    provision()?;
    run(cargo().args(["build", "--workspace", "--bins", "--locked"]))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(demo::run(&root()))
}

mod demo;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo(),
        Some("provision") => {
            stack_up()?;
            provision()
        }
        Some("stack") => run(Command::new("bash").arg(root().join("deploy/local/stack.sh")).args(&args[1..])),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|provision|stack up|down|status|env>");
            std::process::exit(2);
        }
    }
}

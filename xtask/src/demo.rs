//! `cargo xtask demo`: the pipeline end to end on the local stack. Starts every
//! service binary as a real process, drives it with the agent simulator, then
//! prints what reached each topic and stops the services with SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use dora_testkit as tk;

/// The deployables, in start order.
const SERVICES: &[&str] = &["agent-gateway", "report-ingest", "audit-sink", "risk-streamer", "dlq-replayer"];

/// Random bytes from the OS (the demo's token key; no extra dependency).
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn bin_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("debug")
}

/// Runs the demo against an already running stack with provisioned topics.
pub async fn run(root: &Path) -> Result<()> {
    let bins = bin_dir(root);
    let settings = tk::kafka();
    let topics: Vec<String> = dora_kafka::topics::catalog().into_iter().map(|t| t.name).collect();
    let mut before = Vec::new();
    for t in &topics {
        before.push(tk::record_count(&settings, t).await?);
    }

    // Agents authenticate with tokens signed by this key (a secret file, never in git).
    let key_file = tk::stack_dir().join("secrets/gateway-token-key");
    if !key_file.exists() {
        let key: String = random_bytes::<32>()?.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(key_file.parent().expect("secrets folder"))?;
        std::fs::write(&key_file, key)?;
    }
    let key_path = key_file.to_string_lossy().into_owned();
    let env = [("DORA_GATEWAY__TOKEN_KEY_FILE", key_path.clone())];

    let mut running = Vec::new();
    for name in SERVICES {
        let process = tk::ServiceProcess::spawn(bins.join(name), &env)
            .await
            .with_context(|| format!("starting {name}"))?;
        println!("started {name:<14} admin http://{}/readyz", process.admin()?);
        running.push((name, process));
    }

    let simulator = bins.join("agent-simulator");
    if simulator.exists() {
        println!("\nrunning the agent simulator against agent-gateway ...");
        let status = tokio::process::Command::new(&simulator)
            .args(["--agents", "8", "--duration-secs", "15", "--rate", "20", "--print-health"])
            .args(["--key-file", &key_path])
            .status()
            .await
            .context("running agent-simulator")?;
        anyhow::ensure!(status.success(), "agent-simulator failed: {status}");
    } else {
        println!("\n(no agent-simulator binary yet: services started and stopped only)");
    }

    println!("\n{:<28} {:>10}", "topic", "new records");
    for (t, b) in topics.iter().zip(before) {
        let now = tk::record_count(&settings, t).await?;
        println!("{t:<28} {:>10}", now - b);
    }

    println!();
    let mut failed = false;
    for (name, mut process) in running.into_iter().rev() {
        let status = process.terminate(Duration::from_secs(30)).await?;
        println!("stopped {name:<14} {status}");
        failed |= !status.success();
    }
    anyhow::ensure!(!failed, "a service did not stop cleanly");
    Ok(())
}

//! agent-gateway's benchmark: the gateway as a real process (on topics of its
//! own, port 0, a fresh token key), driven by its `agent-bench` (the bare
//! platform producer, the latency curve, the gateway flat out), then
//! `kafka-producer-perf-test` at the gateway's record size on the same broker.
//! The seed's Python producer is added by the caller.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dora_testkit as tk;
use dora_testkit::perf_tools::{self, Payload};
use tokio::process::Command;

use crate::command;
use crate::figures::{parse_output, BenchOutput, Figure};

/// Sizes of the gateway's benchmark.
pub struct GatewayPlan {
    /// `DORA_BENCH_QUICK` for agent-bench.
    pub quick: bool,
    /// Records for kafka-producer-perf-test.
    pub perf_records: u64,
}

/// A fresh token key (32 random bytes, hex: the gateway reads it as text) in
/// a private temporary file.
fn token_key(dir: &Path) -> Result<std::path::PathBuf> {
    let key: String = (0..2).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let path = dir.join("gateway-token-key");
    std::fs::write(&path, key)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

async fn topics() -> Result<(String, String)> {
    let kafka = tk::kafka();
    let events = tk::unique("bench-agent-events");
    let health = tk::unique("bench-agent-health");
    tk::create_topic(&kafka, &events, 6).await?;
    let spec = dora_kafka::topics::catalog()
        .into_iter()
        .find(|t| t.name == dora_kafka::topics::AGENT_HEALTH)
        .context("agent-health in the topic catalog")?;
    let configs: Vec<(&str, &str)> = spec.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    tk::create_topic_with(&kafka, &health, spec.partitions, &configs).await?;
    Ok((events, health))
}

/// Runs the gateway benchmark with the binaries in `bins`.
pub async fn measure(bins: &Path, plan: &GatewayPlan) -> Result<BenchOutput> {
    let (events, health) = topics().await?;
    let dir = tempfile_dir()?;
    let key = token_key(&dir)?;
    let env = [
        ("DORA_GATEWAY__TOKEN_KEY_FILE", key.display().to_string()),
        ("DORA_GATEWAY__GRPC_LISTEN", "127.0.0.1:0".to_string()),
        ("DORA_GATEWAY__EVENTS_TOPIC", events.clone()),
        ("DORA_GATEWAY__HEALTH_TOPIC", health),
        ("DORA_CONSUMER__GROUP_ID", tk::unique("bench-agent-event-processor")),
        ("DORA_TELEMETRY__LOG_FILTER", "warn".to_string()),
    ];
    println!("    starting agent-gateway (events to {events})");
    let mut gateway = tk::ServiceProcess::spawn(bins.join("agent-gateway"), &env).await.context("starting agent-gateway")?;
    let grpc = gateway.wait_announced("grpc", tk::DEADLINE).await?;
    let mut cmd = Command::new(bins.join("agent-bench"));
    cmd.args(["--gateway", &format!("http://{grpc}")])
        .arg("--key-file")
        .arg(&key)
        .args(["--topic", &tk::unique("bench-bare-agent-events")]);
    if plan.quick {
        cmd.env("DORA_BENCH_QUICK", "1");
    }
    let deadline = Duration::from_secs(if plan.quick { 120 } else { 600 });
    let result = command::run(cmd, "agent-bench", deadline).await;
    let stopped = gateway.terminate(Duration::from_secs(30)).await;
    let out = result?;
    if !stopped.as_ref().is_ok_and(|s| s.success()) {
        bail!("agent-gateway did not stop cleanly after the benchmark: {stopped:?}\n{}", gateway.log());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut output = parse_output(&out)?.context("agent-bench printed no result line")?;

    let record_bytes = output.details.get("record_bytes").and_then(|v| v.as_u64()).unwrap_or(300) as usize;
    println!("    kafka-producer-perf-test, {} records of {record_bytes} bytes", plan.perf_records);
    output.figures.push(perf_test(record_bytes, plan.perf_records).await?);
    Ok(output)
}

async fn perf_test(record_bytes: usize, records: u64) -> Result<Figure> {
    let topic = tk::unique("bench-perf-agent-events");
    tk::create_topic(&tk::kafka(), &topic, 6).await?;
    let bootstrap = tk::kafka().bootstrap_servers;
    // agent-gateway's producer section defaults to linger.ms 5 (the runtime's is 10).
    let settings = dora_kafka::ProducerSettings { linger_ms: 5, ..Default::default() };
    let props = perf_tools::java_producer_props(&settings);
    let perf = tokio::task::spawn_blocking(move || {
        perf_tools::producer_perf_test(&bootstrap, &topic, records, &Payload::Size(record_bytes), &props)
    })
    .await??;
    Ok(Figure {
        group: "agent events".into(),
        name: format!("kafka-producer-perf-test ({record_bytes}-byte records)"),
        rate: perf.records_per_s,
        unit: "events/s".into(),
        p50_ms: Some(perf.p50_ms),
        p99_ms: Some(perf.p99_ms),
        baseline: true,
        runs: Vec::new(),
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(tk::unique("dora-bench"));
    std::fs::create_dir_all(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

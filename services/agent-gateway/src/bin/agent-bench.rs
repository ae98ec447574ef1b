//! `agent-bench`: gateway throughput and latency side by side with a bare
//! producer writing the same Avro records to the same broker: (1) the bare
//! producer flat out (to a topic of its own, so the gateway's health processor
//! does not have to chew through its records), (2) the simulator through the
//! gateway at half the bare producer's rate, for its p99, (3) the gateway flat
//! out.

use std::path::PathBuf;
use std::time::Duration;

use agent_gateway::auth::TokenKey;
use agent_gateway::bench;
use agent_gateway::simulator::{self, SimulationPlan};
use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Benchmark agent-gateway against a bare producer.
#[derive(Debug, Parser)]
#[command(name = "agent-bench", version)]
struct Args {
    /// Gateway address (it must be running, writing to `--topic`).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    gateway: String,
    /// The gateway's token signing key file.
    #[arg(long, env = "DORA_GATEWAY__TOKEN_KEY_FILE")]
    key_file: PathBuf,
    /// Topic the bare producer writes (created with 6 partitions, like agent-events, if missing).
    #[arg(long, default_value = "agent-events-bench")]
    topic: String,
    /// Simulated agents (gateway streams).
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Records waiting for acks: per stream for the gateway, in total for the bare producer.
    #[arg(long, default_value_t = 512)]
    window: usize,
}

/// Kafka and registry settings, from the same `DORA_*` environment as the services.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Connections {
    kafka: dora_kafka::KafkaSettings,
    registry: dora_schema::RegistrySettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conn: Connections = dora_config::load()?;
    let key = TokenKey::from_file(&args.key_file)
        .with_context(|| format!("token key file {}", args.key_file.display()))?;
    let codec = dora_schema::Codec::new(&conn.registry)?;
    let duration = Duration::from_secs_f64(args.duration_secs);

    let spec = dora_kafka::topics::TopicSpec {
        name: args.topic.clone(),
        partitions: 6,
        configs: Vec::new(),
    };
    dora_kafka::topics::provision(&conn.kafka, &[spec], 1, Duration::from_secs(30)).await?;
    let bare = bench::bare_producer(
        &conn.kafka,
        &codec,
        &args.topic,
        args.agents,
        0.0,
        duration,
        args.window * args.agents.max(1),
    )
    .await?;
    let plan = |rate: f64| SimulationPlan {
        gateway: args.gateway.clone(),
        agents: args.agents,
        agent_prefix: "bench-agent".into(),
        rate,
        duration,
        window: args.window,
        error_ratio: 0.1,
        organizations: Default::default(),
    };
    let half_rate = (bare.rate() / 2.0).max(1.0);
    let half = simulator::run(&plan(half_rate), &key, |_| {}).await?;
    let full = simulator::run(&plan(0.0), &key, |_| {}).await?;

    println!(
        "{:<34} {:>12} {:>9} {:>9} {:>9}",
        "run", "acked/s", "p50 ms", "p99 ms", "errors"
    );
    println!(
        "{:<34} {:>12.0} {:>9.2} {:>9.2} {:>9}",
        "bare producer (Avro, acks=all)",
        bare.rate(),
        bare.latency_ms(50.0),
        bare.latency_ms(99.0),
        bare.failed
    );
    for (name, r) in [
        ("gateway, flat out", &full),
        (&*format!("gateway at {half_rate:.0}/s (half)"), &half),
    ] {
        let errors: u64 = r.rejected.values().sum::<u64>() + r.stream_failures.len() as u64;
        println!(
            "{:<34} {:>12.0} {:>9.2} {:>9.2} {:>9}",
            name,
            r.rate(),
            r.latency_ms(50.0),
            r.latency_ms(99.0),
            errors
        );
    }
    println!(
        "gateway / bare throughput: {:.0} %",
        100.0 * full.rate() / bare.rate().max(1e-9)
    );
    Ok(())
}

//! `agent-bench`: gateway throughput and latency side by side with bare
//! rdkafka writing the same Avro records (encoded beforehand) to the same
//! broker: (1) bare rdkafka flat out (to a topic of its own, so the gateway's
//! health processor does not have to chew through its records), (2) the
//! simulator through the gateway at fractions of the bare rate (`--loads`) or
//! at fixed rates (`--rates`), for latency against offered load, (3) the
//! gateway flat out.
//!
//! Prints a table on stderr and one JSON line on stdout (the contract of
//! `cargo xtask bench`, see `crates/bench/src/figures.rs`). `--quick` (or
//! `DORA_BENCH_QUICK=1`): one-second phases, two loads; figures meaningless.

use std::path::PathBuf;
use std::time::Duration;

use agent_gateway::auth::TokenKey;
use agent_gateway::bench;
use agent_gateway::simulator::{self, SimulationPlan, SimulationReport};
use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;

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
    /// Offered loads for the latency curve, as fractions of the bare producer's rate.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5,0.75,0.9")]
    loads: Vec<f64>,
    /// Offered loads for the latency curve in events/s, instead of `--loads`:
    /// the same load in every run, so latencies compare between runs.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// A run of a few seconds that only shows everything works.
    #[arg(long)]
    quick: bool,
}

/// Kafka and registry settings, from the same `DORA_*` environment as the services.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Connections {
    kafka: dora_kafka::KafkaSettings,
    producer: dora_kafka::ProducerSettings,
    registry: dora_schema::RegistrySettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.quick |= std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
    if args.quick {
        args.duration_secs = args.duration_secs.min(1.0);
        args.loads = vec![0.25, 0.5];
    }
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
    let records = bench::encoded_records(&codec, &args.topic, args.agents, 1000).await?;
    let bytes = records.iter().map(|(_, _, v)| v.len()).sum::<usize>() / records.len().max(1);
    eprintln!("bare rdkafka, flat out, {:.0} s", args.duration_secs);
    let window = args.window * args.agents.max(1);
    let bare = bench::bare_producer(&conn.kafka, &conn.producer, &records, duration, window).await?;
    drop(records);
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
    let offered: Vec<(f64, String)> = if args.rates.is_empty() {
        let of_bare = |load: &f64| (bare.rate() * load, format!("{:.0} % of bare", load * 100.0));
        args.loads.iter().map(of_bare).collect()
    } else {
        args.rates.iter().map(|r| (*r, "fixed".to_string())).collect()
    };
    let mut curve = Vec::new();
    for (rate, why) in offered {
        let rate = rate.max(1.0);
        eprintln!("gateway at {rate:.0} events/s ({why})");
        curve.push((rate, simulator::run(&plan(rate), &key, |_| {}).await?));
    }
    eprintln!("gateway, flat out");
    let full = simulator::run(&plan(0.0), &key, |_| {}).await?;

    print_table(&bare, &full, &curve);
    let point = |(offered, r): &(f64, SimulationReport)| {
        json!({"offered_per_s": offered, "acked_per_s": r.rate(), "p50_ms": r.latency_ms(50.0),
               "p99_ms": r.latency_ms(99.0), "p999_ms": r.latency_ms(99.9), "errors": errors(r)})
    };
    let line = json!({
        "bench": "agent-gateway",
        "results": [
            {"group": "agent events", "name": "agent-gateway, flat out", "rate": full.rate(),
             "unit": "events/s", "p50_ms": full.latency_ms(50.0), "p99_ms": full.latency_ms(99.0),
             "baseline": false},
            {"group": "agent events", "name": "bare rdkafka, no gateway",
             "rate": bare.rate(), "unit": "events/s", "p50_ms": bare.latency_ms(50.0),
             "p99_ms": bare.latency_ms(99.0), "baseline": true},
        ],
        "latency_curve": curve.iter().map(point).collect::<Vec<_>>(),
        "record_bytes": bytes,
        "agents": args.agents,
        "window_per_stream": args.window,
        "seconds_per_phase": args.duration_secs,
        "gateway_errors": errors(&full),
    });
    println!("{line}");
    Ok(())
}

/// Rejected events and failed streams.
fn errors(r: &SimulationReport) -> u64 {
    r.rejected.values().sum::<u64>() + r.stream_failures.len() as u64
}

fn print_table(bare: &bench::BareReport, full: &SimulationReport, curve: &[(f64, SimulationReport)]) {
    eprintln!("{:<34} {:>12} {:>9} {:>9} {:>9}", "run", "acked/s", "p50 ms", "p99 ms", "errors");
    eprintln!(
        "{:<34} {:>12.0} {:>9.2} {:>9.2} {:>9}",
        "bare rdkafka (Avro, acks=all)",
        bare.rate(),
        bare.latency_ms(50.0),
        bare.latency_ms(99.0),
        bare.failed
    );
    let rows = std::iter::once(("gateway, flat out".to_string(), full))
        .chain(curve.iter().map(|(rate, r)| (format!("gateway at {rate:.0}/s"), r)));
    for (name, r) in rows {
        eprintln!(
            "{:<34} {:>12.0} {:>9.2} {:>9.2} {:>9}",
            name,
            r.rate(),
            r.latency_ms(50.0),
            r.latency_ms(99.0),
            errors(r)
        );
    }
    eprintln!("gateway / bare throughput: {:.0} %", 100.0 * full.rate() / bare.rate().max(1e-9));
}

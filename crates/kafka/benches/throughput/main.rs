//! Throughput of the runtime against bare rdkafka and Kafka's own perf tools,
//! on the same local broker in the same run, with the same records (JSON agent
//! events of one size, 64 keys), acks=all, idempotence, snappy and the
//! platform's batch and linger settings:
//!
//! - producer path: the platform's `Producer` vs a bare rdkafka `BaseProducer`
//!   polled by its own thread (`bare.rs`) vs `kafka-producer-perf-test`;
//! - consume path: the consume loop (per-message mode, a handler decoding each
//!   record, batched commits) vs a bare `BaseConsumer` loop storing offsets
//!   and committing asynchronously vs `kafka-consumer-perf-test`.
//!
//! Every client runs once per round, in an order that rotates between rounds;
//! the best round counts (the machine is shared: interference only slows).
//! Prints a summary on stderr and one JSON line on stdout (read by
//! `cargo xtask bench`).
//!
//! `eval "$(deploy/local/stack.sh env)"; cargo bench -p dora-kafka --bench throughput`
//! (`DORA_BENCH_QUICK=1` or `-- --quick`: a few seconds, figures meaningless).

mod bare;
mod platform;

use std::time::Duration;

use dora_kafka::{ConsumerSettings, Producer, ProducerSettings};
use dora_testkit::perf_tools::{self, Payload};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A record's key and payload.
pub type KeyedPayload = (String, Vec<u8>);

/// What a producer run achieved.
pub struct Produced {
    /// First send to last acknowledgement.
    pub elapsed: Duration,
    /// Send-to-ack latency, microseconds.
    pub latency_us: Histogram<u64>,
}

/// An empty latency histogram (1 µs to 10 min, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// The per-record work of both consumers: parse the JSON.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Distinct payloads in the record set (the perf tool picks among them at random).
const DISTINCT: usize = 1000;
/// Keys (agents) the records are spread over.
const KEYS: usize = 64;
const PARTITIONS: i32 = 6;

/// A heartbeat with resource usage as the seed's agents send it; every field
/// has a fixed width (numbers padded with spaces, which JSON allows), so every
/// payload has the same size.
fn records() -> Vec<KeyedPayload> {
    (0..DISTINCT)
        .map(|i| {
            let agent = format!("agent-{:03}", i % KEYS);
            let payload = format!(
                r#"{{"eventId":"00000000-0000-4000-8000-{i:012}","agentId":"{agent}","timestamp":{},"eventType":"HEARTBEAT","agentType":"gap-analyzer","status":"HEALTHY","version":"1.0.0","message":null,"metadata":{{"resource_usage":{{"cpu_percent":{:5.1},"memory_mb":{:5}}}}},"taskId":null}}"#,
                1_795_000_000_000u64 + i as u64,
                (i % 1000) as f64 / 10.0,
                256 + i % 4096,
            );
            (agent, payload.into_bytes())
        })
        .collect()
}

/// Sizes of one run.
struct Plan {
    /// Records each producer sends per round.
    produce: u64,
    /// Records each consumer reads per round.
    consume: u64,
    rounds: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
        let records = std::env::var("BENCH_RECORDS").ok().and_then(|v| v.parse().ok());
        if quick {
            Self { produce: records.unwrap_or(5_000), consume: records.unwrap_or(5_000), rounds: 1 }
        } else {
            let n = records.unwrap_or(200_000);
            Self { produce: n, consume: 2 * n, rounds: 3 }
        }
    }
}

/// One client's rounds: rates, and the latency percentiles of its best round.
#[derive(Default)]
struct Runs {
    rates: Vec<f64>,
    best: Option<(f64, Option<(f64, f64)>)>,
}

impl Runs {
    fn add(&mut self, rate: f64, latency_ms: Option<(f64, f64)>) {
        self.rates.push(rate);
        if self.best.is_none_or(|(r, _)| rate > r) {
            self.best = Some((rate, latency_ms));
        }
    }

    fn json(&self, group: &str, name: &str, baseline: bool) -> Value {
        let (rate, latency) = self.best.unwrap_or_default();
        json!({
            "group": group, "name": name, "rate": rate, "unit": "records/s", "baseline": baseline,
            "runs": self.rates, "p50_ms": latency.map(|l| l.0), "p99_ms": latency.map(|l| l.1),
        })
    }
}

fn produced_figures(n: u64, p: &Produced) -> (f64, Option<(f64, f64)>) {
    let ms = |q: f64| p.latency_us.value_at_quantile(q) as f64 / 1000.0;
    (n as f64 / p.elapsed.as_secs_f64(), Some((ms(0.50), ms(0.99))))
}

const PRODUCERS: [&str; 3] = ["platform Producer", "bare rdkafka BaseProducer", "kafka-producer-perf-test"];
const CONSUMERS: [&str; 3] = ["consume loop", "bare rdkafka BaseConsumer", "kafka-consumer-perf-test"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let plan = Plan::from_env();
    let kafka = dora_testkit::kafka();
    let topic = dora_testkit::unique("bench-throughput");
    dora_testkit::create_topic(&kafka, &topic, PARTITIONS).await?;
    let records = records();
    let payload_file = tempfile::NamedTempFile::new()?;
    let payloads: Vec<Vec<u8>> = records.iter().map(|(_, v)| v.clone()).collect();
    perf_tools::write_payload_file(payload_file.path(), &payloads)?;
    let ps = ProducerSettings::default();
    let producer = Producer::new(&kafka, &ps, "bench", &dora_telemetry::Readiness::new())?;
    let bare_cfg = ps.client_config(&kafka)?;

    let mut producers: [Runs; 3] = Default::default();
    for round in 0..plan.rounds {
        for k in 0..3 {
            let which = (round + k) % 3;
            eprintln!("round {}/{}: producer path, {} ({} records)", round + 1, plan.rounds, PRODUCERS[which], plan.produce);
            let (rate, latency) = match which {
                0 => produced_figures(plan.produce, &platform::produce(&producer, &topic, &records, plan.produce).await?),
                1 => {
                    let (cfg, t, r, n) = (bare_cfg.clone(), topic.clone(), records.clone(), plan.produce);
                    let p = tokio::task::spawn_blocking(move || bare::produce(&cfg, &t, &r, n)).await??;
                    produced_figures(plan.produce, &p)
                }
                _ => {
                    let (t, n, file) = (topic.clone(), plan.produce, payload_file.path().to_path_buf());
                    let (bootstrap, props) = (kafka.bootstrap_servers.clone(), perf_tools::java_producer_props(&ps));
                    let p = tokio::task::spawn_blocking(move || {
                        perf_tools::producer_perf_test(&bootstrap, &t, n, &Payload::File(file), &props)
                    })
                    .await??;
                    (p.records_per_s, Some((p.p50_ms, p.p99_ms)))
                }
            };
            producers[which].add(rate, latency);
        }
    }

    let cs = ConsumerSettings::default();
    let mut consumers: [Runs; 3] = Default::default();
    for round in 0..plan.rounds {
        for k in 0..3 {
            let which = (round + k) % 3;
            eprintln!("round {}/{}: consume path, {} ({} records)", round + 1, plan.rounds, CONSUMERS[which], plan.consume);
            let group = dora_testkit::unique("bench-throughput");
            let settings = ConsumerSettings { group_id: group.clone(), ..cs.clone() };
            let elapsed = match which {
                0 => platform::consume(&kafka, &settings, &topic, plan.consume).await?,
                1 => {
                    let (cfg, t, n, every) =
                        (settings.client_config(&kafka)?, topic.clone(), plan.consume, cs.commit_interval_ms);
                    tokio::task::spawn_blocking(move || bare::consume(&cfg, every, &t, n)).await??
                }
                _ => {
                    let (t, n, bootstrap, props) =
                        (topic.clone(), plan.consume, kafka.bootstrap_servers.clone(), perf_tools::java_consumer_props(&cs));
                    let c = tokio::task::spawn_blocking(move || {
                        perf_tools::consumer_perf_test(&bootstrap, &t, n, &group, &props)
                    })
                    .await??;
                    Duration::from_secs_f64(c.records as f64 / c.records_per_s)
                }
            };
            consumers[which].add(plan.consume as f64 / elapsed.as_secs_f64(), None);
        }
    }

    let mut results = Vec::new();
    for (i, runs) in producers.iter().enumerate() {
        results.push(runs.json("producer path", PRODUCERS[i], i > 0));
    }
    for (i, runs) in consumers.iter().enumerate() {
        results.push(runs.json("consume path", CONSUMERS[i], i > 0));
    }
    for r in &results {
        eprintln!(
            "{:<14} {:<28} {:>10.0} records/s  p50 {:>8} ms  p99 {:>8} ms  rounds {}",
            r["group"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default(),
            r["rate"].as_f64().unwrap_or_default(),
            r["p50_ms"].as_f64().map_or("-".into(), |v| format!("{v:.1}")),
            r["p99_ms"].as_f64().map_or("-".into(), |v| format!("{v:.1}")),
            r["runs"],
        );
    }
    let line = json!({
        "bench": "runtime",
        "librdkafka": rdkafka::util::get_rdkafka_version().1,
        "record_bytes": payloads[0].len(),
        "keys": KEYS,
        "partitions": PARTITIONS,
        "produced_per_round": plan.produce,
        "consumed_per_round": plan.consume,
        "rounds": plan.rounds,
        "results": results,
    });
    println!("{line}");
    Ok(())
}

//! dlq-bench: how fast the replayer replays dead letters, against a bare
//! rdkafka transactional consume -> produce copy of the same records
//! (`dora_kafka::baseline::transactional_passthrough`, written as
//! rust-rdkafka's transactions example does it), in the same run on the same
//! broker. Prints one JSON line (for `cargo xtask bench`).
//!
//! Both sides are timed by the wall clock from the start (clients, group
//! join, transactions initialised) to the last commit (for the replayer,
//! from planning to the outcome it reports).
//!
//! Each round writes the same dead letters (Avro `DeadLetter`) to two fresh
//! topics: the bare copy reads one and copies key and value to a third topic;
//! the replayer plans and carries out a replay of the other (read the topic,
//! select, then per letter the replayed record, per transaction one
//! resolution marker per dead-letter partition and one audit event naming
//! its letters). Both commit a
//! transaction per [`UNRATED_TRANSACTION_LETTERS`] input records, the
//! replayer's size for an order without `--rate` (the bare copy's cost per
//! transaction is amortised the same way; rust-rdkafka's transactions
//! example commits every 100, `--transaction 100` compares at that size with
//! the replayer still at its own). The two run in alternating order;
//! the medians go on the last line (`{"bench": "dlq-replayer", "results":
//! [...]}`, the `cargo xtask bench` contract); progress goes to stderr.
//! Settings as the service's (`DORA_*`); run against the local stack:
//! `eval "$(deploy/local/stack.sh env)"`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use dlq_replayer::letter::Action;
use dlq_replayer::operator::{carry_out, plan, Order, UNRATED_TRANSACTION_LETTERS};
use dlq_replayer::outbound::Actor;
use dlq_replayer::selection::Filter;
use dlq_replayer::Settings;
use dora_kafka::baseline::{produce_all, transactional_passthrough, RawRecord};
use dora_kafka::consume::ConsumerSettings;
use dora_kafka::topics::{provision, TopicSpec};
use dora_schema::{Codec, DeadLetter, DeadLetterHeader};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "dlq-bench",
    about = "dlq-replayer replay throughput vs a bare rdkafka transactional copy"
)]
struct Args {
    /// Dead letters per round.
    #[arg(long, default_value_t = 20_000)]
    records: u64,
    /// Rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Input records per transaction of the bare copy.
    #[arg(long, default_value_t = UNRATED_TRANSACTION_LETTERS as u64)]
    transaction: u64,
    /// A few seconds' run with tiny sizes (also `DORA_BENCH_QUICK=1`), to
    /// check that it runs.
    #[arg(long)]
    quick: bool,
}

fn spec(name: &str, partitions: i32) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions,
        configs: Vec::new(),
    }
}

/// The dead letter of record `i` of `topic` (a 200-byte value, two headers).
fn letter(topic: &str, i: u64) -> DeadLetter {
    let key = format!("agent-{}", i % 1000);
    DeadLetter {
        original_topic: topic.to_string(),
        original_partition: (i % 3) as i32,
        original_offset: i as i64,
        original_key: Some(key.into_bytes()),
        original_message: format!("{{\"id\":{i},\"pad\":\"{}\"}}", "x".repeat(180)).into_bytes(),
        original_headers: vec![
            DeadLetterHeader {
                key: "traceparent".into(),
                value: Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec()),
            },
            DeadLetterHeader {
                key: "producer".into(),
                value: Some(b"agent-gateway".to_vec()),
            },
        ],
        original_timestamp: Some(1_795_000_000_000),
        error_message: "registry unavailable".into(),
        error_type: "RegistryUnavailable".into(),
        retry_count: 3,
        processing_attempts: 4,
        timestamp: 1_795_000_000_000,
        failed_by: "report-ingest/report-ingest".into(),
    }
}

/// One round's topics.
struct Round {
    source: String,
    dlq: String,
    copy_in: String,
    copy_out: String,
    audit: String,
}

async fn prepare(settings: &Settings, codec: &Codec, n: u64) -> Result<Round> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let source = format!("dlq-bench-{}", &id[..12]);
    let r = Round {
        dlq: format!("{source}-dlq"),
        copy_in: format!("{source}-bare-in"),
        copy_out: format!("{source}-bare-out"),
        audit: format!("{source}-audit"),
        source,
    };
    let specs = [
        spec(&r.source, 3),
        spec(&r.dlq, 1),
        spec(&r.copy_in, 1),
        spec(&r.copy_out, 1),
        spec(&r.audit, 1),
    ];
    let kafka = &settings.common.kafka;
    provision(kafka, &specs, 1, Duration::from_secs(30)).await?;
    let mut records: Vec<RawRecord> = Vec::with_capacity(2 * n as usize);
    for i in 0..n {
        let d = letter(&r.source, i);
        let value = codec.encode(&r.dlq, &d).await?;
        let key = format!("agent-{}", i % 1000);
        records.push((r.dlq.clone(), key.clone(), value.clone()));
        records.push((r.copy_in.clone(), key, value));
    }
    produce_all(kafka, &settings.producer, &records).await?;
    Ok(r)
}

async fn bare(settings: &Settings, r: &Round, n: u64, batch: u64) -> Result<Duration> {
    let consumer = ConsumerSettings {
        group_id: format!("{}-bare", r.source),
        ..settings.consumer.clone()
    };
    let (kafka, producer) = (settings.common.kafka.clone(), settings.producer.clone());
    let (input, output, id) = (
        r.copy_in.clone(),
        r.copy_out.clone(),
        format!("{}-bare-tx", r.source),
    );
    // Wall time, like the replay's: clients created, group joined,
    // transactions initialised, every record copied and committed.
    let started = Instant::now();
    let from_first_record = tokio::task::spawn_blocking(move || {
        transactional_passthrough(
            &kafka,
            &consumer,
            &producer,
            &id,
            (&input, &output),
            n,
            batch,
        )
    })
    .await??;
    let took = started.elapsed();
    eprintln!("  bare copy: {took:?}, of which {from_first_record:?} from its first record");
    Ok(took)
}

async fn replayer(settings: &Settings, codec: &Codec, r: &Round, n: u64) -> Result<Duration> {
    let mut s = settings.clone();
    s.dlq.replay_topics = vec![r.source.clone()];
    s.dlq.audit_topic = r.audit.clone();
    s.consumer.group_id = format!("{}-replayer", r.source);
    let order = Order {
        action: Action::Replayed,
        rate: None,
        reason: "benchmark".into(),
        actor: Actor {
            name: "dlq-bench".into(),
            automatic: false,
        },
    };
    let started = Instant::now();
    let p = plan(&s, codec, &r.dlq, &Filter::default(), Action::Replayed).await?;
    ensure!(
        p.selected.len() as u64 == n,
        "planned {} of {n}",
        p.selected.len()
    );
    let planned = started.elapsed();
    let outcome = carry_out(&s, codec, p, &order).await?;
    let took = started.elapsed();
    eprintln!(
        "  replay: planned in {planned:?}, carried out and read back in {:?}",
        took - planned
    );
    ensure!(outcome.done as u64 == n, "replayed {outcome:?} of {n}");
    Ok(took)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    args.quick |= std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
    if args.quick {
        (args.records, args.rounds) = (200, 1);
    }
    let settings: Settings = dora_config::load().context("settings")?;
    let _telemetry = dora_telemetry::init_for_command("dlq-bench", &settings.common.telemetry);
    let codec = Codec::new(&settings.registry)?;
    let n = args.records;
    let (mut replay_rates, mut bare_rates) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let r = prepare(&settings, &codec, n).await?;
        let (t_replay, t_bare) = if round % 2 == 0 {
            let b = bare(&settings, &r, n, args.transaction).await?;
            (replayer(&settings, &codec, &r, n).await?, b)
        } else {
            let p = replayer(&settings, &codec, &r, n).await?;
            (p, bare(&settings, &r, n, args.transaction).await?)
        };
        let (rr, br) = (
            n as f64 / t_replay.as_secs_f64(),
            n as f64 / t_bare.as_secs_f64(),
        );
        eprintln!("round {round}: replay {rr:.0} records/s ({t_replay:?}), bare copy {br:.0} records/s ({t_bare:?})");
        replay_rates.push(rr);
        bare_rates.push(br);
    }
    let (replay, bare) = (median(replay_rates), median(bare_rates));
    let rounds = args.rounds.max(1);
    let line = serde_json::json!({
        "bench": "dlq-replayer",
        "results": [
            {"group": "replay", "name": "dlq-replayer replay (record per letter, a marker and an audit event per transaction)",
             "rate": replay.round(), "unit": "records/s", "baseline": false},
            {"group": "replay", "name": "bare rdkafka transactional copy",
             "rate": bare.round(), "unit": "records/s", "baseline": true},
        ],
        "records": n,
        "rounds": rounds,
        "ratio": (replay / bare * 1000.0).round() / 1000.0,
        "transaction": format!("replay {UNRATED_TRANSACTION_LETTERS}, bare copy {} input records", args.transaction),
    });
    println!("{line}");
    Ok(())
}

//! `audit-bench`: audit-sink's ingest rate against plain multi-row INSERTs,
//! hash chaining's CPU share and verify's rate, in one run on the local
//! stack (see `audit_sink::bench`). Uses `DORA_POSTGRES__USER` /
//! `DORA_POSTGRES__PASSWORD_FILE` as the owner: it creates a database and a
//! writer login of its own and drops both at the end.
//!
//! `eval "$(deploy/local/stack.sh env)"; cargo run --release -p audit-sink --bin audit-bench`

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use audit_sink::bench::{self, PlainInsert};
use audit_sink::health::DbHealth;
use audit_sink::intake::{decode, Topics};
use audit_sink::settings::PostgresSettings;
use audit_sink::sink::Sink;
use audit_sink::store::Store;
use audit_sink::{db, verify, Settings};
use clap::Parser;
use dora_config::Secret;
use dora_kafka::topics::{provision, TopicSpec};
use dora_kafka::{ConsumerSettings, OutboundRecord, Producer, ProducerSettings, Record};
use dora_schema::Codec;
use dora_telemetry::Readiness;

#[derive(Debug, Parser)]
#[command(about = "audit-sink ingest vs plain multi-row INSERT, hash share, verify rate")]
struct Args {
    /// Records in the pre-filled topic (and again for the write-path comparison).
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// A run of a few seconds that only shows everything works (`cargo xtask bench --quick`).
    #[arg(long)]
    quick: bool,
}

struct Bench {
    settings: Settings,
    pg: PostgresSettings,
    owner: PostgresSettings,
    run: String,
    topic: String,
    codec: Codec,
}

async fn setup(args: &Args) -> Result<Bench> {
    let settings: Settings = dora_config::load()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let admin = settings.postgres.clone();
    let database = format!("audit_bench_{run}");
    let client = db::Connector::new(&admin)?.connect(&admin.config_for(&admin.user, admin.password.as_ref())).await
        .context("connecting as the owner (DORA_POSTGRES__USER / DORA_POSTGRES__PASSWORD_FILE)")?;
    client.batch_execute(&format!("CREATE DATABASE {database}")).await?;
    let pg = PostgresSettings {
        database: database.clone(),
        admin_user: Some(admin.user.clone()),
        admin_password: admin.password.clone(),
        user: format!("audit_bench_{run}"),
        password: Some(Secret::from(uuid::Uuid::new_v4().simple().to_string())),
        ..admin.clone()
    };
    db::migrate(&pg).await?;
    let owner = PostgresSettings { database, ..admin };
    let topic = format!("audit-bench-{run}");
    let kafka = &settings.common.kafka;
    provision(kafka, &[TopicSpec { name: topic.clone(), partitions: args.partitions, configs: Default::default() }], 1, Duration::from_secs(30)).await?;
    let codec = Codec::new(&settings.registry)?;
    Ok(Bench { settings, pg, owner, run, topic, codec })
}

async fn prefill(b: &Bench, n: usize) -> Result<f64> {
    let producer = Producer::new(&b.settings.common.kafka, &ProducerSettings::default(), "audit-bench", &Readiness::new())?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for (i, e) in bench::events(n, &b.run).iter().enumerate() {
        let bytes = b.codec.encode(&b.topic, e).await?;
        pending.push(producer.enqueue_raw(OutboundRecord::new(b.topic.as_str(), Some(&format!("k{}", i % 64)), bytes)).await?);
    }
    for d in pending {
        d.await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn count(pool: &deadpool_postgres::Pool, table: &str) -> Result<i64> {
    let c = pool.get().await?;
    Ok(c.query_one(&format!("SELECT count(*) FROM audit.{table}"), &[]).await?.get(0))
}

fn consumer(group: String) -> ConsumerSettings {
    ConsumerSettings { group_id: group, max_batch_records: 1000, ..Default::default() }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick || std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1") {
        args.records = args.records.min(2_000);
    }
    let n = args.records;
    let b = setup(&args).await?;
    let connector = db::Connector::new(&b.pg)?;
    let writer = connector.writer_pool(&b.pg)?;
    let owner = connector.writer_pool(&b.owner)?;
    owner.get().await?.batch_execute("CREATE TABLE audit.plain_events (LIKE audit.audit_events INCLUDING ALL)").await?;
    let produced = prefill(&b, n).await?;
    let kafka = &b.settings.common.kafka;
    let topics = Topics::new(std::slice::from_ref(&b.topic), &[]);

    let sink = Sink::new(b.codec.clone(), topics.clone(), Store::new(writer.clone()), DbHealth::new(&Readiness::new(), Duration::from_secs(10)), None, Duration::from_secs(3600));
    let (sink_rate, sink_cpu) = bench::ingest(kafka, &consumer(format!("bench-sink-{}", b.run)), &b.codec, &b.topic, sink, n as i64, || count(&writer, "audit_events")).await?;
    let plain = PlainInsert { codec: b.codec.clone(), topics: topics.clone(), pool: owner.clone(), table: "audit.plain_events".into() };
    let (plain_rate, _) = bench::ingest(kafka, &consumer(format!("bench-plain-{}", b.run)), &b.codec, &b.topic, plain, n as i64, || count(&owner, "plain_events")).await?;

    // The write path alone, from decoded rows in memory (fresh ids, a topic name of its own).
    let mem_topic = format!("{}-mem", b.topic);
    let mut records = Vec::with_capacity(n);
    for (i, e) in bench::events(n, &format!("{}-mem", b.run)).iter().enumerate() {
        let bytes = b.codec.encode(&b.topic, e).await?;
        records.push(Record { topic: mem_topic.clone(), partition: 0, offset: i as i64, key: Some(b"k".to_vec()), payload: Some(bytes), headers: vec![], timestamp: Some(1_795_771_815_000) });
    }
    let mem_topics = Topics::new(std::slice::from_ref(&mem_topic), &[]);
    let mut items = Vec::with_capacity(n);
    for r in &records {
        items.push(decode(&b.codec, &mem_topics, r).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let store = Store::new(writer.clone());
    let started = Instant::now();
    for chunk in items.chunks(1000) {
        store.store(chunk).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let store_rate = n as f64 / started.elapsed().as_secs_f64();
    let mut client = owner.get().await?;
    let started = Instant::now();
    for chunk in items.chunks(1000) {
        bench::insert_values(&mut client, "audit.plain_events", chunk, 1000).await?;
    }
    let values_rate = n as f64 / started.elapsed().as_secs_f64();
    let hash_secs = bench::hash_seconds(&items);

    let mut verifier = connector.connect(&b.pg.config_for(&b.pg.user, b.pg.password.as_ref())).await?;
    let started = Instant::now();
    let verdict = verify::verify(&mut verifier).await?;
    let verify_rate = verdict.links as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(verdict.intact(), "{verdict}");

    println!("audit-bench: {n} AuditEvents (Avro), {} partitions, batches of 1000; producer {produced:.0} records/s", args.partitions);
    println!("end to end, topic -> PostgreSQL (same loop, same decoding):");
    println!("  audit-sink (COPY + INSERT..SELECT, chain, fence)  {sink_rate:>10.0} rows/s");
    println!("  baseline (multi-row INSERT .. VALUES x1000)        {plain_rate:>10.0} rows/s   ratio {:.2}x", sink_rate / plain_rate);
    println!("database write path alone (decoded rows in memory):");
    println!("  audit-sink store                                    {store_rate:>10.0} rows/s");
    println!("  multi-row INSERT .. VALUES x1000                    {values_rate:>10.0} rows/s   ratio {:.2}x", store_rate / values_rate);
    println!("hash chaining: {hash_secs:.3} s CPU for {n} links = {:.1} % of the sink's {sink_cpu:.2} s CPU during ingest", 100.0 * hash_secs / sink_cpu.max(1e-9));
    println!("verify: {} links in {:.0} links/s = {:.1}x the sink's ingest rate", verdict.links, verify_rate, verify_rate / sink_rate);
    // The result line for `cargo xtask bench` (crates/bench/src/figures.rs).
    let figure = |group: &str, name: &str, rate: f64, baseline: bool| {
        serde_json::json!({"group": group, "name": name, "rate": rate, "unit": "rows/s", "baseline": baseline})
    };
    println!("{}", serde_json::json!({
        "bench": "audit-sink",
        "results": [
            figure("topic -> PostgreSQL", "audit-sink (COPY + INSERT..SELECT, chain, fence)", sink_rate, false),
            figure("topic -> PostgreSQL", "multi-row INSERT .. VALUES x1000, same loop", plain_rate, true),
            figure("database write path", "audit-sink store", store_rate, false),
            figure("database write path", "multi-row INSERT .. VALUES x1000", values_rate, true),
        ],
        "records": n,
        "hash_cpu_share_percent": 100.0 * hash_secs / sink_cpu.max(1e-9),
        "verify_links_per_s": verify_rate,
    }));

    drop((writer, owner, verifier, client));
    let admin = db::Connector::new(&b.owner)?.connect(&b.owner.config_for(&b.owner.user, b.owner.password.as_ref()).dbname("postgres").clone()).await?;
    // Two statements: a multi-statement batch is one implicit transaction, which DROP DATABASE refuses.
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", b.pg.database)).await?;
    admin.batch_execute(&format!("DROP ROLE {}", b.pg.user)).await?;
    Ok(())
}

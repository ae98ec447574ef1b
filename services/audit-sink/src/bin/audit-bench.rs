//! `audit-bench`: audit-sink's ingest rate against plain multi-row INSERTs,
//! hash chaining's CPU share and verify's rate, in one run on the local
//! stack (see `audit_sink::bench`), with a profile of where each side's time
//! goes. Uses `DORA_POSTGRES__USER` / `DORA_POSTGRES__PASSWORD_FILE` as the
//! owner: it creates a database and a writer login of its own and drops both
//! at the end. Tables on stderr; the last stdout line is the JSON result
//! `cargo xtask bench` reads. `--quick` (or `DORA_BENCH_QUICK=1`): 2000 records.
//!
//! `eval "$(deploy/local/stack.sh env)"; cargo run --release -p audit-sink --bin audit-bench`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use audit_sink::bench::profile::{self, round};
use audit_sink::bench::{self, DecodeOnly, Ingest, PlainInsert};
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
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "audit-sink ingest vs plain multi-row INSERT, hash share, verify rate")]
struct Args {
    /// Records in the pre-filled topic (and again for the write-path comparison).
    #[arg(long, default_value_t = 50_000)]
    records: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Records per batch of the consume loop, every side (the baseline's
    /// INSERTs stay at 1000 rows; a larger batch is several in one transaction).
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// A few seconds' run (2000 records) that only shows the bench works.
    #[arg(long)]
    quick: bool,
    /// Times `verify` is run over what was stored (the figure is the median
    /// rate; each round and the window's wall clock go to stderr, for a
    /// profiler's `--time`).
    #[arg(long, default_value_t = 1)]
    verify_rounds: usize,
}

struct Bench {
    settings: Settings,
    pg: PostgresSettings,
    owner: PostgresSettings,
    run: String,
    topic: String,
    codec: Codec,
    /// Records per loop batch (`--batch-records`).
    batch: usize,
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
    Ok(Bench { settings, pg, owner, run, topic, codec, batch: args.batch_records.max(1) })
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

async fn count(client: &tokio_postgres::Client, table: &str) -> Result<i64> {
    Ok(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0))
}

fn consumer(group: String, batch: usize) -> ConsumerSettings {
    ConsumerSettings { group_id: group, max_batch_records: batch, ..Default::default() }
}

/// One end-to-end side with its profile: the process's and the database
/// backends' CPU per record, the batch's steps (sink) or INSERT/COMMIT time.
struct Side {
    ingest: Ingest,
    backend_cpu: f64,
    breakdown: Value,
}

impl Side {
    fn json(&self, n: u64, stored_bytes: i64) -> Value {
        let per = |s: f64| (s * 1e7 / n as f64).round() / 10.0; // µs per record, 1 decimal
        json!({
            "seconds": round(self.ingest.seconds),
            "process_cpu_us_per_record": per(self.ingest.cpu),
            "postgres_backend_cpu_us_per_record": per(self.backend_cpu),
            "wall_us_per_record": per(self.ingest.seconds),
            "stored_bytes_per_record": stored_bytes / n as i64,
            "batches": self.ingest.batches,
            "partitions_per_batch": (self.ingest.partitions_per_batch * 100.0).round() / 100.0,
            // over all n records; the rate's window starts after the first batch
            "database_seconds": self.breakdown,
        })
    }
}

/// End to end through the consume loop: the sink, the baseline (statements
/// parsed per execution, then prepared once per connection), then the
/// ceiling (the same loop decoding and writing nothing).
async fn end_to_end(b: &Bench, n: usize, writer: &db::Pool, owner: &db::Pool, probe: &tokio_postgres::Client) -> Result<(Side, [Side; 2], Ingest)> {
    let kafka = &b.settings.common.kafka;
    let topics = Topics::new(std::slice::from_ref(&b.topic), &[]);
    let health = DbHealth::new(&Readiness::new(), Duration::from_secs(10));
    let sink = Sink::new(b.codec.clone(), topics.clone(), Store::new(writer.clone()), health, None, Duration::from_secs(3600));
    let (cpu0, steps0) = (profile::backend_cpu(probe, &b.pg.user).await?, profile::steps());
    let ingest = bench::ingest(kafka, &consumer(format!("bench-sink-{}", b.run), b.batch), &b.codec, &b.topic, sink, n as u64).await?;
    let backend_cpu = profile::cpu_between(&cpu0, &profile::backend_cpu(probe, &b.pg.user).await?);
    let sink = Side { ingest, backend_cpu, breakdown: profile::steps_between(&steps0, &profile::steps()) };
    let plain = plain_side(b, n, owner, probe, false).await?;
    let prepared = plain_side(b, n, owner, probe, true).await?;
    let decode_only = DecodeOnly { codec: b.codec.clone(), topics };
    let ceiling = bench::ingest(kafka, &consumer(format!("bench-decode-{}", b.run), b.batch), &b.codec, &b.topic, decode_only, n as u64).await?;
    Ok((sink, [plain, prepared], ceiling))
}

/// The baseline end to end: the same loop and decoding, multi-row INSERTs into
/// a copy of the table ([`PLAIN_TABLES`]), its statements `prepared` or not.
async fn plain_side(b: &Bench, n: usize, owner: &db::Pool, probe: &tokio_postgres::Client, prepared: bool) -> Result<Side> {
    let times = Arc::new(Mutex::new(bench::InsertTimes::default()));
    let table = PLAIN_TABLES[usize::from(prepared)].to_string();
    let topics = Topics::new(std::slice::from_ref(&b.topic), &[]);
    let plain = PlainInsert { codec: b.codec.clone(), topics, pool: owner.clone(), table, times: times.clone(), prepared };
    let cpu0 = profile::backend_cpu(probe, &b.owner.user).await?;
    let group = format!("bench-plain-{}-{prepared}", b.run);
    let ingest = bench::ingest(&b.settings.common.kafka, &consumer(group, b.batch), &b.codec, &b.topic, plain, n as u64).await?;
    let backend_cpu = profile::cpu_between(&cpu0, &profile::backend_cpu(probe, &b.owner.user).await?);
    let t = *times.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Side { ingest, backend_cpu, breakdown: json!({"insert_s": round(t.insert), "commit_s": round(t.commit)}) })
}

/// The baseline's tables (copies of `audit.audit_events` with its indexes):
/// statements parsed per execution, prepared once.
const PLAIN_TABLES: [&str; 2] = ["audit.plain_events", "audit.plain_prepared"];

/// The database write path alone, from decoded rows in memory (fresh ids, a
/// topic name of its own): the sink's store vs the multi-row INSERT; returns
/// (store rate, its steps, INSERT rate, its times, hash CPU seconds for these links).
async fn write_path(b: &Bench, n: usize, partitions: usize, writer: &db::Pool, owner: &db::Pool) -> Result<(f64, Value, f64, Value, f64)> {
    let mem_topic = format!("{}-mem", b.topic);
    let mut records = Vec::with_capacity(n);
    for (i, e) in bench::events(n, &format!("{}-mem", b.run)).iter().enumerate() {
        let bytes = b.codec.encode(&b.topic, e).await?;
        // spread over the partitions like the topic's records (the store writes partitions concurrently)
        let (partition, offset) = ((i % partitions) as i32, (i / partitions) as i64);
        records.push(Record { topic: mem_topic.clone(), partition, offset, key: Some(b"k".to_vec()), payload: Some(bytes), headers: vec![], timestamp: Some(1_795_771_815_000) });
    }
    let mem_topics = Topics::new(std::slice::from_ref(&mem_topic), &[]);
    let mut items = Vec::with_capacity(n);
    for r in &records {
        items.push(decode(&b.codec, &mem_topics, r).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let store = Store::new(writer.clone());
    let steps0 = profile::steps();
    let started = Instant::now();
    for chunk in items.chunks(1000) {
        store.store(chunk).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let store_rate = n as f64 / started.elapsed().as_secs_f64();
    let store_steps = profile::steps_between(&steps0, &profile::steps());
    let mut client = owner.get().await?;
    let (values_rate, values_times) = insert_path(&mut client, &items, false).await?;
    let (prepared_rate, prepared_times) = insert_path(&mut client, &items, true).await?;
    let ceiling = copy_ceiling(&mut client, &items).await?;
    drop(client);
    let ceiling_concurrent = copy_ceiling_concurrent(owner, &items).await?;
    Ok((store_rate, store_steps, values_rate, json!({"baseline": values_times,
        "prepared_rows_per_s": prepared_rate.round(), "prepared": prepared_times, "copy_ceiling_rows_per_s": ceiling.round(),
        "copy_ceiling_concurrent_rows_per_s": ceiling_concurrent.round()}), bench::hash_seconds(&items)))
}

/// The baseline's write path alone: `items` by multi-row INSERTs of 1000,
/// one transaction each; (rows/s, INSERT and COMMIT seconds).
async fn insert_path(client: &mut deadpool_postgres::Object, items: &[audit_sink::intake::Item<'_>], prepared: bool) -> Result<(f64, Value)> {
    let mut total = bench::InsertTimes::default();
    let started = Instant::now();
    for chunk in items.chunks(1000) {
        let t = bench::insert_values(client, PLAIN_TABLES[usize::from(prepared)], chunk, 1000, prepared).await?;
        total.insert += t.insert;
        total.commit += t.commit;
    }
    let rate = items.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, json!({"insert_s": round(total.insert), "commit_s": round(total.commit)})))
}

/// The ceiling of any COPY-based write path, for the explanation (not a
/// baseline): binary COPY straight into a copy of the table with its
/// indexes, one transaction per 1000 rows, no staging, no ON CONFLICT, no chain.
async fn copy_ceiling(client: &mut tokio_postgres::Client, items: &[audit_sink::intake::Item<'_>]) -> Result<f64> {
    client.batch_execute("CREATE TABLE audit.ceiling_events (LIKE audit.audit_events INCLUDING ALL)").await?;
    let started = Instant::now();
    for chunk in items.chunks(1000) {
        let tx = client.transaction().await?;
        let rows: Vec<_> = chunk.iter().collect();
        audit_sink::copy::copy_audits(&tx, "audit.ceiling_events", &rows).await?;
        tx.commit().await?;
    }
    Ok(items.len() as f64 / started.elapsed().as_secs_f64())
}

/// The ceiling of the sink's concurrent design, for the explanation: the
/// same bare COPY, each 1000 rows split by partition and the partitions
/// copied at once, one connection and transaction each (no chain, no fence).
async fn copy_ceiling_concurrent(owner: &db::Pool, items: &[audit_sink::intake::Item<'_>]) -> Result<f64> {
    owner.get().await?.batch_execute("CREATE TABLE audit.ceiling_events_concurrent (LIKE audit.audit_events INCLUDING ALL)").await?;
    let started = Instant::now();
    for chunk in items.chunks(1000) {
        let mut by_partition: std::collections::BTreeMap<i32, Vec<&audit_sink::intake::Item<'_>>> = Default::default();
        for it in chunk {
            by_partition.entry(it.record.partition).or_default().push(it);
        }
        futures::future::try_join_all(by_partition.into_values().map(|rows| async move {
            let mut client = owner.get().await?;
            let tx = client.transaction().await?;
            audit_sink::copy::copy_audits(&tx, "audit.ceiling_events_concurrent", &rows).await?;
            tx.commit().await?;
            anyhow::Ok(())
        }))
        .await?;
    }
    Ok(items.len() as f64 / started.elapsed().as_secs_f64())
}

fn figure(group: &str, name: &str, rate: f64, unit: &str, baseline: bool) -> Value {
    json!({"group": group, "name": name, "rate": rate.round(), "unit": unit, "baseline": baseline})
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    args.quick |= std::env::var("DORA_BENCH_QUICK").is_ok_and(|v| v == "1");
    if args.quick {
        args.records = args.records.min(2000);
    }
    let n = args.records;
    let b = setup(&args).await?;
    let connector = db::Connector::new(&b.pg)?;
    let writer = connector.writer_pool(&b.pg)?;
    let owner = connector.writer_pool(&b.owner)?;
    let probe = connector.connect(&b.owner.config_for(&b.owner.user, b.owner.password.as_ref())).await?;
    for table in PLAIN_TABLES {
        probe.batch_execute(&format!("CREATE TABLE {table} (LIKE audit.audit_events INCLUDING ALL)")).await?;
    }
    let produced = prefill(&b, n).await?;

    let (sink, [plain, prepared], decode_only) = end_to_end(&b, n, &writer, &owner, &probe).await?;
    anyhow::ensure!(count(&probe, "audit.audit_events").await? == n as i64, "the sink did not store every record");
    for table in PLAIN_TABLES {
        anyhow::ensure!(count(&probe, table).await? == n as i64, "the baseline did not store every record in {table}");
    }
    let sink_bytes = profile::stored_bytes(&probe, &["audit.audit_events", "audit.chain", "audit.sink_offsets"]).await?;
    let plain_bytes = profile::stored_bytes(&probe, &["audit.plain_events"]).await?;

    let (store_rate, store_steps, values_rate, values_times, hash_secs) = write_path(&b, n, args.partitions.max(1) as usize, &writer, &owner).await?;

    let verifier_cfg = b.pg.config_for(&b.pg.user, b.pg.password.as_ref());
    let mut verifier = connector.connect(&verifier_cfg).await?;
    let (mut rates, mut links) = (Vec::new(), 0);
    let window = realtime_seconds();
    for _ in 0..args.verify_rounds.max(1) {
        let started = Instant::now();
        let verdict = verify::verify_concurrently(&mut verifier, audit_sink::cli::VERIFY_WORKERS, || async {
            Ok(connector.connect(&verifier_cfg).await?)
        })
        .await?;
        rates.push(verdict.links as f64 / started.elapsed().as_secs_f64());
        links = verdict.links;
        anyhow::ensure!(verdict.intact(), "{verdict}");
    }
    if args.verify_rounds > 1 {
        eprintln!("verify rounds (links/s): {rates:.0?}; realtime clock {window:.3}..{:.3}", realtime_seconds());
    }
    rates.sort_by(f64::total_cmp);
    let verify_rate = rates[rates.len() / 2];

    let r = Results { n, partitions: args.partitions, batch: b.batch, quick: args.quick, produced, sink, plain, prepared, decode_only, sink_bytes, plain_bytes,
        store_rate, store_steps, values_rate, values_times, hash_secs, verify_rate, links };
    let line = r.report();
    println!("{line}");

    drop((writer, owner, verifier, probe));
    let admin = db::Connector::new(&b.owner)?.connect(&b.owner.config_for(&b.owner.user, b.owner.password.as_ref()).dbname("postgres").clone()).await?;
    // Two statements: a multi-statement batch is one implicit transaction, which DROP DATABASE refuses.
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", b.pg.database)).await?;
    admin.batch_execute(&format!("DROP ROLE {}", b.pg.user)).await?;
    Ok(())
}

/// The wall clock in seconds since the epoch (what `perf record -k realtime` stamps samples with).
fn realtime_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's 1-minute load average (the figures depend on it: 2 shared cores).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Everything measured, for the report.
struct Results {
    n: usize,
    partitions: i32,
    batch: usize,
    quick: bool,
    produced: f64,
    sink: Side,
    plain: Side,
    prepared: Side,
    decode_only: Ingest,
    sink_bytes: i64,
    plain_bytes: i64,
    store_rate: f64,
    store_steps: Value,
    values_rate: f64,
    values_times: Value,
    hash_secs: f64,
    verify_rate: f64,
    links: u64,
}

impl Results {
    /// Prints the tables on stderr; returns the JSON result line.
    fn report(&self) -> Value {
        let (n, s, p, pp) = (self.n, self.sink.ingest, self.plain.ingest, self.prepared.ingest);
        let hash_share = 100.0 * self.hash_secs / s.cpu.max(1e-9);
        let (sink_profile, plain_profile) = (self.sink.json(n as u64, self.sink_bytes), self.plain.json(n as u64, self.plain_bytes));
        let prepared_profile = self.prepared.json(n as u64, self.plain_bytes);
        let prepared_rate = self.values_times["prepared_rows_per_s"].as_f64().unwrap_or(0.0);
        self.print(&sink_profile, &plain_profile, &prepared_profile, hash_share);
        let ceiling = self.decode_only.rate;
        let (e2e, write, ver) = ("topic -> PostgreSQL, end to end", "database write path (rows in memory)", "verify vs ingest");
        json!({
            "bench": "audit-sink",
            "results": [
                figure(e2e, "audit-sink (COPY per partition, chain, fence)", s.rate, "records/s", false),
                figure(e2e, "same loop + multi-row INSERT VALUES x1000", p.rate, "records/s", true),
                figure(e2e, "same loop + multi-row INSERT VALUES x1000, statement prepared once", pp.rate, "records/s", true),
                figure(e2e, "ceiling: same loop + decoding, nothing written", ceiling, "records/s", false),
                figure(write, "audit-sink store", self.store_rate, "records/s", false),
                figure(write, "multi-row INSERT VALUES x1000", self.values_rate, "records/s", true),
                figure(write, "multi-row INSERT VALUES x1000, statement prepared once", prepared_rate, "records/s", true),
                figure(write, "ceiling: bare binary COPY into the table (no ON CONFLICT, no chain)",
                    self.values_times["copy_ceiling_rows_per_s"].as_f64().unwrap_or(0.0), "records/s", false),
                figure(write, "ceiling: the same COPY per partition, partitions on their own connections at once",
                    self.values_times["copy_ceiling_concurrent_rows_per_s"].as_f64().unwrap_or(0.0), "records/s", false),
                figure(ver, "audit-sink verify", self.verify_rate, "links/s", false),
                figure(ver, "audit-sink ingest", s.rate, "records/s", true),
            ],
            "records": n, "partitions": self.partitions, "batch_records": self.batch, "quick": self.quick,
            "prefill_records_per_second": self.produced.round(),
            "ingest_ratio": round(s.rate / p.rate), "ingest_ratio_prepared": round(s.rate / pp.rate), "ingest_ratio_target": 3.0,
            "ingest_ceiling_ratio": round(ceiling / p.rate), "decode_only_cpu_us_per_record": (self.decode_only.cpu * 1e7 / n as f64).round() / 10.0,
            "hash_share_percent": round(hash_share), "hash_share_target_percent": 5.0,
            "hash_cpu_seconds": round(self.hash_secs), "sink_process_cpu_seconds": round(s.cpu),
            "verify_ratio": round(self.verify_rate / s.rate), "verify_ratio_target": 5.0,
            "profile_sink": sink_profile, "profile_baseline": plain_profile, "profile_baseline_prepared": prepared_profile,
            "write_path_sink_seconds": self.store_steps, "write_path_baseline": self.values_times,
            "load_average": load_average(),
        })
    }

    /// The tables on stderr.
    fn print(&self, sink_profile: &Value, plain_profile: &Value, prepared_profile: &Value, hash_share: f64) {
        let (n, s, p, pp) = (self.n, self.sink.ingest, self.plain.ingest, self.prepared.ingest);
        let prepared_rate = self.values_times["prepared_rows_per_s"].as_f64().unwrap_or(0.0);
        eprintln!("audit-bench: {n} AuditEvents (Avro), {} partitions, loop batches of {}; producer {:.0} records/s", self.partitions, self.batch, self.produced);
        eprintln!("end to end, topic -> PostgreSQL (same loop, same decoding):");
        eprintln!("  audit-sink (COPY per partition, chain, fence)     {:>10.0} records/s", s.rate);
        eprintln!("  baseline (multi-row INSERT .. VALUES x1000)        {:>10.0} records/s   ratio {:.2}x (target 3x)", p.rate, s.rate / p.rate);
        eprintln!("  the same, statement prepared once per connection   {:>10.0} records/s   ratio {:.2}x", pp.rate, s.rate / pp.rate);
        let ceiling = self.decode_only.rate;
        eprintln!("  ceiling: same loop decoding, nothing written   {ceiling:>10.0} records/s   = {:.2}x the baseline: no write path through this loop can exceed it", ceiling / p.rate);
        eprintln!("  profile sink:     {sink_profile}");
        eprintln!("  profile baseline: {plain_profile}");
        eprintln!("  profile prepared: {prepared_profile}");
        eprintln!("database write path alone (decoded rows in memory):");
        eprintln!("  audit-sink store {:>10.0} rows/s {}", self.store_rate, self.store_steps);
        eprintln!("  multi-row INSERT {:>10.0} rows/s {}   ratio {:.2}x", self.values_rate, self.values_times["baseline"], self.store_rate / self.values_rate);
        eprintln!("  the same, prepared {prepared_rate:>8.0} rows/s {}   ratio {:.2}x", self.values_times["prepared"], self.store_rate / prepared_rate);
        eprintln!("  (ceiling: COPY straight into the table, nothing else: {} rows/s; the same per partition on {} connections at once: {} rows/s)",
            self.values_times["copy_ceiling_rows_per_s"], self.partitions, self.values_times["copy_ceiling_concurrent_rows_per_s"]);
        eprintln!("hash chaining: {:.3} s CPU for {n} links = {hash_share:.1} % of the sink process's {:.2} s CPU during ingest (target <= 5 %)", self.hash_secs, s.cpu);
        eprintln!("verify: {} links in {:.0} links/s = {:.1}x the sink's ingest rate (target >= 5x)", self.links, self.verify_rate, self.verify_rate / s.rate);
    }
}

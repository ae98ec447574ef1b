//! `audit-bench`: audit-sink's throughput against a plain baseline, measured
//! in the same run on the same broker and database.
//!
//! 1. A topic is pre-filled with Avro `AuditEvent`s.
//! 2. **sink**: the consume loop in batch mode with audit-sink's handler
//!    (decode; per partition of a batch, concurrently: fence, COPY into the
//!    table, chain, head) reads it into PostgreSQL.
//! 3. **baseline**: the same loop and decoding, a second group, storing each
//!    batch with plain multi-row `INSERT ... VALUES` statements of 1000 rows
//!    (ON CONFLICT DO NOTHING, parameters bound, one transaction per batch)
//!    into a copy of the table: no chain, no fence. Twice: each statement
//!    parsed and planned per execution (tokio-postgres's unnamed statement),
//!    and prepared once per connection (a third group, a second copy).
//!    **ceiling**: the same loop and decoding, a fourth group, writing
//!    nothing: the most any write path through this loop can reach.
//! 4. The database write alone, from decoded rows in memory: the sink's
//!    store vs the multi-row INSERT, batches of 1000.
//! 5. Hash chaining's CPU: hashing every link of the run, timed alone, as a
//!    share of the CPU the process spent during the sink's ingest.
//! 6. `verify` over what the sink stored, against the sink's ingest rate.
//!
//! [`profile`] says where each side's time goes (the steps of a batch, the
//! PostgreSQL backends' CPU, bytes stored per record).

pub mod profile;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dora_kafka::{BatchHandler, ConsumeLoop, HandlerError, Record};
use dora_schema::{AuditEvent, Codec};
use dora_telemetry::ServiceContext;
use tokio_postgres::types::ToSql;

use crate::chain::{Format, Link, Outcome, Row, GENESIS};
use crate::intake::{decode, Item, Topics};
use crate::sqltypes::{timestamp, JsonText};

/// Columns of the baseline table, as in `audit.audit_events`.
const PLAIN_COLUMNS: &str = "event_id, occurred_at, user_id, action, resource, details, ip_address, \
    user_agent, session_id, value_format, topic, kafka_partition, kafka_offset, kafka_timestamp, record_key, record_value";
const PLAIN_WIDTH: usize = 16;

/// CPU seconds a thread has run, from its `schedstat` (nanoseconds).
pub(crate) fn schedstat_seconds(path: &std::path::Path) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1e9
}

/// CPU seconds this process has used, all threads (nanosecond resolution).
/// Threads that ended are not counted: the runtime's workers live for the whole run.
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| tasks.flatten().map(|t| schedstat_seconds(&t.path().join("schedstat"))).sum())
        .unwrap_or(0.0)
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu_seconds() -> f64 {
    schedstat_seconds(std::path::Path::new("/proc/thread-self/schedstat"))
}

/// Some audit events, each with a unique id, of the seed's shape.
pub fn events(n: usize, run: &str) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| AuditEvent {
            event_id: format!("{run}-{i}"),
            timestamp: 1_795_771_815_123 + i as i64,
            user_id: format!("user-{}", i % 97),
            action: "REPORT_VIEWED".into(),
            resource: format!("reports/gap/org-{}", i % 13),
            details: serde_json::json!({"ip_address": "10.1.2.3", "user_agent": "Mozilla/5.0",
                "session_id": format!("sess-{}", i % 101), "query": {"page": i % 7, "filters": ["open"]}}),
            ip_address: Some("10.1.2.3".into()),
            user_agent: Some("Mozilla/5.0".into()),
            session_id: Some(format!("sess-{}", i % 101)),
        })
        .collect()
}

/// Seconds the baseline spent executing its INSERTs and committing.
#[derive(Debug, Default, Clone, Copy)]
pub struct InsertTimes {
    /// Sending, planning and executing the multi-row INSERTs.
    pub insert: f64,
    /// `COMMIT` (the WAL flush).
    pub commit: f64,
}

/// Inserts `items` into `table` with multi-row `INSERT ... VALUES` of up to
/// `chunk` rows, in one transaction (the baseline's write path), parameters
/// bound. `prepared`: each statement text is prepared once per connection and
/// reused (deadpool's statement cache); otherwise every execution parses,
/// analyses and plans it again (an unnamed statement, tokio-postgres's default).
pub async fn insert_values(
    client: &mut deadpool_postgres::Object,
    table: &str,
    items: &[Item<'_>],
    chunk: usize,
    prepared: bool,
) -> Result<InsertTimes, tokio_postgres::Error> {
    let mut times = InsertTimes::default();
    let tx = client.transaction().await?;
    for part in items.chunks(chunk) {
        let mut sql = format!("INSERT INTO {table} ({PLAIN_COLUMNS}) VALUES ");
        for i in 0..part.len() {
            let n = i * PLAIN_WIDTH;
            let params: Vec<String> = (1..=PLAIN_WIDTH).map(|k| format!("${}", n + k)).collect();
            sql.push_str(&format!("{}({})", if i == 0 { "" } else { "," }, params.join(",")));
        }
        sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
        let mut owned = Vec::with_capacity(part.len());
        for it in part {
            let Row::Audit(a) = &it.row else { continue };
            let kts = it.record.timestamp.map(|ms| timestamp(ms * 1000));
            owned.push((a, timestamp(a.occurred_at_us), kts, it.record));
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(owned.len() * PLAIN_WIDTH);
        let details: Vec<JsonText<'_>> = owned.iter().map(|(a, ..)| JsonText(&a.details)).collect();
        for ((a, occurred, kts, r), d) in owned.iter().zip(&details) {
            params.extend_from_slice(&[
                &a.event_id, occurred, &a.user_id, &a.action, &a.resource, d, &a.ip_address,
                &a.user_agent, &a.session_id, &a.value_format, &r.topic, &r.partition, &r.offset,
                kts, &r.key, &r.payload,
            ]);
        }
        let started = Instant::now();
        if prepared {
            let statement = tx.prepare_cached(&sql).await?;
            tx.execute(&statement, &params).await?;
        } else {
            tx.execute(&sql, &params).await?;
        }
        times.insert += started.elapsed().as_secs_f64();
    }
    let started = Instant::now();
    tx.commit().await?;
    times.commit = started.elapsed().as_secs_f64();
    Ok(times)
}

/// The baseline's batch handler: same decoding, plain multi-row INSERTs.
pub struct PlainInsert {
    /// Decoder.
    pub codec: Codec,
    /// Topic -> table.
    pub topics: Topics,
    /// Owner connection settings.
    pub pool: deadpool_postgres::Pool,
    /// Target table.
    pub table: String,
    /// Time spent in INSERT and COMMIT so far.
    pub times: Arc<Mutex<InsertTimes>>,
    /// Statements prepared once per connection (see [`insert_values`]).
    pub prepared: bool,
}

impl BatchHandler for PlainInsert {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        let mut items = Vec::with_capacity(records.len());
        for r in records {
            items.push(decode(&self.codec, &self.topics, r).await?);
        }
        let mut client = self.pool.get().await.map_err(HandlerError::retryable)?;
        let t = insert_values(&mut client, &self.table, &items, 1000, self.prepared)
            .await
            .map_err(HandlerError::retryable)?;
        let mut total = self.times.lock().unwrap_or_else(|p| p.into_inner());
        total.insert += t.insert;
        total.commit += t.commit;
        Ok(())
    }
    async fn handle_one(&self, record: &Record) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(record)).await
    }
}

/// The end-to-end ceiling's handler: the same loop and decoding as both
/// sides, nothing written. No write path through this loop can be faster.
pub struct DecodeOnly {
    /// Decoder.
    pub codec: Codec,
    /// Topic -> table.
    pub topics: Topics,
}

impl BatchHandler for DecodeOnly {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        for r in records {
            std::hint::black_box(decode(&self.codec, &self.topics, r).await?);
        }
        Ok(())
    }
    async fn handle_one(&self, record: &Record) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(record)).await
    }
}

/// A batch handler that counts the records of the batches it completed, so
/// progress is read without asking the database.
pub struct Counted<B> {
    inner: B,
    done: Arc<AtomicU64>,
    shape: Arc<BatchShape>,
}

/// The batches a side was handed: how many, and how many (topic, partition)
/// runs they held in all (a batch of one partition cannot store partitions
/// at once).
#[derive(Debug, Default)]
pub struct BatchShape {
    /// Batches handled.
    pub batches: AtomicU64,
    /// Sum over the batches of their distinct partitions.
    pub partitions: AtomicU64,
}

impl<B: BatchHandler> BatchHandler for Counted<B> {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        self.inner.handle_batch(records).await?;
        let distinct: std::collections::BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
        self.shape.batches.fetch_add(1, Ordering::Relaxed);
        self.shape.partitions.fetch_add(distinct.len() as u64, Ordering::Relaxed);
        self.done.fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn handle_one(&self, record: &Record) -> Result<(), HandlerError> {
        self.inner.handle_one(record).await?;
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One side's ingest: rate from its first completed batch to its last, and
/// this process's CPU seconds over that window.
#[derive(Debug, Clone, Copy)]
pub struct Ingest {
    /// Records per second.
    pub rate: f64,
    /// Wall seconds measured.
    pub seconds: f64,
    /// CPU seconds of this process (all threads) in that time.
    pub cpu: f64,
    /// Batches handled (whole run).
    pub batches: u64,
    /// Mean distinct partitions per batch.
    pub partitions_per_batch: f64,
}

/// Runs a consume loop with `handler` on `topic` (group `group`) until it
/// completed `n` records.
pub async fn ingest<B: BatchHandler>(
    kafka: &dora_kafka::KafkaSettings,
    consumer: &dora_kafka::ConsumerSettings,
    codec: &Codec,
    topic: &str,
    handler: B,
    n: u64,
) -> Result<Ingest> {
    let ctx = ServiceContext::new("audit-bench");
    let done = Arc::new(AtomicU64::new(0));
    let shape = Arc::new(BatchShape::default());
    let handler = Counted { inner: handler, done: done.clone(), shape: shape.clone() };
    let loop_ = ConsumeLoop::new(kafka, consumer, &ctx, Arc::new(codec.clone())).topics(&[topic]);
    ctx.started();
    let task = tokio::spawn(loop_.run_batches(handler));
    let mut first: Option<(Instant, u64, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let result = loop {
        let c = done.load(Ordering::Relaxed);
        if c > 0 && first.is_none() {
            first = Some((Instant::now(), c, process_cpu_seconds()));
        }
        if c >= n {
            let (t0, c0, cpu0) = first.context("no record")?;
            let seconds = t0.elapsed().as_secs_f64().max(1e-9);
            let rate = (n - c0) as f64 / seconds;
            let batches = shape.batches.load(Ordering::Relaxed);
            let partitions_per_batch = shape.partitions.load(Ordering::Relaxed) as f64 / batches.max(1) as f64;
            break Ok(Ingest { rate, seconds, cpu: process_cpu_seconds() - cpu0, batches, partitions_per_batch });
        }
        if task.is_finished() || Instant::now() >= deadline {
            break Err(anyhow::anyhow!("ingest did not finish: {c} of {n} records"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    ctx.shutdown.cancel();
    task.await?.context("consume loop")?;
    result
}

/// CPU seconds to hash one link per item, of the shape the sink writes
/// (canonical bytes of version 2 + SHA-256), on this thread.
pub fn hash_seconds(items: &[Item<'_>]) -> f64 {
    let started = thread_cpu_seconds();
    let mut prev = GENESIS;
    for (seq, it) in items.iter().enumerate() {
        let r = it.record;
        let link = Link {
            format: Format::V2,
            topic: &r.topic,
            partition: r.partition,
            seq: seq as i64,
            offset: r.offset,
            outcome: Outcome::Stored,
            entity_id: Some(it.row.id()),
            reason: None,
            consumed_at_us: 1,
            kafka_timestamp_us: r.timestamp.map(|t| t * 1000),
            key: r.key.as_deref(),
            value: r.payload.as_deref(),
            row: Some(&it.row),
            writer: it.writer.as_ref().map(|w| &w.digest),
        };
        prev = link.hash(&prev);
    }
    std::hint::black_box(prev);
    thread_cpu_seconds() - started
}

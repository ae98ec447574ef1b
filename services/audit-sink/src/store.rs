//! One database transaction per batch: lock the partitions' chain heads (the
//! fence), skip what an earlier transaction already stored, binary COPY the
//! rows into a staging table, `INSERT ... SELECT ... ON CONFLICT DO NOTHING`,
//! append one chain link per record, move the heads, commit.
//!
//! The `sink_offsets` row of a partition is locked `FOR UPDATE` for the whole
//! transaction and only moved with `WHERE next_offset = <the value read>`:
//! two instances that both believe they own a partition (a zombie after a
//! rebalance) are serialised, and the second skips every record the first
//! stored and continues the chain from the first's head.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::time::Instant;

use chrono::{DateTime, Utc};
use dora_kafka::Record;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use crate::chain::{Hash, Link, Outcome, Row, GENESIS};
use crate::db::{classify, classify_pool, Failure, Pool};
use crate::intake::Item;
use crate::metrics;
use crate::sqltypes::{now_micros, timestamp, JsonText};

/// Temporary staging tables, created once per connection (see [`STAGING_DDL`]).
pub const STAGING_DDL: &str = "\
    CREATE TEMP TABLE IF NOT EXISTS audit_events_staging \
        (LIKE audit.audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; \
    CREATE TEMP TABLE IF NOT EXISTS compliance_reports_staging \
        (LIKE audit.compliance_reports INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;";

const AUDIT_COLUMNS: &str = "event_id, occurred_at, user_id, action, resource, details, \
    ip_address, user_agent, session_id, value_format, \
    topic, kafka_partition, kafka_offset, kafka_timestamp, record_key, record_value";
const AUDIT_TYPES: &[Type] = &[
    Type::TEXT, Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::TEXT, Type::JSON,
    Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::INT4, Type::INT8, Type::TIMESTAMPTZ, Type::BYTEA, Type::BYTEA,
];
const REPORT_COLUMNS: &str = "report_id, organization_id, reported_at, report_type, \
    risk_score, risk_level, data, version, value_format, \
    topic, kafka_partition, kafka_offset, kafka_timestamp, record_key, record_value";
const REPORT_TYPES: &[Type] = &[
    Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::TEXT,
    Type::FLOAT8, Type::TEXT, Type::JSON, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::INT4, Type::INT8, Type::TIMESTAMPTZ, Type::BYTEA, Type::BYTEA,
];
/// Columns of `audit.chain`, in COPY order.
pub const CHAIN_COLUMNS: &str = "topic, kafka_partition, seq, kafka_offset, outcome, entity_id, \
    reason, consumed_at, kafka_timestamp, record_key, record_value, prev_hash, hash";
const CHAIN_TYPES: &[Type] = &[
    Type::TEXT, Type::INT4, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::BYTEA, Type::BYTEA, Type::BYTEA, Type::BYTEA,
];

type Tp = (String, i32);
/// Positions (partition, offset) per topic that became rows.
type Inserted = HashMap<String, HashSet<(i32, i64)>>;

/// A partition's chain head as locked in `sink_offsets`.
#[derive(Debug, Clone)]
struct Head {
    next_offset: i64,
    next_seq: i64,
    hash: Hash,
}

/// What one stored batch did.
#[derive(Debug, Default, Clone)]
pub struct BatchReport {
    /// New `audit_events` rows.
    pub audit_rows: u64,
    /// New `compliance_reports` rows.
    pub report_rows: u64,
    /// Records whose id was already stored (linked, no row).
    pub duplicates: u64,
    /// Records an earlier transaction already handled (skipped).
    pub redelivered: u64,
    /// Chain length per partition after the batch.
    pub chain_lengths: Vec<(String, i32, i64)>,
    /// Newest Kafka timestamp among the new records, epoch ms.
    pub newest_timestamp_ms: Option<i64>,
}

/// What became of a record handed to [`Store::reject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Linked as rejected with this reason (now or by an earlier attempt).
    Recorded(String),
    /// An earlier attempt stored it after all: nothing to dead-letter.
    AlreadyStored,
}

/// The writer side of the database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

fn pg<T>(r: Result<T, tokio_postgres::Error>) -> Result<T, Failure> {
    r.map_err(|e| classify(&e))
}

/// Runs one step of a batch's transaction, observing its duration as
/// `audit_sink_db_seconds{operation=<step>}` (where a batch's time goes).
async fn step<T>(name: &str, f: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let started = Instant::now();
    let result = f.await;
    metrics::db_seconds(name, started.elapsed().as_secs_f64());
    result
}

fn kafka_micros(r: &Record) -> Option<i64> {
    r.timestamp
        .and_then(|ms| ms.checked_mul(1000))
        .filter(|us| DateTime::from_timestamp_micros(*us).is_some())
}

impl Store {
    /// A store writing through `pool` (whose connections have the staging tables).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stores `items` in one transaction. `Failure::Refused` means some item's
    /// value was refused (nothing of the batch is stored; store them one by one
    /// to find it) or a redelivered record had been rejected before.
    pub async fn store(&self, items: &[Item<'_>]) -> Result<BatchReport, Failure> {
        let mut client = self.pool.get().await.map_err(|e| classify_pool(&e))?;
        let tx = pg(client.transaction().await)?;
        let report = store_in(&tx, items).await?;
        step("commit", async { pg(tx.commit().await) }).await?;
        Ok(report)
    }

    /// Links `record` as rejected with `reason` (its original bytes kept in
    /// the chain) unless an earlier attempt already handled it.
    pub async fn reject(&self, record: &Record, reason: &str) -> Result<Rejection, Failure> {
        let mut client = self.pool.get().await.map_err(|e| classify_pool(&e))?;
        let tx = pg(client.transaction().await)?;
        let tp = (record.topic.clone(), record.partition);
        let heads = lock_heads(&tx, std::slice::from_ref(&tp)).await?;
        let head = &heads[&tp];
        if record.offset < head.next_offset {
            let row = pg(tx
                .query_opt(
                    "SELECT outcome, reason FROM audit.chain \
                     WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
                    &[&record.topic, &record.partition, &record.offset],
                )
                .await)?;
            return Ok(match row {
                Some(r) if r.get::<_, &str>(0) == Outcome::Rejected.as_str() => {
                    Rejection::Recorded(r.get::<_, Option<String>>(1).unwrap_or_default())
                }
                _ => Rejection::AlreadyStored,
            });
        }
        let consumed_at = now_micros();
        let link = Link {
            topic: &record.topic,
            partition: record.partition,
            seq: head.next_seq,
            offset: record.offset,
            outcome: Outcome::Rejected,
            entity_id: None,
            reason: Some(reason),
            consumed_at_us: consumed_at,
            kafka_timestamp_us: kafka_micros(record),
            key: record.key.as_deref(),
            value: record.payload.as_deref(),
            row: None,
        };
        let hash = link.hash(&head.hash);
        copy_links(&tx, &[(link, head.hash, hash)]).await?;
        let moved = [(tp, record.offset + 1, head.next_seq + 1, hash, head.next_offset)];
        move_heads(&tx, &moved).await?;
        pg(tx.commit().await)?;
        Ok(Rejection::Recorded(reason.to_string()))
    }
}

async fn store_in(tx: &Transaction<'_>, items: &[Item<'_>]) -> Result<BatchReport, Failure> {
    let mut report = BatchReport::default();
    // Per partition, in offset order.
    let mut by_tp: BTreeMap<Tp, Vec<&Item<'_>>> = BTreeMap::new();
    for it in items {
        by_tp
            .entry((it.record.topic.clone(), it.record.partition))
            .or_default()
            .push(it);
    }
    for v in by_tp.values_mut() {
        v.sort_by_key(|it| it.record.offset);
    }
    let tps: Vec<Tp> = by_tp.keys().cloned().collect();
    let heads = step("lock_heads", lock_heads(tx, &tps)).await?;
    let mut fresh: Vec<&Item<'_>> = Vec::with_capacity(items.len());
    for (tp, v) in &by_tp {
        let head = &heads[tp];
        let (old, new): (Vec<&Item<'_>>, Vec<&Item<'_>>) =
            v.iter().partition(|it| it.record.offset < head.next_offset);
        if !old.is_empty() {
            report.redelivered += old.len() as u64;
            refuse_if_rejected_before(tx, tp, &old).await?;
        }
        fresh.extend(new);
    }
    if fresh.is_empty() {
        return Ok(report);
    }
    let inserted = insert_rows(tx, &fresh).await?;
    let consumed_at = now_micros();
    let mut links = Vec::with_capacity(fresh.len());
    let mut moved = Vec::new();
    for (tp, v) in &by_tp {
        let head = &heads[tp];
        let (mut seq, mut prev) = (head.next_seq, head.hash);
        let mut last = None;
        for it in v.iter().filter(|it| it.record.offset >= head.next_offset) {
            let r = it.record;
            let stored = inserted
                .get(r.topic.as_str())
                .is_some_and(|s| s.contains(&(r.partition, r.offset)));
            match (&it.row, stored) {
                (Row::Audit(_), true) => report.audit_rows += 1,
                (Row::Report(_), true) => report.report_rows += 1,
                (_, false) => report.duplicates += 1,
            }
            report.newest_timestamp_ms = report.newest_timestamp_ms.max(r.timestamp);
            let link = Link {
                topic: &r.topic,
                partition: r.partition,
                seq,
                offset: r.offset,
                outcome: if stored { Outcome::Stored } else { Outcome::Duplicate },
                entity_id: Some(it.row.id()),
                reason: None,
                consumed_at_us: consumed_at,
                kafka_timestamp_us: kafka_micros(r),
                key: r.key.as_deref(),
                value: r.payload.as_deref(),
                row: stored.then_some(&it.row),
            };
            let hash = link.hash(&prev);
            links.push((link, prev, hash));
            prev = hash;
            seq += 1;
            last = Some(r.offset);
        }
        if let Some(last) = last {
            moved.push((tp.clone(), last + 1, seq, prev, head.next_offset));
            report.chain_lengths.push((tp.0.clone(), tp.1, seq));
        }
    }
    step("copy_links", copy_links(tx, &links)).await?;
    step("move_heads", move_heads(tx, &moved)).await?;
    Ok(report)
}

/// Creates missing heads, then locks the heads of `tps` (in a fixed order, so
/// two writers never deadlock on them) and reads them.
async fn lock_heads(tx: &Transaction<'_>, tps: &[Tp]) -> Result<HashMap<Tp, Head>, Failure> {
    let topics: Vec<&str> = tps.iter().map(|t| t.0.as_str()).collect();
    let partitions: Vec<i32> = tps.iter().map(|t| t.1).collect();
    let genesis: &[u8] = &GENESIS;
    pg(tx
        .execute(
            "INSERT INTO audit.sink_offsets (topic, kafka_partition, next_offset, next_seq, head_hash, updated_at) \
             SELECT t, p, 0, 0, $3, now() FROM unnest($1::text[], $2::int4[]) AS u(t, p) \
             ON CONFLICT (topic, kafka_partition) DO NOTHING",
            &[&topics, &partitions, &genesis],
        )
        .await)?;
    let rows = pg(tx
        .query(
            "SELECT o.topic, o.kafka_partition, o.next_offset, o.next_seq, o.head_hash \
             FROM audit.sink_offsets o JOIN unnest($1::text[], $2::int4[]) AS u(t, p) \
               ON o.topic = u.t AND o.kafka_partition = u.p \
             ORDER BY o.topic, o.kafka_partition FOR UPDATE OF o",
            &[&topics, &partitions],
        )
        .await)?;
    let mut heads = HashMap::with_capacity(rows.len());
    for row in rows {
        let hash: &[u8] = row.get(4);
        let hash: Hash = hash
            .try_into()
            .map_err(|_| Failure::Transient("sink_offsets.head_hash is not 32 bytes".into()))?;
        heads.insert(
            (row.get(0), row.get(1)),
            Head { next_offset: row.get(2), next_seq: row.get(3), hash },
        );
    }
    if heads.len() != tps.len() {
        return Err(Failure::Transient("sink_offsets rows missing after insert".into()));
    }
    Ok(heads)
}

/// A redelivered record that was rejected earlier must be dead-lettered again
/// (its first dead letter may not have been written): refuse the batch so the
/// loop handles its records one by one.
async fn refuse_if_rejected_before(
    tx: &Transaction<'_>,
    tp: &Tp,
    old: &[&Item<'_>],
) -> Result<(), Failure> {
    let offsets: Vec<i64> = old.iter().map(|it| it.record.offset).collect();
    let row = pg(tx
        .query_opt(
            "SELECT kafka_offset, reason FROM audit.chain WHERE topic = $1 AND kafka_partition = $2 \
             AND kafka_offset = ANY($3) AND outcome = 'rejected' ORDER BY kafka_offset LIMIT 1",
            &[&tp.0, &tp.1, &offsets],
        )
        .await)?;
    match row {
        None => Ok(()),
        Some(r) => Err(Failure::Refused(format!(
            "{}/{} offset {} was rejected before: {}",
            tp.0,
            tp.1,
            r.get::<_, i64>(0),
            r.get::<_, Option<String>>(1).unwrap_or_default()
        ))),
    }
}

/// Stages `fresh` with binary COPY and inserts what is new; returns the
/// positions that became rows (the others are duplicates of stored ids).
async fn insert_rows(tx: &Transaction<'_>, fresh: &[&Item<'_>]) -> Result<Inserted, Failure> {
    let audits: Vec<&Item<'_>> = fresh.iter().copied().filter(|it| matches!(it.row, Row::Audit(_))).collect();
    let reports: Vec<&Item<'_>> = fresh.iter().copied().filter(|it| matches!(it.row, Row::Report(_))).collect();
    let mut inserted = Inserted::new();
    if !audits.is_empty() {
        step("copy_rows", copy_audits(tx, "pg_temp.audit_events_staging", &audits)).await?;
        let rows = step("insert_rows", async { pg(tx
            .query(
                &format!(
                    "INSERT INTO audit.audit_events ({AUDIT_COLUMNS}) SELECT {AUDIT_COLUMNS} \
                     FROM pg_temp.audit_events_staging ORDER BY topic, kafka_partition, kafka_offset \
                     ON CONFLICT (event_id) DO NOTHING RETURNING topic, kafka_partition, kafka_offset"
                ),
                &[],
            )
            .await) })
        .await?;
        collect_inserted(&rows, &mut inserted);
    }
    if !reports.is_empty() {
        step("copy_rows", copy_reports(tx, &reports)).await?;
        let rows = step("insert_rows", async { pg(tx
            .query(
                &format!(
                    "INSERT INTO audit.compliance_reports ({REPORT_COLUMNS}) SELECT {REPORT_COLUMNS} \
                     FROM pg_temp.compliance_reports_staging ORDER BY topic, kafka_partition, kafka_offset \
                     ON CONFLICT (report_id) DO NOTHING RETURNING topic, kafka_partition, kafka_offset"
                ),
                &[],
            )
            .await) })
        .await?;
        collect_inserted(&rows, &mut inserted);
    }
    Ok(inserted)
}

fn collect_inserted(rows: &[tokio_postgres::Row], out: &mut Inserted) {
    for row in rows {
        out.entry(row.get(0)).or_default().insert((row.get(1), row.get(2)));
    }
}

/// Binary COPY of the audit events among `items` into `table` (the staging
/// table; the benchmark's ceiling copies straight into a table).
pub async fn copy_audits(tx: &Transaction<'_>, table: &str, items: &[&Item<'_>]) -> Result<(), Failure> {
    let sink = pg(tx
        .copy_in(&format!("COPY {table} ({AUDIT_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, AUDIT_TYPES));
    for it in items {
        let Row::Audit(a) = &it.row else { continue };
        let r = it.record;
        let occurred = timestamp(a.occurred_at_us);
        let kafka_ts = kafka_micros(r).map(timestamp);
        let values: [&(dyn ToSql + Sync); 16] = [
            &a.event_id, &occurred, &a.user_id, &a.action, &a.resource, &JsonText(&a.details),
            &a.ip_address, &a.user_agent, &a.session_id, &a.value_format,
            &r.topic, &r.partition, &r.offset, &kafka_ts, &r.key, &r.payload,
        ];
        pg(writer.as_mut().write(&values).await)?;
    }
    pg(writer.finish().await)?;
    Ok(())
}

async fn copy_reports(tx: &Transaction<'_>, items: &[&Item<'_>]) -> Result<(), Failure> {
    let sink = pg(tx
        .copy_in(&format!(
            "COPY pg_temp.compliance_reports_staging ({REPORT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, REPORT_TYPES));
    for it in items {
        let Row::Report(c) = &it.row else { continue };
        let r = it.record;
        let reported = timestamp(c.reported_at_us);
        let kafka_ts = kafka_micros(r).map(timestamp);
        let values: [&(dyn ToSql + Sync); 15] = [
            &c.report_id, &c.organization_id, &reported, &c.report_type,
            &c.risk_score, &c.risk_level, &JsonText(&c.data), &c.version, &c.value_format,
            &r.topic, &r.partition, &r.offset, &kafka_ts, &r.key, &r.payload,
        ];
        pg(writer.as_mut().write(&values).await)?;
    }
    pg(writer.finish().await)?;
    Ok(())
}

/// Appends links with binary COPY. A link whose record became a row carries
/// no copy of the record (it is in the row).
async fn copy_links(tx: &Transaction<'_>, links: &[(Link<'_>, Hash, Hash)]) -> Result<(), Failure> {
    let sink = pg(tx
        .copy_in(&format!("COPY audit.chain ({CHAIN_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, CHAIN_TYPES));
    for (l, prev, hash) in links {
        let own_copy = l.row.is_none();
        let consumed: DateTime<Utc> = timestamp(l.consumed_at_us);
        let kafka_ts = l.kafka_timestamp_us.filter(|_| own_copy).map(timestamp);
        let key = l.key.filter(|_| own_copy);
        let value = l.value.filter(|_| own_copy);
        let (prev, hash): (&[u8], &[u8]) = (prev, hash);
        let values: [&(dyn ToSql + Sync); 13] = [
            &l.topic, &l.partition, &l.seq, &l.offset, &l.outcome.as_str(), &l.entity_id,
            &l.reason, &consumed, &kafka_ts, &key, &value, &prev, &hash,
        ];
        pg(writer.as_mut().write(&values).await)?;
    }
    pg(writer.finish().await)?;
    Ok(())
}

/// Moves each head `(tp, next_offset, next_seq, head_hash, expected_next_offset)`;
/// fails unless every head still was where this transaction read it.
async fn move_heads(tx: &Transaction<'_>, moved: &[(Tp, i64, i64, Hash, i64)]) -> Result<(), Failure> {
    if moved.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = moved.iter().map(|m| m.0 .0.as_str()).collect();
    let partitions: Vec<i32> = moved.iter().map(|m| m.0 .1).collect();
    let offsets: Vec<i64> = moved.iter().map(|m| m.1).collect();
    let seqs: Vec<i64> = moved.iter().map(|m| m.2).collect();
    let hashes: Vec<&[u8]> = moved.iter().map(|m| &m.3[..]).collect();
    let expected: Vec<i64> = moved.iter().map(|m| m.4).collect();
    let n = pg(tx
        .execute(
            "UPDATE audit.sink_offsets o SET next_offset = u.n, next_seq = u.s, head_hash = u.h, updated_at = now() \
             FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::bytea[], $6::int8[]) AS u(t, p, n, s, h, e) \
             WHERE o.topic = u.t AND o.kafka_partition = u.p AND o.next_offset = u.e",
            &[&topics, &partitions, &offsets, &seqs, &hashes, &expected],
        )
        .await)?;
    if n as usize != moved.len() {
        return Err(Failure::Transient(format!(
            "fence: {} of {} partition heads moved under this transaction",
            moved.len() - n as usize,
            moved.len()
        )));
    }
    Ok(())
}

//! Storing a batch: its records are grouped by (topic, partition) and each
//! partition's records are stored in one database transaction of their own,
//! the partitions concurrently on separate pooled connections (a chain and
//! its offsets belong to one partition, so the transactions are independent
//! and the database works on several at once). One transaction: lock the
//! partition's chain head (the fence), skip what an earlier transaction
//! already stored, write the rows, append one chain link per record, move
//! the head (next offset, position, hash), commit.
//!
//! Rows are written on one of two paths:
//! - **direct** (first attempt): binary COPY straight into the table. A
//!   record whose id is already stored (a producer's duplicate) makes the
//!   COPY fail with a unique violation; the transaction is rolled back and
//!   the partition's records are stored again on the staged path.
//! - **staged**: binary COPY into a temporary table, then
//!   `INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING` tells which
//!   records became rows; the others are linked as duplicates.
//!
//! The `sink_offsets` row of a partition is locked `FOR UPDATE` for the whole
//! transaction and only moved with `WHERE next_offset = <the value read>`:
//! two instances that both believe they own a partition (a zombie after a
//! rebalance) are serialised, and the second skips every record the first
//! stored and continues the chain from the first's head.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dora_kafka::Record;
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use crate::chain::{Format, Hash, Link, Outcome, Row, GENESIS};
use crate::copy::{copy_audits, copy_links, copy_reports, kafka_micros, AUDIT_COLUMNS, REPORT_COLUMNS};
use crate::db::{classify, classify_pool, Failure, Pool};
use crate::intake::{Item, WriterSchema};
use crate::metrics;
use crate::sqltypes::now_micros;

/// Temporary staging tables, created once per connection (see [`STAGING_DDL`]).
pub const STAGING_DDL: &str = "\
    CREATE TEMP TABLE IF NOT EXISTS audit_events_staging \
        (LIKE audit.audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; \
    CREATE TEMP TABLE IF NOT EXISTS compliance_reports_staging \
        (LIKE audit.compliance_reports INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;";

type Tp = (String, i32);
/// Offsets (of one partition) that became rows.
type Inserted = HashSet<i64>;

/// How a partition's rows are written (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// COPY into the table; a stored id aborts the attempt.
    Direct,
    /// COPY into staging, INSERT .. SELECT .. ON CONFLICT DO NOTHING.
    Staged,
}

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
    /// Partitions whose direct COPY met a stored id and were stored on the staged path.
    pub staged: u64,
    /// Chain length per partition after the batch.
    pub chain_lengths: Vec<(String, i32, i64)>,
    /// Newest Kafka timestamp among the new records, epoch ms.
    pub newest_timestamp_ms: Option<i64>,
}

impl BatchReport {
    fn add(&mut self, other: BatchReport) {
        self.audit_rows += other.audit_rows;
        self.report_rows += other.report_rows;
        self.duplicates += other.duplicates;
        self.redelivered += other.redelivered;
        self.staged += other.staged;
        self.chain_lengths.extend(other.chain_lengths);
        self.newest_timestamp_ms = self.newest_timestamp_ms.max(other.newest_timestamp_ms);
    }
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
    /// Digests of the writer schemas known to be in `audit.writer_schemas`
    /// (recorded by a committed transaction of this process, or found there).
    recorded: Arc<Mutex<HashSet<Hash>>>,
}

fn pg<T>(r: Result<T, tokio_postgres::Error>) -> Result<T, Failure> {
    r.map_err(|e| classify(&e))
}

/// Runs one step of a batch's transaction, observing its duration as
/// `audit_sink_db_seconds{operation=<step>}` (where a batch's time goes;
/// with several partitions stored at once, their steps add up).
async fn step<T>(name: &str, f: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let started = Instant::now();
    let result = f.await;
    metrics::db_seconds(name, started.elapsed().as_secs_f64());
    result
}

impl Store {
    /// A store writing through `pool` (whose connections have the staging tables).
    pub fn new(pool: Pool) -> Self {
        Self { pool, recorded: Arc::default() }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stores `items`: each partition's records in one transaction, the
    /// partitions concurrently (at most the pool's size at once). Waits for
    /// every partition; on any failure returns it (`Transient` before
    /// `Refused`): a partition that committed skips its records when the loop
    /// hands them again. `Failure::Refused` means some item's value was refused
    /// (nothing of its partition is stored; store them one by one to find it)
    /// or a redelivered record had been rejected before.
    pub async fn store(&self, items: &[Item<'_>]) -> Result<BatchReport, Failure> {
        let mut by_tp: BTreeMap<Tp, Vec<&Item<'_>>> = BTreeMap::new();
        for it in items {
            by_tp
                .entry((it.record.topic.clone(), it.record.partition))
                .or_default()
                .push(it);
        }
        let results = futures::future::join_all(
            by_tp.into_iter().map(|(tp, mut v)| {
                v.sort_by_key(|it| it.record.offset);
                self.store_partition(tp, v)
            }),
        )
        .await;
        let mut report = BatchReport::default();
        let mut failure: Option<Failure> = None;
        for r in results {
            match r {
                Ok(r) => report.add(r),
                Err(f @ Failure::Transient(_)) => failure = Some(f),
                Err(f @ Failure::Refused(_)) => {
                    failure.get_or_insert(f);
                }
            }
        }
        failure.map_or(Ok(report), Err)
    }

    /// Stores one partition's records (in offset order): the direct path,
    /// then the staged path if a record's id was already stored.
    async fn store_partition(&self, tp: Tp, items: Vec<&Item<'_>>) -> Result<BatchReport, Failure> {
        let mut client = self.pool.get().await.map_err(|e| classify_pool(&e))?;
        let writers = self.unrecorded_writers(&items);
        for path in [Path::Direct, Path::Staged] {
            let tx = pg(client.transaction().await)?;
            if let Some(mut report) = store_in(&tx, &tp, &items, &writers, path).await? {
                step("commit", async { pg(tx.commit().await) }).await?;
                self.recorded.lock().unwrap_or_else(|p| p.into_inner()).extend(writers.iter().map(|w| w.digest));
                report.staged = u64::from(path == Path::Staged);
                return Ok(report);
            }
            // dropped: rolled back
        }
        Err(Failure::Transient("the staged path reported a conflict".into()))
    }

    /// The writer schemas of `items` not yet known to be recorded.
    fn unrecorded_writers<'i>(&self, items: &[&'i Item<'_>]) -> Vec<&'i WriterSchema> {
        let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<&WriterSchema> = Vec::new();
        for w in items.iter().filter_map(|it| it.writer.as_deref()) {
            if !recorded.contains(&w.digest) && !out.iter().any(|o| o.digest == w.digest) {
                out.push(w);
            }
        }
        // one order for every transaction: two partitions recording the same two schemas cannot deadlock
        out.sort_by_key(|w| w.digest);
        out
    }

    /// Links `record` as rejected with `reason` (its original bytes kept in
    /// the chain) unless an earlier attempt already handled it.
    pub async fn reject(&self, record: &Record, reason: &str) -> Result<Rejection, Failure> {
        let mut client = self.pool.get().await.map_err(|e| classify_pool(&e))?;
        let tx = pg(client.transaction().await)?;
        let tp = (record.topic.clone(), record.partition);
        let head = lock_head(&tx, &tp).await?;
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
        let link = Link {
            format: Format::V2,
            topic: &record.topic,
            partition: record.partition,
            seq: head.next_seq,
            offset: record.offset,
            outcome: Outcome::Rejected,
            entity_id: None,
            reason: Some(reason),
            consumed_at_us: now_micros(),
            kafka_timestamp_us: kafka_micros(record),
            key: record.key.as_deref(),
            value: record.payload.as_deref(),
            row: None,
            writer: None,
        };
        let hash = link.hash(&head.hash);
        pg(copy_links(&tx, &[(link, head.hash, hash)]).await)?;
        move_head(&tx, &tp, (record.offset + 1, head.next_seq + 1, hash), head.next_offset).await?;
        pg(tx.commit().await)?;
        Ok(Rejection::Recorded(reason.to_string()))
    }
}

/// Stores one partition's `items` (offset order) in `tx` on `path`, with the
/// `writers` their links will name; `None`: the direct COPY met an id
/// already stored (the transaction is aborted).
async fn store_in(
    tx: &Transaction<'_>,
    tp: &Tp,
    items: &[&Item<'_>],
    writers: &[&WriterSchema],
    path: Path,
) -> Result<Option<BatchReport>, Failure> {
    let mut report = BatchReport::default();
    let head = step("lock_heads", lock_head(tx, tp)).await?;
    let (old, fresh): (Vec<&Item<'_>>, Vec<&Item<'_>>) =
        items.iter().partition(|it| it.record.offset < head.next_offset);
    if !old.is_empty() {
        report.redelivered += old.len() as u64;
        refuse_if_rejected_before(tx, tp, &old).await?;
    }
    if fresh.is_empty() {
        return Ok(Some(report));
    }
    let inserted = match path {
        Path::Direct => match step("copy_rows", copy_direct(tx, &fresh)).await? {
            true => None,
            false => return Ok(None),
        },
        Path::Staged => Some(insert_staged(tx, &fresh).await?),
    };
    if !writers.is_empty() {
        step("record_writers", record_writers(tx, writers)).await?;
    }
    let consumed_at = now_micros();
    let mut links = Vec::with_capacity(fresh.len());
    let (mut seq, mut prev) = (head.next_seq, head.hash);
    for it in &fresh {
        let r = it.record;
        let stored = inserted.as_ref().is_none_or(|s| s.contains(&r.offset));
        match (&it.row, stored) {
            (Row::Audit(_), true) => report.audit_rows += 1,
            (Row::Report(_), true) => report.report_rows += 1,
            (_, false) => report.duplicates += 1,
        }
        report.newest_timestamp_ms = report.newest_timestamp_ms.max(r.timestamp);
        let link = Link {
            format: Format::V2,
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
            writer: it.writer.as_ref().map(|w| &w.digest).filter(|_| stored),
        };
        let hash = link.hash(&prev);
        links.push((link, prev, hash));
        prev = hash;
        seq += 1;
    }
    let last = fresh.last().map_or(head.next_offset, |it| it.record.offset);
    step("copy_links", async { pg(copy_links(tx, &links).await) }).await?;
    step("move_heads", move_head(tx, tp, (last + 1, seq, prev), head.next_offset)).await?;
    report.chain_lengths.push((tp.0.clone(), tp.1, seq));
    Ok(Some(report))
}

/// The direct path: COPY `fresh` (all of one table) straight into its table.
/// `false`: a record's id is already stored (unique violation; the
/// transaction is aborted and the partition goes to the staged path).
async fn copy_direct(tx: &Transaction<'_>, fresh: &[&Item<'_>]) -> Result<bool, Failure> {
    let audits: Vec<&Item<'_>> = fresh.iter().copied().filter(|it| matches!(it.row, Row::Audit(_))).collect();
    let reports: Vec<&Item<'_>> = fresh.iter().copied().filter(|it| matches!(it.row, Row::Report(_))).collect();
    let mut result = Ok(());
    if !audits.is_empty() {
        result = copy_audits(tx, "audit.audit_events", &audits).await;
    }
    if result.is_ok() && !reports.is_empty() {
        result = copy_reports(tx, "audit.compliance_reports", &reports).await;
    }
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(false),
        Err(e) => Err(classify(&e)),
    }
}

/// The staged path: COPY `fresh` into the staging tables and insert what is
/// new; returns the offsets that became rows (the others are duplicates of
/// stored ids).
async fn insert_staged(tx: &Transaction<'_>, fresh: &[&Item<'_>]) -> Result<Inserted, Failure> {
    let audits: Vec<&Item<'_>> = fresh.iter().copied().filter(|it| matches!(it.row, Row::Audit(_))).collect();
    let reports: Vec<&Item<'_>> = fresh.iter().copied().filter(|it| matches!(it.row, Row::Report(_))).collect();
    let mut inserted = Inserted::new();
    for (table, columns, id, items) in [
        ("audit_events", AUDIT_COLUMNS, "event_id", &audits),
        ("compliance_reports", REPORT_COLUMNS, "report_id", &reports),
    ] {
        if items.is_empty() {
            continue;
        }
        let staging = format!("pg_temp.{table}_staging");
        step("copy_rows", async {
            pg(if table == "audit_events" {
                copy_audits(tx, &staging, items).await
            } else {
                copy_reports(tx, &staging, items).await
            })
        })
        .await?;
        let sql = format!(
            "INSERT INTO audit.{table} ({columns}) SELECT {columns} FROM {staging} ORDER BY kafka_offset \
             ON CONFLICT ({id}) DO NOTHING RETURNING kafka_offset"
        );
        let rows = step("insert_rows", async { pg(tx.query(&sql, &[]).await) }).await?;
        inserted.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    Ok(inserted)
}

/// Records `writers` in `audit.writer_schemas` (already there: nothing),
/// in the transaction of the links that hash their digests.
async fn record_writers(tx: &Transaction<'_>, writers: &[&WriterSchema]) -> Result<(), Failure> {
    for w in writers {
        let (digest, id): (&[u8], i64) = (&w.digest, i64::from(w.id));
        pg(tx
            .execute(
                "INSERT INTO audit.writer_schemas (digest, schema_id, definition, recorded_at) \
                 VALUES ($1, $2, $3, now()) ON CONFLICT (digest) DO NOTHING",
                &[&digest, &id, &w.definition],
            )
            .await)?;
    }
    Ok(())
}

/// Locks the head of `tp` and reads it, creating it at the chain's start
/// when the partition has none yet.
async fn lock_head(tx: &Transaction<'_>, tp: &Tp) -> Result<Head, Failure> {
    const SELECT: &str = "SELECT next_offset, next_seq, head_hash FROM audit.sink_offsets \
        WHERE topic = $1 AND kafka_partition = $2 FOR UPDATE";
    let mut row = pg(tx.query_opt(SELECT, &[&tp.0, &tp.1]).await)?;
    if row.is_none() {
        let genesis: &[u8] = &GENESIS;
        pg(tx
            .execute(
                "INSERT INTO audit.sink_offsets (topic, kafka_partition, next_offset, next_seq, head_hash, updated_at) \
                 VALUES ($1, $2, 0, 0, $3, now()) ON CONFLICT (topic, kafka_partition) DO NOTHING",
                &[&tp.0, &tp.1, &genesis],
            )
            .await)?;
        row = pg(tx.query_opt(SELECT, &[&tp.0, &tp.1]).await)?;
    }
    let row = row.ok_or_else(|| Failure::Transient("sink_offsets row missing after insert".into()))?;
    let hash: &[u8] = row.get(2);
    let hash: Hash = hash
        .try_into()
        .map_err(|_| Failure::Transient("sink_offsets.head_hash is not 32 bytes".into()))?;
    Ok(Head { next_offset: row.get(0), next_seq: row.get(1), hash })
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

/// Moves the head of `tp` to `(next_offset, next_seq, head_hash)`; fails
/// unless it still was at `expected_next_offset`, where this transaction read it.
async fn move_head(tx: &Transaction<'_>, tp: &Tp, to: (i64, i64, Hash), expected_next_offset: i64) -> Result<(), Failure> {
    let (next_offset, next_seq, hash) = to;
    let hash: &[u8] = &hash;
    let n = pg(tx
        .execute(
            "UPDATE audit.sink_offsets SET next_offset = $3, next_seq = $4, head_hash = $5, updated_at = now() \
             WHERE topic = $1 AND kafka_partition = $2 AND next_offset = $6",
            &[&tp.0, &tp.1, &next_offset, &next_seq, &hash, &expected_next_offset],
        )
        .await)?;
    if n != 1 {
        return Err(Failure::Transient(format!(
            "fence: the head of {}/{} moved under this transaction",
            tp.0, tp.1
        )));
    }
    Ok(())
}

//! `audit-sink verify`: walks every chain in position order, recomputes each
//! link's hash from the stored values, and checks that positions are
//! contiguous, links point at their predecessor, every stored link has its
//! row, no row lacks a link, and each chain ends at the head the sink
//! recorded. A break names the chain, the position, the offset and the row.

use std::collections::HashMap;

use dora_schema::{framing, CompiledSchema, Framing};
use tokio_postgres::{Client, Portal, Transaction};

use crate::chain::{Format, Hash, Link, Outcome, GENESIS};
use crate::intake::{row_of, Kind, WriterSchema};
use crate::typed::StoredRow;
use crate::sqltypes::micros_of;

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Chains walked.
    pub chains: u64,
    /// Links checked.
    pub links: u64,
    /// Links whose record is a row (`stored`).
    pub stored: u64,
    /// Links of duplicates.
    pub duplicates: u64,
    /// Links of rejected records.
    pub rejected: u64,
    /// Every break found, at most the first per chain plus rows without links.
    pub breaks: Vec<String>,
}

impl Verdict {
    /// True when nothing was broken.
    pub fn intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.breaks {
            writeln!(f, "BROKEN {b}")?;
        }
        write!(
            f,
            "{}: {} chains, {} links ({} stored rows, {} duplicates, {} rejected)",
            if self.intact() { "audit trail intact" } else { "audit trail BROKEN" },
            self.chains,
            self.links,
            self.stored,
            self.duplicates,
            self.rejected
        )
    }
}

const LINKS: &str = "\
SELECT seq, kafka_offset, outcome, entity_id, reason, consumed_at, kafka_timestamp, record_key, \
       record_value, prev_hash, hash, format \
FROM audit.chain WHERE topic = $1 AND kafka_partition = $2 ORDER BY kafka_offset";
const AUDITS: &str = "\
SELECT kafka_offset, event_id, occurred_at, user_id, action, resource, details, ip_address, \
       user_agent, session_id, value_format, kafka_timestamp, record_key, record_value \
FROM audit.audit_events WHERE topic = $1 AND kafka_partition = $2 ORDER BY kafka_offset";
const REPORTS: &str = "\
SELECT kafka_offset, report_id, organization_id, reported_at, report_type, risk_score, risk_level, \
       data, version, value_format, kafka_timestamp, record_key, record_value \
FROM audit.compliance_reports WHERE topic = $1 AND kafka_partition = $2 ORDER BY kafka_offset";

/// Rows fetched per round trip from each cursor.
const FETCH: i32 = 2000;

/// A chain head as recorded in `sink_offsets`: topic, partition, next
/// position, head hash.
type ChainHead = (String, i32, i64, Vec<u8>);

/// The recorded writer schemas by registry id: each definition's digest
/// (computed here, not read) and the schema parsed from it.
type Writers = HashMap<u32, Vec<(Hash, CompiledSchema)>>;

/// Reads `audit.writer_schemas`. A definition that does not parse is left
/// out: the links that hashed its digest then fail, named.
async fn writer_schemas(tx: &Transaction<'_>) -> anyhow::Result<Writers> {
    let mut out = Writers::new();
    for r in tx.query("SELECT schema_id, definition FROM audit.writer_schemas ORDER BY digest", &[]).await? {
        let (id, definition): (i64, String) = (r.get(0), r.get(1));
        let (Ok(id), Ok(schema)) = (u32::try_from(id), CompiledSchema::parse("recorded writer schema", &definition)) else {
            continue;
        };
        let digest = WriterSchema::new(id, definition).digest;
        out.entry(id).or_default().push((digest, schema));
    }
    Ok(out)
}

async fn snapshot_of(client: &mut Client) -> Result<Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

async fn chain_heads(tx: &Transaction<'_>) -> anyhow::Result<Vec<ChainHead>> {
    let rows = tx
        .query(
            "SELECT topic, kafka_partition, next_seq, head_hash FROM audit.sink_offsets ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// Walks the chains `heads` (those of `worker` among `workers`) in `tx`;
/// returns each one's index, counts and first break.
async fn walk_share(
    tx: &Transaction<'_>,
    heads: &[ChainHead],
    writers: &Writers,
    worker: usize,
    workers: usize,
) -> anyhow::Result<Vec<(usize, Verdict, Option<String>)>> {
    // One ordered index scan per chain and table, whatever the statistics say: a sequential scan (or
    // bitmap scan) and a sort would read the whole table once per chain (measured on 100 000 rows in 8
    // chains: 33 + 57 ms per chain for the links and rows that way, 13 + 12 ms by index).
    tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")
        .await?;
    let mut out = Vec::new();
    for (i, (topic, partition, next_seq, head_hash)) in heads.iter().enumerate().skip(worker).step_by(workers) {
        let mut part = Verdict::default();
        let chain = Chain { tx, topic, partition: *partition, writers };
        let first_break = chain.walk(*next_seq, head_hash, &mut part).await?;
        out.push((i, part, first_break));
    }
    Ok(out)
}

/// Verifies every chain in the database `client` is connected to, in one
/// read-only REPEATABLE READ snapshot (so a sink writing meanwhile is seen
/// consistently). Each chain is merged with its rows in offset order from
/// three cursors, so the cost is one ordered index scan per table, whatever
/// the planner's statistics say.
pub async fn verify(client: &mut Client) -> anyhow::Result<Verdict> {
    let tx = snapshot_of(client).await?;
    let heads = chain_heads(&tx).await?;
    let writers = writer_schemas(&tx).await?;
    let parts = walk_share(&tx, &heads, &writers, 0, 1).await?;
    conclude(tx, &heads, parts).await
}

/// [`verify`] with up to `workers` chains walked at once, each worker on a
/// connection of its own (from `connect`) that imports the first
/// connection's snapshot (`pg_export_snapshot`): the same result as walking
/// them one after another in that snapshot, in a fraction of the time when
/// the database has idle cores.
pub async fn verify_concurrently<F, Fut>(client: &mut Client, workers: usize, connect: F) -> anyhow::Result<Verdict>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Client>>,
{
    let tx = snapshot_of(client).await?;
    let heads = chain_heads(&tx).await?;
    let writers = writer_schemas(&tx).await?;
    let snapshot: String = tx.query_one("SELECT pg_export_snapshot()", &[]).await?.get(0);
    let workers = workers.clamp(1, heads.len().max(1));
    let clients = futures::future::try_join_all((0..workers).map(|_| connect())).await?;
    let (shared, writers) = (std::sync::Arc::new(heads), std::sync::Arc::new(writers));
    // Each worker is a task of its own, so the decoding and hashing of several chains run on all the
    // runtime's threads (joined in this task, they would share one).
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(worker, mut own)| {
            let (heads, writers, snapshot) = (shared.clone(), writers.clone(), snapshot.clone());
            tokio::spawn(async move {
                let wtx = snapshot_of(&mut own).await?;
                // The snapshot id is PostgreSQL's own string (hex digits and dashes).
                wtx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', ""))).await?;
                let share = walk_share(&wtx, &heads, &writers, worker, workers).await?;
                wtx.commit().await?;
                anyhow::Ok(share)
            })
        })
        .collect();
    let mut parts = Vec::new();
    for task in tasks {
        parts.extend(task.await??);
    }
    conclude(tx, &shared, parts).await
}

/// Adds the chains' results in head order, looks for rows of partitions
/// without a head, ends the snapshot.
async fn conclude(
    tx: Transaction<'_>,
    heads: &[ChainHead],
    mut parts: Vec<(usize, Verdict, Option<String>)>,
) -> anyhow::Result<Verdict> {
    parts.sort_by_key(|p| p.0);
    let mut verdict = Verdict::default();
    for (_, part, first_break) in parts {
        verdict.chains += 1;
        verdict.links += part.links;
        verdict.stored += part.stored;
        verdict.duplicates += part.duplicates;
        verdict.rejected += part.rejected;
        verdict.breaks.extend(part.breaks);
        verdict.breaks.extend(first_break);
    }
    let known = heads.iter().map(|h| (h.0.clone(), h.1)).collect();
    unchained(&tx, &known, &mut verdict).await?;
    tx.commit().await?;
    Ok(verdict)
}

/// The distinct (topic, partition) pairs of `audit.<table>`, one descent of its unique (topic,
/// kafka_partition, kafka_offset) index each (a loose index scan): counting the rows per partition read
/// every row of the three tables, about as much as walking all the chains, and it ran after them.
fn partitions_of(table: &str) -> String {
    format!(
        "WITH RECURSIVE p AS ( \
           (SELECT topic, kafka_partition FROM audit.{table} ORDER BY topic, kafka_partition LIMIT 1) \
           UNION ALL \
           SELECT n.topic, n.kafka_partition FROM p CROSS JOIN LATERAL ( \
             SELECT t.topic, t.kafka_partition FROM audit.{table} t \
             WHERE (t.topic, t.kafka_partition) > (p.topic, p.kafka_partition) \
             ORDER BY t.topic, t.kafka_partition LIMIT 1) n) \
         SELECT topic, kafka_partition FROM p"
    )
}

/// Rows and links of partitions that have no head at all.
async fn unchained(
    tx: &Transaction<'_>,
    known: &std::collections::HashSet<(String, i32)>,
    verdict: &mut Verdict,
) -> anyhow::Result<()> {
    for table in ["chain", "audit_events", "compliance_reports"] {
        for r in tx.query(&partitions_of(table), &[]).await? {
            let (t, p): (String, i32) = (r.get(0), r.get(1));
            if known.contains(&(t.clone(), p)) {
                continue;
            }
            let count = format!("SELECT count(*) FROM audit.{table} WHERE topic = $1 AND kafka_partition = $2");
            let n: i64 = tx.query_one(&count, &[&t, &p]).await?.get(0);
            verdict.breaks.push(format!(
                "{t}/{p}: {n} {table} rows of a partition without a chain head in audit.sink_offsets (inserted by hand)"
            ));
        }
    }
    Ok(())
}

/// A cursor over one ordered query, fetched in pages.
struct Cursor<'t> {
    tx: &'t Transaction<'t>,
    portal: Portal,
    page: std::collections::VecDeque<tokio_postgres::Row>,
    done: bool,
}

impl<'t> Cursor<'t> {
    async fn open(tx: &'t Transaction<'t>, query: &str, topic: &str, partition: i32) -> anyhow::Result<Self> {
        let portal = tx.bind(query, &[&topic, &partition]).await?;
        Ok(Self { tx, portal, page: Default::default(), done: false })
    }

    async fn peek(&mut self) -> anyhow::Result<Option<&tokio_postgres::Row>> {
        if self.page.is_empty() && !self.done {
            let rows = self.tx.query_portal(&self.portal, FETCH).await?;
            self.done = rows.len() < FETCH as usize;
            self.page.extend(rows);
        }
        Ok(self.page.front())
    }

    fn pop(&mut self) -> Option<tokio_postgres::Row> {
        self.page.pop_front()
    }

    /// The row at `offset` (column 0), after reporting every earlier row as
    /// an orphan (a row the chain does not know).
    async fn take_at(&mut self, offset: i64, orphans: &mut Vec<(i64, String)>) -> anyhow::Result<Option<tokio_postgres::Row>> {
        while let Some(row) = self.peek().await? {
            let at: i64 = row.get(0);
            if at > offset {
                return Ok(None);
            }
            let row = self.pop().expect("peeked");
            if at == offset {
                return Ok(Some(row));
            }
            orphans.push((at, row.get(1)));
        }
        Ok(None)
    }
}

/// One chain being walked.
struct Chain<'a> {
    tx: &'a Transaction<'a>,
    topic: &'a str,
    partition: i32,
    writers: &'a Writers,
}

impl Chain<'_> {
    /// Walks the chain; returns its first break (links or rows).
    async fn walk(&self, next_seq: i64, head_hash: &[u8], verdict: &mut Verdict) -> anyhow::Result<Option<String>> {
        let (topic, partition) = (self.topic, self.partition);
        let mut links = Cursor::open(self.tx, LINKS, topic, partition).await?;
        let mut audits = Cursor::open(self.tx, AUDITS, topic, partition).await?;
        let mut reports = Cursor::open(self.tx, REPORTS, topic, partition).await?;
        let at = |seq: i64, offset: i64| format!("{topic}/{partition} seq {seq} offset {offset}");
        let mut prev: Hash = GENESIS;
        let (mut expected_seq, mut last_offset) = (0i64, -1i64);
        let mut first_break = None;
        let (mut orphan_events, mut orphan_reports) = (Vec::new(), Vec::new());
        while let Some(link) = links.peek().await?.is_some().then(|| links.pop()).flatten() {
            let seq: i64 = link.get(0);
            let offset: i64 = link.get(1);
            verdict.links += 1;
            let audit = audits.take_at(offset, &mut orphan_events).await?;
            let report = reports.take_at(offset, &mut orphan_reports).await?;
            if first_break.is_none() {
                // Links come in offset order (the chain's key); the sink numbers them in that order.
                let problem = if seq > expected_seq {
                    Some(format!("{}: links {}..{} are missing (removed) before this one", at(seq, offset), expected_seq, seq - 1))
                } else if seq < expected_seq {
                    Some(format!("{}: position repeats or goes back after offset {last_offset} (expected seq {expected_seq}): a link inserted by hand", at(seq, offset)))
                } else {
                    let place = Place { topic, partition, writers: self.writers };
                    match check_link(&link, audit.as_ref(), report.as_ref(), &place, &prev) {
                        Ok((outcome, hash)) => {
                            match outcome {
                                Outcome::Stored => verdict.stored += 1,
                                Outcome::Duplicate => verdict.duplicates += 1,
                                Outcome::Rejected => verdict.rejected += 1,
                            }
                            prev = hash;
                            None
                        }
                        Err(what) => Some(format!("{}: {what}", at(seq, offset))),
                    }
                };
                first_break = problem;
            }
            expected_seq = seq + 1;
            last_offset = offset;
        }
        audits.take_at(i64::MAX, &mut orphan_events).await?;
        reports.take_at(i64::MAX, &mut orphan_reports).await?;
        for (table, id, orphans) in [("audit_events", "event_id", orphan_events), ("compliance_reports", "report_id", orphan_reports)] {
            for (o, i) in orphans {
                verdict.breaks.push(format!(
                    "{topic}/{partition} offset {o}: row {table} {id}={i} has no link in the chain (inserted by hand)"
                ));
            }
        }
        if first_break.is_none() {
            if expected_seq != next_seq {
                first_break = Some(format!(
                    "{topic}/{partition}: the chain has {expected_seq} links but its head says {next_seq} (links removed at the end, or added after it)"
                ));
            } else if prev[..] != *head_hash {
                first_break = Some(format!("{topic}/{partition}: the last link's hash is not the recorded chain head"));
            }
        }
        Ok(first_break)
    }
}

/// Where a link is checked: its chain and the recorded writer schemas.
struct Place<'a> {
    topic: &'a str,
    partition: i32,
    writers: &'a Writers,
}

/// Checks one link with the rows stored at its offset; returns its outcome
/// and stored hash, or what is wrong.
fn check_link(
    row: &tokio_postgres::Row,
    audit: Option<&tokio_postgres::Row>,
    report: Option<&tokio_postgres::Row>,
    place: &Place<'_>,
    prev: &Hash,
) -> Result<(Outcome, Hash), String> {
    let outcome_name: &str = row.get(2);
    let outcome = Outcome::parse(outcome_name).ok_or_else(|| format!("unknown outcome {outcome_name:?}"))?;
    let format = Format::of(row.get(11)).ok_or_else(|| format!("unknown chain format {}", row.get::<_, i16>(11)))?;
    let prev_stored: &[u8] = row.get(9);
    let hash_stored: &[u8] = row.get(10);
    let hash_stored: Hash = hash_stored.try_into().map_err(|_| "hash is not 32 bytes".to_string())?;
    if prev_stored != prev {
        return Err("does not point at the previous link (a link was removed, inserted or changed before it)".into());
    }
    // The record's own bytes: in its row when it has one, else in the link.
    let (stored, source) = match (audit, report) {
        (Some(a), None) => (Some(StoredRow { row: a, kind: Kind::Audit }), (a, 11)),
        (None, Some(r)) => (Some(StoredRow { row: r, kind: Kind::Report }), (r, 10)),
        (None, None) => (None, (row, 6)),
        (Some(_), Some(_)) => return Err("rows in both tables at this position (inserted by hand)".into()),
    };
    let name = || stored.as_ref().map_or_else(|| "link".to_string(), StoredRow::name);
    match (outcome, &stored) {
        (Outcome::Stored, None) => {
            return Err(format!(
                "the stored row ({}) is missing (deleted)",
                row.get::<_, Option<&str>>(3).unwrap_or("?")
            ))
        }
        (Outcome::Duplicate | Outcome::Rejected, Some(_)) => {
            return Err(format!("{} at a position whose record was not stored (inserted by hand)", name()))
        }
        _ => {}
    }
    let (src, first) = source;
    let value: Option<&[u8]> = src.get(first + 2);
    // Version 1 hashes the typed columns; version 2 only which table the row is in.
    let typed = match (format, &stored) {
        (Format::V1, Some(s)) => Some(s.owned()),
        (Format::V2, Some(s)) => Some(s.kind.placeholder()),
        (_, None) => None,
    };
    let link = Link {
        format,
        topic: place.topic,
        partition: place.partition,
        seq: row.get(0),
        offset: row.get(1),
        outcome,
        entity_id: row.get(3),
        reason: row.get(4),
        consumed_at_us: micros_of(row.get(5)),
        kafka_timestamp_us: src.get::<_, Option<chrono::DateTime<chrono::Utc>>>(first).map(micros_of),
        key: src.get(first + 1),
        value,
        row: typed.as_ref(),
        writer: None,
    };
    let (Format::V2, Some(stored), Some(value)) = (format, &stored, value) else {
        // version 1 hashes the typed columns themselves; a link without a row has none
        if link.hash(prev) != hash_stored {
            return Err(format!("{} changed: its values do not hash to the chained hash", name()));
        }
        return Ok((outcome, hash_stored));
    };
    // Version 2: the record and its writer schema are hashed; the typed columns must be what the record decodes to.
    let chained = |writer: Option<&Hash>| Link { writer, ..link }.hash(prev) == hash_stored;
    let schema = match framing(value) {
        Ok(Framing::Avro { id }) => {
            let candidates = place.writers.get(&id).map_or(&[][..], Vec::as_slice);
            match candidates.iter().find(|(digest, _)| chained(Some(digest))) {
                Some((_, schema)) => Some(schema),
                None if candidates.is_empty() => {
                    return Err(format!("{}: its writer schema (id {id}) is not in audit.writer_schemas (deleted, or no longer readable)", name()))
                }
                None => return Err(format!("{} changed: its record does not hash to the chained hash", name())),
            }
        }
        _ if chained(None) => None,
        _ => return Err(format!("{} changed: its record does not hash to the chained hash", name())),
    };
    let decoded = row_of(stored.kind, value, schema).map_err(|e| format!("{} changed: its record does not decode: {e}", name()))?;
    if let Some(column) = stored.difference(&decoded) {
        return Err(format!("{} changed: {column} is not what its record value holds", name()));
    }
    Ok((outcome, hash_stored))
}

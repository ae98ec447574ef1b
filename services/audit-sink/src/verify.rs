//! `audit-sink verify`: walks every chain in position order, recomputes each
//! link's hash from the stored values, and checks that positions are
//! contiguous, links point at their predecessor, every stored link has its
//! row, no row lacks a link, and each chain ends at the head the sink
//! recorded. A break names the chain, the position, the offset and the row.

use futures::{pin_mut, TryStreamExt};
use tokio_postgres::Client;

use crate::chain::{AuditColumns, Hash, Link, Outcome, ReportColumns, Row, GENESIS};
use crate::sqltypes::{micros_of, JsonText};

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
SELECT c.seq, c.kafka_offset, c.outcome, c.entity_id, c.reason, c.consumed_at, \
       c.kafka_timestamp, c.record_key, c.record_value, c.prev_hash, c.hash, \
       a.event_id, a.occurred_at, a.user_id, a.action, a.resource, a.details, a.ip_address, \
       a.user_agent, a.session_id, a.value_format, a.kafka_timestamp, a.record_key, a.record_value, \
       r.report_id, r.organization_id, r.reported_at, r.report_type, r.risk_score, r.risk_level, \
       r.data, r.version, r.value_format, r.kafka_timestamp, r.record_key, r.record_value \
FROM audit.chain c \
LEFT JOIN audit.audit_events a \
  ON a.topic = c.topic AND a.kafka_partition = c.kafka_partition AND a.kafka_offset = c.kafka_offset \
LEFT JOIN audit.compliance_reports r \
  ON r.topic = c.topic AND r.kafka_partition = c.kafka_partition AND r.kafka_offset = c.kafka_offset \
WHERE c.topic = $1 AND c.kafka_partition = $2 ORDER BY c.seq";

/// Verifies every chain in the database `client` is connected to.
pub async fn verify(client: &Client) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict::default();
    let heads = client
        .query(
            "SELECT topic, kafka_partition, next_seq, head_hash FROM audit.sink_offsets ORDER BY 1, 2",
            &[],
        )
        .await?;
    for head in &heads {
        let (topic, partition): (String, i32) = (head.get(0), head.get(1));
        let next_seq: i64 = head.get(2);
        let head_hash: &[u8] = head.get(3);
        verdict.chains += 1;
        if let Some(b) = walk(client, &topic, partition, next_seq, head_hash, &mut verdict).await? {
            verdict.breaks.push(b);
        }
    }
    let headless = client
        .query(
            "SELECT DISTINCT topic, kafka_partition FROM audit.chain c WHERE NOT EXISTS \
             (SELECT 1 FROM audit.sink_offsets o WHERE o.topic = c.topic AND o.kafka_partition = c.kafka_partition)",
            &[],
        )
        .await?;
    for row in headless {
        let (t, p): (String, i32) = (row.get(0), row.get(1));
        verdict.breaks.push(format!("{t}/{p}: links without a chain head in audit.sink_offsets"));
    }
    orphans(client, &mut verdict).await?;
    Ok(verdict)
}

/// Walks one chain; returns its first break.
async fn walk(
    client: &Client,
    topic: &str,
    partition: i32,
    next_seq: i64,
    head_hash: &[u8],
    verdict: &mut Verdict,
) -> anyhow::Result<Option<String>> {
    let rows = client.query_raw(LINKS, [&topic as &(dyn tokio_postgres::types::ToSql + Sync), &partition]).await?;
    pin_mut!(rows);
    let at = |seq: i64, offset: i64| format!("{topic}/{partition} seq {seq} offset {offset}");
    let mut prev: Hash = GENESIS;
    let mut expected_seq = 0i64;
    let mut last_offset = -1i64;
    let mut first_break = None;
    while let Some(row) = rows.try_next().await? {
        let seq: i64 = row.get(0);
        let offset: i64 = row.get(1);
        verdict.links += 1;
        if first_break.is_some() {
            continue;
        }
        let checked = check_link(&row, topic, partition, &prev);
        let problem = if seq != expected_seq {
            Some(format!(
                "{}: links {}..{} are missing (removed) before this one",
                at(seq, offset),
                expected_seq,
                seq - 1
            ))
        } else if offset <= last_offset {
            Some(format!("{}: offset does not follow offset {last_offset}", at(seq, offset)))
        } else {
            match checked {
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
        if problem.is_some() {
            first_break = problem;
        }
        expected_seq = seq + 1;
        last_offset = offset;
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

/// Checks one joined link row; returns its outcome and stored hash, or what is wrong.
fn check_link(
    row: &tokio_postgres::Row,
    topic: &str,
    partition: i32,
    prev: &Hash,
) -> Result<(Outcome, Hash), String> {
    let outcome_name: &str = row.get(2);
    let outcome = Outcome::parse(outcome_name).ok_or_else(|| format!("unknown outcome {outcome_name:?}"))?;
    let prev_stored: &[u8] = row.get(9);
    let hash_stored: &[u8] = row.get(10);
    let hash_stored: Hash = hash_stored.try_into().map_err(|_| "hash is not 32 bytes".to_string())?;
    if prev_stored != prev {
        return Err("does not point at the previous link (a link was removed, inserted or changed before it)".into());
    }
    let audit = audit_row(row);
    let report = report_row(row);
    let (typed, ts_col, key_col, value_col, name) = match (&audit, &report) {
        (Some(a), None) => (Some(Row::Audit(a.clone())), 21, 22, 23, format!("audit_events event_id={}", a.event_id)),
        (None, Some(r)) => (Some(Row::Report(r.clone())), 33, 34, 35, format!("compliance_reports report_id={}", r.report_id)),
        (None, None) => (None, 6, 7, 8, String::new()),
        (Some(_), Some(_)) => return Err("rows in both tables at this position (inserted by hand)".into()),
    };
    match (outcome, &typed) {
        (Outcome::Stored, None) => {
            return Err(format!(
                "the stored row ({}) is missing (deleted)",
                row.get::<_, Option<&str>>(3).unwrap_or("?")
            ))
        }
        (Outcome::Duplicate | Outcome::Rejected, Some(_)) => {
            return Err(format!("row {name} at a position whose record was not stored (inserted by hand)"))
        }
        _ => {}
    }
    let link = Link {
        topic,
        partition,
        seq: row.get(0),
        offset: row.get(1),
        outcome,
        entity_id: row.get(3),
        reason: row.get(4),
        consumed_at_us: micros_of(row.get(5)),
        kafka_timestamp_us: row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(ts_col).map(micros_of),
        key: row.get(key_col),
        value: row.get(value_col),
        row: typed.as_ref(),
    };
    if link.hash(prev) != hash_stored {
        let what = if name.is_empty() { "link".to_string() } else { format!("row {name}") };
        return Err(format!("{what} changed: its values do not hash to the chained hash"));
    }
    Ok((outcome, hash_stored))
}

fn audit_row(row: &tokio_postgres::Row) -> Option<AuditColumns> {
    let event_id: Option<String> = row.get(11);
    Some(AuditColumns {
        event_id: event_id?,
        occurred_at_us: micros_of(row.get(12)),
        user_id: row.get(13),
        action: row.get(14),
        resource: row.get(15),
        details: row.get::<_, JsonText<'_>>(16).0.to_string(),
        ip_address: row.get(17),
        user_agent: row.get(18),
        session_id: row.get(19),
        value_format: row.get(20),
    })
}

fn report_row(row: &tokio_postgres::Row) -> Option<ReportColumns> {
    let report_id: Option<String> = row.get(24);
    Some(ReportColumns {
        report_id: report_id?,
        organization_id: row.get(25),
        reported_at_us: micros_of(row.get(26)),
        report_type: row.get(27),
        risk_score: row.get(28),
        risk_level: row.get(29),
        data: row.get::<_, JsonText<'_>>(30).0.to_string(),
        version: row.get(31),
        value_format: row.get(32),
    })
}

/// Rows without a `stored` link at their position: inserted by hand.
async fn orphans(client: &Client, verdict: &mut Verdict) -> anyhow::Result<()> {
    for (table, id) in [("audit_events", "event_id"), ("compliance_reports", "report_id")] {
        let rows = client
            .query(
                &format!(
                    "SELECT t.topic, t.kafka_partition, t.kafka_offset, t.{id} FROM audit.{table} t \
                     WHERE NOT EXISTS (SELECT 1 FROM audit.chain c WHERE c.topic = t.topic \
                       AND c.kafka_partition = t.kafka_partition AND c.kafka_offset = t.kafka_offset \
                       AND c.outcome = 'stored') \
                     ORDER BY 1, 2, 3 LIMIT 100"
                ),
                &[],
            )
            .await?;
        for r in rows {
            let (t, p, o, i): (String, i32, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            verdict.breaks.push(format!(
                "{t}/{p} offset {o}: row {table} {id}={i} has no link in the chain (inserted by hand)"
            ));
        }
    }
    Ok(())
}

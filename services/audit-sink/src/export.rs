//! `audit-sink export`: the audit trail (audit events, optionally of one
//! user) or the assessment archive (compliance reports, optionally of one
//! organisation) of a period as JSON lines or CSV, read in one snapshot. Each
//! row carries every input of its chain link's hash, so an auditor can
//! recompute each hash from the extract alone, without this binary, and check
//! that consecutive positions link; `--schemas <file>` writes the Avro writer
//! schemas the rows name, to decode each value and compare it with the typed
//! columns. The auditor's procedure, and a checker in Python, are in
//! `docs/audit-extract.md`.
//!
//! # The hash of an extracted row
//!
//! Every extracted row is a stored record, so its link's outcome is
//! `stored`, its entity id is the row's `eventId`/`reportId` and it has no
//! reason. `hash = SHA-256(prevHash || canonical bytes)` (`prevHash` as 32
//! bytes; 32 zero bytes at `chainSeq` 0). Encodings: `str`/`bytes` = the
//! length as a big-endian u32, then the (UTF-8) bytes; `i32`/`i64` =
//! big-endian; `f64` = the IEEE-754 bits as a big-endian u64; `opt(x)` = a
//! byte 0 when the field is absent (JSON `null`, CSV empty unquoted field),
//! else a byte 1 and `x`; `us(t)` = `i64` microseconds since the Unix epoch of
//! an RFC 3339 time (the extract writes microseconds exactly).
//!
//! `chainFormat` 2 (links written since migration V3):
//! 1. the 17 ASCII bytes `dora-audit-link/2` (no length);
//! 2. `str(topic) i32(partition) i64(chainSeq) i64(offset)`;
//! 3. `str("stored") opt(str(eventId | reportId))`, a byte 0 (no reason), `i64(us(consumedAt))`;
//! 4. `opt(i64(us(kafkaTimestamp))) opt(bytes(recordKeyBase64)) opt(bytes(recordValueBase64))`
//!    (the decoded bytes);
//! 5. a byte 1 (audit events) or 2 (compliance reports);
//! 6. `opt(writerSchemaSha256)`: its 32 bytes (no length), absent for a JSON value.
//!
//! `chainFormat` 1 (links written before V3): the tag `dora-audit-link/1`,
//! sections 2-5 as above, then the typed columns in table order, JSON
//! columns (`details`, `data`) as their exact text:
//! - audit events: `str(eventId) i64(us(timestamp)) str(userId) str(action)
//!   str(resource) str(details) opt(str(ipAddress)) opt(str(userAgent))
//!   opt(str(sessionId)) str(valueFormat)`;
//! - compliance reports: `str(reportId) str(organizationId) i64(us(timestamp))
//!   str(reportType) opt(f64(riskScore)) opt(str(riskLevel)) str(data)
//!   str(version) str(valueFormat)`.
//!
//! A format-2 link does not hash the typed columns: they are a projection of
//! the value, checked by decoding it (Avro with the writer schema whose
//! SHA-256 is `writerSchemaSha256`, or the seed's JSON). `chain.rs` builds
//! these bytes for the sink and `verify`; an integration test recomputes them
//! from extracts with the Python checker.
//!
//! CSV: the same fields as JSON lines, in the same order, with a header line;
//! every present value is quoted, an absent one is an empty unquoted field
//! (so an empty text and an absent value differ).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use base64::Engine;
use chrono::{DateTime, Utc};
use dora_schema::{framing, Framing};
use futures::{pin_mut, TryStreamExt};
use serde_json::{json, Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::chain::{self, Hash, Link, Outcome};
use crate::intake::{Kind, WriterSchema};
use crate::sqltypes::{micros_of, JsonText};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line; present values quoted, absent ones empty.
    Csv,
}

/// Which table to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    /// `audit.audit_events` (filter: the user).
    AuditEvents,
    /// `audit.compliance_reports` (filter: the organisation).
    ComplianceReports,
}

/// The columns every exported row ends with: its record's position and bytes and its link.
const POSITION_COLUMNS: &[&str] = &[
    "topic", "partition", "offset", "kafkaTimestamp", "recordKeyBase64", "recordValueBase64",
    "chainSeq", "chainFormat", "consumedAt", "writerSchemaSha256", "prevHash", "hash",
];
const POSITION_SELECT: &str = "r.topic, r.kafka_partition, r.kafka_offset, r.kafka_timestamp, r.record_key, \
    r.record_value, c.seq, c.format, c.consumed_at, c.prev_hash, c.hash";
const CHAIN_JOIN: &str = "JOIN audit.chain c \
    ON c.topic = r.topic AND c.kafka_partition = r.kafka_partition AND c.kafka_offset = r.kafka_offset";

/// The exported audit event columns, in CSV order.
pub const AUDIT_COLUMNS: &[&str] = &[
    "eventId", "timestamp", "userId", "action", "resource", "details", "ipAddress", "userAgent",
    "sessionId", "valueFormat",
];
/// The exported compliance report columns, in CSV order.
pub const REPORT_COLUMNS: &[&str] = &[
    "reportId", "timestamp", "organizationId", "reportType", "riskScore", "riskLevel", "data",
    "version", "valueFormat",
];

impl Table {
    /// The columns of an exported row, in CSV order.
    pub fn columns(self) -> Vec<&'static str> {
        let own = match self {
            Table::AuditEvents => AUDIT_COLUMNS,
            Table::ComplianceReports => REPORT_COLUMNS,
        };
        own.iter().chain(POSITION_COLUMNS).copied().collect()
    }

    fn kind(self) -> Kind {
        match self {
            Table::AuditEvents => Kind::Audit,
            Table::ComplianceReports => Kind::Report,
        }
    }

    fn query(self) -> String {
        let (own, table, time, filter) = match self {
            Table::AuditEvents => (
                "r.event_id, r.occurred_at, r.user_id, r.action, r.resource, r.details, r.ip_address, \
                 r.user_agent, r.session_id, r.value_format",
                "audit.audit_events", "r.occurred_at", "r.user_id",
            ),
            Table::ComplianceReports => (
                "r.report_id, r.reported_at, r.organization_id, r.report_type, r.risk_score, r.risk_level, \
                 r.data, r.version, r.value_format",
                "audit.compliance_reports", "r.reported_at", "r.organization_id",
            ),
        };
        format!(
            "SELECT {own}, {POSITION_SELECT} FROM {table} r {CHAIN_JOIN} \
             WHERE {time} >= $1 AND {time} < $2 AND ($3::text IS NULL OR {filter} = $3) \
             ORDER BY {time}, r.topic, r.kafka_partition, r.kafka_offset"
        )
    }

    fn own_json(self, row: &tokio_postgres::Row) -> Map<String, Value> {
        let v = match self {
            Table::AuditEvents => audit_json(row),
            Table::ComplianceReports => report_json(row),
        };
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A JSON column as its exact stored text (what format 1 hashed and the typed check compares).
fn json_text(row: &tokio_postgres::Row, i: usize) -> &str {
    row.get::<_, JsonText<'_>>(i).0
}

fn audit_json(row: &tokio_postgres::Row) -> Value {
    json!({
        "eventId": row.get::<_, &str>(0),
        "timestamp": rfc3339(row.get(1)),
        "userId": row.get::<_, &str>(2),
        "action": row.get::<_, &str>(3),
        "resource": row.get::<_, &str>(4),
        "details": json_text(row, 5),
        "ipAddress": row.get::<_, Option<&str>>(6),
        "userAgent": row.get::<_, Option<&str>>(7),
        "sessionId": row.get::<_, Option<&str>>(8),
        "valueFormat": row.get::<_, &str>(9),
    })
}

/// A score as a JSON number; `NaN`, `Infinity` or `-Infinity` as text (JSON has no such numbers).
fn score_json(score: Option<f64>) -> Value {
    match score {
        Some(s) if !s.is_finite() => Value::String(
            if s.is_nan() { "NaN" } else if s > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        ),
        other => json!(other),
    }
}

fn report_json(row: &tokio_postgres::Row) -> Value {
    json!({
        "reportId": row.get::<_, &str>(0),
        "timestamp": rfc3339(row.get(1)),
        "organizationId": row.get::<_, &str>(2),
        "reportType": row.get::<_, &str>(3),
        "riskScore": score_json(row.get(4)),
        "riskLevel": row.get::<_, Option<&str>>(5),
        "data": json_text(row, 6),
        "version": row.get::<_, &str>(7),
        "valueFormat": row.get::<_, &str>(8),
    })
}

/// A writer schema as recorded in `audit.writer_schemas`.
struct Recorded {
    schema: WriterSchema,
    recorded_at: DateTime<Utc>,
}

/// The recorded writer schemas (read in the extract's snapshot) and the
/// digests the extract's rows name.
#[derive(Default)]
struct Schemas {
    by_id: HashMap<u32, Vec<Recorded>>,
    named: BTreeMap<Hash, (u32, usize)>,
}

impl Schemas {
    /// Reads `audit.writer_schemas`; each digest is computed from its definition, as `verify` does.
    async fn read(client: &impl tokio_postgres::GenericClient) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for r in client.query("SELECT schema_id, definition, recorded_at FROM audit.writer_schemas ORDER BY digest", &[]).await? {
            let Ok(id) = u32::try_from(r.get::<_, i64>(0)) else { continue };
            let recorded = Recorded { schema: WriterSchema::new(id, r.get(1)), recorded_at: r.get(2) };
            out.by_id.entry(id).or_default().push(recorded);
        }
        Ok(out)
    }

    /// The writer schema digest a format-2 `link` of an Avro value hashed:
    /// of the schemas recorded under the value's id, the one that makes the
    /// link hash to `hash` (the only one, normally), else the first (so the
    /// auditor's recomputation fails as `verify` does); `None` for a JSON
    /// value or an id nothing was recorded for.
    fn digest_of(&mut self, link: &Link<'_>, prev: &Hash, hash: &[u8]) -> Option<Hash> {
        let Ok(Framing::Avro { id }) = framing(link.value?) else { return None };
        let candidates = self.by_id.get(&id)?;
        let at = match candidates.len() {
            1 => 0,
            _ => candidates
                .iter()
                .position(|c| Link { writer: Some(&c.schema.digest), ..*link }.hash(prev)[..] == *hash)
                .unwrap_or(0),
        };
        let digest = candidates[at].schema.digest;
        self.named.insert(digest, (id, at));
        Some(digest)
    }

    /// Writes the named schemas as JSON lines, by digest.
    fn write_named(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        for (id, at) in self.named.values() {
            let r = &self.by_id[id][*at];
            let line = json!({
                "writerSchemaSha256": hex::encode(r.schema.digest),
                "schemaId": id,
                "recordedAt": rfc3339(r.recorded_at),
                "definition": r.schema.definition,
            });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(out.flush()?)
    }
}

/// The position columns, starting at column `i`, with the writer schema digest the link hashed.
fn position_json(row: &tokio_postgres::Row, i: usize, table: Table, schemas: &mut Schemas) -> Map<String, Value> {
    let b64 = |v: Option<&[u8]>| v.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let (prev, hash): (&[u8], &[u8]) = (row.get(i + 9), row.get(i + 10));
    let format: i16 = row.get(i + 7);
    let placeholder = table.kind().placeholder();
    let writer = match (chain::Format::of(format), <Hash>::try_from(prev)) {
        (Some(chain::Format::V2), Ok(prev)) => {
            let link = Link {
                format: chain::Format::V2,
                topic: row.get(i),
                partition: row.get(i + 1),
                seq: row.get(i + 6),
                offset: row.get(i + 2),
                outcome: Outcome::Stored,
                entity_id: Some(row.get(0)),
                reason: None,
                consumed_at_us: micros_of(row.get(i + 8)),
                kafka_timestamp_us: row.get::<_, Option<DateTime<Utc>>>(i + 3).map(micros_of),
                key: row.get(i + 4),
                value: row.get(i + 5),
                row: Some(&placeholder),
                writer: None,
            };
            schemas.digest_of(&link, &prev, hash)
        }
        _ => None,
    };
    let v = json!({
        "topic": row.get::<_, &str>(i),
        "partition": row.get::<_, i32>(i + 1),
        "offset": row.get::<_, i64>(i + 2),
        "kafkaTimestamp": row.get::<_, Option<DateTime<Utc>>>(i + 3).map(rfc3339),
        "recordKeyBase64": b64(row.get(i + 4)),
        "recordValueBase64": b64(row.get(i + 5)),
        "chainSeq": row.get::<_, i64>(i + 6),
        "chainFormat": format,
        "consumedAt": rfc3339(row.get(i + 8)),
        "writerSchemaSha256": writer.map(hex::encode),
        "prevHash": hex::encode(prev),
        "hash": hex::encode(hash),
    });
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// A field's CSV text: `None` when absent.
fn csv_text(v: Option<&Value>) -> Option<std::borrow::Cow<'_, str>> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.as_str().into()),
        other => Some(other.to_string().into()),
    }
}

/// One CSV record: present values quoted (`"` doubled), absent ones empty and unquoted.
fn csv_record<'v>(out: &mut dyn Write, fields: impl Iterator<Item = Option<std::borrow::Cow<'v, str>>>) -> std::io::Result<()> {
    let mut line = String::new();
    for (n, field) in fields.enumerate() {
        if n > 0 {
            line.push(',');
        }
        if let Some(text) = field {
            line.push('"');
            line.push_str(&text.replace('"', "\"\""));
            line.push('"');
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// Writes the rows of `table` with `from <= timestamp < to` (and of `owner`,
/// the user or the organisation, if given) to `out`, and, to `schemas_out`,
/// the writer schemas those rows name (JSON lines: `writerSchemaSha256`,
/// `schemaId`, `recordedAt`, `definition`); returns the number of rows. One
/// read-only snapshot, so the schemas are those the rows were written with.
pub async fn export(
    client: &mut Client,
    table: Table,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    owner: Option<&str>,
    format: Format,
    (out, schemas_out): (&mut dyn Write, Option<&mut dyn Write>),
) -> anyhow::Result<u64> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut schemas = Schemas::read(&tx).await?;
    let params: [&(dyn ToSql + Sync); 3] = [&from, &to, &owner];
    let rows = tx.query_raw(&table.query(), params).await?;
    pin_mut!(rows);
    let columns = table.columns();
    if format == Format::Csv {
        csv_record(out, columns.iter().map(|c| Some((*c).into())))?;
    }
    let mut n = 0;
    while let Some(row) = rows.try_next().await? {
        let mut value = table.own_json(&row);
        let own = value.len();
        value.extend(position_json(&row, own, table, &mut schemas));
        match format {
            Format::Jsonl => {
                serde_json::to_writer(&mut *out, &value)?;
                out.write_all(b"\n")?;
            }
            Format::Csv => csv_record(out, columns.iter().map(|c| csv_text(value.get(*c))))?,
        }
        n += 1;
    }
    out.flush()?;
    tx.commit().await?;
    if let Some(s) = schemas_out {
        schemas.write_named(s)?;
    }
    Ok(n)
}

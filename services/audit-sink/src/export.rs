//! `audit-sink export`: the audit trail (audit events, optionally of one
//! user) or the assessment archive (compliance reports, optionally of one
//! organisation) of a period as JSON lines or CSV, each row with its chain
//! position, previous hash and hash, and the original record bytes, so an
//! auditor can check the extract's links against each other. A format-1
//! link's hash can be recomputed from the extract alone (canonical bytes: see
//! `chain`); a format-2 link (written since migration V3) also hashes its
//! writer schema's digest, which the extract does not carry yet, so its hash
//! is recomputed by `audit-sink verify`, not from the extract.

use std::io::Write;

use base64::Engine;
use chrono::{DateTime, Utc};
use futures::{pin_mut, TryStreamExt};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::sqltypes::JsonText;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line; JSON columns as JSON text.
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
    "chainSeq", "consumedAt", "prevHash", "hash",
];
const POSITION_SELECT: &str = "r.topic, r.kafka_partition, r.kafka_offset, r.kafka_timestamp, r.record_key, \
    r.record_value, c.seq, c.consumed_at, c.prev_hash, c.hash";
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

    fn to_json(self, row: &tokio_postgres::Row) -> Value {
        let mut v = match self {
            Table::AuditEvents => audit_json(row),
            Table::ComplianceReports => report_json(row),
        };
        let own = v.as_object().map_or(0, |o| o.len());
        if let Value::Object(o) = &mut v {
            o.extend(position_json(row, own));
        }
        v
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn json_column(row: &tokio_postgres::Row, i: usize) -> Value {
    let text: JsonText<'_> = row.get(i);
    serde_json::from_str::<Value>(text.0).unwrap_or(Value::String(text.0.to_string()))
}

fn audit_json(row: &tokio_postgres::Row) -> Value {
    json!({
        "eventId": row.get::<_, &str>(0),
        "timestamp": rfc3339(row.get(1)),
        "userId": row.get::<_, &str>(2),
        "action": row.get::<_, &str>(3),
        "resource": row.get::<_, &str>(4),
        "details": json_column(row, 5),
        "ipAddress": row.get::<_, Option<&str>>(6),
        "userAgent": row.get::<_, Option<&str>>(7),
        "sessionId": row.get::<_, Option<&str>>(8),
        "valueFormat": row.get::<_, &str>(9),
    })
}

fn report_json(row: &tokio_postgres::Row) -> Value {
    json!({
        "reportId": row.get::<_, &str>(0),
        "timestamp": rfc3339(row.get(1)),
        "organizationId": row.get::<_, &str>(2),
        "reportType": row.get::<_, &str>(3),
        "riskScore": row.get::<_, Option<f64>>(4),
        "riskLevel": row.get::<_, Option<&str>>(5),
        "data": json_column(row, 6),
        "version": row.get::<_, &str>(7),
        "valueFormat": row.get::<_, &str>(8),
    })
}

/// The position columns, starting at column `i`.
fn position_json(row: &tokio_postgres::Row, i: usize) -> serde_json::Map<String, Value> {
    let b64 = |v: Option<&[u8]>| v.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let v = json!({
        "topic": row.get::<_, &str>(i),
        "partition": row.get::<_, i32>(i + 1),
        "offset": row.get::<_, i64>(i + 2),
        "kafkaTimestamp": row.get::<_, Option<DateTime<Utc>>>(i + 3).map(rfc3339),
        "recordKeyBase64": b64(row.get(i + 4)),
        "recordValueBase64": b64(row.get(i + 5)),
        "chainSeq": row.get::<_, i64>(i + 6),
        "consumedAt": rfc3339(row.get(i + 7)),
        "prevHash": hex::encode(row.get::<_, &[u8]>(i + 8)),
        "hash": hex::encode(row.get::<_, &[u8]>(i + 9)),
    });
    match v {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    }
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes the rows of `table` with `from <= timestamp < to` (and of `owner`,
/// the user or the organisation, if given) to `out`; returns the number of rows.
pub async fn export(
    client: &Client,
    table: Table,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    owner: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let params: [&(dyn ToSql + Sync); 3] = [&from, &to, &owner];
    let rows = client.query_raw(&table.query(), params).await?;
    pin_mut!(rows);
    let mut n = 0;
    match format {
        Format::Jsonl => {
            while let Some(row) = rows.try_next().await? {
                serde_json::to_writer(&mut *out, &table.to_json(&row))?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
        Format::Csv => {
            let columns = table.columns();
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(&columns)?;
            while let Some(row) = rows.try_next().await? {
                let value = table.to_json(&row);
                w.write_record(columns.iter().map(|c| csv_field(&value[*c])))?;
                n += 1;
            }
            w.flush()?;
        }
    }
    out.flush()?;
    Ok(n)
}

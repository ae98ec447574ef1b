//! `audit-sink export`: the audit trail of a period (optionally one user) as
//! JSON lines or CSV, each row with its chain position, previous hash and
//! hash, and the original record bytes, so an auditor can recompute every
//! row's hash from the extract (canonical bytes: see `chain`).

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

/// The exported columns, in CSV order.
pub const COLUMNS: &[&str] = &[
    "eventId", "timestamp", "userId", "action", "resource", "details", "ipAddress", "userAgent",
    "sessionId", "valueFormat", "topic", "partition", "offset", "kafkaTimestamp", "recordKeyBase64",
    "recordValueBase64", "chainSeq", "consumedAt", "prevHash", "hash",
];

const QUERY: &str = "\
SELECT a.event_id, a.occurred_at, a.user_id, a.action, a.resource, a.details, a.ip_address, \
       a.user_agent, a.session_id, a.value_format, a.topic, a.kafka_partition, a.kafka_offset, \
       a.kafka_timestamp, a.record_key, a.record_value, c.seq, c.consumed_at, c.prev_hash, c.hash \
FROM audit.audit_events a JOIN audit.chain c \
  ON c.topic = a.topic AND c.kafka_partition = a.kafka_partition AND c.kafka_offset = a.kafka_offset \
WHERE a.occurred_at >= $1 AND a.occurred_at < $2 AND ($3::text IS NULL OR a.user_id = $3) \
ORDER BY a.occurred_at, a.topic, a.kafka_partition, a.kafka_offset";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn to_json(row: &tokio_postgres::Row) -> Value {
    let b64 = |v: Option<&[u8]>| v.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let details: JsonText<'_> = row.get(5);
    json!({
        "eventId": row.get::<_, &str>(0),
        "timestamp": rfc3339(row.get(1)),
        "userId": row.get::<_, &str>(2),
        "action": row.get::<_, &str>(3),
        "resource": row.get::<_, &str>(4),
        "details": serde_json::from_str::<Value>(details.0).unwrap_or(Value::String(details.0.to_string())),
        "ipAddress": row.get::<_, Option<&str>>(6),
        "userAgent": row.get::<_, Option<&str>>(7),
        "sessionId": row.get::<_, Option<&str>>(8),
        "valueFormat": row.get::<_, &str>(9),
        "topic": row.get::<_, &str>(10),
        "partition": row.get::<_, i32>(11),
        "offset": row.get::<_, i64>(12),
        "kafkaTimestamp": row.get::<_, Option<DateTime<Utc>>>(13).map(rfc3339),
        "recordKeyBase64": b64(row.get(14)),
        "recordValueBase64": b64(row.get(15)),
        "chainSeq": row.get::<_, i64>(16),
        "consumedAt": rfc3339(row.get(17)),
        "prevHash": hex::encode(row.get::<_, &[u8]>(18)),
        "hash": hex::encode(row.get::<_, &[u8]>(19)),
    })
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes the audit events with `from <= timestamp < to` (and of `user`, if
/// given) to `out`; returns the number of rows.
pub async fn export(
    client: &Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    user: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let params: [&(dyn ToSql + Sync); 3] = [&from, &to, &user];
    let rows = client.query_raw(QUERY, params).await?;
    pin_mut!(rows);
    let mut n = 0;
    match format {
        Format::Jsonl => {
            while let Some(row) = rows.try_next().await? {
                serde_json::to_writer(&mut *out, &to_json(&row))?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(COLUMNS)?;
            while let Some(row) = rows.try_next().await? {
                let value = to_json(&row);
                w.write_record(COLUMNS.iter().map(|c| csv_field(&value[*c])))?;
                n += 1;
            }
            w.flush()?;
        }
    }
    out.flush()?;
    Ok(n)
}

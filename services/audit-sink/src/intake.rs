//! From a consumed record to the typed row it is stored as: which table a
//! topic feeds, decoding (Confluent Avro or the seed's JSON) and the mapping
//! of the seed's fields onto columns.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use dora_kafka::{HandlerError, Record};
use dora_schema::{decode_body, decode_json, framing, AuditEvent, AvroRecord, Codec, CompiledSchema, ComplianceReport, Framing, SchemaError, HEADER_LEN};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::chain::{AuditColumns, Hash, ReportColumns, Row};

/// Which table a topic's records go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `AuditEvent` -> `audit.audit_events`.
    Audit,
    /// `ComplianceReport` -> `audit.compliance_reports`.
    Report,
}

/// The topics the sink reads, by table.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    audit: HashSet<String>,
    report: HashSet<String>,
}

impl Topics {
    /// Audit-event topics and report topics.
    pub fn new(audit: &[String], report: &[String]) -> Self {
        Self {
            audit: audit.iter().cloned().collect(),
            report: report.iter().cloned().collect(),
        }
    }

    /// Every topic, for the subscription.
    pub fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = self.audit.iter().chain(&self.report).cloned().collect();
        v.sort();
        v
    }

    /// The table `topic` feeds.
    pub fn kind(&self, topic: &str) -> Option<Kind> {
        if self.audit.contains(topic) {
            Some(Kind::Audit)
        } else if self.report.contains(topic) {
            Some(Kind::Report)
        } else {
            None
        }
    }
}

/// The Avro writer schema of stored values, as `audit.writer_schemas` keeps
/// it: the registry's id, the definition (enough to decode without the
/// registry) and its SHA-256, which each link of a stored row hashes.
#[derive(Debug, PartialEq, Eq)]
pub struct WriterSchema {
    /// The registry's schema id (from the value's header).
    pub id: u32,
    /// SHA-256 of `definition`.
    pub digest: Hash,
    /// [`CompiledSchema::definition`] of the writer schema.
    pub definition: String,
}

impl WriterSchema {
    /// The writer schema `definition` registered as `id`.
    pub fn new(id: u32, definition: String) -> Self {
        Self { id, digest: Sha256::digest(definition.as_bytes()).into(), definition }
    }
}

/// Writer schemas by registry id, for the life of the process (a process
/// talks to one registry, whose ids never change meaning).
static WRITERS: RwLock<Option<HashMap<u32, Arc<WriterSchema>>>> = RwLock::new(None);

async fn writer_schema(codec: &Codec, id: u32) -> Result<Arc<WriterSchema>, SchemaError> {
    if let Some(w) = WRITERS.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|m| m.get(&id)) {
        return Ok(w.clone());
    }
    let w = Arc::new(WriterSchema::new(id, codec.writer_definition(id).await?));
    let mut all = WRITERS.write().unwrap_or_else(|p| p.into_inner());
    Ok(all.get_or_insert_with(HashMap::new).entry(id).or_insert(w).clone())
}

/// A record decoded into the row it will be stored as.
#[derive(Debug)]
pub struct Item<'r> {
    /// The consumed record.
    pub record: &'r Record,
    /// Its typed columns.
    pub row: Row,
    /// The writer schema of an Avro value (`None`: the seed's JSON).
    pub writer: Option<Arc<WriterSchema>>,
}

/// Decodes `record` into its row. Registry outages are retryable; anything
/// undecodable, a tombstone or a timestamp outside what PostgreSQL stores is
/// permanent (dead-lettered with the reason).
pub async fn decode<'r>(
    codec: &Codec,
    topics: &Topics,
    record: &'r Record,
) -> Result<Item<'r>, HandlerError> {
    let Some(bytes) = record.payload.as_deref() else {
        return Err(HandlerError::rejected("Tombstone", "record has no value"));
    };
    let kind = topics.kind(&record.topic).ok_or_else(|| {
        HandlerError::rejected("UnknownTopic", format!("no table for topic {}", record.topic))
    })?;
    let (format, id) = match framing(bytes)? {
        Framing::Avro { id } => ("avro", Some(id)),
        Framing::LegacyJson => ("json", None),
    };
    let row = match kind {
        Kind::Audit => {
            let e: AuditEvent = codec.decode(&record.topic, bytes).await?;
            Row::Audit(audit_columns(e, format)?)
        }
        Kind::Report => {
            let r: ComplianceReport = codec.decode(&record.topic, bytes).await?;
            Row::Report(report_columns(r, format)?)
        }
    };
    let writer = match id {
        Some(id) => Some(writer_schema(codec, id).await?),
        None => None,
    };
    Ok(Item { record, row, writer })
}

/// The typed row a stored value decodes to, without the registry: Avro with
/// `writer` (the schema recorded for it), JSON as the seed writes it. What
/// `verify` checks a row's typed columns against.
pub fn row_of(kind: Kind, value: &[u8], writer: Option<&CompiledSchema>) -> Result<Row, String> {
    let (format, body) = match (framing(value).map_err(|e| e.to_string())?, writer) {
        (Framing::LegacyJson, _) => ("json", None),
        (Framing::Avro { .. }, Some(w)) => ("avro", Some((w, &value[HEADER_LEN..]))),
        (Framing::Avro { id }, None) => return Err(format!("no writer schema for schema id {id}")),
    };
    let reason = |e: HandlerError| e.message().to_string();
    Ok(match kind {
        Kind::Audit => Row::Audit(audit_columns(decode_stored(value, body)?, format).map_err(reason)?),
        Kind::Report => Row::Report(report_columns(decode_stored(value, body)?, format).map_err(reason)?),
    })
}

/// A stored value as `T`: its Avro body with the recorded writer schema, or the seed's JSON.
fn decode_stored<T: AvroRecord + DeserializeOwned>(value: &[u8], body: Option<(&CompiledSchema, &[u8])>) -> Result<T, String> {
    match body {
        Some((writer, body)) => decode_body(writer, body),
        None => decode_json(value),
    }
    .map_err(|e| e.to_string())
}

/// Epoch milliseconds -> microseconds within PostgreSQL's and chrono's range.
pub fn micros(field: &str, ms: i64) -> Result<i64, HandlerError> {
    ms.checked_mul(1000)
        .filter(|us| chrono::DateTime::from_timestamp_micros(*us).is_some())
        .ok_or_else(|| {
            HandlerError::rejected("InvalidTimestamp", format!("{field} {ms} ms is out of range"))
        })
}

/// A JSON value as compact text: the bytes `Value`'s `Display` writes, without its `fmt` detour.
fn json_text(v: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(128);
    // Writing a `Value` to a `Vec` cannot fail (its keys are strings).
    let _ = serde_json::to_writer(&mut out, v);
    String::from_utf8(out).unwrap_or_default()
}

fn audit_columns(e: AuditEvent, format: &str) -> Result<AuditColumns, HandlerError> {
    Ok(AuditColumns {
        occurred_at_us: micros("timestamp", e.timestamp)?,
        details: json_text(&e.details),
        event_id: e.event_id,
        user_id: e.user_id,
        action: e.action,
        resource: e.resource,
        ip_address: e.ip_address,
        user_agent: e.user_agent,
        session_id: e.session_id,
        value_format: format.to_string(),
    })
}

fn report_columns(r: ComplianceReport, format: &str) -> Result<ReportColumns, HandlerError> {
    Ok(ReportColumns {
        reported_at_us: micros("timestamp", r.timestamp)?,
        data: json_text(&r.data),
        report_id: r.report_id,
        organization_id: r.organization_id,
        report_type: r.report_type.as_str().to_string(),
        risk_score: r.risk_score,
        risk_level: r.risk_level.map(|l| l.as_str().to_string()),
        version: r.version,
        value_format: format.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_tables() {
        let t = Topics::new(&["ua".into()], &["gap".into(), "risk".into()]);
        assert_eq!(t.kind("ua"), Some(Kind::Audit));
        assert_eq!(t.kind("risk"), Some(Kind::Report));
        assert_eq!(t.kind("other"), None);
        assert_eq!(t.all(), vec!["gap", "risk", "ua"]);
    }

    #[test]
    fn json_columns_are_the_text_display_writes() {
        let v = serde_json::json!({"z": 1, "a": [1.5, -0.0, "caf\u{e9} \"q\"\n"], "n": null, "o": {}});
        assert_eq!(json_text(&v), v.to_string());
    }

    #[test]
    fn timestamps_outside_the_range_are_rejected() {
        assert_eq!(micros("t", 1_795_771_815_123).unwrap(), 1_795_771_815_123_000);
        assert!(micros("t", i64::MAX).is_err());
        assert!(!micros("t", i64::MAX / 1000).unwrap_err().is_retryable());
    }
}

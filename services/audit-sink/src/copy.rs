//! The binary COPY writers of a batch: rows into a table (the target
//! itself on the direct path, a staging table on the staged path) and chain
//! links into `audit.chain`.

use std::pin::pin;

use chrono::{DateTime, Utc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Transaction};

use crate::chain::{Hash, Link, Row};
use crate::intake::Item;
use crate::sqltypes::{timestamp, JsonText};

/// Columns of `audit.audit_events`, in COPY order.
pub const AUDIT_COLUMNS: &str = "event_id, occurred_at, user_id, action, resource, details, \
    ip_address, user_agent, session_id, value_format, \
    topic, kafka_partition, kafka_offset, kafka_timestamp, record_key, record_value";
const AUDIT_TYPES: &[Type] = &[
    Type::TEXT, Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::TEXT, Type::JSON,
    Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::INT4, Type::INT8, Type::TIMESTAMPTZ, Type::BYTEA, Type::BYTEA,
];
/// Columns of `audit.compliance_reports`, in COPY order.
pub const REPORT_COLUMNS: &str = "report_id, organization_id, reported_at, report_type, \
    risk_score, risk_level, data, version, value_format, \
    topic, kafka_partition, kafka_offset, kafka_timestamp, record_key, record_value";
const REPORT_TYPES: &[Type] = &[
    Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::TEXT,
    Type::FLOAT8, Type::TEXT, Type::JSON, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::INT4, Type::INT8, Type::TIMESTAMPTZ, Type::BYTEA, Type::BYTEA,
];
/// Columns of `audit.chain`, in COPY order.
pub const CHAIN_COLUMNS: &str = "topic, kafka_partition, seq, kafka_offset, outcome, entity_id, \
    reason, consumed_at, kafka_timestamp, record_key, record_value, prev_hash, hash, format";
const CHAIN_TYPES: &[Type] = &[
    Type::TEXT, Type::INT4, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT,
    Type::TEXT, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::BYTEA, Type::BYTEA, Type::BYTEA, Type::BYTEA,
    Type::INT2,
];

/// The Kafka timestamp of `r` in microseconds, when PostgreSQL can store it.
pub fn kafka_micros(r: &dora_kafka::Record) -> Option<i64> {
    r.timestamp
        .and_then(|ms| ms.checked_mul(1000))
        .filter(|us| DateTime::from_timestamp_micros(*us).is_some())
}

/// Binary COPY of the audit events among `items` into `table` (the target
/// table on the direct path, the staging table on the staged path).
pub async fn copy_audits(tx: &Transaction<'_>, table: &str, items: &[&Item<'_>]) -> Result<(), Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({AUDIT_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await?;
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
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Binary COPY of the compliance reports among `items` into `table`.
pub async fn copy_reports(tx: &Transaction<'_>, table: &str, items: &[&Item<'_>]) -> Result<(), Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({REPORT_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await?;
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
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Appends links with binary COPY. A link whose record became a row carries
/// no copy of the record (it is in the row).
pub async fn copy_links(tx: &Transaction<'_>, links: &[(Link<'_>, Hash, Hash)]) -> Result<(), Error> {
    let sink = tx
        .copy_in(&format!("COPY audit.chain ({CHAIN_COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, CHAIN_TYPES));
    for (l, prev, hash) in links {
        let own_copy = l.row.is_none();
        let consumed: DateTime<Utc> = timestamp(l.consumed_at_us);
        let kafka_ts = l.kafka_timestamp_us.filter(|_| own_copy).map(timestamp);
        let key = l.key.filter(|_| own_copy);
        let value = l.value.filter(|_| own_copy);
        let (prev, hash): (&[u8], &[u8]) = (prev, hash);
        let format = l.format.number();
        let values: [&(dyn ToSql + Sync); 14] = [
            &l.topic, &l.partition, &l.seq, &l.offset, &l.outcome.as_str(), &l.entity_id,
            &l.reason, &consumed, &kafka_ts, &key, &value, &prev, &hash, &format,
        ];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}

//! The one consume loop of the platform, its settings, the record a handler
//! sees, and the handler traits of its three modes (per message, batch,
//! consume-transform-produce in a transaction).
//!
//! Guarantees, whatever the mode:
//!
//! - an offset is committed only after its record was processed or
//!   dead-lettered; commits are batched by count and time, flushed on
//!   partition revoke and on shutdown, never ahead of work;
//! - handlers run only between polls, so no work is in flight when librdkafka
//!   revokes partitions (its rebalance callback runs inside a poll); records
//!   buffered for a batch from a revoked partition are dropped unprocessed;
//! - a [`HandlerError::Retryable`] pauses the record's partition, rewinds it to
//!   that record and retries after the [`RetryPolicy`](crate::RetryPolicy)'s
//!   backoff; nothing past it is processed, committed or dead-lettered;
//! - a [`HandlerError::Permanent`] writes a `DeadLetter` to `<topic>-dlq` with
//!   the original bytes, key, headers, partition and offset, then commits and
//!   moves on;
//! - the processing span of each record is a child of the producer's span
//!   (W3C `traceparent` header).

mod context;
mod dead_letter;
mod engine;

use std::future::Future;

use serde::{Deserialize, Serialize};

pub use dead_letter::{dead_letter_of, DeadLetterEncoder};
pub use engine::{ConsumeError, ConsumeLoop, StartAt};

use crate::producer::OutboundRecord;
use crate::{KafkaError, KafkaSettings, RetryPolicy};

/// Consumer settings (a service's `consumer` section). Defaults follow the seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConsumerSettings {
    /// `group.id`. Required.
    pub group_id: String,
    /// `auto.offset.reset` for a group without committed offsets. Default `earliest` (the seed's).
    pub auto_offset_reset: String,
    /// `isolation.level`. Default `read_committed` (librdkafka's; kafka-python's is `read_uncommitted`).
    pub isolation_level: String,
    /// `fetch.min.bytes`. Default 1024 (the seed's; librdkafka's is 1).
    pub fetch_min_bytes: u32,
    /// `fetch.wait.max.ms`. Default 500 (the seed's and librdkafka's).
    pub fetch_max_wait_ms: u32,
    /// `session.timeout.ms`. Default 45000 (librdkafka's; kafka-python's is 10000).
    pub session_timeout_ms: u32,
    /// Largest batch handed to a batch or transactional handler (the seed's
    /// `max_poll_records`). Default 100.
    pub max_batch_records: usize,
    /// Longest wait to fill a batch, milliseconds. Default 500 (the seed's `fetch_max_wait_ms`).
    pub max_batch_wait_ms: u64,
    /// Commit after this many processed records. Default 500.
    pub commit_every_records: u64,
    /// Commit at least this often while records are processed, milliseconds. Default 1000.
    pub commit_interval_ms: u64,
    /// How long a SIGTERM drain may take before the loop gives up on in-flight
    /// work (which is then redelivered), milliseconds. Default 20000.
    pub shutdown_deadline_ms: u64,
    /// `/readyz` reports the consumer stuck when one record has been in a
    /// handler this long, milliseconds. Default 60000.
    pub stuck_after_ms: u64,
    /// `statistics.interval.ms`: how often `kafka_consumer_lag` is refreshed. Default 1000.
    pub lag_interval_ms: u32,
    /// Backoff for retryable handler errors.
    pub retry: RetryPolicy,
    /// `transactional.id` of the consume-transform-produce mode's producer;
    /// must be stable across restarts of one instance and unique between
    /// instances. Default: none (the mode refuses to start without it).
    pub transactional_id: Option<String>,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: String::new(),
            auto_offset_reset: "earliest".into(),
            isolation_level: "read_committed".into(),
            fetch_min_bytes: 1024,
            fetch_max_wait_ms: 500,
            session_timeout_ms: 45_000,
            max_batch_records: 100,
            max_batch_wait_ms: 500,
            commit_every_records: 500,
            commit_interval_ms: 1000,
            shutdown_deadline_ms: 20_000,
            stuck_after_ms: 60_000,
            lag_interval_ms: 1000,
            retry: RetryPolicy::default(),
            transactional_id: None,
        }
    }
}

/// librdkafka keys the consumer settings own; `kafka.extra` may not set them.
const CONSUMER_OWNED_KEYS: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "session.timeout.ms",
    "statistics.interval.ms",
    "enable.partition.eof",
];

impl ConsumerSettings {
    /// The consumer `ClientConfig`: connection settings, no auto-commit, and these settings.
    pub fn client_config(
        &self,
        kafka: &KafkaSettings,
    ) -> Result<rdkafka::ClientConfig, KafkaError> {
        if self.group_id.trim().is_empty() {
            return Err(KafkaError::Config("consumer.group_id is empty".into()));
        }
        let mut cfg = kafka.client_config_owning(CONSUMER_OWNED_KEYS)?;
        cfg.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("isolation.level", &self.isolation_level)
            .set("fetch.min.bytes", self.fetch_min_bytes.to_string())
            .set("fetch.wait.max.ms", self.fetch_max_wait_ms.to_string())
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("statistics.interval.ms", self.lag_interval_ms.to_string())
            .set("enable.partition.eof", "false");
        Ok(cfg)
    }

    pub(crate) fn read_committed(&self) -> bool {
        self.isolation_level == "read_committed"
    }
}

/// One header of a consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value (`None` for a null value).
    pub value: Option<Vec<u8>>,
}

/// A consumed record, as the handler sees it: raw bytes, decoded by the
/// handler (usually with `dora_schema::Codec::decode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
    /// Record timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
}

impl Record {
    /// The value bytes (empty for a tombstone).
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// The key as UTF-8, when it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The first header named `name`, as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// What a handler says about a record it could not process.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency is unavailable (broker, registry, database): retry the
    /// same record after a backoff; never dead-letter it.
    #[error("{error_type}: {message}")]
    Retryable {
        /// Short name of the failure (the `error_type` label, the DLQ's `errorType`).
        error_type: String,
        /// What happened.
        message: String,
    },
    /// The record itself is bad (undecodable, invalid, rejected): dead-letter
    /// it and move on.
    #[error("{error_type}: {message}")]
    Permanent {
        /// Short name of the failure.
        error_type: String,
        /// What happened.
        message: String,
    },
}

fn short_type_name<E>() -> String {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

impl HandlerError {
    /// A retryable error named after `E`'s type (as the seed's `type(e).__name__`).
    pub fn retryable<E: std::fmt::Display>(error: E) -> Self {
        Self::Retryable {
            error_type: short_type_name::<E>(),
            message: error.to_string(),
        }
    }

    /// A permanent error named after `E`'s type.
    pub fn permanent<E: std::fmt::Display>(error: E) -> Self {
        Self::Permanent {
            error_type: short_type_name::<E>(),
            message: error.to_string(),
        }
    }

    /// A permanent error with an explicit type name.
    pub fn rejected(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// A retryable error with an explicit type name.
    pub fn unavailable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retryable {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// True for [`HandlerError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// The error's type name.
    pub fn error_type(&self) -> &str {
        match self {
            Self::Retryable { error_type, .. } | Self::Permanent { error_type, .. } => error_type,
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. } | Self::Permanent { message, .. } => message,
        }
    }
}

impl From<dora_schema::SchemaError> for HandlerError {
    /// A registry outage is retryable; an undecodable or invalid value is permanent.
    fn from(e: dora_schema::SchemaError) -> Self {
        if e.is_retryable() {
            Self::retryable(e)
        } else {
            Self::permanent(e)
        }
    }
}

/// Per-message mode: one record at a time, in partition order.
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. The loop runs it inside a span (topic, partition,
    /// offset, key) whose parent is the producer's span.
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Batch mode: up to `max_batch_records` records, gathered for at most
/// `max_batch_wait_ms`.
pub trait BatchHandler: Send + Sync + 'static {
    /// Processes the batch as a whole. On error the loop falls back to
    /// [`handle_one`](Self::handle_one) for each record (as the seed does), so
    /// one bad item does not fail the others.
    fn handle_batch(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Processes one record of a failed batch.
    fn handle_one(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Consume-transform-produce mode: each batch of input records, their outputs
/// and their offsets are committed in one Kafka transaction.
pub trait Transform: Send + Sync + 'static {
    /// The records to produce for `record` (possibly none).
    fn transform(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send;

    /// Called after the batch's outputs were acknowledged and before the
    /// transaction commits; an error aborts the transaction and the batch is
    /// retried. Default: nothing.
    fn before_commit(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }
}

impl<H: Handler> Handler for std::sync::Arc<H> {
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(record)
    }
}

impl<B: BatchHandler> BatchHandler for std::sync::Arc<B> {
    fn handle_batch(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle_batch(records)
    }
    fn handle_one(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle_one(record)
    }
}

impl<T: Transform> Transform for std::sync::Arc<T> {
    fn transform(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send {
        (**self).transform(record)
    }
    fn before_commit(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).before_commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auto_commit_and_the_seeds_fetch_settings() {
        let s = ConsumerSettings {
            group_id: "g".into(),
            ..Default::default()
        };
        let cfg = s.client_config(&KafkaSettings::default()).unwrap();
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
        assert_eq!(cfg.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cfg.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(cfg.get("fetch.min.bytes"), Some("1024"));
        assert!(ConsumerSettings::default()
            .client_config(&KafkaSettings::default())
            .is_err());
        let mut kafka = KafkaSettings::default();
        kafka
            .extra
            .insert("enable.auto.commit".into(), "true".into());
        assert!(s.client_config(&kafka).is_err());
    }

    #[test]
    fn error_type_is_the_short_type_name() {
        let e = HandlerError::permanent(std::fmt::Error);
        assert_eq!(e.error_type(), "Error");
        assert!(!e.is_retryable());
        let e = HandlerError::retryable("db down".to_string());
        assert_eq!(e.error_type(), "String");
        assert!(e.is_retryable());
    }
}

//! What the producer sends and returns: the outgoing record, the delivery
//! to await, where a record landed, why it was not delivered, and the
//! platform's record headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use serde::Serialize;

/// Header naming the service that produced a record.
pub const PRODUCER_HEADER: &str = "producer";
/// Header carrying the payload's content type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Content type of Confluent-framed Avro payloads.
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.confluent.avro";

/// Why a record was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The producer hit a fatal error (e.g. fenced or out of sequence); it
    /// cannot produce again and the service was marked not ready.
    #[error("producer is in a fatal state: {0}")]
    Fatal(String),
    /// The value could not be encoded (schema registry down or invalid value).
    #[error("encode: {message}")]
    Encode {
        /// What went wrong.
        message: String,
        /// Whether encoding again later may succeed (registry unavailable).
        retryable: bool,
    },
    /// The brokers did not acknowledge the record in time, or rejected it.
    #[error("delivery to {topic} failed: {source}")]
    Delivery {
        /// Target topic.
        topic: String,
        /// librdkafka's error.
        source: RdKafkaError,
    },
}

impl ProduceError {
    /// The value for `topic` could not be encoded (counted in
    /// `kafka_producer_errors_total`).
    pub fn encoding(topic: &str, e: &dora_schema::SchemaError) -> Self {
        let err = Self::Encode {
            message: e.to_string(),
            retryable: e.is_retryable(),
        };
        crate::metrics::PRODUCER_ERRORS
            .with_label_values(&[topic, &err.error_type()])
            .inc();
        err
    }

    /// The `error_type` label of `kafka_producer_errors_total`.
    pub fn error_type(&self) -> String {
        match self {
            Self::Fatal(_) => "Fatal".into(),
            Self::Encode { .. } => "Encode".into(),
            Self::Delivery { source, .. } => match source.rdkafka_error_code() {
                Some(code) => format!("{code:?}"),
                None => "Delivery".into(),
            },
        }
    }

    /// True when sending again later may succeed (not fatal, not invalid).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Fatal(_) => false,
            Self::Encode { retryable, .. } => *retryable,
            Self::Delivery { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidRecord
                        | RDKafkaErrorCode::Fatal
                )
            ),
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A record on its way to the brokers: resolves when they acknowledged it (or
/// delivery failed). Enqueue many, then await them, to keep the pipeline full.
#[must_use = "a delivery must be awaited to know the record is durable"]
pub struct Delivery {
    pub(super) inner: Pin<Box<dyn Future<Output = Result<Delivered, ProduceError>> + Send>>,
}

impl Future for Delivery {
    type Output = Result<Delivered, ProduceError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// One outgoing record: raw bytes plus extra headers. The producer adds the
/// trace-context and `producer` headers, unless the record carries headers
/// to write exactly ([`with_exact_headers`](Self::with_exact_headers)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecord {
    /// Target topic.
    pub topic: String,
    /// Key bytes (UTF-8 for every key of the platform).
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub payload: Vec<u8>,
    /// Writes a null value instead of `payload` (a tombstone: compaction
    /// removes the key).
    pub tombstone: bool,
    /// Extra headers, e.g. `content-type`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The partition to write to; `None` lets the partitioner choose by key.
    pub partition: Option<i32>,
    /// Headers written first, exactly as given (order, duplicates, null
    /// values), instead of the producer's own; `headers` follow them.
    pub exact_headers: Option<Vec<crate::consume::RecordHeader>>,
}

impl OutboundRecord {
    /// A record of already-encoded bytes.
    pub fn new(topic: impl Into<String>, key: Option<&str>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key: key.map(|k| k.as_bytes().to_vec()),
            payload,
            tombstone: false,
            headers: Vec::new(),
            partition: None,
            exact_headers: None,
        }
    }

    /// A tombstone for `key`: a null value, which a compacted topic's
    /// cleaner eventually removes together with every earlier record of the key.
    pub fn tombstone(topic: impl Into<String>, key: &str) -> Self {
        Self {
            tombstone: true,
            ..Self::new(topic, Some(key), Vec::new())
        }
    }

    /// `value` encoded with the topic's registered Avro schema, with
    /// `content-type: application/vnd.confluent.avro` (as [`Producer::enqueue`]
    /// writes it), for a transactional output or a batch.
    pub async fn avro<T>(
        codec: &dora_schema::Codec,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<Self, dora_schema::SchemaError>
    where
        T: dora_schema::AvroRecord + Serialize + Sync,
    {
        let payload = codec.encode(topic, value).await?;
        Ok(Self::new(topic, key, payload).with_header(CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Writes to `partition` instead of the one the partitioner chooses.
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Writes `headers` exactly, before [`headers`](Self::headers), and no
    /// trace-context or `producer` header: for a record that must reproduce
    /// another byte-exact (a dead letter's replay).
    pub fn with_exact_headers(mut self, headers: Vec<crate::consume::RecordHeader>) -> Self {
        self.exact_headers = Some(headers);
        self
    }
}

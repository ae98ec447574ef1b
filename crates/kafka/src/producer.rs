//! The one producer factory and the send path: idempotent, acks=all, snappy;
//! trace-context, content-type and producing-service headers on every record;
//! per-topic metrics; deliveries awaited without serialising the hot path. A
//! fatal producer error (fenced, out of sequence) marks the producer's own
//! readiness condition not ready and is recorded for its service, whose
//! consume loops then stop with an error so the process is restarted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dora_telemetry::Readiness;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

use crate::blocking::off_worker;
use crate::{metrics, KafkaError, KafkaSettings};

/// The first fatal producer error of each service in this process.
static FATAL_BY_SERVICE: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// The fatal error a producer of `service` hit, if one did: the service
/// cannot produce reliably any more and must be restarted.
pub(crate) fn fatal_error_in(service: &str) -> Option<String> {
    FATAL_BY_SERVICE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(service)
        .cloned()
}

/// Header naming the service that produced a record.
pub const PRODUCER_HEADER: &str = "producer";
/// Header carrying the payload's content type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Content type of Confluent-framed Avro payloads.
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.confluent.avro";

/// Producer settings (a service's `producer` section). Defaults follow the seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ProducerSettings {
    /// `compression.codec`. Default `snappy` (the seed's `compression_type`).
    pub compression: String,
    /// `batch.size`, bytes per partition batch. Default 16384 (the seed's; librdkafka's is 1000000).
    pub batch_size: u32,
    /// `linger.ms`. Default 10 (the seed's; librdkafka's is 5).
    pub linger_ms: u32,
    /// `message.timeout.ms`: how long librdkafka retries one record before its
    /// delivery fails. Default 30000 (librdkafka's is 300000). This bounds the
    /// seed's `retries=3`: retries are unlimited within this time.
    pub delivery_timeout_ms: u32,
    /// `max.in.flight.requests.per.connection`. Default 5, the most idempotence
    /// allows while still keeping per-partition order.
    pub max_in_flight: u32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            compression: "snappy".into(),
            batch_size: 16384,
            linger_ms: 10,
            delivery_timeout_ms: 30_000,
            max_in_flight: 5,
        }
    }
}

/// librdkafka keys the producer settings own; `kafka.extra` may not set them.
pub(crate) const PRODUCER_OWNED_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "compression.codec",
    "compression.type",
    "batch.size",
    "linger.ms",
    "queue.buffering.max.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "transactional.id",
    "enable.gapless.guarantee",
];

impl ProducerSettings {
    /// The full producer `ClientConfig`: connection settings plus idempotence,
    /// `acks=all` and these settings.
    pub fn client_config(
        &self,
        kafka: &KafkaSettings,
    ) -> Result<rdkafka::ClientConfig, KafkaError> {
        let mut cfg = kafka.client_config_owning(PRODUCER_OWNED_KEYS)?;
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.codec", &self.compression)
            .set("batch.size", self.batch_size.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set(
                "max.in.flight.requests.per.connection",
                self.max_in_flight.to_string(),
            );
        Ok(cfg)
    }
}

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
    inner: Pin<Box<dyn Future<Output = Result<Delivered, ProduceError>> + Send>>,
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
            headers: Vec::new(),
            partition: None,
            exact_headers: None,
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

/// Client context of every producer: records fatal errors and flips readiness.
#[derive(Clone)]
pub(crate) struct ProducerContext {
    fatal: Arc<AtomicBool>,
    reason: Arc<Mutex<String>>,
    readiness: Readiness,
    condition: String,
    service: String,
}

impl ProducerContext {
    fn mark_fatal(&self, reason: String) {
        if !self.fatal.swap(true, Ordering::SeqCst) {
            tracing::error!(reason = %reason, service = %self.service, "fatal producer error; the service must be restarted");
        }
        self.readiness
            .set_not_ready(&self.condition, format!("fatal producer error: {reason}"));
        FATAL_BY_SERVICE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(self.service.clone())
            .or_insert_with(|| reason.clone());
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }
}

impl ClientContext for ProducerContext {
    fn error(&self, error: RdKafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.mark_fatal(reason.to_string());
        } else {
            tracing::warn!(error = %error, reason, "kafka producer client error");
        }
    }
}

/// The platform's producer. Cheap to clone; clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer {
    pub(crate) inner: FutureProducer<ProducerContext>,
    context: ProducerContext,
    service: Arc<str>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Builds an idempotent producer for `service` (also its `client.id` when
    /// `kafka.client_id` is empty). It has a readiness condition of its own,
    /// `kafka-producer <service>` (`#2`, `#3`, ... for the service's next
    /// producers), which a fatal error marks not ready.
    pub fn new(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        service: &str,
        readiness: &Readiness,
    ) -> Result<Self, KafkaError> {
        Self::build(kafka, settings, service, readiness, None)
    }

    /// Builds a transactional producer with `transactional_id` and initialises
    /// its transactions (fencing any earlier instance with the same id).
    /// Blocking: the loop calls it on the blocking pool.
    pub(crate) fn transactional(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        service: &str,
        readiness: &Readiness,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let p = Self::build(kafka, settings, service, readiness, Some(transactional_id))?;
        p.inner
            .init_transactions(timeout)
            .map_err(KafkaError::Client)?;
        Ok(p)
    }

    fn build(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        service: &str,
        readiness: &Readiness,
        transactional_id: Option<&str>,
    ) -> Result<Self, KafkaError> {
        let mut cfg = settings.client_config(kafka)?;
        if kafka.client_id.is_empty() {
            cfg.set("client.id", service);
        }
        let condition = match transactional_id {
            Some(id) => {
                cfg.set("transactional.id", id);
                crate::consume::unique_name(&format!("kafka-producer {service} transactional {id}"))
            }
            None => crate::consume::unique_name(&format!("kafka-producer {service}")),
        };
        let context = ProducerContext {
            fatal: Arc::new(AtomicBool::new(false)),
            reason: Arc::new(Mutex::new(String::new())),
            readiness: readiness.clone(),
            condition,
            service: service.to_string(),
        };
        readiness.set_ready(&context.condition);
        let inner = cfg
            .create_with_context(context.clone())
            .map_err(KafkaError::Client)?;
        Ok(Self {
            inner,
            context,
            service: Arc::from(service),
        })
    }

    /// The producing service's name (the `producer` header).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The fatal error, once the producer hit one.
    pub fn fatal_error(&self) -> Option<String> {
        if !self.context.fatal.load(Ordering::SeqCst) {
            return None;
        }
        let reason = self
            .context
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(
            self.inner
                .client()
                .fatal_error()
                .map(|(_, r)| r)
                .unwrap_or(reason),
        )
    }

    /// Encodes `value` with the topic's registered Avro schema and enqueues it
    /// (with `content-type: application/vnd.confluent.avro`). Returns once the
    /// record is queued; await the [`Delivery`] for the acknowledgement.
    pub async fn enqueue<T>(
        &self,
        codec: &dora_schema::Codec,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<Delivery, ProduceError>
    where
        T: dora_schema::AvroRecord + Serialize + Sync,
    {
        let payload = codec.encode(topic, value).await.map_err(|e| {
            let err = ProduceError::Encode {
                message: e.to_string(),
                retryable: e.is_retryable(),
            };
            metrics::PRODUCER_ERRORS
                .with_label_values(&[topic, &err.error_type()])
                .inc();
            err
        })?;
        let record = OutboundRecord::new(topic, key, payload)
            .with_header(CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE);
        self.enqueue_raw(record).await
    }

    /// [`enqueue`](Self::enqueue) and await the acknowledgement (off the hot path).
    pub async fn send<T>(
        &self,
        codec: &dora_schema::Codec,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<Delivered, ProduceError>
    where
        T: dora_schema::AvroRecord + Serialize + Sync,
    {
        self.enqueue(codec, topic, key, value).await?.await
    }

    /// Enqueues already-encoded bytes and awaits the acknowledgement. Off the
    /// hot path only; on it, enqueue many and await their deliveries together.
    pub async fn send_raw(&self, record: OutboundRecord) -> Result<Delivered, ProduceError> {
        self.enqueue_raw(record).await?.await
    }

    /// Enqueues already-encoded bytes, adding the trace-context headers of the
    /// current span and the `producer` header (or the record's exact headers
    /// instead). Waits (without blocking) while librdkafka's queue is full.
    pub async fn enqueue_raw(&self, record: OutboundRecord) -> Result<Delivery, ProduceError> {
        let topic = record.topic.clone();
        if let Some(reason) = self.fatal_error() {
            metrics::PRODUCER_ERRORS
                .with_label_values(&[topic.as_str(), "Fatal"])
                .inc();
            return Err(ProduceError::Fatal(reason));
        }
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 3);
        match &record.exact_headers {
            Some(exact) => {
                for h in exact {
                    headers = headers.insert(Header {
                        key: &h.key,
                        value: h.value.as_deref(),
                    });
                }
            }
            None => {
                for (name, value) in dora_telemetry::propagation::current_headers() {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    });
                }
                headers = headers.insert(Header {
                    key: PRODUCER_HEADER,
                    value: Some(self.service.as_bytes()),
                });
            }
        }
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let future = loop {
            let mut fr = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(&record.payload)
                .headers(headers.clone());
            if let Some(k) = &record.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(p) = record.partition {
                fr = fr.partition(p);
            }
            match self.inner.send_result(fr) {
                Ok(f) => break f,
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Back-pressure: librdkafka's queue is full until deliveries drain it.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    let err = self.delivery_error(&topic, e);
                    metrics::PRODUCER_ERRORS
                        .with_label_values(&[topic.as_str(), &err.error_type()])
                        .inc();
                    return Err(err);
                }
            }
        };
        let this = self.clone();
        Ok(Delivery {
            inner: Box::pin(async move {
                let result = match future.await {
                    Ok(Ok(d)) => Ok(Delivered {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((e, _))) => Err(this.delivery_error(&topic, e)),
                    Err(_canceled) => Err(ProduceError::Delivery {
                        topic: topic.clone(),
                        source: RdKafkaError::Canceled,
                    }),
                };
                match &result {
                    Ok(_) => {
                        metrics::MESSAGES_SENT
                            .with_label_values(&[topic.as_str()])
                            .inc();
                        metrics::SEND_DURATION
                            .with_label_values(&[topic.as_str()])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    Err(e) => {
                        metrics::PRODUCER_ERRORS
                            .with_label_values(&[topic.as_str(), &e.error_type()])
                            .inc();
                    }
                }
                result
            }),
        })
    }

    fn delivery_error(&self, topic: &str, source: RdKafkaError) -> ProduceError {
        if source.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
            || self.inner.client().fatal_error().is_some()
        {
            let reason = self
                .inner
                .client()
                .fatal_error()
                .map(|(_, r)| r)
                .unwrap_or_else(|| source.to_string());
            self.context.mark_fatal(reason.clone());
            return ProduceError::Fatal(reason);
        }
        ProduceError::Delivery {
            topic: topic.to_string(),
            source,
        }
    }

    /// Waits up to `timeout` for every queued record to be delivered (on the
    /// blocking pool: librdkafka's flush blocks).
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let inner = self.inner.clone();
        off_worker(move || inner.flush(Timeout::After(timeout)))
            .await
            .map_err(KafkaError::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_acks_all_snappy_and_the_seeds_batching() {
        let cfg = ProducerSettings::default()
            .client_config(&KafkaSettings::default())
            .unwrap();
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("compression.codec"), Some("snappy"));
        assert_eq!(cfg.get("batch.size"), Some("16384"));
        assert_eq!(cfg.get("linger.ms"), Some("10"));
        assert_eq!(cfg.get("max.in.flight.requests.per.connection"), Some("5"));
    }

    #[test]
    fn extra_cannot_weaken_the_producer() {
        let mut kafka = KafkaSettings::default();
        kafka.extra.insert("acks".into(), "1".into());
        let err = ProducerSettings::default()
            .client_config(&kafka)
            .unwrap_err()
            .to_string();
        assert!(err.contains("acks"), "{err}");
    }
}

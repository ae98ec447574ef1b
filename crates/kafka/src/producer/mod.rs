//! The one producer factory and the send path: idempotent, acks=all, snappy;
//! trace-context, content-type and producing-service headers on every record;
//! per-topic metrics; deliveries awaited without serialising the hot path,
//! one by one ([`Delivery`]) or many together ([`DeliveryGroup`], one
//! wake-up for all: `completion.rs` routes librdkafka's delivery reports). A
//! fatal producer error (fenced, out of sequence) marks the producer's own
//! readiness condition not ready and is recorded for its service, whose
//! consume loops then stop with an error so the process is restarted.
//! `settings.rs` holds the producer's settings and librdkafka configuration,
//! `outbound.rs` the records, deliveries, errors and headers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_telemetry::Readiness;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::blocking::off_worker;
use crate::{metrics, KafkaError, KafkaSettings};

mod completion;
mod outbound;
mod settings;

use completion::Completion;
pub use completion::DeliveryGroup;

pub use outbound::{
    Delivered, Delivery, OutboundRecord, ProduceError, AVRO_CONTENT_TYPE, CONTENT_TYPE_HEADER,
    PRODUCER_HEADER,
};
pub use settings::ProducerSettings;

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
    pub(crate) inner: ThreadedProducer<ProducerContext>,
    // Behind an Arc: every delivery holds a clone of the producer until its
    // acknowledgement, and the context's strings need not be copied for it.
    context: Arc<ProducerContext>,
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
            context: Arc::new(context),
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
        let record = OutboundRecord::avro(codec, topic, key, value)
            .await
            .map_err(|e| ProduceError::encoding(topic, &e))?;
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
        let started = Instant::now();
        let (tx, acknowledged) = tokio::sync::oneshot::channel();
        self.hand_over_with(&record, Completion::One(tx)).await?;
        let (this, topic) = (self.clone(), record.topic);
        Ok(Delivery {
            inner: Box::pin(async move {
                let result = match acknowledged.await {
                    Ok(Ok(d)) => Ok(d),
                    Ok(Err(e)) => Err(this.delivery_error(&topic, e)),
                    Err(_dropped) => Err(ProduceError::Delivery {
                        topic: topic.clone(),
                        source: RdKafkaError::Canceled,
                    }),
                };
                count_delivery(&topic, started.elapsed(), &result);
                result
            }),
        })
    }

    /// The headers written with `record`: its exact headers, or the trace
    /// context and the `producer` header; then its own extra headers.
    fn headers_of(&self, record: &OutboundRecord) -> OwnedHeaders {
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
        headers
    }

    /// Hands `record` to librdkafka (unless the producer hit a fatal error),
    /// waiting while its queue is full; its delivery report goes to `completion`.
    pub(super) async fn hand_over_with(
        &self,
        record: &OutboundRecord,
        completion: Completion,
    ) -> Result<(), ProduceError> {
        let topic = record.topic.as_str();
        if let Some(reason) = self.fatal_error() {
            metrics::PRODUCER_ERRORS
                .with_label_values(&[topic, "Fatal"])
                .inc();
            return Err(ProduceError::Fatal(reason));
        }
        let mut backoff = Duration::from_millis(1);
        let mut headers = Some(self.headers_of(record));
        let mut completion = Box::new(completion);
        loop {
            let mut br =
                BaseRecord::<[u8], [u8], Box<Completion>>::with_opaque_to(topic, completion);
            br.headers = headers.take();
            if !record.tombstone {
                br = br.payload(&record.payload);
            }
            if let Some(k) = &record.key {
                br = br.key(k.as_slice());
            }
            if let Some(p) = record.partition {
                br = br.partition(p);
            }
            match self.inner.send(br) {
                Ok(()) => return Ok(()),
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), br)) => {
                    // Headers and completion come back with the refused record: no copy per attempt.
                    (headers, completion) = (br.headers, br.delivery_opaque);
                    // Back-pressure: librdkafka's queue is full until deliveries drain it.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    let err = self.delivery_error(topic, e);
                    metrics::PRODUCER_ERRORS
                        .with_label_values(&[topic, &err.error_type()])
                        .inc();
                    return Err(err);
                }
            }
        }
    }

    pub(super) fn delivery_error(&self, topic: &str, source: RdKafkaError) -> ProduceError {
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

/// Counts a delivery's outcome in the per-topic metrics.
fn count_delivery(topic: &str, took: Duration, result: &Result<Delivered, ProduceError>) {
    match result {
        Ok(_) => {
            metrics::MESSAGES_SENT.with_label_values(&[topic]).inc();
            metrics::SEND_DURATION
                .with_label_values(&[topic])
                .observe(took.as_secs_f64());
        }
        Err(e) => {
            metrics::PRODUCER_ERRORS
                .with_label_values(&[topic, &e.error_type()])
                .inc();
        }
    }
}

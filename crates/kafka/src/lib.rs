//! The Kafka runtime every service uses: settings -> rdkafka clients, the one
//! producer factory, the one consume loop, the shared audit producer, topic
//! catalog and provisioning, and the connection check the boot sequence
//! (`dora-service`) runs. The only crate that builds rdkafka clients.
//!
//! # The seed's kafka-python settings in librdkafka
//!
//! | kafka-python (seed) | librdkafka (here) | why |
//! |---|---|---|
//! | `bootstrap_servers` | `bootstrap.servers` (`kafka.bootstrap_servers`) | same meaning |
//! | `security_protocol='SASL_SSL'` | `security.protocol=sasl_ssl` (`kafka.security_protocol`) | `PLAINTEXT` locally, `SASL_SSL` on real clusters; certificate verification always on, hostname checked |
//! | `sasl_mechanism='SCRAM-SHA-256'` | `sasl.mechanism` (`kafka.sasl_mechanism`) | SCRAM-SHA-256 or -512; Strimzi's KafkaUser issues 512, the default |
//! | `sasl_plain_username` / `sasl_plain_password` | `sasl.username` / `sasl.password` | password from `DORA_KAFKA__SASL_PASSWORD_FILE`, a secret type that never prints |
//! | (CA of the cluster) | `ssl.ca.location` (`kafka.ssl_ca_location`) | the seed relied on the system store; Strimzi's cluster CA is private |
//! | `enable_idempotence=True` | `enable.idempotence=true` (fixed) | no duplicates or reordering on retry; a fatal idempotence error stops the service's consume loops (exit non-zero, restart) |
//! | `acks='all'` | `acks=all` (fixed) | required by idempotence; `kafka.extra` may not override it |
//! | `retries=3` | not set; bounded by `message.timeout.ms` (`producer.delivery_timeout_ms`, 30 s) | with idempotence librdkafka retries without limit inside the delivery timeout; a fixed count would fail records during a short leader election |
//! | `max_in_flight_requests_per_connection=1` | `max.in.flight.requests.per.connection=5` | librdkafka's idempotent producer keeps per-partition order with up to 5 in flight, so 1 only costs throughput |
//! | `value_serializer=json.dumps` | `dora_schema::Codec` (Avro, Confluent wire format) | schemas in the registry; consumers still read the seed's JSON |
//! | `key_serializer=str.encode` | UTF-8 key bytes | same bytes, same partitioning |
//! | `compression_type='snappy'` | `compression.codec=snappy` (`producer.compression`) | same |
//! | `batch_size=16384` | `batch.size=16384` (`producer.batch_size`) | same unit (bytes per partition batch); librdkafka's own default is 1 MB |
//! | `linger_ms=10` | `linger.ms=10` (`producer.linger_ms`) | same |
//! | `future.get(timeout=10)` | awaited [`producer::Delivery`] | enqueue many, await together: no serialised hot path |
//! | `group_id` | `group.id` (`consumer.group_id`) | same |
//! | `auto_offset_reset='earliest'` | `auto.offset.reset=earliest` | same |
//! | `enable_auto_commit=False` | `enable.auto.commit=false`, `enable.auto.offset.store=false` (fixed) | the loop commits explicit positions after processing, batched; librdkafka's offset store would otherwise advance on poll |
//! | `value_deserializer=json.loads` | the handler decodes [`consume::Record`] bytes with `dora_schema::Codec` | Avro or legacy JSON; undecodable -> dead letter |
//! | `fetch_min_bytes=1024` | `fetch.min.bytes=1024` (`consumer.fetch_min_bytes`) | same |
//! | `fetch_max_wait_ms=500` | `fetch.wait.max.ms=500` (`consumer.fetch_max_wait_ms`) | same |
//! | `max_poll_records=100` | loop batch size `consumer.max_batch_records=100` | librdkafka has no such setting: it prefetches (`queued.min.messages`) and hands out one record per poll; the loop gathers batches itself |
//! | (kafka-python `session_timeout_ms=10000`) | `session.timeout.ms=45000` | librdkafka's default; heartbeats come from librdkafka's own thread, so a slow handler never costs the session; it is bounded by `max.poll.interval.ms` (`consumer.max_poll_interval_ms`, 300 s), which the drain deadline and stuck-after time must stay below |
//! | (kafka-python `isolation_level='read_uncommitted'`) | `isolation.level=read_committed` | aborted transactional outputs must not be read |
//! | `RetryHandler(max_retries=3, base_delay=1.0)` | [`RetryPolicy`] (`consumer.retry`) | same formula, delay capped at `max_delay_ms`; the loop pauses the partition instead of sleeping |

pub mod audit;
pub mod baseline;
mod blocking;
pub mod client;
pub mod consume;
pub mod inspect;
pub mod metrics;
pub mod producer;
pub mod retry;
pub mod settings;
pub mod tail;
pub mod topics;

pub use client::{check_connection, ErrorRecordingContext};
pub use consume::{
    BatchHandler, ConsumeError, ConsumeLoop, ConsumerSettings, Handler, HandlerError, Record,
    StartAt, Transform,
};
pub use producer::{
    Delivered, Delivery, DeliveryGroup, OutboundRecord, ProduceError, Producer, ProducerSettings,
};
pub use retry::RetryPolicy;
pub use settings::{KafkaSettings, SaslMechanism, SecurityProtocol};

/// Errors of the Kafka runtime.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Settings are missing or contradict each other (the message names the setting).
    #[error("kafka settings: {0}")]
    Config(String),
    /// The brokers rejected our credentials.
    #[error("kafka authentication failed: {0}")]
    Authentication(String),
    /// The brokers could not be reached or the TLS handshake failed.
    #[error("kafka unreachable: {0}")]
    Unreachable(String),
    /// An admin operation failed.
    #[error("kafka admin: {0}")]
    Admin(String),
    /// librdkafka refused to create a client or an operation failed.
    #[error("kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
}

//! Prometheus metrics of the Kafka runtime, under the seed's names, registered
//! once in the default registry that the admin server exposes.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec,
    IntCounterVec, IntGaugeVec,
};

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `kafka_messages_sent_total{topic}`: records the brokers acknowledged.
pub static MESSAGES_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_messages_sent_total",
        "Total messages sent",
        &["topic"]
    )
    .expect("metric")
});

/// `kafka_send_duration_seconds{topic}`: enqueue to acknowledgement.
pub static SEND_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "kafka_send_duration_seconds",
        "Message send duration",
        &["topic"],
        DURATION_BUCKETS.to_vec()
    )
    .expect("metric")
});

/// `kafka_producer_errors_total{topic,error_type}`.
pub static PRODUCER_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_producer_errors_total",
        "Producer errors",
        &["topic", "error_type"]
    )
    .expect("metric")
});

/// `kafka_messages_processed_total{topic}`: records a handler processed successfully.
pub static MESSAGES_PROCESSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_messages_processed_total",
        "Total messages processed",
        &["topic"]
    )
    .expect("metric")
});

/// `kafka_processing_duration_seconds{topic}`: one handler call.
pub static PROCESSING_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "kafka_processing_duration_seconds",
        "Message processing duration",
        &["topic"],
        DURATION_BUCKETS.to_vec()
    )
    .expect("metric")
});

/// `kafka_consumer_errors_total{topic,error_type}`.
pub static CONSUMER_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_consumer_errors_total",
        "Consumer errors",
        &["topic", "error_type"]
    )
    .expect("metric")
});

/// `kafka_consumer_lag{topic,partition}`: high watermark (last stable offset
/// with `read_committed`) minus the position of the next record to process.
pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "kafka_consumer_lag",
        "Consumer lag",
        &["topic", "partition"]
    )
    .expect("metric")
});

/// `kafka_consumer_rebalances_total{group,kind}` (`assign`, `revoke`, `error`).
pub static REBALANCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_consumer_rebalances_total",
        "Consumer group rebalances",
        &["group", "kind"]
    )
    .expect("metric")
});

/// `kafka_dlq_messages_total{topic}`: records dead-lettered from `topic`.
pub static DLQ_WRITES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_dlq_messages_total",
        "Messages written to a dead-letter topic",
        &["topic"]
    )
    .expect("metric")
});

/// `kafka_consumer_commits_total{group,result}` (`ok`, `error`).
pub static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "kafka_consumer_commits_total",
        "Offset commits",
        &["group", "result"]
    )
    .expect("metric")
});

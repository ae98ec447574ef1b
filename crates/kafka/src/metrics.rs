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

/// The `kafka_consumer_lag` a consume loop of this process reports for
/// `topic`/`partition`: `None` unless a loop owns the partition and knows its
/// end (the figure is dropped when the partition is revoked). It counts
/// records only, never transaction markers or aborted records (the loop takes
/// the consumer's position into account). For a service that judges
/// something by how far it has processed a partition, e.g. agent-gateway's
/// liveness check.
pub fn consumer_lag(topic: &str, partition: i32) -> Option<i64> {
    use prometheus::core::Collector;
    let partition = partition.to_string();
    let families = CONSUMER_LAG.collect();
    families
        .iter()
        .flat_map(|f| f.get_metric())
        .find(|m| {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            label("topic").as_deref() == Some(topic)
                && label("partition").as_deref() == Some(partition.as_str())
        })
        .map(|m| m.get_gauge().get_value() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_lag_is_none_until_reported_and_after_removal() {
        let topic = "metrics-test-consumer-lag";
        assert_eq!(consumer_lag(topic, 4), None);
        CONSUMER_LAG.with_label_values(&[topic, "4"]).set(17);
        assert_eq!(consumer_lag(topic, 4), Some(17));
        assert_eq!(consumer_lag(topic, 5), None);
        CONSUMER_LAG.remove_label_values(&[topic, "4"]).unwrap();
        assert_eq!(consumer_lag(topic, 4), None);
    }
}

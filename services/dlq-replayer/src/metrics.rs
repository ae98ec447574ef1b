//! dlq-replayer's own Prometheus metrics, per dead-letter topic: the letters
//! waiting and the oldest one's age (what an on-call person pages on), the
//! letters replayed and parked (within the topic's retention, folded from
//! its markers, so a restart does not reset them), and this instance's own
//! automatic replays and parkings. The Kafka metrics come from the runtime.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};

use crate::automatic::TopicFigures;
use crate::letter::Action;

fn gauge(name: &str, help: &str) -> Option<IntGaugeVec> {
    register_int_gauge_vec!(name, help, &["topic"]).ok()
}

static WAITING: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        "dlq_records_waiting",
        "Dead letters neither replayed nor parked, by dead-letter topic",
    )
});

static OLDEST_AGE: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        "dlq_oldest_record_age_seconds",
        "Age of the oldest waiting dead letter (0 when none waits), by dead-letter topic",
    )
});

static REPLAYED: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        "dlq_records_replayed",
        "Dead letters replayed (by anyone, within the topic's retention), by dead-letter topic",
    )
});

static PARKED: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        "dlq_records_parked",
        "Dead letters parked (by anyone, within the topic's retention), by dead-letter topic",
    )
});

static AUTOMATIC: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dlq_automatic_total",
        "Dead letters this instance replayed or parked by itself, by dead-letter topic and action",
        &["topic", "action"]
    )
    .ok()
});

/// Sets the gauges of the topics owned; topics no longer owned are removed.
pub fn publish(figures: &BTreeMap<String, TopicFigures>, previous: &[String]) {
    for topic in previous.iter().filter(|t| !figures.contains_key(*t)) {
        for g in [&WAITING, &OLDEST_AGE, &REPLAYED, &PARKED]
            .into_iter()
            .filter_map(|g| g.as_ref())
        {
            let _ = g.remove_label_values(&[topic]);
        }
    }
    for (topic, f) in figures {
        let set = |g: &LazyLock<Option<IntGaugeVec>>, v: i64| {
            if let Some(g) = g.as_ref() {
                g.with_label_values(&[topic]).set(v);
            }
        };
        set(&WAITING, f.waiting as i64);
        set(&OLDEST_AGE, f.oldest_age_ms / 1000);
        set(&REPLAYED, f.replayed as i64);
        set(&PARKED, f.parked as i64);
    }
}

/// Counts an automatic replay or parking that committed.
pub fn automatic(topic: &str, action: Action) {
    if let Some(c) = AUTOMATIC.as_ref() {
        c.with_label_values(&[topic, action.as_str()]).inc();
    }
}

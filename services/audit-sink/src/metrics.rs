//! audit-sink's own Prometheus metrics, for logging-failure detection: rows
//! stored, batch size, database latency, chain length, the age of the newest
//! stored record and whether the database answers (the Kafka ones come from
//! the runtime crate).

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

static ROWS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "audit_sink_rows_stored_total",
        "Rows stored, by table",
        &["table"]
    )
    .ok()
});

static RECORDS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "audit_sink_records_total",
        "Consumed records by outcome (stored, duplicate, rejected, redelivered)",
        &["outcome"]
    )
    .ok()
});

static STAGED: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "audit_sink_staged_transactions_total",
        "Partition transactions redone on the staged path (INSERT .. ON CONFLICT) because the direct COPY met an id already stored"
    )
    .ok()
});

static BATCH: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    register_histogram!(
        "audit_sink_batch_records",
        "Records per stored batch",
        vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0]
    )
    .ok()
});

static DB_SECONDS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    register_histogram_vec!(
        "audit_sink_db_seconds",
        "Database latency by operation (batch, item, reject, probe, start; the steps of a \
         batch: lock_heads, copy_rows, insert_rows, copy_links, move_heads, commit)",
        &["operation"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .ok()
});

static CHAIN: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "audit_sink_chain_length",
        "Links in the hash chain of a partition",
        &["topic", "partition"]
    )
    .ok()
});

static NEWEST: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!(
        "audit_sink_newest_record_timestamp_ms",
        "Kafka timestamp of the newest record stored (epoch ms); its age is now minus this"
    )
    .ok()
});

static NEWEST_AGE: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!(
        "audit_sink_newest_record_age_seconds",
        "How long ago (wall clock) the newest stored record was written to Kafka"
    )
    .ok()
});

static DB_UP: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!("audit_sink_database_up", "1 while the database answers, 0 while it does not").ok()
});

/// Counts rows stored into `table`.
pub fn rows_stored(table: &str, n: u64) {
    if let Some(c) = ROWS.as_ref() {
        c.with_label_values(&[table]).inc_by(n);
    }
}

/// Counts consumed records by outcome.
pub fn records(outcome: &str, n: u64) {
    if let Some(c) = RECORDS.as_ref() {
        c.with_label_values(&[outcome]).inc_by(n);
    }
}

/// Counts partition transactions the direct COPY handed to the staged path.
pub fn staged(n: u64) {
    if let Some(c) = STAGED.as_ref() {
        c.inc_by(n);
    }
}

/// Observes a batch size.
pub fn batch(records: usize) {
    if let Some(h) = BATCH.as_ref() {
        h.observe(records as f64);
    }
}

/// Observes a database operation's duration.
pub fn db_seconds(operation: &str, seconds: f64) {
    if let Some(h) = DB_SECONDS.as_ref() {
        h.with_label_values(&[operation]).observe(seconds);
    }
}

/// Observations and total seconds of a database operation so far (for the benchmark's profile).
pub fn db_seconds_total(operation: &str) -> (u64, f64) {
    DB_SECONDS.as_ref().map_or((0, 0.0), |h| {
        let h = h.with_label_values(&[operation]);
        (h.get_sample_count(), h.get_sample_sum())
    })
}

/// Sets a partition's chain length.
pub fn chain_length(topic: &str, partition: i32, links: i64) {
    if let Some(g) = CHAIN.as_ref() {
        g.with_label_values(&[topic, &partition.to_string()]).set(links);
    }
}

/// Records the Kafka timestamp of the newest stored record.
pub fn newest_stored(timestamp_ms: i64) {
    if let Some(g) = NEWEST.as_ref() {
        if timestamp_ms > g.get() {
            g.set(timestamp_ms);
        }
    }
}

/// Refreshes the age gauge from the newest stored timestamp; returns the age in ms.
pub fn refresh_age(now_ms: i64) -> Option<i64> {
    let newest = NEWEST.as_ref()?.get();
    if newest <= 0 {
        return None;
    }
    let age = (now_ms - newest).max(0);
    if let Some(g) = NEWEST_AGE.as_ref() {
        g.set(age / 1000);
    }
    Some(age)
}

/// Sets whether the database answers.
pub fn database_up(up: bool) {
    if let Some(g) = DB_UP.as_ref() {
        g.set(i64::from(up));
    }
}

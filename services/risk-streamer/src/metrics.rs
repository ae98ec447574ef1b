//! risk-streamer's own Prometheus metrics (the Kafka ones come from the
//! runtime crate): organisations tracked, alerts, late and skipped records,
//! window update time, and the rebuild.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

static ORGANIZATIONS: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!(
        "risk_streamer_organizations",
        "Organisations whose window or alert state is kept"
    )
    .ok()
});

static WINDOW_BYTES: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!(
        "risk_streamer_window_bytes",
        "Estimated heap bytes of the kept windows (organisation keys, state, buckets), set at each tick"
    )
    .ok()
});

static ALERTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "risk_streamer_alerts_total",
        "Alerts committed to the alerts topic, by state",
        &["state"]
    )
    .ok()
});

static LATE: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "risk_streamer_late_records_total",
        "Assessments later than the allowed lateness, left out of the windows"
    )
    .ok()
});

static SKIPPED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "risk_streamer_skipped_records_total",
        "Assessments that cannot count in a window, by reason",
        &["reason"]
    )
    .ok()
});

static UPDATE: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    register_histogram!(
        "risk_streamer_window_update_seconds",
        "Time to add one assessment to its window and evaluate what became due",
        vec![1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 5e-2]
    )
    .ok()
});

static REPLAYED: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "risk_streamer_replayed_records_total",
        "Assessments replayed to rebuild windows after a restart or rebalance"
    )
    .ok()
});

static HISTORY: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    register_histogram!(
        "risk_streamer_alert_history_read_seconds",
        "Time to read the committed alerts back at an assignment",
        vec![0.01, 0.05, 0.2, 1.0, 5.0, 20.0, 90.0]
    )
    .ok()
});

/// Sets the estimated heap bytes of the windows.
pub fn window_bytes(n: usize) {
    if let Some(g) = WINDOW_BYTES.as_ref() {
        g.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Sets the number of organisations tracked.
pub fn organizations(n: usize) {
    if let Some(g) = ORGANIZATIONS.as_ref() {
        g.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Counts committed alerts.
pub fn alerts(raised: u64, cleared: u64) {
    if let Some(c) = ALERTS.as_ref() {
        c.with_label_values(&["RAISED"]).inc_by(raised);
        c.with_label_values(&["CLEARED"]).inc_by(cleared);
    }
}

/// Counts committed late records.
pub fn late(n: u64) {
    if let Some(c) = LATE.as_ref() {
        c.inc_by(n);
    }
}

/// Counts a skipped record.
pub fn skipped(reason: &str) {
    if let Some(c) = SKIPPED.as_ref() {
        c.with_label_values(&[reason]).inc();
    }
}

/// Records one window update.
pub fn window_update(seconds: f64) {
    if let Some(h) = UPDATE.as_ref() {
        h.observe(seconds);
    }
}

/// Counts a replayed record.
pub fn replayed() {
    if let Some(c) = REPLAYED.as_ref() {
        c.inc();
    }
}

/// Records an alert history read.
pub fn history_read(seconds: f64) {
    if let Some(h) = HISTORY.as_ref() {
        h.observe(seconds);
    }
}

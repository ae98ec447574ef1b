//! report-ingest's own Prometheus metrics (the Kafka ones come from the runtime crate).

use std::sync::LazyLock;

use dora_schema::ReportType;
use prometheus::{register_int_counter_vec, IntCounterVec};

static REPORTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "report_ingest_reports_total",
        "Reports produced, by report type and channel (grpc: acknowledged; agent: in a transaction about to commit)",
        &["report_type", "channel"]
    )
    .ok()
});

static REJECTED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "report_ingest_submissions_rejected_total",
        "gRPC submissions refused, by gRPC code",
        &["code"]
    )
    .ok()
});

/// Counts a report of `report_type` that came in through `channel` (`grpc` or `agent`).
pub fn accepted(report_type: ReportType, channel: &str) {
    if let Some(c) = REPORTS.as_ref() {
        c.with_label_values(&[report_type.as_str(), channel]).inc();
    }
}

/// Counts a refused submission by its gRPC code.
pub fn rejected(code: tonic::Code) {
    if let Some(c) = REJECTED.as_ref() {
        c.with_label_values(&[&format!("{code:?}")]).inc();
    }
}

//! agent-gateway's own Prometheus metrics (the Kafka ones come from the runtime crate).

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

static ACCEPTED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "agent_gateway_events_accepted_total",
        "Agent events acknowledged by the broker, by event type",
        &["event_type"]
    )
    .ok()
});

static REJECTED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "agent_gateway_events_rejected_total",
        "Agent writes refused, by gRPC code",
        &["code"]
    )
    .ok()
});

static UNKNOWN_TYPES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "agent_gateway_unknown_event_types_total",
        "Agent events the health processor skipped because their type is unknown",
        &["event_type"]
    )
    .ok()
});

static HEALTH_CHANGES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "agent_gateway_health_published_total",
        "Agent health records published to agent-health, by status",
        &["status"]
    )
    .ok()
});

/// Counts an acknowledged event.
pub fn accepted(event_type: &str) {
    if let Some(c) = ACCEPTED.as_ref() {
        c.with_label_values(&[event_type]).inc();
    }
}

/// Counts a refused write.
pub fn rejected(code: &str) {
    if let Some(c) = REJECTED.as_ref() {
        c.with_label_values(&[code]).inc();
    }
}

/// Counts an event of unknown type.
pub fn unknown_event_type(event_type: &str) {
    // Bounded label cardinality: odd producers cannot blow up the registry.
    let label = if event_type.len() <= 32
        && event_type
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_')
    {
        event_type
    } else {
        "OTHER"
    };
    if let Some(c) = UNKNOWN_TYPES.as_ref() {
        c.with_label_values(&[label]).inc();
    }
}

/// Counts a published health record.
pub fn health_published(status: &str) {
    if let Some(c) = HEALTH_CHANGES.as_ref() {
        c.with_label_values(&[status]).inc();
    }
}

//! The edge between the gateway's own values and the schema crate's records
//! (`AgentEvent`, `AgentHealth`), which the runtime's typed producer and the
//! `Codec` put on the wire as Confluent-framed Avro (events from the seed's
//! Python agents arrive as legacy JSON and decode to the same types).

use dora_schema::{AgentEvent, AgentHealth, AgentStatus, EventType, SchemaError};
use serde_json::Value;

use crate::health::{AgentState, EventPosition, HealthStatus, Observation};
use crate::intake::StampedEvent;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// What went wrong.
    pub message: String,
    /// True when trying again later may succeed (registry unavailable).
    pub retryable: bool,
}

impl From<SchemaError> for WireError {
    fn from(e: SchemaError) -> Self {
        Self {
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

impl WireError {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// What the health state machine needs from a decoded event.
pub fn observation(e: &AgentEvent) -> Observation<'_> {
    Observation {
        agent_id: &e.agent_id,
        agent_type: &e.agent_type,
        event_type: e.event_type.as_str(),
        timestamp: e.timestamp,
        message: e.message.as_deref(),
        metadata: &e.metadata,
        task_id: e.task_id.as_deref(),
    }
}

/// The Avro enum of a validated event type (the seed's spelling).
fn event_type(name: &str) -> EventType {
    EventType::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == name)
        .unwrap_or_default()
}

/// The Avro enum of a status (the seed's spelling).
fn agent_status(name: &str) -> AgentStatus {
    AgentStatus::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == name)
        .unwrap_or_default()
}

/// The record the gateway produces for a stamped event.
pub fn agent_event(e: &StampedEvent) -> AgentEvent {
    AgentEvent {
        event_id: e.event_id.clone(),
        agent_id: e.draft.agent_id.clone(),
        timestamp: e.timestamp,
        event_type: event_type(e.draft.event_type),
        agent_type: e.draft.agent_type.clone(),
        status: agent_status(e.draft.status),
        version: e.version.to_string(),
        message: e.draft.message.clone(),
        metadata: e.draft.metadata.clone(),
        task_id: e.draft.task_id.clone(),
    }
}

/// The seed's spelling of a health status.
pub fn status_name(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Degraded => "DEGRADED",
        HealthStatus::Unhealthy => "UNHEALTHY",
    }
}

/// The `agent-health` record of a state.
pub fn agent_health(s: &AgentState) -> AgentHealth {
    AgentHealth {
        agent_id: s.agent_id.clone(),
        agent_type: s.agent_type.clone(),
        status: agent_status(status_name(s.status)),
        last_seen: s.last_seen,
        last_heartbeat: s.last_heartbeat,
        resource_usage: s.resource_usage.clone().unwrap_or(Value::Null),
        tasks_completed: i64::try_from(s.tasks_completed).unwrap_or(i64::MAX),
        last_task_id: s.last_task_id.clone(),
        last_error: s.last_error.clone(),
        updated_at: s.updated_at,
        last_event_partition: s.applied.map(|a| a.partition),
        last_event_offset: s.applied.map(|a| a.offset),
    }
}

/// The state an `agent-health` record describes.
pub fn agent_state(h: AgentHealth) -> Result<AgentState, WireError> {
    let status = match h.status {
        AgentStatus::Healthy => HealthStatus::Healthy,
        AgentStatus::Degraded => HealthStatus::Degraded,
        AgentStatus::Unhealthy | AgentStatus::Offline => HealthStatus::Unhealthy,
        AgentStatus::Unknown => {
            return Err(WireError::permanent(
                "agent-health record with status UNKNOWN",
            ))
        }
    };
    Ok(AgentState {
        agent_id: h.agent_id,
        agent_type: h.agent_type,
        status,
        last_seen: h.last_seen,
        last_heartbeat: h.last_heartbeat,
        resource_usage: Some(h.resource_usage).filter(|v| !v.is_null()),
        tasks_completed: u64::try_from(h.tasks_completed).unwrap_or(0),
        last_task_id: h.last_task_id,
        last_error: h.last_error,
        updated_at: h.updated_at,
        applied: match (h.last_event_partition, h.last_event_offset) {
            (Some(partition), Some(offset)) => Some(EventPosition { partition, offset }),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentState {
        AgentState {
            agent_id: "a".into(),
            agent_type: "T".into(),
            status: HealthStatus::Degraded,
            last_seen: 5,
            last_heartbeat: Some(4),
            resource_usage: Some(serde_json::json!({"cpu": 1})),
            tasks_completed: 2,
            last_task_id: Some("t".into()),
            last_error: Some("x".into()),
            updated_at: 6,
            applied: Some(EventPosition {
                partition: 2,
                offset: 77,
            }),
        }
    }

    #[test]
    fn health_maps_both_ways() {
        let s = state();
        assert_eq!(agent_state(agent_health(&s)).unwrap(), s);
        let none = AgentState {
            resource_usage: None,
            last_heartbeat: None,
            applied: None,
            ..state()
        };
        assert_eq!(agent_state(agent_health(&none)).unwrap(), none);
    }

    #[test]
    fn the_seeds_python_json_heartbeat_is_an_observation() {
        let seed = br#"{"eventId": "e1", "agentId": "py-1", "timestamp": 1700000000000, "eventType": "HEARTBEAT", "agentType": "GAP_ANALYZER", "status": "HEALTHY", "version": "1.0.0", "message": null, "metadata": {"resource_usage": {"cpu": 3}}, "taskId": null}"#;
        let e: AgentEvent = dora_schema::decode_json(seed).unwrap();
        let o = observation(&e);
        assert_eq!(o.agent_id, "py-1");
        assert_eq!(o.event_type, "HEARTBEAT");
        assert_eq!(o.metadata["resource_usage"]["cpu"], 3);
    }

    #[test]
    fn validated_names_map_to_the_avro_enums() {
        for name in [
            "HEARTBEAT",
            "TASK_STARTED",
            "TASK_COMPLETED",
            "TASK_FAILED",
            "ERROR",
        ] {
            assert_eq!(event_type(name).as_str(), name);
        }
        for name in ["HEALTHY", "DEGRADED", "UNHEALTHY", "OFFLINE"] {
            assert_eq!(agent_status(name).as_str(), name);
        }
    }
}

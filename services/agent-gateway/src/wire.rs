//! How agent events and agent health look on the wire, behind one type so the
//! rest of the gateway deals only in domain values.
//!
//! INTERIM: until the schema crate's `Codec` (Avro + registry, legacy JSON)
//! lands, events are written as the seed's JSON and health as camelCase JSON;
//! swapping in the codec changes this file only.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::StampedEvent;
use crate::health::{AgentState, HealthStatus, Observation};

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// What went wrong.
    pub message: String,
    /// True when trying again later may succeed (registry unavailable).
    pub retryable: bool,
}

impl WireError {
    fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// An agent event as read from the topic (written by the gateway or by a seed agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEventRecord {
    /// `eventId`.
    #[serde(default)]
    pub event_id: String,
    /// `agentId`.
    pub agent_id: String,
    /// `timestamp`, epoch ms.
    pub timestamp: i64,
    /// `eventType`.
    pub event_type: String,
    /// `agentType`.
    #[serde(default)]
    pub agent_type: String,
    /// `status`.
    #[serde(default)]
    pub status: String,
    /// `version`.
    #[serde(default)]
    pub version: String,
    /// `message`.
    #[serde(default)]
    pub message: Option<String>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: Value,
    /// `taskId`.
    #[serde(default)]
    pub task_id: Option<String>,
}

impl AgentEventRecord {
    /// What the health state machine needs.
    pub fn observation(&self) -> Observation<'_> {
        Observation {
            agent_id: &self.agent_id,
            agent_type: &self.agent_type,
            event_type: &self.event_type,
            timestamp: self.timestamp,
            message: self.message.as_deref(),
            metadata: &self.metadata,
            task_id: self.task_id.as_deref(),
        }
    }
}

impl From<&StampedEvent> for AgentEventRecord {
    fn from(e: &StampedEvent) -> Self {
        Self {
            event_id: e.event_id.clone(),
            agent_id: e.draft.agent_id.clone(),
            timestamp: e.timestamp,
            event_type: e.draft.event_type.to_string(),
            agent_type: e.draft.agent_type.clone(),
            status: e.draft.status.to_string(),
            version: e.version.to_string(),
            message: e.draft.message.clone(),
            metadata: e.draft.metadata.clone(),
            task_id: e.draft.task_id.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthRecord {
    agent_id: String,
    agent_type: String,
    status: String,
    last_seen: i64,
    last_heartbeat: Option<i64>,
    resource_usage: Option<Value>,
    tasks_completed: u64,
    last_task_id: Option<String>,
    last_error: Option<String>,
    updated_at: i64,
}

/// The seed's spelling of a health status.
pub fn status_name(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Degraded => "DEGRADED",
        HealthStatus::Unhealthy => "UNHEALTHY",
    }
}

fn parse_status(s: &str) -> Option<HealthStatus> {
    match s {
        "HEALTHY" => Some(HealthStatus::Healthy),
        "DEGRADED" => Some(HealthStatus::Degraded),
        "UNHEALTHY" => Some(HealthStatus::Unhealthy),
        _ => None,
    }
}

/// Encoder and decoder of the gateway's two topics.
#[derive(Debug, Default)]
pub struct Wire {}

impl Wire {
    /// The wire form.
    pub fn new() -> Self {
        Self {}
    }

    /// The value of an agent event on `topic`.
    pub async fn encode_event(&self, _topic: &str, event: &StampedEvent) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(&AgentEventRecord::from(event)).map_err(|e| WireError::permanent(e.to_string()))
    }

    /// An agent event read from `topic`.
    pub async fn decode_event(&self, _topic: &str, bytes: &[u8]) -> Result<AgentEventRecord, WireError> {
        serde_json::from_slice(bytes).map_err(|e| WireError::permanent(format!("not an AgentEvent: {e}")))
    }

    /// The value of an agent's health on `topic`.
    pub async fn encode_health(&self, _topic: &str, s: &AgentState) -> Result<Vec<u8>, WireError> {
        let r = HealthRecord {
            agent_id: s.agent_id.clone(),
            agent_type: s.agent_type.clone(),
            status: status_name(s.status).to_string(),
            last_seen: s.last_seen,
            last_heartbeat: s.last_heartbeat,
            resource_usage: s.resource_usage.clone(),
            tasks_completed: s.tasks_completed,
            last_task_id: s.last_task_id.clone(),
            last_error: s.last_error.clone(),
            updated_at: s.updated_at,
        };
        serde_json::to_vec(&r).map_err(|e| WireError::permanent(e.to_string()))
    }

    /// An agent's health read from `topic`.
    pub async fn decode_health(&self, _topic: &str, bytes: &[u8]) -> Result<AgentState, WireError> {
        let r: HealthRecord =
            serde_json::from_slice(bytes).map_err(|e| WireError::permanent(format!("not an AgentHealth: {e}")))?;
        let status = parse_status(&r.status).ok_or_else(|| WireError::permanent(format!("status {:?}", r.status)))?;
        Ok(AgentState {
            agent_id: r.agent_id,
            agent_type: r.agent_type,
            status,
            last_seen: r.last_seen,
            last_heartbeat: r.last_heartbeat,
            resource_usage: r.resource_usage,
            tasks_completed: r.tasks_completed,
            last_task_id: r.last_task_id,
            last_error: r.last_error,
            updated_at: r.updated_at,
        })
    }
}

impl dora_kafka::consume::DeadLetterEncoder for Wire {
    async fn encode_dead_letter(
        &self,
        dlq_topic: &str,
        record: &dora_kafka::consume::Record,
        error: &dora_kafka::consume::HandlerError,
        retry_count: u32,
        failed_by: &str,
    ) -> Result<Vec<u8>, (String, bool)> {
        let letter = serde_json::json!({
            "originalTopic": record.topic,
            "originalPartition": record.partition,
            "originalOffset": record.offset,
            "originalKey": record.key_str(),
            "originalMessage": String::from_utf8_lossy(record.payload()),
            "errorMessage": error.message(),
            "errorType": error.error_type(),
            "retryCount": retry_count,
            "processingAttempts": retry_count + 1,
            "failedBy": failed_by,
            "deadLetterTopic": dlq_topic,
            "timestamp": chrono::Utc::now().timestamp_millis(),
        });
        serde_json::to_vec(&letter).map_err(|e| (e.to_string(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_seeds_python_json_heartbeat_decodes() {
        let seed = br#"{"eventId": "e1", "agentId": "py-1", "timestamp": 1700000000000, "eventType": "HEARTBEAT", "agentType": "GAP_ANALYZER", "status": "HEALTHY", "version": "1.0.0", "message": null, "metadata": {"resource_usage": {"cpu": 3}}, "taskId": null}"#;
        let e = Wire::new().decode_event("agent-events", seed).await.unwrap();
        assert_eq!(e.agent_id, "py-1");
        assert_eq!(e.event_type, "HEARTBEAT");
        assert_eq!(e.metadata["resource_usage"]["cpu"], 3);
    }

    #[tokio::test]
    async fn health_round_trips() {
        let s = AgentState {
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
        };
        let w = Wire::new();
        let bytes = w.encode_health("agent-health", &s).await.unwrap();
        assert_eq!(w.decode_health("agent-health", &bytes).await.unwrap(), s);
    }
}

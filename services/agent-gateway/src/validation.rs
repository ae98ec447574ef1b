//! Request validation at the gRPC edge: every request becomes an
//! [`EventDraft`] or an INVALID_ARGUMENT that names the offending field.
//! (Invalid UTF-8 never gets here: the proto crate's codec rejects it while
//! decoding, also as INVALID_ARGUMENT naming the field.)

use dora_proto::agent::v1 as pb;
pub use dora_proto::validate::Invalid;
use dora_proto::validate::{identifier, json_object};
use serde_json::{Map, Value};

/// Size limits, bytes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `agent_id`, `agent_type`, `task_id`.
    pub max_id_bytes: usize,
    /// `message`.
    pub max_message_bytes: usize,
    /// `metadata` as JSON text.
    pub max_metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_id_bytes: 128,
            max_message_bytes: 4_096,
            max_metadata_bytes: 16_384,
        }
    }
}

/// A validated event, before the gateway fills event id, timestamp and version.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// `agentId`.
    pub agent_id: String,
    /// `eventType` (the seed's spelling, e.g. `HEARTBEAT`).
    pub event_type: &'static str,
    /// `agentType`.
    pub agent_type: String,
    /// `status` (the seed's spelling, e.g. `HEALTHY`).
    pub status: &'static str,
    /// `message`.
    pub message: Option<String>,
    /// `metadata`: always a JSON object.
    pub metadata: Value,
    /// `taskId`.
    pub task_id: Option<String>,
}

impl EventDraft {
    /// Roughly the bytes this event holds in memory and on the wire (its
    /// strings and its metadata as JSON text): what it weighs against the
    /// send queue's in-flight byte bound.
    pub fn size_bytes(&self) -> usize {
        // Serialising a `Value` cannot fail.
        let metadata = dora_schema::json_len(&self.metadata);
        self.agent_id.len()
            + self.event_type.len()
            + self.agent_type.len()
            + self.status.len()
            + self.message.as_ref().map_or(0, String::len)
            + self.task_id.as_ref().map_or(0, String::len)
            + metadata
    }
}

/// The seed's spelling of an event type.
pub fn event_type_name(t: pb::EventType) -> Option<&'static str> {
    match t {
        pb::EventType::Unspecified => None,
        pb::EventType::Heartbeat => Some("HEARTBEAT"),
        pb::EventType::TaskStarted => Some("TASK_STARTED"),
        pb::EventType::TaskCompleted => Some("TASK_COMPLETED"),
        pb::EventType::Error => Some("ERROR"),
        pb::EventType::TaskFailed => Some("TASK_FAILED"),
    }
}

/// The seed's spelling of a status.
pub fn status_name(s: pb::AgentStatus) -> Option<&'static str> {
    match s {
        pb::AgentStatus::Unspecified => None,
        pb::AgentStatus::Healthy => Some("HEALTHY"),
        pb::AgentStatus::Degraded => Some("DEGRADED"),
        pb::AgentStatus::Unhealthy => Some("UNHEALTHY"),
        pb::AgentStatus::Offline => Some("OFFLINE"),
    }
}

fn optional_identifier(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, Invalid> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => identifier(field, v, max).map(Some),
    }
}

fn text(field: &'static str, value: Option<&str>, max: usize) -> Result<Option<String>, Invalid> {
    match value {
        None => Ok(None),
        Some(v) if v.len() > max => Err(Invalid::new(
            field,
            format!("is {} bytes, at most {max} allowed", v.len()),
        )),
        Some(v) if v.chars().any(|c| c == '\0') => {
            Err(Invalid::new(field, "may not contain NUL characters"))
        }
        Some(v) => Ok(Some(v.to_string())),
    }
}

/// Validates a `PublishEventRequest` (also each event of `StreamEvents`).
pub fn publish_request(
    req: &pb::PublishEventRequest,
    limits: &Limits,
) -> Result<EventDraft, Invalid> {
    let agent_id = identifier("agent_id", &req.agent_id, limits.max_id_bytes)?;
    let event_type = pb::EventType::try_from(req.event_type)
        .ok()
        .and_then(event_type_name)
        .ok_or_else(|| {
            Invalid::new(
                "event_type",
                format!("{} is not one of the EventType values", req.event_type),
            )
        })?;
    let agent_type = identifier("agent_type", &req.agent_type, limits.max_id_bytes)?;
    let status = pb::AgentStatus::try_from(req.status)
        .ok()
        .and_then(status_name)
        .ok_or_else(|| {
            Invalid::new(
                "status",
                format!("{} is not one of the AgentStatus values", req.status),
            )
        })?;
    let message = text("message", req.message.as_deref(), limits.max_message_bytes)?;
    let metadata = json_object(
        "metadata_json",
        &req.metadata_json,
        limits.max_metadata_bytes,
    )?;
    let task_id = optional_identifier("task_id", req.task_id.as_deref(), limits.max_id_bytes)?;
    if matches!(
        event_type,
        "TASK_STARTED" | "TASK_COMPLETED" | "TASK_FAILED"
    ) && task_id.is_none()
    {
        return Err(Invalid::new("task_id", format!("is required for {event_type}")));
    }
    Ok(EventDraft {
        agent_id,
        event_type,
        agent_type,
        status,
        message,
        metadata: Value::Object(metadata),
        task_id,
    })
}

/// Validates a `HeartbeatRequest`: a HEARTBEAT/HEALTHY event whose metadata is
/// `{"resource_usage": {...}}` as the seed's `send_heartbeat` builds it.
pub fn heartbeat_request(
    req: &pb::HeartbeatRequest,
    limits: &Limits,
) -> Result<EventDraft, Invalid> {
    let agent_id = identifier("agent_id", &req.agent_id, limits.max_id_bytes)?;
    let agent_type = identifier("agent_type", &req.agent_type, limits.max_id_bytes)?;
    let mut metadata = Map::new();
    if let Some(u) = &req.resource_usage {
        let mut usage = Map::new();
        let mut put = |name: &str, field: &'static str, v: f64| -> Result<(), Invalid> {
            let n = serde_json::Number::from_f64(v)
                .ok_or_else(|| Invalid::new(field, "must be a finite number"))?;
            usage.insert(name.to_string(), Value::Number(n));
            Ok(())
        };
        if let Some(v) = u.cpu_percent {
            put("cpu_percent", "resource_usage.cpu_percent", v)?;
        }
        if let Some(v) = u.memory_mb {
            put("memory_mb", "resource_usage.memory_mb", v)?;
        }
        if let Some(v) = u.disk_percent {
            put("disk_percent", "resource_usage.disk_percent", v)?;
        }
        for (k, v) in &u.other {
            identifier("resource_usage.other", k, limits.max_id_bytes)?;
            put(k, "resource_usage.other", *v)?;
        }
        if !usage.is_empty() {
            metadata.insert("resource_usage".into(), Value::Object(usage));
        }
    }
    Ok(EventDraft {
        agent_id,
        event_type: "HEARTBEAT",
        agent_type,
        status: "HEALTHY",
        message: None,
        metadata: Value::Object(metadata),
        task_id: None,
    })
}

/// Validates a `CompleteTaskRequest`: TASK_COMPLETED/HEALTHY with
/// `metadata.result_summary` as the seed's `send_task_completion` builds it.
pub fn complete_task_request(
    req: &pb::CompleteTaskRequest,
    limits: &Limits,
) -> Result<EventDraft, Invalid> {
    let agent_id = identifier("agent_id", &req.agent_id, limits.max_id_bytes)?;
    let agent_type = identifier("agent_type", &req.agent_type, limits.max_id_bytes)?;
    let task_id = identifier("task_id", &req.task_id, limits.max_id_bytes)?;
    let result = json_object("result_json", &req.result_json, limits.max_metadata_bytes)?;
    let mut metadata = Map::new();
    metadata.insert("result_summary".into(), Value::Object(result));
    Ok(EventDraft {
        agent_id,
        event_type: "TASK_COMPLETED",
        agent_type,
        status: "HEALTHY",
        message: None,
        metadata: Value::Object(metadata),
        task_id: Some(task_id),
    })
}

/// Validates a `ReportErrorRequest`: ERROR/DEGRADED with the message and
/// `metadata.details`.
pub fn report_error_request(
    req: &pb::ReportErrorRequest,
    limits: &Limits,
) -> Result<EventDraft, Invalid> {
    let agent_id = identifier("agent_id", &req.agent_id, limits.max_id_bytes)?;
    let agent_type = identifier("agent_type", &req.agent_type, limits.max_id_bytes)?;
    if req.message.is_empty() {
        return Err(Invalid::new("message", "is required"));
    }
    let message = text("message", Some(&req.message), limits.max_message_bytes)?;
    let details = json_object("details_json", &req.details_json, limits.max_metadata_bytes)?;
    let task_id = optional_identifier("task_id", req.task_id.as_deref(), limits.max_id_bytes)?;
    let mut metadata = Map::new();
    if !details.is_empty() {
        metadata.insert("details".into(), Value::Object(details));
    }
    Ok(EventDraft {
        agent_id,
        event_type: "ERROR",
        agent_type,
        status: "DEGRADED",
        message,
        metadata: Value::Object(metadata),
        task_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::PublishEventRequest {
        pb::PublishEventRequest {
            agent_id: "agent-1".into(),
            event_type: pb::EventType::Heartbeat as i32,
            agent_type: "GAP_ANALYZER".into(),
            status: pb::AgentStatus::Healthy as i32,
            message: None,
            metadata_json: r#"{"resource_usage":{"cpu":1}}"#.into(),
            task_id: None,
        }
    }

    fn field_of(req: pb::PublishEventRequest) -> String {
        publish_request(&req, &Limits::default()).unwrap_err().field
    }

    #[test]
    fn a_valid_request_becomes_a_draft() {
        let d = publish_request(&valid(), &Limits::default()).unwrap();
        assert_eq!(d.event_type, "HEARTBEAT");
        assert_eq!(d.status, "HEALTHY");
        assert_eq!(
            d.metadata,
            serde_json::json!({"resource_usage": {"cpu": 1}})
        );
    }

    #[test]
    fn empty_metadata_is_an_empty_object() {
        let d = publish_request(
            &pb::PublishEventRequest {
                metadata_json: String::new(),
                ..valid()
            },
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.metadata, serde_json::json!({}));
    }

    #[test]
    fn each_invalid_field_is_named() {
        assert_eq!(
            field_of(pb::PublishEventRequest {
                agent_id: String::new(),
                ..valid()
            }),
            "agent_id"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                agent_id: "a b".into(),
                ..valid()
            }),
            "agent_id"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                event_type: 0,
                ..valid()
            }),
            "event_type"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                event_type: 99,
                ..valid()
            }),
            "event_type"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                agent_type: String::new(),
                ..valid()
            }),
            "agent_type"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                status: 42,
                ..valid()
            }),
            "status"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                metadata_json: "[1]".into(),
                ..valid()
            }),
            "metadata_json"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                metadata_json: "{".into(),
                ..valid()
            }),
            "metadata_json"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                event_type: pb::EventType::TaskCompleted as i32,
                ..valid()
            }),
            "task_id"
        );
    }

    #[test]
    fn size_limits_name_the_field() {
        let limits = Limits::default();
        let big = "x".repeat(limits.max_message_bytes + 1);
        assert_eq!(
            field_of(pb::PublishEventRequest {
                message: Some(big),
                ..valid()
            }),
            "message"
        );
        let big_md = format!(r#"{{"k":"{}"}}"#, "x".repeat(limits.max_metadata_bytes));
        assert_eq!(
            field_of(pb::PublishEventRequest {
                metadata_json: big_md,
                ..valid()
            }),
            "metadata_json"
        );
        assert_eq!(
            field_of(pb::PublishEventRequest {
                agent_id: "a".repeat(129),
                ..valid()
            }),
            "agent_id"
        );
    }

    #[test]
    fn conveniences_build_the_seed_shapes() {
        let limits = Limits::default();
        let hb = heartbeat_request(
            &pb::HeartbeatRequest {
                agent_id: "a".into(),
                agent_type: "RISK_ASSESSOR".into(),
                resource_usage: Some(pb::ResourceUsage {
                    cpu_percent: Some(12.5),
                    ..Default::default()
                }),
            },
            &limits,
        )
        .unwrap();
        assert_eq!(
            hb.metadata,
            serde_json::json!({"resource_usage": {"cpu_percent": 12.5}})
        );
        let done = complete_task_request(
            &pb::CompleteTaskRequest {
                agent_id: "a".into(),
                agent_type: "RISK_ASSESSOR".into(),
                task_id: "t1".into(),
                result_json: r#"{"score":0.4}"#.into(),
            },
            &limits,
        )
        .unwrap();
        assert_eq!(
            done.metadata,
            serde_json::json!({"result_summary": {"score": 0.4}})
        );
        assert_eq!(done.task_id.as_deref(), Some("t1"));
        let err = report_error_request(
            &pb::ReportErrorRequest {
                agent_id: "a".into(),
                agent_type: "X".into(),
                ..Default::default()
            },
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.field, "message");
        let nan = heartbeat_request(
            &pb::HeartbeatRequest {
                agent_id: "a".into(),
                agent_type: "X".into(),
                resource_usage: Some(pb::ResourceUsage {
                    memory_mb: Some(f64::NAN),
                    ..Default::default()
                }),
            },
            &limits,
        )
        .unwrap_err();
        assert_eq!(nan.field, "resource_usage.memory_mb");
    }
}

//! The domain types of every Kafka value, one per `schemas/*.avsc`, with the
//! seed's camelCase field names on the wire.
//!
//! The same types serve both formats: serde sees Avro as a non-human-readable
//! format and JSON as a human-readable one, and the few fields whose wire form
//! differs (free-form JSON, raw bytes) switch on that (see [`json_text`] and
//! [`message_bytes`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! avro_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $symbol:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        ///
        /// `UNKNOWN` is the Avro default symbol: an older reader maps a symbol it
        /// does not know to it, and legacy JSON with an unknown string decodes to it.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $symbol)] $variant, )+
            /// A symbol this reader does not know (the Avro enum default).
            #[default]
            #[serde(rename = "UNKNOWN", other)]
            Unknown,
        }

        impl $name {
            /// Every variant, in the order of the Avro symbols.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+ $name::Unknown];

            /// The Avro symbol (and legacy JSON string) of the variant.
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::Unknown => "UNKNOWN",
                    $($name::$variant => $symbol,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

avro_enum! {
    /// What an agent event reports (`eventType`).
    pub enum EventType {
        /// Periodic liveness signal, optionally with resource usage.
        Heartbeat = "HEARTBEAT",
        /// The agent started a task.
        TaskStarted = "TASK_STARTED",
        /// The agent finished a task (metadata carries `result_summary`).
        TaskCompleted = "TASK_COMPLETED",
        /// The agent gave up on a task.
        TaskFailed = "TASK_FAILED",
        /// The agent hit an error.
        Error = "ERROR",
    }
}

avro_enum! {
    /// Health of an agent (`status`).
    pub enum AgentStatus {
        /// Working normally.
        Healthy = "HEALTHY",
        /// Working with reduced capacity.
        Degraded = "DEGRADED",
        /// Not working.
        Unhealthy = "UNHEALTHY",
        /// Not heard from within the heartbeat timeout.
        Offline = "OFFLINE",
    }
}

avro_enum! {
    /// Which assessment a [`ComplianceReport`] is (`reportType`).
    pub enum ReportType {
        /// DORA gap assessment (topic gap-assessments).
        GapAssessment = "GAP_ASSESSMENT",
        /// Risk assessment (topic risk-assessments).
        RiskAssessment = "RISK_ASSESSMENT",
    }
}

avro_enum! {
    /// Risk class of a risk assessment (`riskLevel`). Legacy JSON may spell it
    /// in lower case (`"high"`), which decodes to the same variant.
    pub enum RiskLevel {
        /// Low risk.
        #[serde(alias = "low", alias = "Low")]
        Low = "LOW",
        /// Medium risk.
        #[serde(alias = "medium", alias = "Medium")]
        Medium = "MEDIUM",
        /// High risk.
        #[serde(alias = "high", alias = "High")]
        High = "HIGH",
        /// Critical risk.
        #[serde(alias = "critical", alias = "Critical")]
        Critical = "CRITICAL",
    }
}

avro_enum! {
    /// Which edge of a breach a [`RiskAlert`] is (`state`).
    pub enum RiskAlertState {
        /// The window's average went above the threshold.
        Raised = "RAISED",
        /// The average fell below the clear threshold, or the window emptied.
        Cleared = "CLEARED",
    }
}

/// An agent event (topic `agent-events`, key `agentId`): what the seed's
/// `AgentEventProducer.send_event` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    /// UUID of this event.
    pub event_id: String,
    /// The reporting agent; also the Kafka key.
    pub agent_id: String,
    /// When the agent produced the event, epoch milliseconds UTC.
    pub timestamp: i64,
    /// What happened.
    pub event_type: EventType,
    /// Kind of agent, e.g. `gap-analyzer`.
    pub agent_type: String,
    /// Health the agent reports for itself.
    pub status: AgentStatus,
    /// Event format version, e.g. `1.0.0`.
    pub version: String,
    /// Optional human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// Free-form JSON (`resource_usage`, `result_summary`, ...); `{}` when the
    /// seed sent none.
    #[serde(default, with = "json_text")]
    pub metadata: Value,
    /// Task the event is about, if any.
    #[serde(default)]
    pub task_id: Option<String>,
}

/// Latest known health of one agent (compacted topic `agent-health`, key `agentId`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentHealth {
    /// The agent; also the Kafka key.
    pub agent_id: String,
    /// Kind of agent, from its latest event.
    pub agent_type: String,
    /// Current health as derived by the health processor.
    pub status: AgentStatus,
    /// Timestamp of the latest event of any type, epoch milliseconds.
    pub last_seen: i64,
    /// Timestamp of the latest `HEARTBEAT`, epoch milliseconds, if any.
    #[serde(default)]
    pub last_heartbeat: Option<i64>,
    /// The latest heartbeat's `resource_usage` (JSON `null` when none was reported).
    #[serde(default, with = "json_text")]
    pub resource_usage: Value,
    /// `TASK_COMPLETED` events counted for this agent.
    pub tasks_completed: i64,
    /// Task of the latest task event, if any.
    #[serde(default)]
    pub last_task_id: Option<String>,
    /// Message of the latest `ERROR` event, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When this record was computed, epoch milliseconds.
    pub updated_at: i64,
    /// `agent-events` partition of the latest event folded into this record
    /// (the partition whose owner judges the agent's liveness); `None` in
    /// records written before the field existed.
    #[serde(default)]
    pub last_event_partition: Option<i32>,
    /// `agent-events` offset of the latest event folded into this record: an
    /// event of `last_event_partition` at or before it was already applied.
    #[serde(default)]
    pub last_event_offset: Option<i64>,
}

/// A gap or risk assessment (topics `gap-assessments` and `risk-assessments`,
/// key `organizationId`): what the seed's `ComplianceReportProducer` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceReport {
    /// UUID of this report.
    pub report_id: String,
    /// Assessed organisation; also the Kafka key.
    pub organization_id: String,
    /// When the report was produced, epoch milliseconds.
    pub timestamp: i64,
    /// Which assessment this is.
    pub report_type: ReportType,
    /// Overall risk score (risk assessments), usually 0..1.
    #[serde(default)]
    pub risk_score: Option<f64>,
    /// Risk class (risk assessments).
    #[serde(default)]
    pub risk_level: Option<RiskLevel>,
    /// The full assessment payload as the producer sent it.
    #[serde(default, with = "json_text")]
    pub data: Value,
    /// Report format version, e.g. `1.0`.
    pub version: String,
}

/// A user activity for the audit trail (topic `user-activities`, key the hour
/// bucket `YYYY-MM-DD-HH`): what the seed's `AuditEventProducer.send_user_activity` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// UUID of this audit event; the audit sink's idempotency key.
    pub event_id: String,
    /// When the activity happened, epoch milliseconds.
    pub timestamp: i64,
    /// Acting user.
    pub user_id: String,
    /// What the user did.
    pub action: String,
    /// What the action was on.
    pub resource: String,
    /// Free-form details.
    #[serde(default, with = "json_text")]
    pub details: Value,
    /// `details.ip_address`, if any.
    #[serde(default)]
    pub ip_address: Option<String>,
    /// `details.user_agent`, if any.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// `details.session_id`, if any.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A transition of an organisation's risk window (topic `risk-alerts`, key
/// `organizationId`): RAISED when the window's average rises above the
/// threshold, CLEARED when it falls below the clear threshold or the window
/// empties. One record per transition, never one per assessment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskAlert {
    /// Deterministic id of this transition (organisation, state, window end).
    pub alert_id: String,
    /// Organisation at risk; also the Kafka key.
    pub organization_id: String,
    /// Mean `riskScore` of the window's assessments (0 when the window is empty).
    pub average_risk_score: f64,
    /// Threshold the average must exceed to raise.
    pub threshold: f64,
    /// Start of the window (inclusive), event time, epoch milliseconds.
    pub window_start: i64,
    /// End of the window (exclusive), event time, epoch milliseconds.
    pub window_end: i64,
    /// Number of assessments averaged.
    pub sample_count: i32,
    /// When the alert was produced (wall clock), epoch milliseconds.
    pub timestamp: i64,
    /// Which edge this is; alerts written before the field existed were raises.
    #[serde(default = "raised")]
    pub state: RiskAlertState,
    /// The average must fall below this to clear (threshold minus the margin).
    #[serde(default)]
    pub clear_threshold: Option<f64>,
    /// Highest `riskScore` in the window; `None` when the window is empty.
    #[serde(default)]
    pub peak_risk_score: Option<f64>,
    /// `reportId`s of the highest scores in the window, highest first.
    #[serde(default)]
    pub top_report_ids: Vec<String>,
    /// When the breach was detected (wall clock of the RAISED), epoch
    /// milliseconds; a CLEARED repeats its breach's value. A hint for the DORA
    /// clock, not a classification.
    #[serde(default)]
    pub detected_at: Option<i64>,
    /// Latest time an initial notification would be due if the breach is
    /// classified as a major ICT-related incident (RTS (EU) 2025/301 Art. 5:
    /// within 4 h of classification, no later than 24 h after becoming aware):
    /// `detected_at` + 24 h. A hint, not a classification.
    #[serde(default)]
    pub initial_notification_due_by: Option<i64>,
}

fn raised() -> RiskAlertState {
    RiskAlertState::Raised
}

/// One Kafka header of a dead-lettered record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterHeader {
    /// Header name.
    pub key: String,
    /// Header value bytes; `None` for a header without a value.
    #[serde(default, with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
}

/// A record a consumer could not process (topic `<topic>-dlq`, key the
/// original key), with everything needed to replay it byte-exact.
///
/// Legacy JSON dead letters (the seed's `DeadLetterQueueHandler`) lack the
/// position and the raw bytes: partition and offset decode as `-1`, and
/// `originalMessage` — a parsed dict in the seed — as the bytes Python's
/// `json.dumps` wrote for it, i.e. what the seed's producer had sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Topic the record was read from.
    pub original_topic: String,
    /// Partition it was read from; `-1` when unknown.
    #[serde(default = "unknown_position_i32")]
    pub original_partition: i32,
    /// Offset it was read from; `-1` when unknown.
    #[serde(default = "unknown_position_i64")]
    pub original_offset: i64,
    /// Exact key bytes; `None` for a record without a key.
    #[serde(default, with = "opt_bytes")]
    pub original_key: Option<Vec<u8>>,
    /// Exact value bytes.
    #[serde(with = "message_bytes")]
    pub original_message: Vec<u8>,
    /// Headers of the original record, in order, duplicates kept.
    #[serde(default)]
    pub original_headers: Vec<DeadLetterHeader>,
    /// Kafka timestamp of the original record, epoch milliseconds, if any.
    #[serde(default)]
    pub original_timestamp: Option<i64>,
    /// Why processing failed.
    pub error_message: String,
    /// Kind of failure (e.g. [`crate::SchemaError::kind`], or the seed's
    /// Python exception class name).
    pub error_type: String,
    /// Retries before giving up.
    pub retry_count: i32,
    /// Attempts in total.
    pub processing_attempts: i32,
    /// When the record was dead-lettered, epoch milliseconds.
    pub timestamp: i64,
    /// Service and consumer group that failed it, e.g. `audit-sink/audit-sink`;
    /// `unknown` for legacy JSON dead letters.
    #[serde(default = "unknown_failed_by")]
    pub failed_by: String,
}

fn unknown_position_i32() -> i32 {
    -1
}

fn unknown_position_i64() -> i64 {
    -1
}

fn unknown_failed_by() -> String {
    "unknown".to_string()
}

/// The length of `value` as compact JSON text (what `serde_json::to_string`
/// writes), in bytes, without building the text; `usize::MAX` if it cannot be
/// serialised. For size limits and budgets checked before encoding.
pub fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}

/// Free-form JSON fields: nested JSON in human-readable formats (the seed's
/// legacy JSON), JSON text in a `string` field in Avro.
///
/// Why a JSON string and not a recursive Avro union (null | boolean | long |
/// double | string | array | map): every JSON value — including integers
/// beyond `i64`, key order and `-0.0` vs `0` — round-trips exactly; a
/// consumer in any language reads it with its JSON library; and the payload
/// shape can change without a schema change, which matches how the seed
/// treats these dicts (opaque, producer-defined). The cost is that Avro
/// tooling sees a string, not structure, for these fields.
pub mod json_text {
    use std::borrow::Cow;

    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    /// Serializes `value` as nested JSON or as JSON text.
    pub fn serialize<S: Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            let text = serde_json::to_string(value).map_err(S::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }

    /// Deserializes nested JSON or JSON text into a value.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        if deserializer.is_human_readable() {
            Value::deserialize(deserializer)
        } else {
            let text = <Cow<'de, str>>::deserialize(deserializer)?;
            serde_json::from_str(&text)
                .map_err(|e| D::Error::custom(format!("field holds invalid JSON text: {e}")))
        }
    }
}

/// Optional raw bytes: Avro `bytes`; in JSON an array of numbers.
mod opt_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        serde_bytes::deserialize(deserializer)
    }
}

/// A dead letter's original value: Avro `bytes`, byte-exact. In JSON, the
/// seed's form: the value as a JSON document when the bytes are JSON
/// (deserialized back to the bytes `json.dumps` writes), else an array of numbers.
pub mod message_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    /// Serializes the bytes as Avro `bytes`, or in JSON as the document they hold.
    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            if let Ok(json) = serde_json::from_slice::<Value>(value) {
                return json.serialize(serializer);
            }
        }
        serde_bytes::serialize(value, serializer)
    }

    /// Deserializes Avro `bytes`, or from JSON the seed's parsed document
    /// (re-serialized the way Python's `json.dumps` does).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            let json = Value::deserialize(deserializer)?;
            if let Value::Array(items) = &json {
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect();
                if let (Some(bytes), false) = (bytes, items.is_empty()) {
                    if serde_json::from_slice::<Value>(&bytes).is_err() {
                        // our own JSON form of non-JSON bytes
                        return Ok(bytes);
                    }
                }
            }
            Ok(crate::pyjson::dumps(&json))
        } else {
            serde_bytes::deserialize(deserializer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_len;

    #[test]
    fn json_len_is_the_compact_texts_length() {
        let v = serde_json::json!({"a": [1, 2.5, "é\"\n"], "b": null, "c": {}});
        assert_eq!(json_len(&v), serde_json::to_string(&v).unwrap().len());
        assert_eq!(json_len(&serde_json::Map::new()), 2);
    }
}

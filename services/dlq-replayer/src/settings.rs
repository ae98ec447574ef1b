//! Settings of dlq-replayer (service and commands read the same): the shared
//! sections plus `registry`, `consumer`, `producer` and `dlq` (which topics,
//! where a replay may go, the automatic retry policy, the audit topic).

use dora_kafka::consume::ConsumerSettings;
use dora_kafka::{topics, ProducerSettings, RetryPolicy};
use dora_service::{CommonSettings, ServiceSettings};
use serde::{Deserialize, Serialize};

/// Settings of dlq-replayer (defaults < `DORA_CONFIG` file < `DORA_*` env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kafka, telemetry and admin sections. Admin default `127.0.0.1:9105`.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// Section `registry`: decodes dead letters and encodes audit events.
    pub registry: dora_schema::RegistrySettings,
    /// Section `consumer`: the service's consumer of every dead-letter topic.
    /// Group default `dlq-replayer`; `transactional_id` default
    /// `dlq-replayer-<host name>` (stable per instance, unique between them).
    pub consumer: ConsumerSettings,
    /// Section `producer`: replays, parked letters, resolutions, audit events.
    pub producer: ProducerSettings,
    /// Section `dlq`; checked when loaded, so unusable settings exit 78 naming the key.
    #[serde(deserialize_with = "checked_dlq")]
    pub dlq: DlqSettings,
}

fn checked_dlq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DlqSettings, D::Error> {
    let dlq = DlqSettings::deserialize(d)?;
    dlq.validate().map_err(serde::de::Error::custom)?;
    Ok(dlq)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            common: CommonSettings::with_admin_port(9105),
            registry: Default::default(),
            consumer: ConsumerSettings {
                group_id: "dlq-replayer".into(),
                transactional_id: Some(format!("dlq-replayer-{}", dora_service::host_name())),
                // Dead letters are few and an operator waits for them.
                fetch_min_bytes: 1,
                max_batch_wait_ms: 100,
                ..Default::default()
            },
            producer: ProducerSettings::default(),
            dlq: DlqSettings::default(),
        }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// Section `dlq` (env `DORA_DLQ__<KEY>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DlqSettings {
    /// Regex of the dead-letter topics the service follows (topics created
    /// later included). Default `^.*-dlq$` (not `-dlq-parked`).
    pub pattern: String,
    /// Topics a replay may write to: a dead letter goes back only to the topic
    /// it came from, and only when that topic is listed here. Default: the
    /// catalog's topics that have a dead-letter topic (`crates/kafka/src/topics.rs`).
    pub replay_topics: Vec<String>,
    /// Topic of the audit events written for every replay and park. Default `user-activities`.
    pub audit_topic: String,
    /// Error types the service replays by itself, each with its retry policy:
    /// `base_delay_ms` after the failure, doubling up to `max_delay_ms`, at
    /// most `max_retries` replays (counted from the record's replay header);
    /// a letter that reached them is parked. Every other error type is
    /// permanent: never replayed automatically. Default: none.
    pub transient: Vec<TransientError>,
    /// How often the service looks for due letters and refreshes its gauges, ms. Default 1000.
    pub tick_ms: u64,
    /// Letters the service replays or parks per tick at most (one
    /// transaction). Default 100.
    pub max_per_tick: usize,
    /// How often the service looks for new dead-letter topics, ms (librdkafka's
    /// `topic.metadata.refresh.interval.ms` of its consumer, unless
    /// `kafka.extra` sets it; librdkafka's default is 300000). Default 30000.
    pub new_topic_check_ms: u64,
}

impl Default for DlqSettings {
    fn default() -> Self {
        Self {
            pattern: "^.*-dlq$".into(),
            replay_topics: topics::catalog()
                .iter()
                .filter_map(|t| t.name.strip_suffix(topics::DLQ_SUFFIX))
                .map(str::to_string)
                .collect(),
            audit_topic: topics::USER_ACTIVITIES.into(),
            transient: Vec::new(),
            tick_ms: 1000,
            max_per_tick: 100,
            new_topic_check_ms: 30_000,
        }
    }
}

/// One transient error type and how it is retried (`[[dlq.transient]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransientError {
    /// The dead letter's `errorType`, exactly.
    pub error_type: String,
    /// Delay, backoff and maximum replays (the platform's one retry policy).
    #[serde(flatten)]
    pub retry: RetryPolicy,
}

/// Error types that say the record itself is bad: a replay cannot succeed,
/// so they may not be configured as transient (settings are refused). The
/// codec's decoding failures, the platform's services' own (a `SchemaError`
/// reaches a dead-letter topic only when permanent: the consume loop retries
/// a registry outage in place), and the seed's `JSONDecodeError`.
pub const PERMANENT_ERROR_TYPES: &[&str] = &[
    "UnknownMagicByte",
    "Truncated",
    "UnknownSchemaId",
    "SchemaMismatch",
    "InvalidAvro",
    "InvalidJson",
    "MissingField",
    "IllTypedField",
    "Invalid",
    "Undecodable",
    "SchemaError",
    "UndecodableAgentEvent",
    "InvalidAgentEvent",
    "InvalidAssessment",
    "InvalidTimestamp",
    "Tombstone",
    "JSONDecodeError",
];

impl DlqSettings {
    /// Checks what serde cannot: transient error types that are neither
    /// permanent nor listed twice, a non-zero tick, an audit topic. The
    /// message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.transient {
            if t.error_type.trim().is_empty() {
                return Err("dlq.transient: an entry has an empty error_type".into());
            }
            if PERMANENT_ERROR_TYPES.contains(&t.error_type.as_str()) {
                return Err(format!(
                    "dlq.transient: {} is a permanent error type (the record itself is bad); it is never replayed automatically",
                    t.error_type
                ));
            }
            if !seen.insert(t.error_type.as_str()) {
                return Err(format!("dlq.transient: {} is listed twice", t.error_type));
            }
        }
        if self.tick_ms == 0 {
            return Err("dlq.tick_ms must be at least 1".into());
        }
        if self.max_per_tick == 0 {
            return Err("dlq.max_per_tick must be at least 1".into());
        }
        if self.audit_topic.trim().is_empty() {
            return Err("dlq.audit_topic is empty".into());
        }
        Ok(())
    }

    /// The retry policy of `error_type`, when it is transient.
    pub fn transient_policy(&self, error_type: &str) -> Option<&RetryPolicy> {
        self.transient
            .iter()
            .find(|t| t.error_type == error_type)
            .map(|t| &t.retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_every_dlq_and_replay_only_to_catalog_topics() {
        let s = Settings::default();
        assert_eq!(s.consumer.group_id, "dlq-replayer");
        assert!(s.consumer.transactional_id.is_some());
        assert_eq!(s.common.admin.listen.port(), 9105);
        let mut targets = s.dlq.replay_topics.clone();
        targets.sort();
        assert_eq!(
            targets,
            [
                "agent-events",
                "gap-assessments",
                "risk-assessments",
                "user-activities"
            ]
        );
        assert!(s.dlq.transient.is_empty());
        assert!(s.dlq.validate().is_ok());
    }

    #[test]
    fn transient_types_come_from_the_file_and_permanent_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[[dlq.transient]]\nerror_type = \"RegistryUnavailable\"\nbase_delay_ms = 500\nmax_delay_ms = 4000\nmax_retries = 3\n",
        )
        .unwrap();
        let vars = vec![("DORA_CONFIG".to_string(), file.display().to_string())];
        let s: Settings = dora_config::load_from(&vars).unwrap();
        let p = s.dlq.transient_policy("RegistryUnavailable").unwrap();
        assert_eq!(
            (p.base_delay_ms, p.max_delay_ms, p.max_retries),
            (500, 4000, 3)
        );
        assert!(s.dlq.transient_policy("InvalidJson").is_none());

        let mut bad = s.dlq.clone();
        for permanent in [
            "InvalidJson",
            "SchemaError",
            "UndecodableAgentEvent",
            "JSONDecodeError",
        ] {
            bad.transient[0].error_type = permanent.into();
            assert!(bad.validate().unwrap_err().contains(permanent));
        }
        let mut twice = s.dlq.clone();
        twice.transient.push(twice.transient[0].clone());
        assert!(twice.validate().unwrap_err().contains("twice"));

        // Refused when loaded: the key and the reason are named.
        std::fs::write(&file, "[[dlq.transient]]\nerror_type = \"InvalidAvro\"\n").unwrap();
        let err = dora_config::load_from::<Settings>(&vars)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dlq") && err.contains("InvalidAvro"), "{err}");
    }
}

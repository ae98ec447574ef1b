//! Settings of report-ingest: the shared sections plus `ingest` (gRPC,
//! authentication, limits, topics).

use std::net::SocketAddr;

use dora_service::{CommonSettings, ServiceSettings};
use serde::{Deserialize, Serialize};

use crate::assessment::Limits;

/// Settings of report-ingest (defaults < `DORA_CONFIG` file < `DORA_*` env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kafka, telemetry and admin sections. Admin default `127.0.0.1:9102`.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// Section `registry`: the schema registry.
    pub registry: dora_schema::RegistrySettings,
    /// Section `producer`: reports and audit events of gRPC submissions, and
    /// the transactional producer of the agent path. Default `linger_ms` 5
    /// (callers wait for the ack; the runtime's default is the seed's 10).
    pub producer: dora_kafka::ProducerSettings,
    /// Section `consumer`: agent-events in group `report-ingest`, transactional.
    /// `transactional_id` defaults to `report-ingest-<hostname>` (stable across
    /// restarts of one host or pod, distinct between them; two replicas on one
    /// host need their own); `fetch_min_bytes` 1 and batches wait at most
    /// 100 ms (runtime defaults 1024 and 500) so reports follow events closely.
    pub consumer: dora_kafka::consume::ConsumerSettings,
    /// Section `ingest`.
    pub ingest: IngestSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            common: CommonSettings::with_admin_port(9102),
            registry: Default::default(),
            producer: dora_kafka::ProducerSettings {
                linger_ms: 5,
                ..Default::default()
            },
            consumer: dora_kafka::consume::ConsumerSettings {
                group_id: "report-ingest".into(),
                transactional_id: Some(format!("report-ingest-{}", dora_service::host_name())),
                fetch_min_bytes: 1,
                max_batch_wait_ms: 100,
                ..Default::default()
            },
            ingest: IngestSettings::default(),
        }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// Section `ingest` (env `DORA_INGEST__<KEY>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestSettings {
    /// gRPC listen address. Default `127.0.0.1:50052`.
    pub grpc_listen: SocketAddr,
    /// TLS and token settings (`tls_cert`, `tls_key`, `tls_client_ca`,
    /// `token_key` from `DORA_INGEST__TOKEN_KEY_FILE`): see
    /// [`dora_auth::AuthSettings`]. Callers authenticate with a token for
    /// audience `report-ingest` whose `orgs` name the organisations they may
    /// submit for, or a client certificate (CN = name, O = organisations).
    #[serde(flatten)]
    pub auth: dora_auth::AuthSettings,
    /// Largest `organization_id` and `request_id`, bytes. Default 128.
    pub max_id_bytes: usize,
    /// Largest assessment (`data_json`, or an agent's assessment as JSON), bytes.
    /// Default 65 536.
    pub max_data_bytes: usize,
    /// Largest gRPC request frame, bytes (larger: OUT_OF_RANGE). Default 131 072.
    pub max_request_bytes: usize,
    /// Most submissions in one SubmitAssessments call (more: INVALID_ARGUMENT,
    /// nothing produced). Default 500.
    pub max_bulk_submissions: usize,
    /// Longest the gRPC server waits for in-flight calls on shutdown, ms. Default 20 000.
    pub drain_timeout_ms: u64,
    /// Topic of agent events (read in group `consumer.group_id`). Default `agent-events`.
    pub events_topic: String,
    /// Topic of gap assessment reports. Default `gap-assessments`.
    pub gap_topic: String,
    /// Topic of risk assessment reports. Default `risk-assessments`.
    pub risk_topic: String,
    /// Topic of audit events. Default `user-activities`.
    pub audit_topic: String,
}

impl Default for IngestSettings {
    fn default() -> Self {
        use dora_kafka::topics;
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            auth: Default::default(),
            max_id_bytes: 128,
            max_data_bytes: 65_536,
            max_request_bytes: 131_072,
            max_bulk_submissions: 500,
            drain_timeout_ms: 20_000,
            events_topic: topics::AGENT_EVENTS.into(),
            gap_topic: topics::GAP_ASSESSMENTS.into(),
            risk_topic: topics::RISK_ASSESSMENTS.into(),
            audit_topic: topics::USER_ACTIVITIES.into(),
        }
    }
}

impl IngestSettings {
    /// The validation limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_id_bytes: self.max_id_bytes,
            max_data_bytes: self.max_data_bytes,
            max_bulk_submissions: self.max_bulk_submissions,
        }
    }

    /// Where reports of each kind go.
    pub fn report_topics(&self) -> ReportTopics {
        ReportTopics {
            gap: self.gap_topic.clone(),
            risk: self.risk_topic.clone(),
        }
    }
}

/// Where reports of each kind go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTopics {
    /// Gap assessments.
    pub gap: String,
    /// Risk assessments.
    pub risk: String,
}

impl ReportTopics {
    /// The topic of a report of `kind`.
    pub fn of(&self, kind: crate::assessment::Kind) -> &str {
        match kind {
            crate::assessment::Kind::Gap => &self.gap,
            crate::assessment::Kind::Risk { .. } => &self.risk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_env_overrides() {
        let s: Settings = dora_config::load_from(&[]).unwrap();
        assert_eq!(s.common.admin.listen.port(), 9102);
        assert_eq!(s.ingest.grpc_listen.port(), 50052);
        assert_eq!(s.consumer.group_id, "report-ingest");
        assert!(s
            .consumer
            .transactional_id
            .as_deref()
            .unwrap()
            .starts_with("report-ingest-"));
        let vars = vec![
            ("DORA_INGEST__GAP_TOPIC".to_string(), "g".to_string()),
            (
                "DORA_CONSUMER__TRANSACTIONAL_ID".to_string(),
                "report-ingest-7".to_string(),
            ),
        ];
        let s: Settings = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.ingest.report_topics().gap, "g");
        assert_eq!(
            s.consumer.transactional_id.as_deref(),
            Some("report-ingest-7")
        );
    }
}

//! Shared helpers of report-ingest's integration tests: topics, group and
//! transactional ids of one test, report-ingest as a real process on them,
//! agent events as test input, and the reports and audit events read back
//! with the harness's plain clients (read_committed) and decoded.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use dora_schema::{
    AgentEvent, AgentStatus, AuditEvent, Codec, ComplianceReport, DeadLetter, EventType,
    RegistrySettings,
};
use dora_testkit as tk;
use report_ingest::client;
use serde_json::Value;

/// The report-ingest binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_report-ingest");

/// Topics, group and key of one test.
pub struct Scenario {
    /// `agent-events` stand-in (3 partitions).
    pub events_topic: String,
    /// `gap-assessments` stand-in.
    pub gap_topic: String,
    /// `risk-assessments` stand-in.
    pub risk_topic: String,
    /// `user-activities` stand-in.
    pub audit_topic: String,
    /// Consumer group of the agent path.
    pub group: String,
    /// The token signing key file (for the process) and its bytes.
    pub key_file: PathBuf,
    /// The key's bytes.
    pub key: Vec<u8>,
    _dir: tempfile::TempDir,
    /// The codec tests encode input and decode output with.
    pub codec: Codec,
}

impl Scenario {
    /// Fresh topics (and the events topic's DLQ) and a fresh token key.
    pub async fn new() -> Result<Self> {
        let kafka = tk::kafka();
        let events_topic = tk::unique("agent-events");
        let gap_topic = tk::unique("gap-assessments");
        let risk_topic = tk::unique("risk-assessments");
        let audit_topic = tk::unique("user-activities");
        tk::create_topic(&kafka, &events_topic, 3).await?;
        tk::create_topic(&kafka, &format!("{events_topic}-dlq"), 1).await?;
        for t in [&gap_topic, &risk_topic, &audit_topic] {
            tk::create_topic(&kafka, t, 3).await?;
        }
        let dir = tempfile::tempdir()?;
        let key_file = dir.path().join("token-key");
        let key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
        .into_bytes();
        std::fs::write(&key_file, &key)?;
        let codec = Codec::new(&RegistrySettings {
            url: tk::registry_url(),
            ..Default::default()
        })?;
        Ok(Self {
            events_topic,
            gap_topic,
            risk_topic,
            audit_topic,
            group: tk::unique("report-ingest"),
            key_file,
            key,
            _dir: dir,
            codec,
        })
    }

    /// The environment of a report-ingest process of this scenario, with its
    /// transactional id (gRPC on a port of its own choosing, announced).
    pub fn env(&self, transactional_id: &str) -> Vec<(&'static str, String)> {
        vec![
            ("DORA_INGEST__GRPC_LISTEN", "127.0.0.1:0".to_string()),
            (
                "DORA_INGEST__TOKEN_KEY_FILE",
                self.key_file.display().to_string(),
            ),
            ("DORA_INGEST__EVENTS_TOPIC", self.events_topic.clone()),
            ("DORA_INGEST__GAP_TOPIC", self.gap_topic.clone()),
            ("DORA_INGEST__RISK_TOPIC", self.risk_topic.clone()),
            ("DORA_INGEST__AUDIT_TOPIC", self.audit_topic.clone()),
            ("DORA_CONSUMER__GROUP_ID", self.group.clone()),
            (
                "DORA_CONSUMER__TRANSACTIONAL_ID",
                transactional_id.to_string(),
            ),
            // The broker's minimum: a crashed replica's partitions move on within seconds.
            ("DORA_CONSUMER__SESSION_TIMEOUT_MS", "6000".into()),
            ("DORA_CONSUMER__MAX_BATCH_RECORDS", "20".into()),
        ]
    }

    /// Starts report-ingest with `transactional_id` and waits until it is ready.
    pub async fn start(&self, transactional_id: &str) -> Result<Ingest> {
        self.start_with(transactional_id, &[]).await
    }

    /// As [`start`](Self::start), with `extra` settings (env) added.
    pub async fn start_with(
        &self,
        transactional_id: &str,
        extra: &[(&'static str, String)],
    ) -> Result<Ingest> {
        let mut env = self.env(transactional_id);
        env.extend(extra.iter().cloned());
        let process = tk::ServiceProcess::spawn(BIN, &env).await?;
        Ok(Ingest { process })
    }

    /// A token of this scenario's key for `name`, submitting for `orgs`.
    pub fn token(&self, name: &str, orgs: &[&str]) -> Result<String> {
        let mut grant =
            dora_auth::Grant::new(name, "report-ingest", std::time::Duration::from_secs(600));
        for org in orgs {
            grant = grant.with_org(*org);
        }
        Ok(dora_auth::TokenKey::new(&self.key)?.issue(&grant)?)
    }

    /// A client of `ingest` authenticated as `name`, submitting for `orgs`.
    pub async fn client(
        &self,
        ingest: &mut Ingest,
        name: &str,
        orgs: &[&str],
    ) -> Result<client::ReportClient> {
        let channel = client::connect(&ingest.grpc_url().await?).await?;
        client::with_token(channel, &self.token(name, orgs)?)
    }

    /// Records on the gap, risk and audit topics (committed or not).
    pub async fn records_on_outputs(&self) -> Result<i64> {
        let mut n = 0;
        for t in [&self.gap_topic, &self.risk_topic, &self.audit_topic] {
            n += tk::record_count(&tk::kafka(), t).await?;
        }
        Ok(n)
    }

    /// Every committed report on the gap and risk topics, decoded, with its key.
    pub async fn reports(&self) -> Result<Vec<(String, ComplianceReport)>> {
        let mut out = Vec::new();
        for topic in [&self.gap_topic, &self.risk_topic] {
            for r in tk::read_committed(&tk::kafka(), topic).await? {
                let report: ComplianceReport = self.decode_avro(topic, &r).await?;
                let key = String::from_utf8(r.key.clone().unwrap_or_default())?;
                out.push((key, report));
            }
        }
        Ok(out)
    }

    /// Every committed audit event.
    pub async fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::new();
        for r in tk::read_committed(&tk::kafka(), &self.audit_topic).await? {
            out.push(self.decode_avro(&self.audit_topic, &r).await?);
        }
        Ok(out)
    }

    /// Every dead letter of the events topic.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let topic = format!("{}-dlq", self.events_topic);
        let mut out = Vec::new();
        for r in tk::read_committed(&tk::kafka(), &topic).await? {
            out.push(self.decode_avro(&topic, &r).await?);
        }
        Ok(out)
    }

    /// The report an answer names is at the topic, partition and offset it
    /// names (positions exist only once the broker acknowledged).
    pub async fn holds_answered_report(
        &self,
        answer: &dora_proto::report::v1::SubmitReportResponse,
    ) -> Result<()> {
        let records = tk::read_committed(&tk::kafka(), &answer.topic).await?;
        let record = records
            .iter()
            .find(|r| r.partition == answer.partition && r.offset == answer.offset)
            .with_context(|| format!("nothing at the answered position of {answer:?}"))?;
        let stored: ComplianceReport = self.decode_avro(&answer.topic, record).await?;
        anyhow::ensure!(
            stored.report_id == answer.report_id,
            "the answered position holds {stored:?}, not {answer:?}"
        );
        Ok(())
    }

    /// Decodes `r` as Confluent-framed Avro (fails on anything else, e.g. JSON).
    pub async fn decode_avro<T>(&self, topic: &str, r: &tk::Record) -> Result<T>
    where
        T: dora_schema::AvroRecord + serde::de::DeserializeOwned,
    {
        let bytes = r.payload().context("record without a value")?;
        anyhow::ensure!(
            bytes.first() == Some(&0),
            "{topic}/{}@{}: not Confluent-framed Avro",
            r.partition,
            r.offset
        );
        Ok(self.codec.decode(topic, bytes).await?)
    }

    /// Produces `event` (Avro) to the events topic, keyed by its agent; returns (partition, offset).
    pub async fn send_event(
        &self,
        producer: &tk::TestProducer,
        event: &AgentEvent,
    ) -> Result<(i32, i64)> {
        let bytes = self.codec.encode(&self.events_topic, event).await?;
        tk::produce(
            producer,
            &self.events_topic,
            Some(event.agent_id.as_bytes()),
            &bytes,
            &[],
        )
        .await
    }

    /// Produces raw bytes (e.g. the seed's JSON) to the events topic.
    pub async fn send_raw(
        &self,
        producer: &tk::TestProducer,
        key: &str,
        bytes: &[u8],
    ) -> Result<(i32, i64)> {
        tk::produce(
            producer,
            &self.events_topic,
            Some(key.as_bytes()),
            bytes,
            &[],
        )
        .await
    }

    /// True once the group has committed every record up to `ends` (partition -> end offset).
    pub async fn committed_up_to(&self, ends: &HashMap<i32, i64>) -> Result<bool> {
        for (p, end) in ends {
            let committed =
                tk::committed_offset(&tk::kafka(), &self.group, &self.events_topic, *p).await?;
            if committed.unwrap_or(0) < *end {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A running report-ingest.
pub struct Ingest {
    /// The process.
    pub process: tk::ServiceProcess,
}

impl Ingest {
    /// The URL of its gRPC API, once announced.
    pub async fn grpc_url(&mut self) -> Result<String> {
        let addr = self.process.wait_announced("grpc", tk::DEADLINE).await?;
        Ok(format!("http://{addr}"))
    }
}

/// A TASK_COMPLETED event of `agent` (`agent_type`) whose result carries
/// `assessment` for `org`.
pub fn task_completed(agent: &str, agent_type: &str, org: &str, assessment: Value) -> AgentEvent {
    AgentEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        agent_id: agent.to_string(),
        timestamp: chrono_now_ms(),
        event_type: EventType::TaskCompleted,
        agent_type: agent_type.to_string(),
        status: AgentStatus::Healthy,
        version: "1.0.0".into(),
        message: None,
        metadata: serde_json::json!({"result_summary": {"organization_id": org, "assessment": assessment}}),
        task_id: Some(tk::unique("task")),
    }
}

/// A heartbeat of `agent`: no report.
pub fn heartbeat(agent: &str, agent_type: &str) -> AgentEvent {
    AgentEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        agent_id: agent.to_string(),
        timestamp: chrono_now_ms(),
        event_type: EventType::Heartbeat,
        agent_type: agent_type.to_string(),
        status: AgentStatus::Healthy,
        version: "1.0.0".into(),
        message: None,
        metadata: serde_json::json!({"resource_usage": {"cpu_percent": 12.5}}),
        task_id: None,
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

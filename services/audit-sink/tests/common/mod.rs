//! Shared harness of audit-sink's integration tests: per test its own topics,
//! group, database (on the stack's PostgreSQL, or a private server) and writer
//! login; audit-sink runs as a real process; tests read rows as the owner.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use dora_kafka::KafkaSettings;
use dora_schema::{AuditEvent, Codec, ComplianceReport, RegistrySettings, ReportType, RiskLevel};
use dora_testkit as tk;
use serde_json::json;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_audit-sink");

/// One test's world.
pub struct Harness {
    pub kafka: KafkaSettings,
    pub audit_topic: String,
    pub gap_topic: String,
    pub risk_topic: String,
    pub group: String,
    pub db: tk::TempDatabase,
    pub writer: String,
    pub writer_password_file: tempfile::NamedTempFile,
    pub codec: Codec,
    pub producer: tk::TestProducer,
}

impl Harness {
    /// Topics with `partitions` partitions (and their DLQs) and a fresh
    /// database on `server` (the stack's PostgreSQL when `None`).
    pub async fn new(partitions: i32, server: Option<&tk::Postgres>) -> Result<Self> {
        let kafka = tk::kafka();
        let audit_topic = tk::unique("user-activities");
        let gap_topic = tk::unique("gap-assessments");
        let risk_topic = tk::unique("risk-assessments");
        for t in [&audit_topic, &gap_topic, &risk_topic] {
            tk::create_topic(&kafka, t, partitions).await?;
            tk::create_topic(&kafka, &format!("{t}-dlq"), 1).await?;
        }
        let stack = tk::postgres();
        let mut db = tk::TempDatabase::create(server.unwrap_or(&stack)).await?;
        let writer = tk::unique("audit_sink").replace('-', "_");
        db.roles.push(writer.clone());
        let writer_password_file = tempfile::NamedTempFile::new()?;
        std::fs::write(writer_password_file.path(), uuid::Uuid::new_v4().simple().to_string())?;
        let codec = Codec::new(&RegistrySettings { url: tk::registry_url(), ..Default::default() })?;
        let producer = tk::producer(&kafka)?;
        Ok(Self {
            kafka,
            audit_topic,
            gap_topic,
            risk_topic,
            group: tk::unique("audit-sink"),
            db,
            writer,
            writer_password_file,
            codec,
            producer,
        })
    }

    /// The service's environment: this test's topics, group, database and roles.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let s = &self.db.server;
        vec![
            ("DORA_POSTGRES__HOST", s.host.clone()),
            ("DORA_POSTGRES__PORT", s.port.to_string()),
            ("DORA_POSTGRES__DATABASE", self.db.name.clone()),
            ("DORA_POSTGRES__USER", self.writer.clone()),
            ("DORA_POSTGRES__PASSWORD_FILE", self.writer_password_file.path().display().to_string()),
            ("DORA_POSTGRES__ADMIN_USER", s.user.clone()),
            ("DORA_POSTGRES__ADMIN_PASSWORD_FILE", s.password_file.display().to_string()),
            ("DORA_POSTGRES__SSL_MODE", "disable".into()),
            ("DORA_POSTGRES__CONNECT_TIMEOUT_MS", "2000".into()),
            ("DORA_AUDIT_SINK__AUDIT_TOPICS", format!("[\"{}\"]", self.audit_topic)),
            ("DORA_AUDIT_SINK__REPORT_TOPICS", format!("[\"{}\",\"{}\"]", self.gap_topic, self.risk_topic)),
            ("DORA_CONSUMER__GROUP_ID", self.group.clone()),
            ("DORA_CONSUMER__FETCH_MIN_BYTES", "1".into()),
            // a crashed instance leaves the group quickly
            ("DORA_CONSUMER__SESSION_TIMEOUT_MS", "6000".into()),
            ("DORA_CONSUMER__MAX_BATCH_WAIT_MS", "200".into()),
            ("DORA_CONSUMER__RETRY__BASE_DELAY_MS", "200".into()),
            ("DORA_CONSUMER__RETRY__MAX_DELAY_MS", "2000".into()),
        ]
    }

    /// Starts audit-sink with this test's environment plus `extra`, waits for `/readyz`.
    pub async fn spawn(&self, extra: &[(&'static str, String)]) -> Result<tk::ServiceProcess> {
        let mut env = self.env();
        env.extend(extra.iter().cloned());
        tk::ServiceProcess::spawn(BIN, &env).await
    }

    /// Runs `audit-sink <args>` to completion; returns (exit code, stdout, stderr).
    pub async fn command(&self, args: &[&str]) -> Result<(Option<i32>, String, String)> {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args).env("DORA_TELEMETRY__LOG_FORMAT", "json").kill_on_drop(true);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(tk::DEADLINE, cmd.output()).await.context("command timed out")??;
        Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into()))
    }

    /// Produces raw bytes; returns (partition, offset).
    pub async fn produce(&self, topic: &str, key: &str, value: &[u8]) -> Result<(i32, i64)> {
        tk::produce(&self.producer, topic, Some(key.as_bytes()), value, &[]).await
    }

    /// Produces an audit event as Confluent Avro.
    pub async fn produce_event(&self, e: &AuditEvent) -> Result<(i32, i64)> {
        let bytes = self.codec.encode(&self.audit_topic, e).await?;
        self.produce(&self.audit_topic, "2026-11-27-09", &bytes).await
    }

    /// Produces a report as Confluent Avro on the topic of its type.
    pub async fn produce_report(&self, r: &ComplianceReport) -> Result<(i32, i64)> {
        let topic = if r.report_type == ReportType::GapAssessment { &self.gap_topic } else { &self.risk_topic };
        let bytes = self.codec.encode(topic, r).await?;
        self.produce(topic, &r.organization_id, &bytes).await
    }

    /// A connection to this test's database as the owner (a superuser on the stack).
    pub async fn owner(&self) -> Result<tokio_postgres::Client> {
        self.db.connect().await
    }

    /// A connection as the service's writer login.
    pub async fn as_writer(&self) -> Result<tokio_postgres::Client> {
        let mut cfg = self.db.server.config(&self.db.name)?;
        cfg.user(&self.writer).password(std::fs::read_to_string(self.writer_password_file.path())?);
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move { drop(conn.await) });
        Ok(client)
    }

    /// Rows in `audit.<table>`.
    pub async fn count(&self, table: &str) -> Result<i64> {
        let c = self.owner().await?;
        Ok(c.query_one(&format!("SELECT count(*) FROM audit.{table}"), &[]).await?.get(0))
    }

    /// Waits until `audit.<table>` has `n` rows.
    pub async fn wait_rows(&self, table: &str, n: i64) -> Result<()> {
        tk::eventually(tk::DEADLINE * 2, || async move {
            self.count(table).await.ok().filter(|c| *c == n).map(|_| ())
        })
        .await
        .with_context(|| format!("audit.{table} did not reach {n} rows"))
    }
}

/// An audit event with every optional field set.
pub fn audit_event(n: usize) -> AuditEvent {
    AuditEvent {
        event_id: format!("evt-{}-{n}", uuid::Uuid::new_v4().simple()),
        timestamp: 1_795_771_815_123 + n as i64,
        user_id: format!("user-{}", n % 3),
        action: "REPORT_VIEWED".into(),
        resource: format!("reports/gap/org-{n}"),
        details: json!({"ip_address": "10.1.2.3", "query": {"page": n, "filters": ["open"]}, "note": "caf\u{e9}"}),
        ip_address: Some("10.1.2.3".into()),
        user_agent: Some("Mozilla/5.0".into()),
        session_id: Some(format!("sess-{n}")),
    }
}

/// A risk assessment with every optional field set.
pub fn risk_report(n: usize) -> ComplianceReport {
    ComplianceReport {
        report_id: format!("rep-{}-{n}", uuid::Uuid::new_v4().simple()),
        organization_id: format!("org-{n}"),
        timestamp: 1_795_771_815_456,
        report_type: ReportType::RiskAssessment,
        risk_score: Some(0.87),
        risk_level: Some(RiskLevel::High),
        data: json!({"overall_score": 0.87, "risk_level": "HIGH", "factors": {"third_party": 0.9}}),
        version: "1.0".into(),
    }
}

/// Waits up to `deadline` for the process to exit by itself; returns its status.
pub async fn exited(p: &mut tk::ServiceProcess, deadline: Duration) -> Result<std::process::ExitStatus> {
    p.wait_exit(deadline).await
}

impl Harness {
    /// Links in the chain of `topic`/`partition`.
    pub async fn links(&self, topic: &str, partition: i32) -> Result<i64> {
        let c = self.owner().await?;
        Ok(c.query_one(
            "SELECT count(*) FROM audit.chain WHERE topic = $1 AND kafka_partition = $2",
            &[&topic, &partition],
        )
        .await?
        .get(0))
    }

    /// The next offset the database expects on `topic`/`partition` (its fence), if any.
    pub async fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let c = self.owner().await?;
        Ok(c.query_opt(
            "SELECT next_offset FROM audit.sink_offsets WHERE topic = $1 AND kafka_partition = $2",
            &[&topic, &partition],
        )
        .await?
        .map(|r| r.get(0)))
    }

    /// The group's committed offset on `topic`/`partition`.
    pub async fn committed(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        tk::committed_offset(&self.kafka, &self.group, topic, partition).await
    }

    /// Waits until the group committed `offset` on `topic`/`partition`.
    pub async fn wait_committed(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        tk::eventually(tk::DEADLINE, || async move {
            self.committed(topic, partition).await.ok().flatten().filter(|o| *o == offset).map(|_| ())
        })
        .await
        .with_context(|| format!("{topic}/{partition}: committed offset did not reach {offset}"))
    }

    /// Runs `audit-sink verify`; returns (exit code, stdout).
    pub async fn verify(&self) -> Result<(Option<i32>, String)> {
        let (code, out, err) = self.command(&["verify"]).await?;
        Ok((code, format!("{out}{err}")))
    }
}

/// A metric's value from a running sink's `/metrics`.
pub async fn metric(p: &tk::ServiceProcess, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
    let (_, body) = p.admin_get("/metrics").await?;
    Ok(tk::metric_value(&body, name, labels))
}

/// Rewrites `topic`/0's chain, all of it, as the sink wrote chains before migration V3 (format 1: every typed
/// column hashed), and its head to match: the state an existing database is in when V3 is applied.
pub async fn rewrite_as_format_1(su: &tokio_postgres::Client, topic: &str) -> Result<()> {
    use audit_sink::chain::{AuditColumns, Format, Hash, Link, Outcome, Row, GENESIS};
    let rows = su
        .query(
            "SELECT c.seq, c.kafka_offset, c.entity_id, (extract(epoch FROM c.consumed_at) * 1e6)::bigint, \
             (extract(epoch FROM e.kafka_timestamp) * 1e6)::bigint, e.record_key, e.record_value, e.event_id, \
             (extract(epoch FROM e.occurred_at) * 1e6)::bigint, e.user_id, e.action, e.resource, e.details::text, \
             e.ip_address, e.user_agent, e.session_id, e.value_format \
             FROM audit.chain c JOIN audit.audit_events e USING (topic, kafka_partition, kafka_offset) \
             WHERE c.topic = $1 AND c.kafka_partition = 0 AND c.outcome = 'stored' ORDER BY c.seq",
            &[&topic],
        )
        .await?;
    let mut prev: Hash = GENESIS;
    for r in &rows {
        let row = Row::Audit(AuditColumns {
            event_id: r.get(7),
            occurred_at_us: r.get(8),
            user_id: r.get(9),
            action: r.get(10),
            resource: r.get(11),
            details: r.get(12),
            ip_address: r.get(13),
            user_agent: r.get(14),
            session_id: r.get(15),
            value_format: r.get(16),
        });
        let link = Link {
            format: Format::V1,
            topic,
            partition: 0,
            seq: r.get(0),
            offset: r.get(1),
            outcome: Outcome::Stored,
            entity_id: r.get(2),
            reason: None,
            consumed_at_us: r.get(3),
            kafka_timestamp_us: r.get(4),
            key: r.get(5),
            value: r.get(6),
            row: Some(&row),
            writer: None,
        };
        let hash = link.hash(&prev);
        su.execute(
            "UPDATE audit.chain SET format = 1, prev_hash = $3, hash = $4 WHERE topic = $1 AND kafka_partition = 0 AND seq = $2",
            &[&topic, &link.seq, &&prev[..], &&hash[..]],
        )
        .await?;
        prev = hash;
    }
    su.execute("UPDATE audit.sink_offsets SET head_hash = $2 WHERE topic = $1 AND kafka_partition = 0", &[&topic, &&prev[..]])
        .await?;
    Ok(())
}

//! Settings of audit-sink: the shared sections plus `registry`, `consumer`,
//! `postgres` (the database and its two roles) and `audit_sink` (topics,
//! health thresholds, the crash test hook).

use std::path::PathBuf;
use std::time::Duration;

use dora_config::{ExposeSecret, Secret};
use dora_service::{CommonSettings, ServiceSettings};
use serde::{Deserialize, Serialize};

/// Settings of audit-sink (defaults < `DORA_CONFIG` file < `DORA_*` env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kafka, telemetry and admin sections. Admin default `127.0.0.1:9103`.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// Section `registry`: the schema registry (Avro writer schemas by id).
    pub registry: dora_schema::RegistrySettings,
    /// Section `producer`: the dead-letter producer of the consume loop.
    pub producer: dora_kafka::ProducerSettings,
    /// Section `consumer`. Group default `audit-sink`; batches of up to 1000
    /// records (the runtime's default is the seed's 100): one database
    /// transaction per batch, so larger batches mean fewer commits.
    pub consumer: dora_kafka::consume::ConsumerSettings,
    /// Section `postgres`.
    pub postgres: PostgresSettings,
    /// Section `audit_sink`.
    pub audit_sink: SinkSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            common: CommonSettings::with_admin_port(9103),
            registry: Default::default(),
            producer: Default::default(),
            consumer: dora_kafka::consume::ConsumerSettings {
                group_id: "audit-sink".into(),
                max_batch_records: 1000,
                ..Default::default()
            },
            postgres: PostgresSettings::default(),
            audit_sink: SinkSettings::default(),
        }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// TLS towards PostgreSQL (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (certificate verified when used).
    Prefer,
    /// TLS, certificate and host name verified.
    Require,
}

/// Section `postgres` (env `DORA_POSTGRES__<KEY>`). Two roles: the service
/// writes with `user`, which may only INSERT and SELECT the audit tables; the
/// owner `admin_user` applies the migrations and provisions `user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresSettings {
    /// Host. Default `127.0.0.1`.
    pub host: String,
    /// Port. Default 5432.
    pub port: u16,
    /// Database. Default `dora`.
    pub database: String,
    /// The login the service writes with (member of `audit_writer`: INSERT and
    /// SELECT on the audit tables, nothing else). Default `audit_sink`.
    pub user: String,
    /// Its password (use `DORA_POSTGRES__PASSWORD_FILE`). Never printed.
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// The owner login that applies migrations and creates or updates `user`
    /// with `password`. When unset the service only checks that the schema is
    /// current (`audit-sink migrate` ran before, e.g. as an init container).
    /// Default unset.
    pub admin_user: Option<String>,
    /// Its password (use `DORA_POSTGRES__ADMIN_PASSWORD_FILE`). Never printed.
    #[serde(skip_serializing)]
    pub admin_password: Option<Secret>,
    /// TLS mode. Default `prefer` (libpq's default).
    pub ssl_mode: SslMode,
    /// PEM CA to verify the server with, besides the system store. Default unset.
    pub ssl_root_cert: Option<PathBuf>,
    /// Connect timeout, milliseconds. Default 5000.
    pub connect_timeout_ms: u64,
    /// `statement_timeout` of the service's sessions, milliseconds: a batch
    /// stuck longer is cancelled and retried. Default 30000.
    pub statement_timeout_ms: u64,
    /// Connections in the pool (the batch writer, the health probe, start
    /// positions). Default 4.
    pub pool_size: usize,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            database: "dora".into(),
            user: "audit_sink".into(),
            password: None,
            admin_user: None,
            admin_password: None,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            pool_size: 4,
        }
    }
}

impl PostgresSettings {
    /// Connection parameters for `user` with `password` (no statement timeout).
    pub fn config_for(&self, user: &str, password: Option<&Secret>) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(user)
            .application_name("audit-sink")
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = password {
            cfg.password(p.expose_secret());
        }
        cfg
    }

    /// Connection parameters of the service's writer role.
    pub fn writer_config(&self) -> tokio_postgres::Config {
        let mut cfg = self.config_for(&self.user, self.password.as_ref());
        cfg.options(format!("-c statement_timeout={}", self.statement_timeout_ms));
        cfg
    }

    /// Connection parameters of the owner role, if configured.
    pub fn admin_config(&self) -> Option<tokio_postgres::Config> {
        self.admin_user
            .as_deref()
            .map(|u| self.config_for(u, self.admin_password.as_ref()))
    }
}

/// A failure the service can be told to simulate, for crash tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPoint {
    /// SIGKILL itself right after the first batch's database commit, before
    /// the consume loop commits the Kafka offsets (`DORA_AUDIT_SINK__FAULT=exit_after_db_commit`).
    ExitAfterDbCommit,
}

/// Section `audit_sink` (env `DORA_AUDIT_SINK__<KEY>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkSettings {
    /// Topics of `AuditEvent`s, stored in `audit.audit_events`. Default `["user-activities"]`.
    pub audit_topics: Vec<String>,
    /// Topics of `ComplianceReport`s, stored in `audit.compliance_reports`.
    /// Default `["gap-assessments", "risk-assessments"]`.
    pub report_topics: Vec<String>,
    /// `/readyz` turns not ready when the database has been unreachable this
    /// long, milliseconds. Default 10000.
    pub db_unavailable_after_ms: u64,
    /// How often the database is probed while no batch talks to it, milliseconds. Default 2000.
    pub db_probe_interval_ms: u64,
    /// A warning is logged when the newest stored record is older than this
    /// relative to its Kafka timestamp, i.e. the sink is behind, milliseconds. Default 60000.
    pub lag_warn_ms: u64,
    /// Test hook: a crash to simulate. Never set in production. Default unset.
    pub fault: Option<FaultPoint>,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            audit_topics: vec!["user-activities".into()],
            report_topics: vec!["gap-assessments".into(), "risk-assessments".into()],
            db_unavailable_after_ms: 10_000,
            db_probe_interval_ms: 2_000,
            lag_warn_ms: 60_000,
            fault: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_environment() {
        let s: Settings = dora_config::load_from(&[]).unwrap();
        assert_eq!(s.common.admin.listen.port(), 9103);
        assert_eq!(s.consumer.group_id, "audit-sink");
        assert_eq!(s.postgres.user, "audit_sink");
        assert!(s.audit_sink.fault.is_none());
        let vars: Vec<(String, String)> = [
            ("DORA_POSTGRES__PORT", "6543"),
            ("DORA_POSTGRES__ADMIN_USER", "owner"),
            ("DORA_AUDIT_SINK__FAULT", "exit_after_db_commit"),
            ("DORA_AUDIT_SINK__AUDIT_TOPICS", "[\"a\",\"b\"]"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s: Settings = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.postgres.port, 6543);
        assert_eq!(s.postgres.admin_user.as_deref(), Some("owner"));
        assert_eq!(s.audit_sink.fault, Some(FaultPoint::ExitAfterDbCommit));
        assert_eq!(s.audit_sink.audit_topics, vec!["a", "b"]);
        let text = format!("{:?}", s.postgres.config_for("u", Some(&Secret::from("pw".to_string()))));
        assert!(!text.contains("\"pw\""), "password printed: {text}");
    }
}

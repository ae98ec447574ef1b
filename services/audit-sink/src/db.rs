//! PostgreSQL plumbing: the writer pool, TLS, what a database error means for
//! a record (retry the batch or reject the item), and the owner's start-up
//! work (migrations with refinery under an advisory lock, the writer login).

use std::time::Duration;

use anyhow::{bail, Context};
use dora_config::{ExposeSecret, Secret};
use tokio_postgres::error::SqlState;

use crate::settings::{PostgresSettings, SslMode};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The NOLOGIN role the migrations grant INSERT and SELECT to; the service's login is a member.
pub const WRITER_ROLE: &str = "audit_writer";
/// Where refinery keeps the applied migrations.
const HISTORY_TABLE: &str = "audit.schema_history";
/// Advisory lock key serialising migrations of concurrent instances ("audit-sk").
const MIGRATION_LOCK: i64 = 0x6175_6469_742d_736b;

/// The writer pool type.
pub type Pool = deadpool_postgres::Pool;

/// What a failed database call means for the records it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The database is unreachable, slow, or answered with a transient error:
    /// retry the same records later; nothing is dead-lettered.
    Transient(String),
    /// The database refused a value of the record (a data exception, a
    /// constraint the item violates, a row too large): the reason, as the
    /// database gave it.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(m) | Failure::Refused(m) => f.write_str(m),
        }
    }
}

/// Classifies a tokio-postgres error: SQLSTATE classes 22 (data exception),
/// 23 (integrity, except a unique violation, which never comes from a record
/// here: ids go through ON CONFLICT) and 54 (program limit, e.g. a row too
/// large) are the record's fault; everything else (connection, timeouts,
/// serialization failures, deadlocks, shutdown, missing privileges) is transient.
pub fn classify(e: &tokio_postgres::Error) -> Failure {
    let Some(db) = e.as_db_error() else {
        return Failure::Transient(format!("postgres: {e}"));
    };
    let code = db.code().code();
    let mut reason = format!("PostgreSQL {code}: {}", db.message());
    if let Some(detail) = db.detail() {
        reason.push_str(&format!(" ({detail})"));
    }
    if let Some(column) = db.column() {
        reason.push_str(&format!(" [column {column}]"));
    } else if let Some(place) = db.where_() {
        reason.push_str(&format!(" [{place}]"));
    }
    let refused = (code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
        && *db.code() != SqlState::UNIQUE_VIOLATION;
    if refused {
        Failure::Refused(reason)
    } else {
        Failure::Transient(reason)
    }
}

/// Classifies a pool error (timeouts and closed pools are transient).
pub fn classify_pool(e: &deadpool_postgres::PoolError) -> Failure {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        other => Failure::Transient(format!("postgres pool: {other}")),
    }
}

/// True when the server rejected the login itself (wrong password, unknown
/// role, no access to the database): retrying cannot help.
pub fn is_login_refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let c = db.code();
        *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *c == SqlState::INVALID_CATALOG_NAME
            || *c == SqlState::INSUFFICIENT_PRIVILEGE
    })
}

fn tls(settings: &PostgresSettings) -> anyhow::Result<postgres_native_tls::MakeTlsConnector> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = &settings.ssl_root_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("postgres.ssl_root_cert {}", path.display()))?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .with_context(|| format!("postgres.ssl_root_cert {}: not a PEM certificate", path.display()))?;
        builder.add_root_certificate(cert);
    }
    let connector = builder.build().context("postgres TLS")?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// How connections are made: plain or TLS (built once from the settings).
#[derive(Clone)]
pub enum Connector {
    /// `ssl_mode = disable`.
    Plain,
    /// `prefer` or `require`, verified with the system store and `ssl_root_cert`.
    Tls(postgres_native_tls::MakeTlsConnector),
}

impl Connector {
    /// The connector `settings` ask for; fails on an unreadable CA file.
    pub fn new(settings: &PostgresSettings) -> anyhow::Result<Self> {
        Ok(match settings.ssl_mode {
            SslMode::Disable => Connector::Plain,
            _ => Connector::Tls(tls(settings)?),
        })
    }

    /// One connection with `cfg`; its driver task is spawned.
    pub async fn connect(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        match self {
            Connector::Plain => {
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move { drop(conn.await) });
                Ok(client)
            }
            Connector::Tls(t) => {
                let (client, conn) = cfg.connect(t.clone()).await?;
                tokio::spawn(async move { drop(conn.await) });
                Ok(client)
            }
        }
    }

    /// The writer pool (login `postgres.user`). Connections are made lazily.
    pub fn writer_pool(&self, settings: &PostgresSettings) -> anyhow::Result<Pool> {
        let cfg = settings.writer_config();
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match self {
            Connector::Plain => {
                deadpool_postgres::Manager::from_config(cfg, tokio_postgres::NoTls, manager_config)
            }
            Connector::Tls(t) => deadpool_postgres::Manager::from_config(cfg, t.clone(), manager_config),
        };
        let timeout = Duration::from_millis(settings.connect_timeout_ms);
        deadpool_postgres::Pool::builder(manager)
            .max_size(settings.pool_size.max(2))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(crate::store::STAGING_DDL)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .context("postgres pool")
    }
}

/// The newest migration this build carries.
pub fn expected_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// As the owner: applies pending migrations (one at a time across instances,
/// under an advisory lock) and creates or updates the writer login
/// `postgres.user` with `postgres.password` as a member of [`WRITER_ROLE`].
pub async fn migrate(settings: &PostgresSettings) -> anyhow::Result<()> {
    let cfg = settings
        .admin_config()
        .context("postgres.admin_user is not set: migrations need the owner role")?;
    let mut client = Connector::new(settings)?.connect(&cfg).await.with_context(|| {
        format!("connecting to PostgreSQL {}:{} as {}", settings.host, settings.port, cfg.get_user().unwrap_or("?"))
    })?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = migrate_locked(settings, &mut client).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result
}

async fn migrate_locked(
    settings: &PostgresSettings,
    client: &mut tokio_postgres::Client,
) -> anyhow::Result<()> {
    client.batch_execute("CREATE SCHEMA IF NOT EXISTS audit").await?;
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner
        .set_grouped(true)
        .run_async(client)
        .await
        .context("applying the audit-sink migrations")?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "migration applied");
    }
    provision_writer(settings, client).await
}

/// Creates the writer login (or sets its password), member of [`WRITER_ROLE`].
/// The password travels as a SCRAM verifier, never in clear text.
async fn provision_writer(
    settings: &PostgresSettings,
    client: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let user = &settings.user;
    if Some(user) == settings.admin_user.as_ref() {
        bail!("postgres.user must differ from postgres.admin_user: the service writes with a role that cannot update or delete");
    }
    let password = settings
        .password
        .as_ref()
        .context("postgres.password is not set (DORA_POSTGRES__PASSWORD_FILE)")?;
    let verifier = scram_verifier(password);
    let ident = quote_ident(user);
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[user])
        .await?
        .is_some();
    let statement = if exists {
        format!("ALTER ROLE {ident} LOGIN PASSWORD {}", quote_literal(&verifier))
    } else {
        format!(
            "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}",
            quote_literal(&verifier)
        )
    };
    client.batch_execute(&statement).await?;
    // The login has no rights of its own: all it may do comes from the group role.
    client
        .batch_execute(&format!("GRANT {WRITER_ROLE} TO {ident}"))
        .await?;
    tracing::info!(user = %user, "writer login provisioned");
    Ok(())
}

fn scram_verifier(password: &Secret) -> String {
    postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The schema version applied in the database (0 when none).
pub async fn applied_version(client: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT CASE WHEN to_regclass('audit.schema_history') IS NULL THEN 0 \
             ELSE (SELECT coalesce(max(version), 0) FROM audit.schema_history) END",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

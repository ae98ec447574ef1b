//! audit-sink: user-activities (AuditEvent) and the assessment topics
//! (ComplianceReport) -> PostgreSQL, in batches, idempotent, hash-chained,
//! verifiable.
//!
//! - [`intake`]: topic -> table, decoding (Confluent Avro or the seed's JSON);
//! - [`store`]: one transaction per partition of a batch, partitions
//!   concurrently (fence, COPY straight into the table or, when an id is
//!   already stored, staged INSERT ... ON CONFLICT DO NOTHING, chain links,
//!   head); [`copy`]: the binary COPY writers;
//! - [`chain`]: the canonical bytes and SHA-256 links;
//! - [`sink`]: the consume loop's batch handler;
//! - [`resume`]: where an assigned partition starts (the database's offsets);
//! - [`health`], [`metrics`]: readiness and logging-failure detection;
//! - [`db`]: pool, TLS, error classes, migrations and the writer role;
//! - [`verify`], [`export`], [`cli`]: the auditor's subcommands.

pub mod bench;
pub mod chain;
pub mod copy;
pub mod cli;
pub mod db;
pub mod export;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod resume;
pub mod settings;
pub mod sink;
pub mod sqltypes;
pub mod store;
pub mod typed;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dora_service::ServiceContext;
use dora_kafka::ConsumeLoop;

pub use settings::Settings;

/// Runs audit-sink until shutdown is requested: database ready (migrated when
/// the owner role is configured), then the consume loop in batch mode.
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    let pg = &settings.postgres;
    let connector = db::Connector::new(pg)?;
    if !prepare_database(&settings, &connector, &ctx).await? {
        return Ok(()); // asked to stop while waiting for the database
    }
    let pool = connector.writer_pool(pg)?;
    let health = health::DbHealth::new(
        &ctx.readiness,
        Duration::from_millis(settings.audit_sink.db_unavailable_after_ms),
    );
    let probe = health.spawn_probe(
        pool.clone(),
        Duration::from_millis(settings.audit_sink.db_probe_interval_ms),
        ctx.shutdown.clone(),
    );
    let codec = dora_schema::Codec::new(&settings.registry).context("registry settings")?;
    let topics = intake::Topics::new(&settings.audit_sink.audit_topics, &settings.audit_sink.report_topics);
    let names = topics.all();
    let subscription: Vec<&str> = names.iter().map(String::as_str).collect();
    let handler = sink::Sink::new(
        codec.clone(),
        topics,
        store::Store::new(pool.clone()),
        health.clone(),
        settings.audit_sink.fault,
        Duration::from_millis(settings.audit_sink.lag_warn_ms),
    );
    let consume = ConsumeLoop::new(&settings.common.kafka, &settings.consumer, &ctx, Arc::new(codec))
        .producer_settings(&settings.producer)
        .topics(&subscription)
        .on_assign(resume::from_database(pool.clone(), health, ctx.shutdown.clone()));
    // Every component registered its readiness conditions: start-up is done.
    ctx.started();
    let result = consume.run_batches(handler).await;
    probe.abort();
    pool.close();
    result.context("consume loop")
}

/// Waits for the database (retrying while it is unreachable, failing at once
/// when it refuses the login), migrates it when the owner role is configured,
/// and checks the schema version. Returns false when shutdown came first.
async fn prepare_database(
    settings: &Settings,
    connector: &db::Connector,
    ctx: &ServiceContext,
) -> anyhow::Result<bool> {
    let pg = &settings.postgres;
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
            if pg.admin_user.is_some() {
                db::migrate(pg).await?;
            }
            let client = connector.connect(&pg.writer_config()).await?;
            let applied = db::applied_version(&client).await?;
            let needed = db::expected_version();
            if applied < needed {
                bail!(
                    "the database schema is at version {applied}, this build needs {needed}: \
                     run `audit-sink migrate` with the owner role (postgres.admin_user)"
                );
            }
            Ok(())
        };
        match attempt.await {
            Ok(()) => {
                metrics::db_seconds("start", started.elapsed().as_secs_f64());
                return Ok(true);
            }
            Err(e) if !transient(&e) => return Err(e),
            Err(e) => {
                ctx.readiness.set_not_ready(health::CONDITION, format!("{e:#}"));
                tracing::warn!(error = format!("{e:#}"), retry_in = ?delay, "database not reachable at start-up");
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// True for start-up errors worth waiting out (the database is not there
/// yet); false for a refused login, a bad setting or an old schema.
fn transient(e: &anyhow::Error) -> bool {
    match e.chain().find_map(|c| c.downcast_ref::<tokio_postgres::Error>()) {
        Some(pg) if db::is_login_refused(pg) => false,
        Some(pg) => matches!(db::classify(pg), db::Failure::Transient(_)),
        None => false,
    }
}

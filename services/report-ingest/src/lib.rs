//! report-ingest: Gap and risk assessments in -> gap-assessments / risk-assessments.
//!
//! Its pipeline is not built yet: today it boots through the shared sequence,
//! serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly on SIGTERM.

use dora_service::{BaseSettings, ServiceContext};

/// Settings of report-ingest: the common sections, admin on `127.0.0.1:9102` by default.
pub type Settings = BaseSettings<9102>;

/// Runs report-ingest until shutdown is requested.
pub async fn run(_settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.started();
    ctx.shutdown.cancelled().await;
    Ok(())
}

//! audit-sink: user-activities (and reports) -> PostgreSQL, tamper-evident, in batches.
//!
//! Its pipeline is not built yet: today it boots through the shared sequence,
//! serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly on SIGTERM.

use dora_service::{BaseSettings, ServiceContext};

/// Settings of audit-sink: the common sections, admin on `127.0.0.1:9103` by default.
pub type Settings = BaseSettings<9103>;

/// Runs audit-sink until shutdown is requested.
pub async fn run(_settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.started();
    ctx.shutdown.cancelled().await;
    Ok(())
}

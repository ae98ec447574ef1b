//! risk-streamer: risk-assessments -> 5-minute per-organisation window -> risk-alerts.
//!
//! Its pipeline is not built yet: today it boots through the shared sequence,
//! serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly on SIGTERM.

use dora_service::{BaseSettings, ServiceContext};

/// Settings of risk-streamer: the common sections, admin on `127.0.0.1:9104` by default.
pub type Settings = BaseSettings<9104>;

/// Runs risk-streamer until shutdown is requested.
pub async fn run(_settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.started();
    ctx.shutdown.cancelled().await;
    Ok(())
}

//! dlq-replayer: Dead-letter topics: list, inspect, replay, auto-retry, park.
//!
//! Its pipeline is not built yet: today it boots through the shared sequence,
//! serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly on SIGTERM.

use dora_service::{BaseSettings, ServiceContext};

/// Settings of dlq-replayer: the common sections, admin on `127.0.0.1:9105` by default.
pub type Settings = BaseSettings<9105>;

/// Runs dlq-replayer until shutdown is requested.
pub async fn run(_settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.started();
    ctx.shutdown.cancelled().await;
    Ok(())
}

//! dlq-replayer: Dead-letter topics: list, inspect, replay, auto-retry, park.

use dora_kafka::service::{CommonSettings, ServiceContext, ServiceSettings};
use serde::{Deserialize, Serialize};

/// Settings of dlq-replayer (defaults < `DORA_CONFIG` file < `DORA_*` env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kafka, telemetry and admin sections. Admin default `127.0.0.1:9105`.
    #[serde(flatten)]
    pub common: CommonSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self { common: CommonSettings::with_admin_port(9105) }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// Runs dlq-replayer until shutdown is requested.
pub async fn run(_settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.started();
    ctx.shutdown.cancelled().await;
    Ok(())
}

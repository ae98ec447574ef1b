//! agent-gateway: the gRPC door for AI agents. Authenticated, validated agent
//! events go to `agent-events` (answered after the broker's ack); the health
//! processor turns them into agent health on the compacted `agent-health`
//! topic, which every replica reads whole to answer GetAgent, ListAgents and
//! WatchAgents.

pub mod api;
pub mod auth;
pub mod bench;
pub mod callers;
pub mod directory;
pub mod fold;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod server;
pub mod settings;
pub mod simulator;
pub mod stream;
pub mod validation;
pub mod view;
pub mod watch;
pub mod wire;

pub use settings::{GatewaySettings, Settings};

use dora_service::ServiceContext;

/// Runs agent-gateway until shutdown is requested.
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    server::run(settings, ctx).await
}

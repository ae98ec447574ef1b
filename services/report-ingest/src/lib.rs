//! report-ingest: gap and risk assessments in, `ComplianceReport`s out on
//! `gap-assessments` and `risk-assessments` (Avro, key organizationId), with an
//! audit event on `user-activities` for each. Two doors: people and systems
//! submit over gRPC (answered after the broker's ack, report id derived from
//! the caller and its request id), and AI agents' TASK_COMPLETED events on
//! `agent-events` that carry an assessment become reports in Kafka
//! transactions (report id derived from the event id): exactly one report per
//! such event across crashes and rebalances.

pub mod api;
pub mod articles;
pub mod assessment;
mod bulk;
pub mod client;
pub mod derive;
pub mod metrics;
pub mod server;
pub mod settings;

pub use settings::{IngestSettings, Settings};

use dora_service::ServiceContext;

/// Runs report-ingest until shutdown is requested.
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    server::run(settings, ctx).await
}

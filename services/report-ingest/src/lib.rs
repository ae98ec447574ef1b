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

/// The allocator of every binary linking report-ingest (the service,
/// report-submit, report-bench and its baselines alike): a submission
/// allocates a few dozen small objects on the way in and drops them once its
/// records are enqueued, and with glibc's malloc that was a quarter of the
/// gRPC path's CPU. mimalloc: 7 % less service CPU per submission, 13 % more
/// submissions/s (`report-bench --bulk-only`, 5 alternated pairs; the
/// benchmark notes in docs/benchmarks.md). librdkafka's own allocations stay
/// with the C library's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

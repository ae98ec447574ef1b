//! Assembles the running service: the agent path (agent-events -> reports in
//! Kafka transactions) and the gRPC API around one producer and one codec;
//! drains both on shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dora_kafka::audit::AuditProducer;
use dora_kafka::consume::ConsumeLoop;
use dora_service::ServiceContext;
use dora_kafka::Producer;
use dora_schema::{AuditEvent, Codec, ComplianceReport};

use crate::derive::ReportDeriver;
use crate::settings::Settings;

/// Registers the schemas of every topic report-ingest writes (fails early,
/// with the reason, when the registry refuses them).
pub async fn register_schemas(codec: &Codec, settings: &Settings) -> anyhow::Result<()> {
    let s = &settings.ingest;
    for topic in [&s.gap_topic, &s.risk_topic] {
        codec
            .register::<ComplianceReport>(topic)
            .await
            .with_context(|| format!("registering the ComplianceReport schema for {topic}"))?;
    }
    codec
        .register::<AuditEvent>(&s.audit_topic)
        .await
        .with_context(|| format!("registering the AuditEvent schema for {}", s.audit_topic))?;
    Ok(())
}

/// Runs report-ingest until `ctx.shutdown`, then drains: in-flight gRPC calls
/// complete, the producer flushes, the agent path commits or aborts its
/// transaction.
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    let s = &settings.ingest;
    let kafka = &settings.common.kafka;
    let codec = Codec::new(&settings.registry).context("registry settings")?;
    register_schemas(&codec, &settings).await?;
    let producer = Producer::new(kafka, &settings.producer, ctx.name, &ctx.readiness)?;
    let audit = AuditProducer::with_topic(producer.clone(), codec.clone(), &s.audit_topic);

    let deriver = ReportDeriver::new(codec.clone(), audit.clone(), s.report_topics(), s.limits());
    let agent_path = tokio::spawn(
        ConsumeLoop::new(kafka, &settings.consumer, &ctx, Arc::new(codec.clone()))
            .topics(&[s.events_topic.as_str()])
            .producer_settings(&settings.producer)
            .run_transactional(deriver),
    );
    ctx.started();
    ctx.shutdown.cancelled().await;
    let flush = producer.clone();
    if let Err(e) =
        tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(10))).await?
    {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
    agent_path
        .await
        .context("agent path task")?
        .context("agent path (agent-events -> reports)")?;
    Ok(())
}

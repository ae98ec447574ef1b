//! Assembles the running service: the agent path (agent-events -> reports in
//! Kafka transactions) and the gRPC API around one producer and one codec;
//! drains both on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use anyhow::Context;
use dora_auth::Authenticator;
use dora_kafka::audit::AuditProducer;
use dora_kafka::consume::{ConsumeError, ConsumeLoop};
use dora_kafka::Producer;
use dora_proto::report::v1::report_ingest_server::ReportIngestServer;
use dora_proto::serve::serve;
use dora_schema::{AuditEvent, Codec, ComplianceReport};
use dora_service::ServiceContext;

use crate::api::{IngestApi, ReportWriter, AUDIENCE};
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

/// Runs the agent path (agent-events -> reports, transactional) as a task of
/// its own. When it fails (e.g. its producer was fenced) it stops the whole
/// service, gRPC drained, so the orchestrator restarts it.
fn spawn_agent_path(
    settings: &Settings,
    ctx: &ServiceContext,
    codec: Codec,
    deriver: ReportDeriver,
) -> tokio::task::JoinHandle<Result<(), ConsumeError>> {
    let consume = ConsumeLoop::new(
        &settings.common.kafka,
        &settings.consumer,
        ctx,
        Arc::new(codec),
    )
    .topics(&[settings.ingest.events_topic.as_str()])
    .producer_settings(&settings.producer);
    let stop_all = ctx.shutdown.clone();
    tokio::spawn(async move {
        let result = consume.run_transactional(deriver).await;
        if result.is_err() {
            stop_all.cancel();
        }
        result
    })
}

/// Runs report-ingest until `ctx.shutdown`, then drains: in-flight gRPC calls
/// complete, the producer flushes, the agent path commits or aborts its
/// transaction.
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    let s = &settings.ingest;
    // Settings mistakes first, before anything connects.
    let auth = Authenticator::from_settings(AUDIENCE, "ingest", &s.auth)?;
    let tls = s.auth.server_tls("ingest")?;
    let kafka = &settings.common.kafka;
    let listener = TcpListener::bind(s.grpc_listen)
        .await
        .with_context(|| format!("binding {}", s.grpc_listen))?;
    let grpc_addr = listener.local_addr()?;
    ctx.announce("grpc", grpc_addr)
        .context("announcing the gRPC address")?;
    tracing::info!(addr = %grpc_addr, "gRPC listening");
    let codec = Codec::new(&settings.registry).context("registry settings")?;
    register_schemas(&codec, &settings).await?;
    let producer = Producer::new(kafka, &settings.producer, ctx.name, &ctx.readiness)?;
    let audit = AuditProducer::with_topic(producer.clone(), codec.clone(), &s.audit_topic);

    let deriver = ReportDeriver::new(codec.clone(), audit.clone(), s.report_topics(), s.limits());
    let agent_path = spawn_agent_path(&settings, &ctx, codec.clone(), deriver);
    let api = IngestApi::new(
        auth,
        ReportWriter::new(producer.clone(), codec.clone(), audit),
        s.report_topics(),
        s.limits(),
    );
    let service = ReportIngestServer::new(api).max_decoding_message_size(s.max_request_bytes);
    ctx.started();
    let drain = Duration::from_millis(s.drain_timeout_ms);
    let served = serve(listener, tls, service, ctx.shutdown.clone(), drain).await;
    ctx.shutdown.cancel();
    // Whatever is still queued is delivered before the process goes.
    if let Err(e) = producer.flush(Duration::from_secs(10)).await {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
    agent_path
        .await
        .context("agent path task")?
        .context("agent path (agent-events -> reports)")?;
    served.context("gRPC API")?;
    Ok(())
}

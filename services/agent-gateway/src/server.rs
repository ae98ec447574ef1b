//! Assembles the running gateway: gRPC server (API + gRPC health + reflection,
//! TLS when configured) and, around it, the Kafka side, then drains on shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dora_proto::agent::v1::agent_gateway_server::AgentGatewayServer;
use dora_service::ServiceContext;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use dora_kafka::consume::{ConsumeLoop, ConsumerSettings, StartAt};
use dora_kafka::Producer;

use crate::api::{EventSink, GatewayApi};
use crate::auth::Authenticator;
use crate::directory::AgentDirectory;
use crate::pipeline::{
    check_liveness, CatchUp, HealthProcessor, HealthPublisher, HealthReader, KafkaEventSink,
    ProcessorLag, HEALTH_LOADED,
};
use crate::queue::SendQueue;
use crate::settings::{GatewaySettings, Settings};
use dora_schema::{AgentEvent, AgentHealth};

/// Longest the gRPC server waits for in-flight calls after shutdown was asked for.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The authenticator the settings describe; an error when the token key is
/// shorter than 32 bytes or agents could not authenticate at all.
pub fn authenticator(s: &GatewaySettings) -> anyhow::Result<Authenticator> {
    Ok(Authenticator::from_settings(
        crate::auth::AUDIENCE,
        "gateway",
        &s.auth,
    )?)
}

/// Serves the gRPC API on `listener` until `shutdown`, then waits (at most
/// [`DRAIN_TIMEOUT`]) for in-flight calls to complete.
pub async fn serve_grpc(
    s: &GatewaySettings,
    listener: TcpListener,
    api: GatewayApi,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AgentGatewayServer<GatewayApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dora_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let mut builder = Server::builder();
    if let Some(tls) = s.auth.server_tls("gateway")? {
        builder = builder.tls_config(tls).context("gateway TLS")?;
    }
    let service = AgentGatewayServer::new(api).max_decoding_message_size(s.max_request_bytes);
    let stop = shutdown.clone();
    let server = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            stop.cancelled().await
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.context("gRPC server failed"),
        _ = shutdown.cancelled() => {}
    }
    reporter
        .set_not_serving::<AgentGatewayServer<GatewayApi>>()
        .await;
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(r) => r.context("gRPC server failed while draining"),
        Err(_) => {
            tracing::warn!(
                "in-flight gRPC calls did not finish within {DRAIN_TIMEOUT:?}; stopping anyway"
            );
            Ok(())
        }
    }
}

/// The API over `sink` and `directory`, from settings.
pub fn api(
    s: &GatewaySettings,
    auth: Authenticator,
    sink: Arc<dyn EventSink>,
    directory: AgentDirectory,
    shutdown: CancellationToken,
) -> anyhow::Result<GatewayApi> {
    Ok(GatewayApi::new(
        sink,
        auth,
        s.limits(),
        SendQueue::new(
            s.send_queue_capacity,
            s.max_in_flight_bytes,
            s.send_queue_wait(),
        ),
        directory,
        shutdown,
        crate::api::CallLimits {
            streams_per_caller: s.max_streams_per_caller,
            watches_per_caller: s.max_watches_per_caller,
            ..Default::default()
        },
    ))
}

/// Runs the whole gateway until `ctx.shutdown`: the gRPC API, the health
/// processor, the health reader and the liveness check; then drains (gRPC
/// calls complete, the producer flushes, the loops commit).
pub async fn run(settings: Settings, ctx: ServiceContext) -> anyhow::Result<()> {
    // Not ready until the agent-health view is loaded (the admin server is
    // already answering, and no condition at all would mean ready).
    ctx.readiness.set_not_ready(HEALTH_LOADED, "starting");
    ctx.started();
    let s = &settings.gateway;
    // Settings mistakes first, before anything connects.
    let auth = authenticator(s)?;
    s.auth.server_tls("gateway")?;
    let kafka = &settings.common.kafka;
    let listener = TcpListener::bind(s.grpc_listen)
        .await
        .with_context(|| format!("binding {}", s.grpc_listen))?;
    let grpc_addr = listener.local_addr()?;
    tracing::info!(addr = %grpc_addr, "gRPC listening");
    ctx.announce("grpc", grpc_addr)
        .context("announcing the gRPC address")?;

    let codec = dora_schema::Codec::new(&settings.registry).context("registry settings")?;
    codec
        .register::<AgentEvent>(&s.events_topic)
        .await
        .context("registering the AgentEvent schema")?;
    codec
        .register::<AgentHealth>(&s.health_topic)
        .await
        .context("registering the AgentHealth schema")?;
    let dead_letters = Arc::new(codec.clone());
    let directory = AgentDirectory::default();
    let producer = Producer::new(kafka, &settings.producer, ctx.name, &ctx.readiness)?;
    let sink: Arc<dyn EventSink> = Arc::new(KafkaEventSink::new(
        producer.clone(),
        codec.clone(),
        &s.events_topic,
    ));
    let publisher = HealthPublisher::new(
        producer.clone(),
        codec.clone(),
        &s.health_topic,
        directory.clone(),
    );

    // Every replica reads agent-health whole: its own throwaway group, from the beginning.
    let reader_settings = ConsumerSettings {
        group_id: format!("{}-health-view-{}", ctx.name, uuid::Uuid::new_v4().simple()),
        fetch_min_bytes: 1,
        ..settings.consumer.clone()
    };
    let start_marks =
        dora_kafka::topics::watermarks(kafka, &s.health_topic, Duration::from_secs(10))
            .await
            .with_context(|| format!("reading the watermarks of {}", s.health_topic))?;
    let catch_up = Arc::new(CatchUp::new(&start_marks, ctx.readiness.clone()));
    let give_up = {
        let (catch_up, wait) = (
            catch_up.clone(),
            Duration::from_millis(s.health_load_timeout_ms),
        );
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            catch_up.give_up();
        })
    };
    // The reader, the processor and the liveness check are tasks of their own:
    // joined in this task, the reader working through a long agent-health
    // backlog starved the others (and the gRPC accept loop) for minutes.
    let reader = tokio::spawn(
        ConsumeLoop::new(kafka, &reader_settings, &ctx, dead_letters.clone())
            .topics(&[s.health_topic.as_str()])
            .on_assign(|_, _| StartAt::Beginning)
            .run(HealthReader::new(
                codec.clone(),
                directory.clone(),
                catch_up.clone(),
            )),
    );
    // Events are applied, and silence judged, only on the loaded view.
    let lag = ProcessorLag::default();
    let processor = {
        let (catch_up, shutdown) = (catch_up.clone(), ctx.shutdown.clone());
        let consume = ConsumeLoop::new(kafka, &settings.consumer, &ctx, dead_letters)
            .topics(&[s.events_topic.as_str()])
            .producer_settings(&settings.producer);
        let processor = HealthProcessor::new(
            codec.clone(),
            publisher.clone(),
            directory.clone(),
            lag.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = catch_up.loaded() => {}
            }
            consume.run_batches(processor).await
        })
    };
    let liveness = {
        let (directory, shutdown) = (directory.clone(), ctx.shutdown.clone());
        let period = Duration::from_millis(s.liveness_check_ms.max(10));
        let allowed_silence_ms = s.allowed_silence_ms();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = catch_up.loaded() => {}
            }
            check_liveness(
                directory,
                publisher,
                lag,
                period,
                allowed_silence_ms,
                shutdown,
            )
            .await;
        })
    };
    let api = api(s, auth, sink, directory, ctx.shutdown.clone())?;
    let grpc = async {
        let r = serve_grpc(s, listener, api, ctx.shutdown.clone()).await;
        // Whatever is still queued is delivered before the process goes.
        if let Err(e) = producer.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
        r
    };
    let (grpc, reader, processor, liveness) = tokio::join!(grpc, reader, processor, liveness);
    give_up.abort();
    grpc?;
    reader
        .context("agent-health reader task")?
        .context("agent-health reader")?;
    processor
        .context("health processor task")?
        .context("health processor")?;
    liveness.context("liveness check task")?;
    Ok(())
}

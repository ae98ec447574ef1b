//! Assembles the running gateway: gRPC server (API + gRPC health + reflection,
//! TLS when configured) and, around it, the Kafka side, then drains on shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dora_proto::agent::v1::agent_gateway_server::AgentGatewayServer;
use dora_service::ServiceContext;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use dora_kafka::consume::{ConsumeLoop, StartAt};
use dora_kafka::Producer;

use crate::api::{EventSink, GatewayApi};
use crate::auth::Authenticator;
use crate::directory::AgentDirectory;
use crate::fold::HealthFold;
use crate::pipeline::KafkaEventSink;
use crate::view::{HealthView, HEALTH_LOADED};
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

/// Serves the gRPC API (with gRPC health and reflection, TLS when
/// configured) on `listener` until `shutdown`, then waits (at most
/// [`DRAIN_TIMEOUT`]) for in-flight calls to complete.
pub async fn serve_grpc(
    s: &GatewaySettings,
    listener: TcpListener,
    api: GatewayApi,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = s.auth.server_tls("gateway")?;
    let service = AgentGatewayServer::new(api).max_decoding_message_size(s.max_request_bytes);
    dora_proto::serve::serve(listener, tls, service, shutdown, DRAIN_TIMEOUT).await?;
    Ok(())
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

/// Runs the whole gateway until `ctx.shutdown`: the gRPC API, the
/// agent-health view and the health processor (which also judges liveness);
/// then drains (gRPC calls complete, the producer flushes, the loop commits).
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
    let directory = AgentDirectory::default();
    let producer = Producer::new(kafka, &settings.producer, ctx.name, &ctx.readiness)?;
    let sink: Arc<dyn EventSink> = Arc::new(KafkaEventSink::new(
        producer.clone(),
        codec.clone(),
        &s.events_topic,
    ));

    // Every replica reads agent-health whole, without a consumer group.
    let (view, view_task) = HealthView::open(
        kafka,
        &s.health_topic,
        codec.clone(),
        directory.clone(),
        ctx.readiness.clone(),
    )
    .await
    .with_context(|| format!("opening {}", s.health_topic))?;
    let processor = health_processor(&settings, &ctx, codec.clone(), view, directory.clone());
    let api = api(s, auth, sink, directory, ctx.shutdown.clone())?;
    let grpc = async {
        let r = serve_grpc(s, listener, api, ctx.shutdown.clone()).await;
        // Whatever is still queued is delivered before the process goes.
        if let Err(e) = producer.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
        r
    };
    let view_failed = async {
        match view_task.await {
            Ok(Ok(())) => anyhow::bail!("the agent-health view stopped"),
            Ok(Err(e)) => Err(e).context("agent-health view"),
            Err(e) => Err(e).context("agent-health view task"),
        }
    };
    // A processor that gave up stops the gateway (non-zero exit, restarted
    // by its supervisor): serving on without folding would be a gateway
    // whose health view silently freezes.
    let work = async {
        tokio::pin!(grpc, processor);
        tokio::select! {
            r = &mut processor => {
                r.context("health processor")?;
                grpc.await
            }
            r = &mut grpc => {
                r?;
                processor.await.context("health processor")
            }
        }
    };
    tokio::select! {
        r = work => r,
        r = view_failed => r,
    }
}

/// Consecutive processor failures after which the gateway gives up (and exits).
const PROCESSOR_ATTEMPTS: u32 = 5;

/// A processor that ran this long before failing starts a fresh count.
const PROCESSOR_HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The health processor: the events topic folded into agent-health in the
/// runtime's transactional mode, a partition only once the view holds its
/// agents' latest committed state (the previous owner's last transaction
/// included). When its transactional producer fails fatally (librdkafka can
/// turn an abort after a broker restart into a fatal INVALID_TXN_STATE), the
/// processor is started again: a new producer with the same transactional id
/// fences the failed one and aborts its open transaction, and the new fold
/// starts from the committed offsets and the view, as after a process
/// restart. Any other failure, or too many in a row, is returned.
async fn health_processor(
    settings: &Settings,
    ctx: &ServiceContext,
    codec: dora_schema::Codec,
    view: HealthView,
    directory: AgentDirectory,
) -> Result<(), dora_kafka::consume::ConsumeError> {
    use dora_kafka::consume::ConsumeError;
    let s = &settings.gateway;
    let mut failures = 0;
    loop {
        let view = view.clone();
        let fold = HealthFold::new(
            codec.clone(),
            &s.events_topic,
            &s.health_topic,
            directory.clone(),
            s.liveness(settings.consumer.lag_interval_ms),
        );
        let started = tokio::time::Instant::now();
        let run = ConsumeLoop::new(&settings.common.kafka, &settings.consumer, ctx, Arc::new(codec.clone()))
            .topics(&[s.events_topic.as_str()])
            .producer_settings(&settings.producer)
            .on_assign(move |_, _| {
                let view = view.clone();
                async move {
                    view.caught_up().await;
                    StartAt::Committed
                }
            })
            .tick_every(Duration::from_millis(s.liveness_check_ms.max(10)))
            .run_transactional(fold)
            .await;
        let reason = match run {
            Err(ConsumeError::Transaction(reason)) if !ctx.shutdown.is_cancelled() => reason,
            other => return other,
        };
        let Some(wait) = restart_delay(&mut failures, started.elapsed(), &settings.consumer.retry) else {
            return Err(ConsumeError::Transaction(format!("{reason} ({failures} failures in a row)")));
        };
        tracing::error!(%reason, failures, ?wait, "health processor failed; starting it again with a new transactional producer");
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// After a processor failure, its run having lasted `ran_for`: the wait
/// before starting it again, or `None` to give up. A run of
/// [`PROCESSOR_HEALTHY_RUN`] or longer starts a fresh count of `failures`.
fn restart_delay(failures: &mut u32, ran_for: Duration, retry: &dora_kafka::RetryPolicy) -> Option<Duration> {
    *failures = if ran_for >= PROCESSOR_HEALTHY_RUN { 1 } else { *failures + 1 };
    (*failures < PROCESSOR_ATTEMPTS).then(|| retry.delay(*failures - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_processor_is_restarted_a_few_times_in_a_row_then_given_up() {
        let retry = dora_kafka::RetryPolicy::default();
        let quick = Duration::from_secs(1);
        let mut failures = 0;
        for n in 1..PROCESSOR_ATTEMPTS {
            assert!(restart_delay(&mut failures, quick, &retry).is_some(), "failure {n}");
        }
        assert_eq!(restart_delay(&mut failures, quick, &retry), None);
        // A processor that ran well for a while before failing starts a fresh count.
        let mut failures = PROCESSOR_ATTEMPTS - 1;
        assert!(restart_delay(&mut failures, PROCESSOR_HEALTHY_RUN, &retry).is_some());
        assert_eq!(failures, 1);
    }
}

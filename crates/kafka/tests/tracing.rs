//! Trace context crosses Kafka: the consumer's processing span is a child of
//! the producer's span (W3C `traceparent` header), seen by an in-memory exporter.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use dora_kafka::{
    ConsumeLoop, Handler, HandlerError, OutboundRecord, Producer, ProducerSettings, Record,
};
use dora_testkit::{create_topic, unique, DEADLINE};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

/// Records the trace id of the span the loop runs the handler in.
struct TraceIds(Arc<Mutex<Vec<Option<String>>>>);

impl Handler for TraceIds {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        let id = dora_telemetry::propagation::trace_id_of(&tracing::Span::current());
        self.0.lock().unwrap().push(id);
        Ok(())
    }
}

#[tokio::test]
async fn producer_and_consumer_spans_share_one_trace_id() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(dora_telemetry::otel_layer(&provider, "tracing-test"))
        .try_init()?;

    let topic = unique("trace");
    create_topic(&kafka(), &topic, 1).await?;
    let ctx = context("tracing-test");
    let producer = Producer::new(
        &kafka(),
        &ProducerSettings::default(),
        "tracing-test",
        &ctx.readiness,
    )?;
    let send = tracing::info_span!("agent.call");
    let producer_trace =
        dora_telemetry::propagation::trace_id_of(&send).expect("producer span is recorded");
    producer
        .send_raw(OutboundRecord::new(&topic, Some("k"), payload(1)))
        .instrument(send)
        .await?;

    let ids = Arc::new(Mutex::new(Vec::new()));
    let lp =
        ConsumeLoop::new(&kafka(), &consumer(&unique("trace-g")), &ctx, codec()).topics(&[&topic]);
    let task = tokio::spawn(lp.run(TraceIds(ids.clone())));
    let i = ids.clone();
    dora_testkit::eventually(DEADLINE, || {
        let n = i.lock().unwrap().len();
        async move { (n > 0).then_some(()) }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(
        ids.lock().unwrap().clone(),
        vec![Some(producer_trace.clone())]
    );

    provider.force_flush()?;
    let spans = exporter.get_finished_spans()?;
    let process = spans
        .iter()
        .find(|s| s.name == "kafka.process")
        .expect("processing span exported");
    assert_eq!(
        process.span_context.trace_id().to_string(),
        producer_trace,
        "processing span joins the producer's trace"
    );
    let agent = spans
        .iter()
        .find(|s| s.name == "agent.call")
        .expect("producer span exported");
    assert_eq!(
        process.parent_span_id,
        agent.span_context.span_id(),
        "processing span is the producer span's child"
    );
    Ok(())
}

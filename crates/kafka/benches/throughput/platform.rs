//! The subjects: the platform's `Producer` (enqueue many, await every
//! delivery, as a service's hot path does) and the consume loop in
//! per-message mode with a handler that decodes each record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use dora_kafka::consume::DeadLetterEncoder;
use dora_kafka::{ConsumeLoop, ConsumerSettings, Delivery, Handler, HandlerError, OutboundRecord, Producer};
use dora_telemetry::ServiceContext;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, Notify};

use crate::{decode, latency_histogram, KeyedPayload, Produced};

/// Produces `n` of `records` (cycled) and awaits every delivery; returns the
/// time from the first enqueue to the last acknowledgement. One record is
/// sent first, untimed, as for the bare producer.
pub async fn produce(producer: &Producer, topic: &str, records: &[KeyedPayload], n: u64) -> anyhow::Result<Produced> {
    let outbound = |(key, value): &KeyedPayload| OutboundRecord::new(topic, Some(key), value.clone());
    producer.send_raw(outbound(&records[0])).await?;
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Delivery)>();
    let acks = tokio::spawn(await_acks(rx));
    let started = Instant::now();
    for i in 0..n {
        let record = outbound(&records[i as usize % records.len()]);
        let sent_at = Instant::now();
        let delivery = producer.enqueue_raw(record).await?;
        if tx.send((sent_at, delivery)).is_err() {
            break;
        }
    }
    drop(tx);
    let latency_us = acks.await??;
    let elapsed = started.elapsed();
    if latency_us.len() != n {
        bail!("platform producer: {} of {n} records acknowledged", latency_us.len());
    }
    Ok(Produced { elapsed, latency_us })
}

/// Awaits deliveries in the order they complete, recording send-to-ack latency.
async fn await_acks(
    mut rx: mpsc::UnboundedReceiver<(Instant, Delivery)>,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut pending = FuturesUnordered::new();
    let mut latency_us = latency_histogram();
    let mut open = true;
    loop {
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some((sent_at, delivery)) => pending.push(async move { (sent_at, delivery.await) }),
                None => open = false,
            },
            Some((sent_at, result)) = pending.next(), if !pending.is_empty() => {
                result?;
                latency_us.saturating_record((sent_at.elapsed().as_micros() as u64).max(1));
            }
            else => break,
        }
    }
    Ok(latency_us)
}

/// The loop writes no dead letters here: every record decodes.
struct NoDeadLetters;

impl DeadLetterEncoder for NoDeadLetters {
    async fn encode_dead_letter(
        &self,
        _: &str,
        _: &dora_kafka::Record,
        _: &HandlerError,
        _: u32,
        _: &str,
    ) -> Result<Vec<u8>, (String, bool)> {
        Err(("the benchmark writes no dead letters".into(), false))
    }
}

/// How far the handler got, and when it processed the `target`th record.
struct Progress {
    count: AtomicU64,
    target: u64,
    reached: OnceLock<Instant>,
    done: Notify,
}

/// Decodes each record (the same work as the bare consumer).
struct Decoding(Arc<Progress>);

impl Handler for Decoding {
    async fn handle(&self, record: &dora_kafka::Record) -> Result<(), HandlerError> {
        decode(record.payload()).map_err(HandlerError::permanent)?;
        let progress = &self.0;
        if progress.count.fetch_add(1, Ordering::Relaxed) + 1 == progress.target {
            let _ = progress.reached.set(Instant::now());
            progress.done.notify_one();
        }
        Ok(())
    }
}

/// Runs the consume loop in a new group until `n` records of `topic` were
/// processed; returns the time from starting the loop (it subscribes) to the
/// `n`th record, group join included.
pub async fn consume(
    kafka: &dora_kafka::KafkaSettings,
    settings: &ConsumerSettings,
    topic: &str,
    n: u64,
) -> anyhow::Result<Duration> {
    let ctx = ServiceContext::new("bench");
    let progress = Arc::new(Progress {
        count: AtomicU64::new(0),
        target: n,
        reached: OnceLock::new(),
        done: Notify::new(),
    });
    let consume_loop = ConsumeLoop::new(kafka, settings, &ctx, Arc::new(NoDeadLetters)).topics(&[topic]);
    let started = Instant::now();
    let task = tokio::spawn(consume_loop.run(Decoding(progress.clone())));
    if tokio::time::timeout(Duration::from_secs(300), progress.done.notified()).await.is_err() {
        bail!("consume loop: {} of {n} records after 300 s", progress.count.load(Ordering::Relaxed));
    }
    let reached = *progress.reached.get().expect("set before the notification");
    ctx.shutdown.cancel();
    task.await??;
    Ok(reached - started)
}

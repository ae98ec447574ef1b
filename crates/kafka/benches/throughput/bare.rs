//! The baselines, bare rdkafka written as its documentation recommends, with
//! the platform's librdkafka settings and nothing else:
//!
//! - producer: a `BaseProducer` driven by its own thread, as librdkafka's
//!   producer example does it: `poll(0)` after every send to serve delivery
//!   reports, and on `QueueFull` `poll` until a report frees space; the
//!   delivery callback counts acknowledgements and records their latency;
//! - consumer: a `BaseConsumer` loop on its own thread, for at-least-once as
//!   librdkafka's introduction describes it: `enable.auto.offset.store=false`,
//!   the offset stored after each record is processed, and stored offsets
//!   committed asynchronously in the background (`enable.auto.commit`, at the
//!   loop's commit interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::{decode, latency_histogram, KeyedPayload, Produced};

/// Counts acknowledgements and records send-to-ack latency.
struct Acks {
    acked: AtomicU64,
    failed: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: Box<Instant>) {
        if result.is_ok() {
            self.acked.fetch_add(1, Ordering::Relaxed);
            let us = sent_at.elapsed().as_micros() as u64;
            self.latency_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_record(us.max(1));
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn send_one(
    producer: &BaseProducer<Acks>,
    topic: &str,
    (key, value): &KeyedPayload,
) -> anyhow::Result<()> {
    let mut record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
        .key(key.as_str())
        .payload(value.as_slice());
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                // Serve delivery reports until they free queue space.
                producer.poll(Duration::from_millis(100));
                record = r;
            }
            Err((e, _)) => bail!("bare producer: {e}"),
        }
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

/// Produces `n` of `records` (cycled) to `topic` on the calling thread and
/// returns the time from the first send to the last acknowledgement. One
/// record is sent and acknowledged first, untimed, so connecting and
/// obtaining the idempotent producer id are not part of the figure.
pub fn produce(cfg: &ClientConfig, topic: &str, records: &[KeyedPayload], n: u64) -> anyhow::Result<Produced> {
    let acks = Acks {
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency_us: Mutex::new(latency_histogram()),
    };
    let producer: BaseProducer<Acks> = cfg.create_with_context(acks)?;
    send_one(&producer, topic, &records[0])?;
    producer.flush(Duration::from_secs(30)).context("bare producer warm-up")?;
    let acks = producer.context();
    acks.acked.store(0, Ordering::Relaxed);
    acks.latency_us.lock().unwrap_or_else(|p| p.into_inner()).reset();

    let started = Instant::now();
    for i in 0..n {
        send_one(&producer, topic, &records[i as usize % records.len()])?;
    }
    producer.flush(Duration::from_secs(120)).context("bare producer flush")?;
    let elapsed = started.elapsed();
    let (acked, failed) = (acks.acked.load(Ordering::Relaxed), acks.failed.load(Ordering::Relaxed));
    if acked != n || failed != 0 {
        bail!("bare producer: {acked} of {n} records acknowledged, {failed} failed");
    }
    let latency_us = acks.latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Produced { elapsed, latency_us })
}

/// Reads `n` records of `topic` in a new group on the calling thread,
/// decoding each and storing its offset; returns the time from subscribing to
/// the `n`th record (group join included, as for the loop and Kafka's tool).
pub fn consume(cfg: &ClientConfig, commit_interval_ms: u64, topic: &str, n: u64) -> anyhow::Result<Duration> {
    let mut cfg = cfg.clone();
    cfg.set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", commit_interval_ms.to_string());
    let started = Instant::now();
    let consumer: BaseConsumer = cfg.create()?;
    consumer.subscribe(&[topic])?;
    let mut count = 0;
    while count < n {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            if started.elapsed() > Duration::from_secs(300) {
                bail!("bare consumer: {count} of {n} records after 300 s");
            }
            continue;
        };
        let message = message?;
        decode(message.payload().unwrap_or_default())?;
        consumer.store_offset_from_message(&message)?;
        count += 1;
    }
    let elapsed = started.elapsed();
    consumer.commit_consumer_state(CommitMode::Sync)?;
    Ok(elapsed)
}

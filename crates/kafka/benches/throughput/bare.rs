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
//!
//! # Why the runtime once measured faster than its baselines
//!
//! The bench on main before 1b75eab (`benches/throughput.rs`) reported the
//! platform `Producer` at 1.34–1.67× and the consume loop at 2× its bare
//! rdkafka baselines. A runtime that adds work to librdkafka cannot beat
//! librdkafka doing less; the baselines were wrong:
//!
//! - The baseline producer was cold. Each round created a new
//!   `FutureProducer` and started the timer at once, so the timed window
//!   held librdkafka's connecting, its first metadata request and, with
//!   `enable.idempotence`, the `InitProducerId` round trip that must finish
//!   before the first batch may leave. The platform `Producer` was created
//!   once, before the first round, and was connected with its producer id
//!   by the time it was timed. A round was 100 000 records (one to two
//!   seconds here), so start-up alone is a large share of it.
//! - The baseline always went first in its round, the first time on a
//!   topic created just before (partition leaders not yet in the client's
//!   metadata), and on `QueueFull` slept 1 ms on the tokio timer instead of
//!   serving delivery reports as librdkafka's examples do.
//! - The consume baseline was not the loop the documentation describes: it
//!   was rust-rdkafka's `StreamConsumer` (the async adapter, a stream poll
//!   and waker per record on a tokio worker), and it built a partition list
//!   and sent an asynchronous commit request every 500 records instead of
//!   storing offsets and letting librdkafka commit them in the background.
//!   Its timer and the loop's also started at different points (its first
//!   record; the loop's first record as seen by a 1 ms polling task). The
//!   loop of that time used the same `StreamConsumer`, so this list does not
//!   account for all of the 2×; it was not measured again, since that loop
//!   no longer exists (the consume loop has polled a `BaseConsumer` off the
//!   async workers since 55f2343).
//!
//! The baselines here fix each point: both producers send one record
//! untimed first (connected, producer id obtained), the order of the
//! clients rotates between rounds and the best round counts, a full queue
//! is served by `poll`, and the consumer is a `BaseConsumer` poll loop with
//! stored offsets and background commits. Both consumers, and Kafka's
//! `kafka-consumer-perf-test`, are timed from subscribing, group join
//! included. `docs/benchmarks.md` holds the figures of the last full run.

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

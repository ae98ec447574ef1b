//! Bare rdkafka baselines for the services' benchmark commands: the same work
//! without the platform, written as rust-rdkafka's examples do it, so a
//! benchmark can report its ratio against them in the same run on the same
//! broker. Nothing here is used by a service; it lives in this crate because
//! only this crate builds rdkafka clients.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryFuture, FutureProducer, FutureRecord, Producer as _,
    ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};

use crate::consume::ConsumerSettings;
use crate::{KafkaError, KafkaSettings, ProducerSettings};

/// One record to produce: topic, key, value.
pub type RawRecord = (String, String, Vec<u8>);

/// A bare `FutureProducer` (same librdkafka settings as the platform's
/// producer) writing `records` flat out: every send queued (waiting only while
/// librdkafka's queue is full), then every delivery awaited. Returns the time
/// from the first send to the last acknowledgement.
pub async fn produce_all(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    records: &[RawRecord],
) -> Result<Duration, KafkaError> {
    let timed: Vec<(&RawRecord, Option<i64>)> = records.iter().map(|r| (r, None)).collect();
    produce(kafka, settings, &[], &timed).await
}

/// [`produce_all`] after `warm_up` was produced and acknowledged, untimed,
/// with `records` written `passes` times over, each with `headers` (the
/// headers a service writes on every record, so the baseline writes the
/// same records), at most `window` records awaiting their acknowledgement
/// (0: every record queued at once, as [`produce_all`] does). The clock
/// starts with the producer connected to the leaders, its metadata and
/// producer id fetched, as a long-running service's producer is, and runs
/// long enough to time the producer rather than its start-up (a bare
/// producer writes tens of thousands of small records in a tenth of a second).
///
/// The window matters on a machine the broker shares: on 2 cores, 1024
/// records awaiting their acks wrote report-ingest's records 1.3-1.7x as fast
/// as queueing all of them (librdkafka's queue full at 100 000) and at half
/// the CPU per record; 256 and 4096 were slower than 1024.
pub async fn produce_all_warm(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    warm_up: &[RawRecord],
    (records, passes): (&[RawRecord], usize),
    headers: &[(&str, &[u8])],
    window: usize,
) -> Result<Duration, KafkaError> {
    let untimed: Vec<(&RawRecord, Option<i64>)> = warm_up.iter().map(|r| (r, None)).collect();
    let timed: Vec<(&RawRecord, Option<i64>)> =
        records.iter().cycle().take(records.len() * passes).map(|r| (r, None)).collect();
    let producer = warm_producer(kafka, settings, &untimed).await?;
    let started = Instant::now();
    send_all(&producer, &timed, headers, window).await?;
    Ok(started.elapsed())
}

/// [`produce_all`] with each record's timestamp (epoch ms) set: input whose
/// event time a benchmark controls.
pub async fn produce_timed(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    records: &[(RawRecord, i64)],
) -> Result<Duration, KafkaError> {
    let timed: Vec<(&RawRecord, Option<i64>)> =
        records.iter().map(|(r, t)| (r, Some(*t))).collect();
    produce(kafka, settings, &[], &timed).await
}

async fn produce(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    warm_up: &[(&RawRecord, Option<i64>)],
    records: &[(&RawRecord, Option<i64>)],
) -> Result<Duration, KafkaError> {
    let producer = warm_producer(kafka, settings, warm_up).await?;
    let started = Instant::now();
    send_all(&producer, records, &[], 0).await?;
    Ok(started.elapsed())
}

/// A bare `FutureProducer` with the platform producer's settings, after
/// `warm_up` was produced and acknowledged (connection, producer id, metadata).
async fn warm_producer(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    warm_up: &[(&RawRecord, Option<i64>)],
) -> Result<FutureProducer, KafkaError> {
    let producer: FutureProducer = settings
        .client_config(kafka)?
        .create()
        .map_err(KafkaError::Client)?;
    send_all(&producer, warm_up, &[], 0).await?;
    Ok(producer)
}

/// Queues every record with `headers` (waiting only while librdkafka's
/// queue is full, and, with a `window`, while that many await their
/// acknowledgement), then awaits every delivery.
async fn send_all(
    producer: &FutureProducer,
    records: &[(&RawRecord, Option<i64>)],
    headers: &[(&str, &[u8])],
    window: usize,
) -> Result<(), KafkaError> {
    let mut pending = VecDeque::with_capacity(if window > 0 { window } else { records.len() });
    for ((topic, key, value), timestamp) in records {
        if window > 0 && pending.len() >= window {
            if let Some(oldest) = pending.pop_front() {
                acknowledged(oldest).await?;
            }
        }
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(value);
            if let Some(t) = timestamp {
                record = record.timestamp(*t);
            }
            if !headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(headers.len());
                for (key, value) in headers {
                    h = h.insert(Header { key, value: Some(*value) });
                }
                record = record.headers(h);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(KafkaError::Client(e)),
            }
        }
    }
    for delivery in pending {
        acknowledged(delivery).await?;
    }
    Ok(())
}

/// Awaits one record's acknowledgement.
async fn acknowledged(delivery: DeliveryFuture) -> Result<(), KafkaError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(KafkaError::Client(e)),
        Err(_) => Err(KafkaError::Client(RdKafkaError::Canceled)),
    }
}

/// What [`produce_for`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedProduce {
    /// Records the broker acknowledged.
    pub acked: u64,
    /// Records whose delivery failed.
    pub failed: u64,
    /// From the first timed send to the last acknowledgement.
    pub elapsed: Duration,
}

/// A bare `FutureProducer` (same librdkafka settings as the platform's
/// producer) writing `records` round and round for `duration`, at most
/// `window` of them waiting for their acknowledgement; `on_ack` gets each
/// acknowledged record's send-to-ack time. The records are encoded before:
/// the time goes to librdkafka and the broker only. One untimed record goes
/// first (connection, producer id, topic metadata).
pub async fn produce_for(
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    records: &[RawRecord],
    (duration, window): (Duration, usize),
    mut on_ack: impl FnMut(Duration),
) -> Result<TimedProduce, KafkaError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    use futures::FutureExt;
    let Some(first) = records.first() else {
        return Err(KafkaError::Admin("produce_for: no records".into()));
    };
    let producer = warm_producer(kafka, settings, &[(first, None)]).await?;
    let mut run = TimedProduce { acked: 0, failed: 0, elapsed: Duration::ZERO };
    let mut settle = |(sent, result): (Instant, Result<_, _>)| match result {
        Ok(Ok(_)) => {
            run.acked += 1;
            on_ack(sent.elapsed());
        }
        _ => run.failed += 1,
    };
    let mut pending = FuturesUnordered::new();
    let started = Instant::now();
    let mut next = records.iter().cycle();
    while started.elapsed() < duration {
        if pending.len() >= window.max(1) {
            if let Some(done) = pending.next().await {
                settle(done);
            }
            continue;
        }
        let (topic, key, value) = next.next().expect("records is not empty");
        match producer.send_result(FutureRecord::to(topic).key(key).payload(value)) {
            Ok(delivery) => {
                let sent = Instant::now();
                pending.push(delivery.map(move |r| (sent, r)));
            }
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                match pending.next().await {
                    Some(done) => settle(done),
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            Err((e, _)) => return Err(KafkaError::Client(e)),
        }
        // Acknowledgements that arrived meanwhile, without waiting.
        while let Some(Some(done)) = pending.next().now_or_never() {
            settle(done);
        }
    }
    while let Some(done) = pending.next().await {
        settle(done);
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// A bare transactional pass-through (blocking; run it on a blocking thread):
/// a `BaseConsumer` in group `settings.group_id` reads `input`, a transactional
/// `ThreadedProducer` copies each record (key and value) to `output`, and every
/// `batch` records (or when `expected` are done) the offsets are sent to the
/// transaction and it commits. Returns the time from the first record to the
/// last commit.
pub fn transactional_passthrough(
    kafka: &KafkaSettings,
    settings: &ConsumerSettings,
    producer_settings: &ProducerSettings,
    transactional_id: &str,
    (input, output): (&str, &str),
    expected: u64,
    batch: u64,
) -> Result<Duration, KafkaError> {
    let txn = Transactional::open(kafka, settings, producer_settings, transactional_id, input)?;
    txn.run((expected, batch), |m, producer| {
        let mut record =
            BaseRecord::<[u8], [u8]>::to(output).payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        send_waiting(producer, record)
    })
}

/// A bare transactional consume -> produce (blocking; run it on a blocking
/// thread) that writes, for the `n`th record read from `input`, the records
/// `outputs(n)` names (already encoded: a benchmark hands in the same records
/// its service writes per input, e.g. a report and its audit event), in
/// transactions of `batch` inputs as [`transactional_passthrough`].
pub fn transactional_consume_produce<'a>(
    kafka: &KafkaSettings,
    settings: &ConsumerSettings,
    producer_settings: &ProducerSettings,
    transactional_id: &str,
    input: &str,
    (expected, batch): (u64, u64),
    mut outputs: impl FnMut(u64) -> &'a [RawRecord],
) -> Result<Duration, KafkaError> {
    let txn = Transactional::open(kafka, settings, producer_settings, transactional_id, input)?;
    let mut n = 0u64;
    txn.run((expected, batch), |_, producer| {
        for (topic, key, value) in outputs(n) {
            send_waiting(
                producer,
                BaseRecord::to(topic.as_str())
                    .key(key.as_bytes())
                    .payload(value.as_slice()),
            )?;
        }
        n += 1;
        Ok(())
    })
}

/// Sends `record`, polling while librdkafka's queue is full.
fn send_waiting(
    producer: &ThreadedProducer<DefaultProducerContext>,
    record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    let mut record = Some(record);
    while let Some(r) = record.take() {
        if let Err((e, r)) = producer.send(r) {
            if e != RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
                return Err(KafkaError::Client(e));
            }
            producer.poll(Duration::from_millis(1));
            record = Some(r);
        }
    }
    Ok(())
}

/// A bare transactional consumer (blocking; run it on a blocking thread): as
/// [`transactional_passthrough`], but each value is only `decode`d and
/// nothing is produced — the consume-decode-commit skeleton of a windowed
/// transform, without the window.
pub fn transactional_decode_commit(
    kafka: &KafkaSettings,
    settings: &ConsumerSettings,
    producer_settings: &ProducerSettings,
    transactional_id: &str,
    input: &str,
    (expected, batch): (u64, u64),
    mut decode: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<Duration, KafkaError> {
    let txn = Transactional::open(kafka, settings, producer_settings, transactional_id, input)?;
    txn.run((expected, batch), |m, _| {
        decode(m.payload().unwrap_or_default()).map_err(KafkaError::Admin)
    })
}

/// A subscribed `BaseConsumer` and a transactional `ThreadedProducer`.
struct Transactional {
    consumer: BaseConsumer,
    producer: ThreadedProducer<DefaultProducerContext>,
    input: String,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl Transactional {
    fn open(
        kafka: &KafkaSettings,
        settings: &ConsumerSettings,
        producer_settings: &ProducerSettings,
        transactional_id: &str,
        input: &str,
    ) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer = settings
            .client_config(kafka)?
            .create()
            .map_err(KafkaError::Client)?;
        consumer.subscribe(&[input]).map_err(KafkaError::Client)?;
        let mut cfg = producer_settings.client_config(kafka)?;
        cfg.set("transactional.id", transactional_id);
        let producer: ThreadedProducer<DefaultProducerContext> =
            cfg.create().map_err(KafkaError::Client)?;
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(KafkaError::Client)?;
        Ok(Self {
            consumer,
            producer,
            input: input.to_string(),
        })
    }

    /// Hands each record to `each`, committing the offsets in a transaction
    /// every `batch` records and after the `expected`th. Returns the time from
    /// the first record to the last commit.
    fn run<M>(self, (expected, batch): (u64, u64), mut each: M) -> Result<Duration, KafkaError>
    where
        M: FnMut(
            &rdkafka::message::BorrowedMessage<'_>,
            &ThreadedProducer<DefaultProducerContext>,
        ) -> Result<(), KafkaError>,
    {
        let client = |e| KafkaError::Client(e);
        self.producer.begin_transaction().map_err(client)?;
        let (mut done, mut in_txn) = (0u64, 0u64);
        let mut positions: std::collections::HashMap<i32, i64> = Default::default();
        let mut started = None;
        while done < expected {
            let Some(m) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.map_err(client)?;
            started.get_or_insert_with(Instant::now);
            each(&m, &self.producer)?;
            positions.insert(m.partition(), m.offset() + 1);
            done += 1;
            in_txn += 1;
            if in_txn >= batch || done >= expected {
                self.commit(&positions)?;
                in_txn = 0;
                if done < expected {
                    self.producer.begin_transaction().map_err(client)?;
                }
            }
        }
        Ok(started.map(|s| s.elapsed()).unwrap_or_default())
    }

    fn commit(&self, positions: &std::collections::HashMap<i32, i64>) -> Result<(), KafkaError> {
        let client = |e| KafkaError::Client(e);
        // Wait for the transaction's deliveries first (the polling thread
        // serves them). rust-rdkafka's commit_transaction flushes, and its
        // flush polls in steps of 100 ms while anything is outstanding (its
        // poll runs to its deadline), which would add ~100 ms to every
        // transaction; the platform's loop awaits its deliveries the same way.
        let deadline = Instant::now() + TXN_TIMEOUT;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in positions {
            tpl.add_partition_offset(&self.input, *p, Offset::Offset(*o))
                .map_err(client)?;
        }
        let gm = self
            .consumer
            .group_metadata()
            .ok_or_else(|| KafkaError::Admin("no group metadata".into()))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &gm, TXN_TIMEOUT)
            .map_err(client)?;
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(client)
    }
}

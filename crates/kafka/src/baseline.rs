//! Bare rdkafka baselines for the services' benchmark commands: the same work
//! without the platform, written as rust-rdkafka's examples do it, so a
//! benchmark can report its ratio against them in the same run on the same
//! broker. Nothing here is used by a service; it lives in this crate because
//! only this crate builds rdkafka clients.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer as _,
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
    let producer: FutureProducer = settings
        .client_config(kafka)?
        .create()
        .map_err(KafkaError::Client)?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records.len());
    for (topic, key, value) in records {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(value)) {
                Ok(delivery) => {
                    pending.push(delivery);
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
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(KafkaError::Client(e)),
            Err(_) => return Err(KafkaError::Client(RdKafkaError::Canceled)),
        }
    }
    Ok(started.elapsed())
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
    let timeout = Duration::from_secs(30);
    let consumer: BaseConsumer = settings
        .client_config(kafka)?
        .create()
        .map_err(KafkaError::Client)?;
    consumer.subscribe(&[input]).map_err(KafkaError::Client)?;
    let mut cfg = producer_settings.client_config(kafka)?;
    cfg.set("transactional.id", transactional_id);
    let producer: ThreadedProducer<DefaultProducerContext> =
        cfg.create().map_err(KafkaError::Client)?;
    let client = |e| KafkaError::Client(e);
    producer.init_transactions(timeout).map_err(client)?;
    producer.begin_transaction().map_err(client)?;
    let (mut done, mut in_txn) = (0u64, 0u64);
    let mut positions: std::collections::HashMap<i32, i64> = Default::default();
    let mut started = None;
    while done < expected {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(client)?;
        started.get_or_insert_with(Instant::now);
        let mut record = BaseRecord::to(output).payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((e, r)) = producer.send(r) {
                if e != RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
                    return Err(client(e));
                }
                producer.poll(Duration::from_millis(1));
                record = Some(r);
            }
        }
        positions.insert(m.partition(), m.offset() + 1);
        done += 1;
        in_txn += 1;
        if in_txn >= batch || done >= expected {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &positions {
                tpl.add_partition_offset(input, *p, Offset::Offset(*o))
                    .map_err(client)?;
            }
            let gm = consumer
                .group_metadata()
                .ok_or_else(|| KafkaError::Admin("no group metadata".into()))?;
            producer
                .send_offsets_to_transaction(&tpl, &gm, timeout)
                .map_err(client)?;
            producer.commit_transaction(timeout).map_err(client)?;
            in_txn = 0;
            if done < expected {
                producer.begin_transaction().map_err(client)?;
            }
        }
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

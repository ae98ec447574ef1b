//! Retries against the real broker: a retried record that no longer exists
//! (deleted by retention or compaction while the partition waited) does not
//! stall the partition; a retryable batch error retries the whole batch.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dora_kafka::topics::dlq_topic;
use dora_kafka::{BatchHandler, ConsumeLoop, Handler, HandlerError, Record};
use dora_testkit::{create_topic, read_all, unique, DEADLINE};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};

/// Deletes the records of `topic`/0 before `before` (what retention does).
async fn delete_records_before(topic: &str, before: i64) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka().client_config()?.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(before))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = admin.delete_records(&tpl, &opts).await?;
    for e in result.elements() {
        e.error()?;
    }
    Ok(())
}

/// Fails offset 3 retryably once; while it waits, records 0..5 are deleted.
struct RetentionDuringRetry {
    topic: String,
    failed: AtomicBool,
    seen: Seen,
}

impl Handler for RetentionDuringRetry {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        if r.offset == 3 && !self.failed.swap(true, Ordering::SeqCst) {
            delete_records_before(&self.topic, 5)
                .await
                .map_err(|e| HandlerError::rejected("TestSetup", e.to_string()))?;
            return Err(HandlerError::unavailable("DatabaseUnavailable", "down once"));
        }
        self.seen.push(parse_id(r)?);
        Ok(())
    }
}

/// Offset 3 fails; before its retry the log start moves to 5: the loop goes on
/// at the first record at or after the retried offset (5), it does not wait
/// for offset 3 forever.
#[tokio::test]
async fn a_retried_offset_deleted_meanwhile_continues_at_the_next_record() -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("gone"), unique("gone-g"));
    create_topic(&kafka(), &topic, 1).await?;
    produce_ids(&topic, 0..10).await?;
    let ctx = context("gone-test");
    let handler = Arc::new(RetentionDuringRetry {
        topic: topic.clone(),
        failed: AtomicBool::new(false),
        seen: Seen::default(),
    });
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .run(handler.clone()),
    );
    handler.seen.wait_for(8, DEADLINE).await?;
    assert_eq!(handler.seen.ids(), vec![0, 1, 2, 5, 6, 7, 8, 9]);
    wait_committed(&group, &topic, &[(0, 10)]).await?;
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

/// The first batch fails retryably (a database outage); every batch is recorded.
#[derive(Default)]
struct OutageOnce {
    batches: Mutex<Vec<Vec<(i32, i64)>>>,
    one_by_one: Mutex<Vec<(i32, i64)>>,
}

impl BatchHandler for OutageOnce {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        let mut batches = self.batches.lock().unwrap();
        batches.push(records.iter().map(|r| (r.partition, r.offset)).collect());
        if batches.len() == 1 {
            return Err(HandlerError::unavailable("DatabaseUnavailable", "connection refused"));
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle_one(&self, r: &Record) -> Result<(), HandlerError> {
        self.one_by_one.lock().unwrap().push((r.partition, r.offset));
        Ok(())
    }
}

/// Offsets per partition, in order, over `batches`.
fn by_partition(batches: &[Vec<(i32, i64)>]) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in batches.iter().flatten() {
        out.entry(*p).or_default().push(*o);
    }
    out
}

/// A batch spanning two partitions fails retryably: after the backoff every
/// partition of it comes again from its first record in the batch, as a
/// batch (no one-by-one fallback), and nothing is dead-lettered.
#[tokio::test]
async fn a_retryable_batch_error_retries_the_whole_batch_after_the_backoff() -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("bretry"), unique("bretry-g"));
    create_topic(&kafka(), &topic, 2).await?;
    create_topic(&kafka(), &dlq_topic(&topic), 1).await?;
    produce_ids_to(&topic, 0, 0..3).await?;
    produce_ids_to(&topic, 1, 3..6).await?;
    let mut settings = consumer(&group);
    settings.max_batch_records = 6;
    settings.max_batch_wait_ms = 5_000;
    let handler = Arc::new(OutageOnce::default());
    let ctx = context("bretry-test");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&topic])
            .run_batches(handler.clone()),
    );
    wait_committed(&group, &topic, &[(0, 3), (1, 3)]).await?;
    ctx.shutdown.cancel();
    task.await??;
    let batches = handler.batches.lock().unwrap().clone();
    assert_eq!(
        by_partition(&batches[..1]),
        BTreeMap::from([(0, vec![0, 1, 2]), (1, vec![0, 1, 2])]),
        "the first batch held both partitions"
    );
    assert_eq!(
        by_partition(&batches[1..]),
        BTreeMap::from([(0, vec![0, 1, 2]), (1, vec![0, 1, 2])]),
        "after the outage, each partition again from its first record, once"
    );
    assert!(handler.one_by_one.lock().unwrap().is_empty(), "no one-by-one fallback");
    assert!(read_all(&kafka(), &dlq_topic(&topic)).await?.is_empty());
    Ok(())
}

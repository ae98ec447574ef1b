//! The transactional mode's exactly-once guarantee against the real broker:
//! every input yields exactly its output under read_committed, none missing,
//! none twice — after a retryable failure part-way through a batch that spans
//! two partitions, after transaction calls that time out, and across a
//! rebalance in which one of two instances leaves mid-stream.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use dora_kafka::{ConsumeLoop, HandlerError, OutboundRecord, Record, Transform};
use dora_testkit::{create_topic, eventually, unique, DEADLINE};

/// Copies each input id to `output`; fails retryably once, on the `fail_at`-th
/// record it is handed (1-based), and remembers every record it was handed.
struct CopyFailingOnce {
    output: String,
    fail_at: usize,
    handed: Mutex<Vec<(i32, i64)>>,
}

impl Transform for CopyFailingOnce {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let n = {
            let mut handed = self.handed.lock().unwrap();
            handed.push((r.partition, r.offset));
            handed.len()
        };
        if n == self.fail_at {
            return Err(HandlerError::unavailable(
                "InjectedOutage",
                "the store is down for this one call",
            ));
        }
        let id = parse_id(r)?;
        Ok(vec![OutboundRecord::new(&self.output, r.key_str(), payload(id))])
    }
}

/// Batch [P0:0, P0:1, P1:0, P1:1] with transform(P0:1) failing retryably once
/// (or the same with the partitions swapped): the aborted transaction covered
/// both partitions, so both must be processed again from their first record.
#[tokio::test]
async fn a_retryable_failure_mid_batch_rewinds_every_partition_the_transaction_covered(
) -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("eo-mid-in"), unique("eo-mid-out"), unique("eo-mid-g"));
    create_topic(&kafka(), &input, 2).await?;
    create_topic(&kafka(), &output, 2).await?;
    produce_ids_to(&input, 0, 0..2).await?;
    produce_ids_to(&input, 1, 2..4).await?;
    let ctx = context("eo-mid");
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("eo-mid-txn"));
    // One batch of all four records.
    settings.max_batch_records = 4;
    settings.max_batch_wait_ms = 5_000;
    let copy = Arc::new(CopyFailingOnce {
        output: output.clone(),
        fail_at: 2,
        handed: Mutex::new(Vec::new()),
    });
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .run_transactional(copy.clone()),
    );
    let outputs = committed_outputs(&output, 4).await;
    // The scenario needs the failing record to be the second of its partition
    // in a batch that goes on with the other partition.
    let handed = copy.handed.lock().unwrap().clone();
    assert!(
        handed.len() >= 2 && handed[0].0 == handed[1].0,
        "the first batch did not start with two records of one partition: {handed:?}"
    );
    let outputs = outputs?;
    assert_exactly_once(&ids_of(&outputs), 0..4, "committed outputs");
    wait_committed(&group, &input, &[(0, 2), (1, 2)]).await?;
    assert!(!task.is_finished(), "the loop stopped");
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

/// Copies each input id to `output`.
struct Copy(String);

impl Transform for Copy {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let id = parse_id(r)?;
        Ok(vec![OutboundRecord::new(&self.0, r.key_str(), payload(id))])
    }
}

/// With a 1 ms limit per transaction call, send_offsets_to_transaction and
/// commit_transaction return librdkafka's retriable timeout while the broker
/// is still working on them; the loop must call them again (they resume), not
/// abort (which librdkafka refuses in that state).
#[tokio::test]
async fn transaction_calls_that_time_out_are_resumed_not_aborted() -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("eo-slow-in"), unique("eo-slow-out"), unique("eo-slow-g"));
    create_topic(&kafka(), &input, 2).await?;
    create_topic(&kafka(), &output, 2).await?;
    produce_ids_to(&input, 0, 0..10).await?;
    produce_ids_to(&input, 1, 10..20).await?;
    let ctx = context("eo-slow");
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("eo-slow-txn"));
    settings.transaction_call_timeout_ms = 1;
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .run_transactional(Copy(output.clone())),
    );
    let outputs = committed_outputs(&output, 20).await;
    assert!(
        !task.is_finished(),
        "the loop stopped: {:?}",
        task.await.map(|r| r.map_err(|e| e.to_string()))
    );
    assert_exactly_once(&ids_of(&outputs?), 0..20, "committed outputs");
    wait_committed(&group, &input, &[(0, 10), (1, 10)]).await?;
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

/// Copies each input id and counts what it was handed.
struct CountingCopy {
    output: String,
    handed: Arc<AtomicUsize>,
}

impl Transform for CountingCopy {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.handed.fetch_add(1, Ordering::SeqCst);
        let id = parse_id(r)?;
        Ok(vec![OutboundRecord::new(&self.output, r.key_str(), payload(id))])
    }
}

/// Two transactional instances share a group; one leaves mid-stream and the
/// other takes its partitions over from the offsets its transactions committed.
#[tokio::test]
async fn two_transactional_instances_one_leaves_every_input_yields_one_output(
) -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("eo-pair-in"), unique("eo-pair-out"), unique("eo-pair-g"));
    create_topic(&kafka(), &input, 4).await?;
    create_topic(&kafka(), &output, 4).await?;
    let (a, b) = (context("eo-pair-a"), context("eo-pair-b"));
    let mut sa = consumer(&group);
    sa.transactional_id = Some(unique("eo-pair-a"));
    let mut sb = consumer(&group);
    sb.transactional_id = Some(unique("eo-pair-b"));
    let (handed_a, handed_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ta = tokio::spawn(
        ConsumeLoop::new(&kafka(), &sa, &a, codec())
            .topics(&[&input])
            .run_transactional(CountingCopy {
                output: output.clone(),
                handed: handed_a.clone(),
            }),
    );
    let tb = tokio::spawn(
        ConsumeLoop::new(&kafka(), &sb, &b, codec())
            .topics(&[&input])
            .run_transactional(CountingCopy {
                output: output.clone(),
                handed: handed_b.clone(),
            }),
    );
    eventually(DEADLINE, || {
        let ok = [&a, &b]
            .iter()
            .all(|c| c.readiness.report().contains("assigned: ok"));
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&input, 0..200).await?;
    // A leaves while the stream is still flowing: both have worked, not everything is done.
    let (ha, hb) = (handed_a.clone(), handed_b.clone());
    eventually(DEADLINE, || {
        let ok = ha.load(Ordering::SeqCst) > 0 && hb.load(Ordering::SeqCst) > 0;
        async move { ok.then_some(()) }
    })
    .await?;
    a.shutdown.cancel();
    ta.await??;
    produce_ids(&input, 200..400).await?;
    let outputs = committed_outputs(&output, 400).await?;
    b.shutdown.cancel();
    tb.await??;
    assert_exactly_once(&ids_of(&outputs), 0..400, "committed outputs");
    Ok(())
}

//! The consume loop across group rebalances, against the real broker: records
//! fetched under an assignment that was revoked are never processed, a member
//! leaving mid-stream loses and repeats nothing (batch mode), and a partition
//! taken away while it waited out a retry is forgotten.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dora_kafka::{BatchHandler, ConsumeLoop, Handler, HandlerError, Record};
use dora_testkit::{create_topic, eventually, unique, DEADLINE};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

/// Batches handed to a handler, as ids, each with the member that got it.
type Handed = Arc<Mutex<Vec<(&'static str, Vec<u64>)>>>;

/// Every batch the handler was given, as ids, tagged with who processed it.
#[derive(Clone, Default)]
struct Batches(Handed, &'static str);

impl Batches {
    fn tagged(&self, who: &'static str) -> Self {
        Self(self.0.clone(), who)
    }
    fn all_ids(&self) -> Vec<u64> {
        self.0.lock().unwrap().iter().flat_map(|(_, b)| b.clone()).collect()
    }
    fn workers(&self) -> BTreeSet<&'static str> {
        self.0.lock().unwrap().iter().map(|(w, _)| *w).collect()
    }
}

impl BatchHandler for Batches {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        let ids = records.iter().map(parse_id).collect::<Result<Vec<_>, _>>()?;
        self.0.lock().unwrap().push((self.1, ids));
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle_one(&self, r: &Record) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((self.1, vec![parse_id(r)?]));
        Ok(())
    }
}

/// A plain group member that counts the assignments it received.
struct Intruder(Arc<AtomicUsize>);

impl ClientContext for Intruder {}

impl ConsumerContext for Intruder {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Joins `group` on `topic` as a plain member (its `client.id` sorts before
/// the loop's, so the range assignor gives it the first partition), waits for
/// its first assignment, and returns the member; dropping it leaves the group.
fn intrude(group: &str, topic: &str) -> anyhow::Result<BaseConsumer<Intruder>> {
    let assigned = Arc::new(AtomicUsize::new(0));
    let mut cfg = kafka().client_config()?;
    cfg.set("group.id", group)
        .set("client.id", "0-intruder")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let member: BaseConsumer<Intruder> = cfg.create_with_context(Intruder(assigned.clone()))?;
    member.subscribe(&[topic])?;
    let started = Instant::now();
    while assigned.load(Ordering::SeqCst) == 0 {
        anyhow::ensure!(started.elapsed() < DEADLINE, "the intruder was never assigned");
        // Records it may receive are dropped: it never processes or commits.
        let _ = member.poll(Duration::from_millis(100));
    }
    Ok(member)
}

/// One gather window spans a revoke and a reassignment of the same partition:
/// the records fetched under the first assignment come again under the second
/// (nothing was committed), and only the second copy may be processed.
#[tokio::test]
async fn records_fetched_before_a_revoke_and_reassignment_in_one_batch_are_dropped(
) -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("gen"), unique("gen-g"));
    create_topic(&kafka(), &topic, 1).await?;
    let ctx = context("gen-test");
    let mut settings = consumer(&group);
    // A gather window long enough to span both rebalances; a batch completes at 10 records.
    settings.max_batch_records = 10;
    settings.max_batch_wait_ms = 20_000;
    let mut kafka = kafka();
    kafka.extra.insert("heartbeat.interval.ms".into(), "500".into());
    let batches = Batches::default().tagged("loop");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka, &settings, &ctx, codec())
            .topics(&[&topic])
            .run_batches(batches.clone()),
    );
    let r = ctx.readiness.clone();
    eventually(DEADLINE, || {
        let ok = r.report().contains("assigned: ok");
        async move { ok.then_some(()) }
    })
    .await?;
    // Fetched at once by the loop, which keeps gathering for its batch.
    produce_ids(&topic, 0..5).await?;
    let (g, t) = (group.clone(), topic.clone());
    let intruder = tokio::task::spawn_blocking(move || intrude(&g, &t)).await??;
    // The intruder leaves: the loop is assigned the partition again.
    tokio::task::spawn_blocking(move || drop(intruder)).await?;
    produce_ids(&topic, 5..10).await?;
    let b = batches.clone();
    eventually(DEADLINE * 2, || {
        let n = b.all_ids().into_iter().collect::<BTreeSet<_>>().len();
        async move { (n == 10).then_some(()) }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_exactly_once(&batches.all_ids(), 0..10, "ids handed to the batch handler");
    Ok(())
}

/// Batch mode, two members, one leaves mid-stream: the revoke commits what was
/// processed, so the other member neither loses nor repeats anything.
#[tokio::test]
async fn batch_mode_two_members_one_leaves_every_record_processed_once() -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("bpair"), unique("bpair-g"));
    create_topic(&kafka(), &topic, 4).await?;
    let (a, b) = (context("bpair-a"), context("bpair-b"));
    let batches = Batches::default();
    let settings = consumer(&group);
    let ta = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &a, codec())
            .topics(&[&topic])
            .run_batches(batches.tagged("a")),
    );
    let tb = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &b, codec())
            .topics(&[&topic])
            .run_batches(batches.tagged("b")),
    );
    eventually(DEADLINE, || {
        let ok = [&a, &b]
            .iter()
            .all(|c| c.readiness.report().contains("assigned: ok"));
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&topic, 0..200).await?;
    let bs = batches.clone();
    eventually(DEADLINE, || {
        let ok = bs.workers().len() == 2 && bs.all_ids().len() >= 50;
        async move { ok.then_some(()) }
    })
    .await?;
    a.shutdown.cancel();
    ta.await??;
    produce_ids(&topic, 200..400).await?;
    let bs = batches.clone();
    eventually(DEADLINE, || {
        let n = bs.all_ids().into_iter().collect::<BTreeSet<_>>().len();
        async move { (n == 400).then_some(()) }
    })
    .await?;
    b.shutdown.cancel();
    tb.await??;
    assert_eq!(batches.workers().len(), 2, "both members worked");
    assert_exactly_once(&batches.all_ids(), 0..400, "processed ids");
    Ok(())
}

/// Fails every record retryably, counting the attempts.
struct AlwaysDown(Arc<AtomicUsize>);

impl Handler for AlwaysDown {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::unavailable("DatabaseUnavailable", format!("{}", r.offset)))
    }
}

/// A partition paused for a retry is taken away by a rebalance and not given
/// back: the loop forgets its retry (no more seeks, resumes or warnings for it).
#[tokio::test]
async fn a_partition_revoked_while_waiting_for_a_retry_is_forgotten() -> anyhow::Result<()> {
    logs();
    let warnings = capture_warnings();
    let (topic, group) = (unique("revretry"), unique("revretry-g"));
    create_topic(&kafka(), &topic, 1).await?;
    produce_ids(&topic, 0..1).await?;
    let ctx = context("revretry-test");
    let mut settings = consumer(&group);
    // Long enough that the rebalance lands while the partition is paused.
    settings.retry.base_delay_ms = 1_500;
    settings.retry.max_delay_ms = 1_500;
    let mut kafka = kafka();
    kafka.extra.insert("heartbeat.interval.ms".into(), "300".into());
    let attempts = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka, &settings, &ctx, codec())
            .topics(&[&topic])
            .run(AlwaysDown(attempts.clone())),
    );
    let n = attempts.clone();
    eventually(DEADLINE, || {
        let ok = n.load(Ordering::SeqCst) >= 1;
        async move { ok.then_some(()) }
    })
    .await?;
    // The intruder takes the only partition and keeps it.
    let (g, t) = (group.clone(), topic.clone());
    let intruder = tokio::task::spawn_blocking(move || intrude(&g, &t)).await??;
    let revoked_at = warnings.len();
    let attempts_at_revoke = attempts.load(Ordering::SeqCst);
    // Absence cannot be awaited: watch past the end of the pause (delay plus
    // jitter) and then for another second.
    let pause = settings.retry.max_delay_ms + settings.retry.base_delay_ms;
    tokio::time::sleep(Duration::from_millis(pause + 1_000)).await;
    let after: Vec<String> = warnings.since(revoked_at, &topic);
    assert!(
        after.is_empty(),
        "the loop kept working on a partition it no longer owns: {after:#?}"
    );
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        attempts_at_revoke,
        "a revoked partition's record was retried"
    );
    assert!(!task.is_finished(), "the loop stopped");
    ctx.shutdown.cancel();
    task.await??;
    tokio::task::spawn_blocking(move || drop(intruder)).await?;
    Ok(())
}

//! Offset commits that the broker refuses: a commit that failed is made
//! again, even when the partition has gone idle (the lag a lag-based
//! autoscaler reads depends on it). The broker is one of the test's own
//! ([`dora_testkit::PrivateKafka`]): the test makes it refuse commits by
//! shrinking `max.message.bytes` of `__consumer_offsets`, which leaves the
//! group's membership alone (heartbeats write nothing), so no rebalance and no
//! redelivery can commit the offset in the retry's stead.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use dora_kafka::{ConsumeLoop, Handler, HandlerError, Record};
use dora_testkit::{committed_offset, create_topic, eventually, unique, PrivateKafka, DEADLINE};
use tokio::sync::{watch, Notify};

/// The last of the five records the test produces.
const LAST: i64 = 4;

/// Handles records at once, except the last one: it says it is there and
/// waits until the test lets it finish. Counts the calls for the last one.
struct HoldsTheLast {
    at_last: Arc<Notify>,
    finish: watch::Receiver<bool>,
    calls_for_last: Arc<AtomicU32>,
}

impl Handler for HoldsTheLast {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        if r.offset == LAST {
            self.calls_for_last.fetch_add(1, Ordering::SeqCst);
            self.at_last.notify_one();
            let _ = self.finish.clone().wait_for(|f| *f).await;
        }
        Ok(())
    }
}

fn commit_errors(group: &str) -> u64 {
    dora_kafka::metrics::COMMITS
        .with_label_values(&[group, "error"])
        .get()
}

/// The group's committed offset of partition 0 becomes `want`.
async fn committed_becomes(kafka: &dora_kafka::KafkaSettings, group: &str, topic: &str, want: i64) -> anyhow::Result<()> {
    eventually(DEADLINE, || {
        let (k, g, t) = (kafka.clone(), group.to_string(), topic.to_string());
        async move { (committed_offset(&k, &g, &t, 0).await.ok().flatten() == Some(want)).then_some(()) }
    })
    .await
}

/// The commit of the last record's position is refused by the broker; once
/// the broker accepts commits again, with no record left to process, the
/// position is committed all the same — by the loop's own retry: the last
/// record was handled once (no rebalance redelivered it).
#[tokio::test]
async fn a_refused_commit_is_made_again_while_the_partition_is_idle() -> anyhow::Result<()> {
    logs();
    let broker = PrivateKafka::start().await?;
    let kafka = broker.settings.clone();
    let (topic, group) = (unique("idlecommit"), unique("idlecommit-g"));
    create_topic(&kafka, &topic, 1).await?;
    let p = dora_testkit::producer(&kafka)?;
    for n in 0..=LAST as u64 {
        dora_testkit::produce(&p, &topic, Some(n.to_string().as_bytes()), &payload(n), &[]).await?;
    }
    let mut settings = consumer(&group);
    settings.commit_interval_ms = 300;
    settings.commit_every_records = 1;
    let (at_last, (finish, finishing)) = (Arc::new(Notify::new()), watch::channel(false));
    let calls_for_last = Arc::new(AtomicU32::new(0));
    let ctx = context("idlecommit-test");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka, &settings, &ctx, codec())
            .topics(&[&topic])
            .run(HoldsTheLast {
                at_last: at_last.clone(),
                finish: finishing,
                calls_for_last: calls_for_last.clone(),
            }),
    );
    tokio::time::timeout(DEADLINE, at_last.notified()).await?;
    // Everything before the held record is committed (the group's offsets
    // topic exists from here on).
    committed_becomes(&kafka, &group, &topic, LAST).await?;

    // The broker now refuses every offset commit: the record is too large.
    broker.set_topic_config("__consumer_offsets", "max.message.bytes", "16").await?;
    let errors_before = commit_errors(&group);
    finish.send(true)?;
    let g = group.clone();
    eventually(DEADLINE, || {
        let failed = commit_errors(&g) > errors_before;
        async move { failed.then_some(()) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: the broker never refused a commit"))?;
    assert_eq!(committed_offset(&kafka, &group, &topic, 0).await?, Some(LAST), "a refused commit was stored");

    // Commits are accepted again; nothing is left to process.
    broker.set_topic_config("__consumer_offsets", "max.message.bytes", "1048588").await?;
    committed_becomes(&kafka, &group, &topic, LAST + 1)
        .await
        .map_err(|e| anyhow::anyhow!("{e}: the refused commit of offset {} was never made again", LAST + 1))?;
    assert_eq!(calls_for_last.load(Ordering::SeqCst), 1, "the last record was redelivered (a rebalance?)");
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

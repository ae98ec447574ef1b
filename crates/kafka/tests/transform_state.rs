//! State of a transactional transform against the real broker: an aborted
//! transaction's state changes are rolled back (`aborted`), a restarted
//! instance rebuilds its state by replay (`StartAt::Rebuild`) so its outputs
//! equal an uninterrupted run's, the periodic `tick` produces in
//! transactions of its own, and `batch_end`'s records commit with their batch.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dora_kafka::{ConsumeLoop, HandlerError, OutboundRecord, Record, StartAt, Transform};
use dora_testkit::{create_topic, eventually, read_committed, unique, DEADLINE};

/// Counts records per key; each output carries the id and the key's count
/// so far. Snapshots the counts at the first change after `committed` and
/// restores them on `aborted`, as a stateful transform must.
#[derive(Default)]
struct Counter {
    output: String,
    counts: Mutex<BTreeMap<String, u64>>,
    snapshot: Mutex<Option<BTreeMap<String, u64>>>,
    replayed: Mutex<Vec<u64>>,
    transformed: Mutex<Vec<u64>>,
    aborted: Mutex<Vec<Vec<(String, i32)>>>,
    assigned_before_first_replay: Mutex<Option<bool>>,
    assigned: Mutex<bool>,
    fail_once_at: Option<u64>,
    failed: AtomicU32,
    ticks: AtomicU32,
}

impl Counter {
    fn count(&self, key: &str) -> u64 {
        let mut snapshot = self.snapshot.lock().unwrap();
        let mut counts = self.counts.lock().unwrap();
        if snapshot.is_none() {
            *snapshot = Some(counts.clone());
        }
        let n = counts.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

fn key_of(id: u64) -> String {
    format!("k{}", id % 2)
}

fn counted(id: u64, count: u64) -> Vec<u8> {
    format!("{{\"id\":{id},\"count\":{count}}}").into_bytes()
}

impl Transform for Counter {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let id = parse_id(r)?;
        let count = self.count(&key_of(id));
        if Some(id) == self.fail_once_at && self.failed.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(HandlerError::unavailable("InjectedOutage", "after changing state"));
        }
        self.transformed.lock().unwrap().push(id);
        Ok(vec![OutboundRecord::new(&self.output, Some(&key_of(id)), counted(id, count))])
    }

    async fn replay(&self, r: &Record) -> Result<(), HandlerError> {
        let id = parse_id(r)?;
        let mut first = self.assigned_before_first_replay.lock().unwrap();
        if first.is_none() {
            *first = Some(*self.assigned.lock().unwrap());
        }
        drop(first);
        self.count(&key_of(id));
        self.replayed.lock().unwrap().push(id);
        Ok(())
    }

    async fn committed(&self) {
        *self.snapshot.lock().unwrap() = None;
    }

    async fn aborted(&self, partitions: &[(String, i32)]) {
        self.aborted.lock().unwrap().push(partitions.to_vec());
        if let Some(s) = self.snapshot.lock().unwrap().take() {
            *self.counts.lock().unwrap() = s;
        }
    }

    async fn tick(&self, _now_ms: i64) -> Result<Vec<OutboundRecord>, HandlerError> {
        let n = self.count("ticks");
        if self.ticks.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(HandlerError::unavailable("InjectedOutage", "first tick fails"));
        }
        Ok(vec![OutboundRecord::new(&self.output, Some("ticks"), counted(n, n))])
    }

    async fn assigned(&self, _partitions: &[(String, i32)]) {
        *self.assigned.lock().unwrap() = true;
    }
}

/// `(id, count)` of every committed output, in partition order.
async fn outputs(topic: &str, n: usize) -> anyhow::Result<Vec<(u64, u64)>> {
    Ok(committed_outputs(topic, n)
        .await?
        .iter()
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
            Some((v["id"].as_u64()?, v["count"].as_u64()?))
        })
        .collect())
}

/// What an uninterrupted run outputs for ids `range` (counts per key from 1).
fn uninterrupted(range: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    range.map(|id| (id, id / 2 + 1)).collect()
}

/// Fails retryably once, after counting record 3: the abort must roll the
/// counts back, so the committed outputs equal an uninterrupted run's.
#[tokio::test]
async fn an_aborted_transaction_rolls_the_transforms_state_back() -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("roll-in"), unique("roll-out"), unique("roll-g"));
    create_topic(&kafka(), &input, 1).await?;
    create_topic(&kafka(), &output, 1).await?;
    produce_ids(&input, 0..8).await?;
    let ctx = context("roll-test");
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("roll-txn"));
    let counter = Arc::new(Counter {
        output: output.clone(),
        fail_once_at: Some(3),
        ..Counter::default()
    });
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .run_transactional(counter.clone()),
    );
    let got = outputs(&output, 8).await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(got, uninterrupted(0..8), "no count from the aborted transaction survived");
    assert_eq!(
        counter.aborted.lock().unwrap().clone(),
        vec![vec![(input.clone(), 0)]],
        "aborted once, naming the partition it covered"
    );
    Ok(())
}

/// A first instance processes ids 0..6; a new one (empty state) starts with
/// `Rebuild`: it replays 0..6 without producing, then transforms 6..10 with
/// the counts an uninterrupted run has.
#[tokio::test]
async fn rebuild_replays_up_to_the_committed_offset_and_goes_on_as_if_uninterrupted(
) -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("rebuild-in"), unique("rebuild-out"), unique("rebuild-g"));
    create_topic(&kafka(), &input, 1).await?;
    create_topic(&kafka(), &output, 1).await?;
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("rebuild-txn"));
    let rebuild = StartAt::Rebuild {
        span: Duration::from_secs(3600),
    };
    produce_ids(&input, 0..6).await?;
    let first = Arc::new(Counter {
        output: output.clone(),
        ..Counter::default()
    });
    let ctx = context("rebuild-a");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .on_assign(move |_, _| rebuild)
            .run_transactional(first.clone()),
    );
    outputs(&output, 6).await?;
    ctx.shutdown.cancel();
    task.await??;
    assert!(first.replayed.lock().unwrap().is_empty(), "nothing committed yet: nothing to replay");
    produce_ids(&input, 6..10).await?;
    let second = Arc::new(Counter {
        output: output.clone(),
        ..Counter::default()
    });
    let ctx = context("rebuild-b");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .on_assign(move |_, _| rebuild)
            .run_transactional(second.clone()),
    );
    let got = outputs(&output, 10).await?;
    let r = ctx.readiness.clone();
    eventually(DEADLINE, || {
        let ok = r.report().contains("rebuilding: ok");
        async move { ok.then_some(()) }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(got, uninterrupted(0..10), "the outputs of an uninterrupted run");
    assert_eq!(*second.replayed.lock().unwrap(), (0..6).collect::<Vec<_>>());
    assert_eq!(*second.transformed.lock().unwrap(), (6..10).collect::<Vec<_>>());
    assert_eq!(
        *second.assigned_before_first_replay.lock().unwrap(),
        Some(true),
        "assigned is called before the first replayed record"
    );
    Ok(())
}

/// `tick_every`: ticks produce in transactions of their own; the first tick
/// fails after changing state, which `aborted` rolls back, so the committed
/// tick outputs count 1, 2, 3 with no gap.
#[tokio::test]
async fn ticks_produce_in_their_own_transactions_and_a_failed_tick_leaves_nothing(
) -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("tick-in"), unique("tick-out"), unique("tick-g"));
    create_topic(&kafka(), &input, 1).await?;
    create_topic(&kafka(), &output, 1).await?;
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("tick-txn"));
    settings.retry.base_delay_ms = 20;
    let counter = Arc::new(Counter {
        output: output.clone(),
        ..Counter::default()
    });
    let ctx = context("tick-test");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .tick_every(Duration::from_millis(100))
            .run_transactional(counter.clone()),
    );
    let got = outputs(&output, 3).await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(&got[..3], &[(1, 1), (2, 2), (3, 3)]);
    assert_eq!(
        counter.aborted.lock().unwrap().first().cloned(),
        Some(vec![]),
        "the failed tick was aborted with no partitions"
    );
    let all = read_committed(&kafka(), &output).await?;
    assert!(all.len() >= 3);
    Ok(())
}

/// Copies each record and closes each batch with a summary naming the ids
/// it copied (`batch_end`); the first summary fails retryably once.
#[derive(Default)]
struct Summarizer {
    output: String,
    open: Mutex<Vec<u64>>,
    summaries_failed: AtomicU32,
}

impl Transform for Summarizer {
    async fn transform(&self, r: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let id = parse_id(r)?;
        self.open.lock().unwrap().push(id);
        Ok(vec![OutboundRecord::new(&self.output, Some("copy"), payload(id))])
    }

    async fn batch_end(&self) -> Result<Vec<OutboundRecord>, HandlerError> {
        if self.summaries_failed.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(HandlerError::unavailable("InjectedOutage", "first summary fails"));
        }
        let ids = self.open.lock().unwrap().clone();
        let summary = serde_json::json!({ "summary": ids }).to_string();
        Ok(vec![OutboundRecord::new(&self.output, Some("summary"), summary.into_bytes())])
    }

    async fn committed(&self) {
        self.open.lock().unwrap().clear();
    }

    async fn aborted(&self, _partitions: &[(String, i32)]) {
        self.open.lock().unwrap().clear();
    }
}

/// `batch_end`'s records commit with their batch: every id is copied once
/// and named by exactly one committed summary, and the batch whose summary
/// failed was aborted whole (its copies and summary never visible).
#[tokio::test]
async fn a_batch_is_closed_by_its_summary_in_the_same_transaction() -> anyhow::Result<()> {
    logs();
    let (input, output, group) = (unique("close-in"), unique("close-out"), unique("close-g"));
    create_topic(&kafka(), &input, 1).await?;
    create_topic(&kafka(), &output, 1).await?;
    produce_ids(&input, 0..8).await?;
    let ctx = context("close-test");
    let mut settings = consumer(&group);
    settings.transactional_id = Some(unique("close-txn"));
    settings.max_batch_records = 3;
    let summarizer = Arc::new(Summarizer {
        output: output.clone(),
        ..Summarizer::default()
    });
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&input])
            .run_transactional(summarizer.clone()),
    );
    let (copies, summarized) = eventually(DEADLINE, || async {
        let records = read_committed(&kafka(), &output).await.ok()?;
        let (mut copies, mut summarized) = (Vec::new(), Vec::new());
        for r in &records {
            let v: serde_json::Value = serde_json::from_slice(r.payload()?).ok()?;
            match v["summary"].as_array() {
                Some(ids) => summarized.extend(ids.iter().filter_map(|i| i.as_u64())),
                None => copies.push(v["id"].as_u64()?),
            }
        }
        (summarized.len() >= 8).then_some((copies, summarized))
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_exactly_once(&copies, 0..8, "copies");
    assert_exactly_once(&summarized, 0..8, "ids named by the summaries");
    assert!(summarizer.summaries_failed.load(Ordering::SeqCst) >= 2, "the failed summary was retried");
    Ok(())
}

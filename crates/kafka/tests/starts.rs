//! Start positions and the partition lifecycle against the real broker: a
//! slow `on_assign` answer holds only its own partition and takes effect
//! before its first record; `assigned` comes before a partition's first
//! record and `revoked` after its last; `until_end` returns at the end each
//! partition had when it was assigned; another partition's start answer
//! never cuts an open batch short.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dora_kafka::{BatchHandler, ConsumeLoop, Handler, HandlerError, Record, StartAt};
use dora_testkit::{committed_offset, create_topic, eventually, unique, DEADLINE};
use tokio::sync::watch;

/// What happened, in order: `assigned`/`revoked` hooks and handled records.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<Event>>>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
    Handled(i32, i64, u64),
}

impl Journal {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    fn handled(&self, partition: i32) -> Vec<i64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Handled(p, o, _) if p == partition => Some(o),
                _ => None,
            })
            .collect()
    }
    fn position(&self, wanted: impl Fn(&Event) -> bool) -> Option<usize> {
        self.events().iter().position(wanted)
    }
}

impl Handler for Journal {
    #[tracing::instrument(skip_all, fields(topic = %r.topic, partition = r.partition, offset = r.offset, key = r.key_str()))]
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        let id = parse_id(r)?;
        self.0.lock().unwrap().push(Event::Handled(r.partition, r.offset, id));
        Ok(())
    }

    async fn assigned(&self, partitions: &[(String, i32)]) {
        self.0.lock().unwrap().push(Event::Assigned(partitions.to_vec()));
    }

    async fn revoked(&self, partitions: &[(String, i32)]) {
        self.0.lock().unwrap().push(Event::Revoked(partitions.to_vec()));
    }
}

/// An `on_assign` answer: partition 0's (`held`) only once `released`
/// turned true, any other partition's (`others`) at once.
fn held_for_partition_0(
    released: &watch::Receiver<bool>,
    partition: i32,
    held: StartAt,
    others: StartAt,
) -> impl std::future::Future<Output = StartAt> + Send + 'static {
    let mut released = released.clone();
    async move {
        if partition != 0 {
            return others;
        }
        let _ = released.wait_for(|r| *r).await;
        held
    }
}

fn assigned_with(partition: i32) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Assigned(ps) if ps.iter().any(|(_, p)| *p == partition))
}

fn handled_on(partition: i32) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Handled(p, _, _) if *p == partition)
}

/// Partition 0's start is answered only when the test says so (offset 3);
/// partition 1 starts at once. Partition 1 is consumed meanwhile; partition
/// 0's first handled record is offset 3, after its `assigned` hook.
#[tokio::test]
async fn a_slow_on_assign_answer_holds_only_its_partition_and_applies_before_its_first_record(
) -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("slowstart"), unique("slowstart-g"));
    create_topic(&kafka(), &topic, 2).await?;
    produce_ids_to(&topic, 0, 0..6).await?;
    produce_ids_to(&topic, 1, 100..106).await?;
    let (release, released) = watch::channel(false);
    let journal = Journal::default();
    let ctx = context("slowstart-test");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .on_assign(move |_topic, partition| {
                held_for_partition_0(&released, partition, StartAt::Offset(3), StartAt::Committed)
            })
            .run(journal.clone()),
    );
    let j = journal.clone();
    eventually(DEADLINE, || {
        let n = j.handled(1).len();
        async move { (n == 6).then_some(()) }
    })
    .await?;
    assert!(journal.handled(0).is_empty(), "partition 0 waits for its answer");
    assert!(journal.position(assigned_with(0)).is_none());
    release.send(true)?;
    let j = journal.clone();
    eventually(DEADLINE, || {
        let n = j.handled(0).len();
        async move { (n == 3).then_some(()) }
    })
    .await?;
    assert_eq!(journal.handled(0), vec![3, 4, 5], "started at the answer");
    assert_eq!(journal.handled(1), (0..6).collect::<Vec<_>>());
    for p in [0, 1] {
        let (assigned, first) = (
            journal.position(assigned_with(p)).expect("assigned hook"),
            journal.position(handled_on(p)).expect("a record"),
        );
        assert!(assigned < first, "partition {p}: assigned before its first record");
    }
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

/// A group with committed offsets; an `on_assign` that answers `Committed`
/// (after the partition was paused waiting for it) starts at them, not at
/// `auto_offset_reset`.
#[tokio::test]
async fn an_on_assign_answer_committed_resumes_at_the_groups_committed_offset(
) -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("committedstart"), unique("committedstart-g"));
    create_topic(&kafka(), &topic, 1).await?;
    produce_ids(&topic, 0..5).await?;
    let first = Journal::default();
    let ctx = context("committedstart-a");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .run(first.clone()),
    );
    let j = first.clone();
    eventually(DEADLINE, || {
        let n = j.handled(0).len();
        async move { (n == 5).then_some(()) }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(committed_offset(&kafka(), &group, &topic, 0).await?, Some(5));
    produce_ids(&topic, 5..8).await?;
    let second = Journal::default();
    let ctx = context("committedstart-b");
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
            .topics(&[&topic])
            .on_assign(|_, _| async { StartAt::Committed })
            .run(second.clone()),
    );
    let j = second.clone();
    eventually(DEADLINE, || {
        let n = j.handled(0).len();
        async move { (n == 3).then_some(()) }
    })
    .await?;
    ctx.shutdown.cancel();
    task.await??;
    assert_eq!(second.handled(0), vec![5, 6, 7]);
    Ok(())
}

/// A second member takes partitions over: the first member's `revoked` hook
/// names what it lost, and none of those records is handled by it afterwards.
#[tokio::test]
async fn revoked_names_the_partitions_taken_away_and_none_is_handled_after() -> anyhow::Result<()>
{
    logs();
    let (topic, group) = (unique("revhook"), unique("revhook-g"));
    create_topic(&kafka(), &topic, 4).await?;
    let (a, b) = (context("revhook-a"), context("revhook-b"));
    let (ja, jb) = (Journal::default(), Journal::default());
    let ta = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &a, codec())
            .topics(&[&topic])
            .run(ja.clone()),
    );
    let j = ja.clone();
    eventually(DEADLINE, || {
        let ok = j.position(|e| matches!(e, Event::Assigned(ps) if ps.len() == 4)).is_some();
        async move { ok.then_some(()) }
    })
    .await?;
    let tb = tokio::spawn(
        ConsumeLoop::new(&kafka(), &consumer(&group), &b, codec())
            .topics(&[&topic])
            .run(jb.clone()),
    );
    let j = jb.clone();
    eventually(DEADLINE, || {
        let ok = j.position(|e| matches!(e, Event::Assigned(ps) if !ps.is_empty())).is_some();
        async move { ok.then_some(()) }
    })
    .await?;
    produce_ids(&topic, 0..100).await?;
    let (j1, j2) = (ja.clone(), jb.clone());
    eventually(DEADLINE, || {
        let n = j1.events().iter().chain(j2.events().iter()).filter(|e| matches!(e, Event::Handled(..))).count();
        async move { (n >= 100).then_some(()) }
    })
    .await?;
    a.shutdown.cancel();
    b.shutdown.cancel();
    ta.await??;
    tb.await??;
    let taken: BTreeSet<i32> = jb
        .events()
        .iter()
        .find_map(|e| match e {
            Event::Assigned(ps) if !ps.is_empty() => Some(ps.iter().map(|(_, p)| *p).collect()),
            _ => None,
        })
        .unwrap_or_default();
    let events = ja.events();
    let revoked_at = events
        .iter()
        .position(|e| matches!(e, Event::Revoked(ps) if ps.len() == 4))
        .expect("the first member's partitions were revoked when the second joined");
    for e in &events[revoked_at..] {
        if let Event::Handled(p, o, _) = e {
            assert!(!taken.contains(p), "handled {p}/{o} after it was taken away");
        }
    }
    Ok(())
}

/// `until_end`: the loop processes what each partition held at assignment
/// (the end of a transactionally written partition is past its marker) and
/// returns by itself, offsets committed.
#[tokio::test]
async fn until_end_returns_after_processing_what_each_partition_held_at_assignment(
) -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("untilend"), unique("untilend-g"));
    create_topic(&kafka(), &topic, 3).await?;
    produce_ids_to(&topic, 0, 0..4).await?;
    produce_transactionally(&topic, 1, 4..7).await?;
    // Partition 2 stays empty.
    let journal = Journal::default();
    let ctx = context("untilend-test");
    let run = ConsumeLoop::new(&kafka(), &consumer(&group), &ctx, codec())
        .topics(&[&topic])
        .until_end()
        .run(journal.clone());
    tokio::time::timeout(DEADLINE, run).await??;
    assert_eq!(journal.handled(0), vec![0, 1, 2, 3]);
    assert_eq!(journal.handled(1), vec![0, 1, 2]);
    assert_eq!(committed_offset(&kafka(), &group, &topic, 0).await?, Some(4));
    assert!(
        committed_offset(&kafka(), &group, &topic, 1).await?.is_some_and(|c| c >= 3),
        "partition 1 committed"
    );
    Ok(())
}

/// A batch as (partition, offset) pairs, with when the handler got it.
type TimedBatch = (Instant, Vec<(i32, i64)>);

/// The batches a batch handler was given.
#[derive(Clone, Default)]
struct Timed(Arc<Mutex<Vec<TimedBatch>>>);

impl Timed {
    fn batches(&self) -> Vec<TimedBatch> {
        self.0.lock().unwrap().clone()
    }
}

impl BatchHandler for Timed {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        let batch = records.iter().map(|r| (r.partition, r.offset)).collect();
        self.0.lock().unwrap().push((Instant::now(), batch));
        Ok(())
    }

    async fn handle_one(&self, r: &Record) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((Instant::now(), vec![(r.partition, r.offset)]));
        Ok(())
    }
}

/// Batch mode with a long fill time: partition 1 starts at once and its six
/// records open a batch; partition 0's start is answered while that batch is
/// open. The batch still fills for its full time (the answer waits for the
/// next turn of the loop), and partition 0's records come after it. Before
/// the fix, the answer's wake-up closed the open batch at once, so a batch
/// ended early whenever another partition of the member finished starting
/// (audit-sink's SIGTERM test saw its open batch stored before the signal).
#[tokio::test]
async fn a_start_answer_arriving_while_a_batch_is_open_does_not_close_it() -> anyhow::Result<()> {
    logs();
    let (topic, group) = (unique("openbatch"), unique("openbatch-g"));
    create_topic(&kafka(), &topic, 2).await?;
    produce_ids_to(&topic, 0, 0..3).await?;
    produce_ids_to(&topic, 1, 100..106).await?;
    let fill = Duration::from_millis(8_000);
    let mut settings = consumer(&group);
    settings.max_batch_wait_ms = u64::try_from(fill.as_millis())?;
    settings.max_batch_records = 10_000;
    settings.lag_interval_ms = 100;
    let (release, released) = watch::channel(false);
    let handler = Timed::default();
    let ctx = context("openbatch-test");
    let started = Instant::now();
    let task = tokio::spawn(
        ConsumeLoop::new(&kafka(), &settings, &ctx, codec())
            .topics(&[&topic])
            .on_assign(move |_topic, partition| {
                held_for_partition_0(&released, partition, StartAt::Beginning, StartAt::Beginning)
            })
            .run_batches(handler.clone()),
    );
    // Lag 0 on partition 1 while nothing was handed over: its six records
    // were polled into the open batch.
    let t = topic.clone();
    eventually(DEADLINE, || {
        let lag = dora_kafka::metrics::consumer_lag(&t, 1);
        async move { (lag == Some(0)).then_some(()) }
    })
    .await?;
    let released_at = Instant::now();
    assert!(handler.batches().is_empty(), "the batch closed before its fill time");
    anyhow::ensure!(
        released_at < started + fill - Duration::from_secs(1),
        "partition 1 took {:?} to be polled: too slow to open the batch before the fill time, the test proves nothing",
        released_at - started
    );
    release.send(true)?;
    let h = handler.clone();
    eventually(DEADLINE, || {
        let n: usize = h.batches().iter().map(|(_, b)| b.len()).sum();
        async move { (n == 9).then_some(()) }
    })
    .await?;
    let batches = handler.batches();
    let (closed_at, first) = &batches[0];
    assert_eq!(first, &(100..106).map(|o| (1, o - 100)).collect::<Vec<_>>(), "the first batch is partition 1's six records");
    assert!(
        *closed_at >= started + fill,
        "the open batch closed {:?} after the answer for partition 0, {:?} after the loop started: before its fill time {fill:?}",
        *closed_at - released_at,
        *closed_at - started
    );
    let zero: Vec<i64> = batches[1..].iter().flat_map(|(_, b)| b.iter().filter(|(p, _)| *p == 0).map(|(_, o)| *o)).collect();
    assert_eq!(zero, vec![0, 1, 2], "partition 0 started at its answer, after the open batch");
    ctx.shutdown.cancel();
    task.await??;
    Ok(())
}

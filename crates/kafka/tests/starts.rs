//! Start positions and the partition lifecycle against the real broker: a
//! slow `on_assign` answer holds only its own partition and takes effect
//! before its first record; `assigned` comes before a partition's first
//! record and `revoked` after its last; `until_end` returns at the end each
//! partition had when it was assigned.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::*;
use dora_kafka::{ConsumeLoop, Handler, HandlerError, Record, StartAt};
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
                let mut released = released.clone();
                async move {
                    if partition == 0 {
                        let _ = released.wait_for(|r| *r).await;
                        StartAt::Offset(3)
                    } else {
                        StartAt::Committed
                    }
                }
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

//! What the group gave this member, shared by the loop and librdkafka's
//! rebalance callbacks (which run on the loop's poll thread): the assigned
//! partitions with the assignment generation of each, their processed and
//! committed positions, and the lifecycle events the loop has yet to handle.
//!
//! Assignment generations: every rebalance callback advances a counter; a
//! newly assigned partition takes its value as its generation, and every
//! polled record is tagged with the value at its poll. A record polled before
//! its partition's current assignment (revoked and assigned again while the
//! loop gathered a batch) is stale and never processed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::{Offset, TopicPartitionList};

use super::conditions::Conditions;
use crate::metrics;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
        }
    }

    pub fn of(record: &super::Record) -> Self {
        Self::new(&record.topic, record.partition)
    }

    /// A one-partition list at `offset`.
    pub fn list(&self, offset: Offset) -> TopicPartitionList {
        list(std::iter::once((self, offset)))
    }

    /// `(topic, partition)`, as the handler hooks take it.
    pub fn pair(&self) -> (String, i32) {
        (self.topic.clone(), self.partition)
    }
}

/// A partition list from `(partition, offset)` pairs.
pub(crate) fn list<'a>(
    items: impl IntoIterator<Item = (&'a TopicPartition, Offset)>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in items {
        // Fails only for a partition listed twice; callers list each once.
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, offset);
    }
    tpl
}

/// An assigned partition.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Owned {
    /// The rebalance counter when it was assigned.
    pub generation: u64,
    /// Offset after the last processed (or dead-lettered) record.
    pub processed: Option<i64>,
    /// Last offset committed by the loop.
    pub committed: Option<i64>,
    /// Offset after the last record admitted for processing.
    pub polled: Option<i64>,
    /// Offset of the first record admitted in this assignment.
    first_admitted: Option<i64>,
    /// From librdkafka's statistics: the end (last stable offset under
    /// read_committed, else the high watermark), the log start, the group's
    /// committed offset and the consumer's position (past transaction markers too).
    end: Option<i64>,
    log_start: Option<i64>,
    group_committed: Option<i64>,
    fetch_position: Option<i64>,
}

impl Owned {
    /// End minus the position of the next record to process.
    fn lag(&self) -> Option<i64> {
        // Statistics arrive with polls; admitted records prove a later end.
        let end = self.end.max(self.polled)?;
        let position = match (self.processed, self.polled) {
            // Nothing buffered: the consumer's position also skips markers.
            (Some(done), Some(polled)) if done >= polled => done.max(self.fetch_position.unwrap_or(done)),
            (Some(done), _) => done,
            (None, Some(_)) => self.first_admitted?,
            (None, None) => self
                .group_committed
                .or(self.fetch_position)
                .or(self.log_start)?,
        };
        Some((end - position).max(0))
    }
}

/// Sets `kafka_consumer_lag` of `tp` from `owned`.
fn report_lag(tp: &TopicPartition, owned: &Owned) {
    if let Some(lag) = owned.lag() {
        metrics::CONSUMER_LAG
            .with_label_values(&[tp.topic.as_str(), &tp.partition.to_string()])
            .set(lag);
    }
}

/// A change of the assignment, in the order librdkafka made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

#[derive(Debug, Default)]
struct State {
    owned: BTreeMap<TopicPartition, Owned>,
    events: Vec<Lifecycle>,
    busy_since: Option<Instant>,
    stuck: HashMap<TopicPartition, String>,
}

/// Shared by the loop and the consumer's librdkafka context.
#[derive(Debug)]
pub(crate) struct Membership {
    pub group: String,
    pub conditions: Conditions,
    pub read_committed: bool,
    /// Offsets go to transactions, never to consumer commits.
    pub transactional: bool,
    /// Newly assigned partitions stay paused until the loop applied their start.
    pub pause_assigned: bool,
    rebalances: AtomicU64,
    interrupted: AtomicBool,
    nudged: AtomicBool,
    state: Mutex<State>,
}

impl Membership {
    pub fn new(
        group: &str,
        conditions: Conditions,
        read_committed: bool,
        transactional: bool,
        pause_assigned: bool,
    ) -> Self {
        Self {
            group: group.to_string(),
            conditions,
            read_committed,
            transactional,
            pause_assigned,
            rebalances: AtomicU64::new(0),
            interrupted: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rebalance counter a record polled now is tagged with.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::SeqCst)
    }

    /// Asks the poll thread to hand back what it gathered so far (an
    /// assignment change, a shutdown): the open batch closes now.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    /// True (once) when someone asked for the loop's attention.
    pub fn take_interrupt(&self) -> bool {
        self.interrupted.swap(false, Ordering::SeqCst)
    }

    /// Asks the poll thread for a turn of the loop as soon as no batch is
    /// open (a start answer arrived): a gather still waiting for its first
    /// record returns at once, an open batch fills for its full time.
    pub fn nudge(&self) {
        self.nudged.store(true, Ordering::SeqCst);
    }

    /// True (once) when the loop was nudged.
    pub fn take_nudge(&self) -> bool {
        self.nudged.swap(false, Ordering::SeqCst)
    }

    /// Rebalance callback: `partitions` are ours from now on.
    pub fn assign(&self, partitions: Vec<TopicPartition>) {
        let generation = self.rebalances.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.lock();
        for tp in &partitions {
            state.owned.insert(
                tp.clone(),
                Owned {
                    generation,
                    ..Owned::default()
                },
            );
        }
        state.events.push(Lifecycle::Assigned(partitions));
        drop(state);
        self.interrupt();
    }

    /// Rebalance callback: `partitions` are taken away.
    pub fn revoke(&self, partitions: Vec<TopicPartition>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        for tp in &partitions {
            state.owned.remove(tp);
            state.stuck.remove(tp);
        }
        state.events.push(Lifecycle::Revoked(partitions));
        drop(state);
        self.interrupt();
    }

    /// The assignment changes the loop has not handled yet, oldest first.
    pub fn take_events(&self) -> Vec<Lifecycle> {
        std::mem::take(&mut self.lock().events)
    }

    /// True when a record of `tp` polled at rebalance counter `fetched_in`
    /// belongs to `tp`'s current assignment.
    pub fn is_current(&self, tp: &TopicPartition, fetched_in: u64) -> bool {
        self.lock()
            .owned
            .get(tp)
            .is_some_and(|o| fetched_in >= o.generation)
    }

    /// The current generation of `tp`, if assigned.
    pub fn generation(&self, tp: &TopicPartition) -> Option<u64> {
        self.lock().owned.get(tp).map(|o| o.generation)
    }

    /// The assigned partitions.
    pub fn owned(&self) -> BTreeSet<TopicPartition> {
        self.lock().owned.keys().cloned().collect()
    }

    /// Every assigned partition's positions.
    pub fn all_positions(&self) -> Vec<(TopicPartition, Owned)> {
        self.lock()
            .owned
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    /// The record at `offset` was admitted for processing.
    pub fn mark_polled(&self, tp: &TopicPartition, offset: i64) {
        if let Some(o) = self.lock().owned.get_mut(tp) {
            o.first_admitted.get_or_insert(offset);
            o.polled = Some(o.polled.map_or(offset + 1, |p| p.max(offset + 1)));
            report_lag(tp, o);
        }
    }

    /// Everything before `next` is processed (or dead-lettered).
    pub fn mark_processed(&self, tp: &TopicPartition, next: i64) {
        let mut state = self.lock();
        state.stuck.remove(tp);
        if let Some(o) = state.owned.get_mut(tp) {
            o.processed = Some(next);
            report_lag(tp, o);
        }
    }

    /// librdkafka's statistics for `tp`: its end and log start, the group's
    /// committed offset and the consumer's position (negative: unknown).
    pub fn observe(&self, tp: &TopicPartition, stats: [i64; 4]) {
        let [end, log_start, group_committed, position] = stats;
        let known = |o: i64| (o >= 0).then_some(o);
        if let Some(o) = self.lock().owned.get_mut(tp) {
            o.end = known(end).or(o.end);
            o.log_start = known(log_start).or(o.log_start);
            o.group_committed = known(group_committed).or(o.group_committed);
            o.fetch_position = known(position).or(o.fetch_position);
            report_lag(tp, o);
        }
    }

    /// `tpl`'s offsets were committed (by a consumer commit or a transaction).
    pub fn mark_committed(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            if let (Offset::Offset(o), Some(owned)) = (
                e.offset(),
                state
                    .owned
                    .get_mut(&TopicPartition::new(e.topic(), e.partition())),
            ) {
                owned.committed = Some(owned.committed.map_or(o, |c| c.max(o)));
            }
        }
    }

    /// Processed positions not yet committed, of `only` (or every partition).
    pub fn uncommitted(&self, only: Option<&BTreeSet<TopicPartition>>) -> TopicPartitionList {
        let state = self.lock();
        list(state.owned.iter().filter_map(|(tp, o)| {
            let p = o.processed?;
            let wanted = only.is_none_or(|only| only.contains(tp));
            (wanted && o.committed.is_none_or(|c| c < p)).then_some((tp, Offset::Offset(p)))
        }))
    }

    /// Marks a handler call as running (`true`) or finished.
    pub fn set_busy(&self, busy: bool) {
        self.lock().busy_since = busy.then(Instant::now);
    }

    /// When the running handler call started.
    pub fn busy_since(&self) -> Option<Instant> {
        self.lock().busy_since
    }

    /// `tp` keeps failing; `reason` shows on `/readyz` until it succeeds.
    pub fn set_stuck(&self, tp: &TopicPartition, reason: String) {
        self.lock().stuck.insert(tp.clone(), reason);
    }

    /// Why some partition is stuck, if one is.
    pub fn stuck_reason(&self) -> Option<String> {
        self.lock().stuck.values().next().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dora_telemetry::Readiness;

    fn membership() -> Membership {
        let conditions = Conditions::register(&Readiness::new(), "g");
        Membership::new("g", conditions, true, false, false)
    }

    #[test]
    fn a_record_polled_before_its_partitions_reassignment_is_stale() {
        let m = membership();
        let p0 = TopicPartition::new("t", 0);
        m.assign(vec![p0.clone()]);
        let first = m.rebalances();
        assert!(m.is_current(&p0, first));
        m.revoke(vec![p0.clone()]);
        assert!(!m.is_current(&p0, first), "revoked");
        m.assign(vec![p0.clone()]);
        assert!(!m.is_current(&p0, first), "fetched under the old assignment");
        assert!(m.is_current(&p0, m.rebalances()));
        assert_eq!(
            m.take_events(),
            vec![
                Lifecycle::Assigned(vec![p0.clone()]),
                Lifecycle::Revoked(vec![p0.clone()]),
                Lifecycle::Assigned(vec![p0])
            ]
        );
    }
}

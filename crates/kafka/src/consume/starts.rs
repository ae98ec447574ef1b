//! Where newly assigned partitions start. With an `on_assign` callback (or
//! `until_end`), the rebalance callback pauses new partitions; the callback's
//! answer may take its time (the loop keeps polling the others), then the
//! loop seeks, calls the handler's `assigned` hook and resumes them, so no
//! record is processed before its start took effect. `StartAt::Rebuild`
//! replays the records before the committed offset to the transform first.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::{ClientConfig, Offset};
use tokio::sync::mpsc;

use super::dead_letter::DeadLetterEncoder;
use super::driver::{pairs, Driver};
use super::membership::{Membership, TopicPartition};
use super::modes::Mode;
use super::rebuild::{last_record_before, Rebuild};
use crate::KafkaError;

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset (or `auto_offset_reset`). The default.
    Committed,
    /// The first record at or after this timestamp, epoch milliseconds.
    Timestamp(i64),
    /// The first record still in the log.
    Beginning,
    /// A given offset.
    Offset(i64),
    /// (Transactional mode.) Rebuild state before going on: from the first
    /// record at or after `T - span`, where `T` is the timestamp of the last
    /// record before the committed offset `C`, every record before `C` goes
    /// to [`Transform::replay`](super::Transform::replay) (nothing produced,
    /// committed or dead-lettered); from `C` on, normal processing. Without a
    /// committed offset, like [`StartAt::Committed`]. The readiness condition
    /// `consumer <group> rebuilding` holds until every partition reached `C`.
    Rebuild {
        /// How far before the last committed record's timestamp to replay from.
        span: Duration,
    },
}

/// What an `on_assign` callback returns: a [`StartAt`], or a future of one.
pub trait StartAnswer: Send + 'static {
    /// The answer as a future.
    fn into_answer(self) -> BoxFuture<'static, StartAt>;
}

impl StartAnswer for StartAt {
    fn into_answer(self) -> BoxFuture<'static, StartAt> {
        Box::pin(std::future::ready(self))
    }
}

impl<F: Future<Output = StartAt> + Send + 'static> StartAnswer for F {
    fn into_answer(self) -> BoxFuture<'static, StartAt> {
        Box::pin(self)
    }
}

/// The `on_assign` callback.
pub(crate) type OnAssign = Arc<dyn Fn(String, i32) -> BoxFuture<'static, StartAt> + Send + Sync>;

/// An answer for one assignment of a partition.
#[derive(Debug)]
struct Answer {
    tp: TopicPartition,
    generation: u64,
    start: StartAt,
}

/// A start position waiting for its seek to be accepted (librdkafka refuses
/// seeks until the partition's fetcher started).
#[derive(Debug)]
struct Seek {
    generation: u64,
    target: Offset,
    rebuild: Option<Rebuild>,
    next_try: Instant,
    tries: u32,
}

/// Start positions in progress, rebuilds, and the ends of `until_end`.
pub(crate) struct Starts {
    on_assign: Option<OnAssign>,
    transactional: bool,
    until_end: bool,
    from_latest: bool,
    lookup: ClientConfig,
    answers_tx: mpsc::UnboundedSender<Answer>,
    answers_rx: mpsc::UnboundedReceiver<Answer>,
    asking: BTreeMap<TopicPartition, u64>,
    seeking: BTreeMap<TopicPartition, Seek>,
    floors: BTreeMap<TopicPartition, i64>,
    rebuilding: BTreeMap<TopicPartition, Rebuild>,
    rebuilt_any: bool,
    ends: BTreeMap<TopicPartition, i64>,
    reached: BTreeSet<TopicPartition>,
    assignments_seen: bool,
}

impl Starts {
    /// `lookup` configures the short-lived reader that finds the last
    /// committed record of a rebuild.
    pub fn new(
        on_assign: Option<OnAssign>,
        transactional: bool,
        until_end: bool,
        from_latest: bool,
        lookup: ClientConfig,
    ) -> Self {
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        Self {
            on_assign,
            transactional,
            until_end,
            from_latest,
            lookup,
            answers_tx,
            answers_rx,
            asking: BTreeMap::new(),
            seeking: BTreeMap::new(),
            floors: BTreeMap::new(),
            rebuilding: BTreeMap::new(),
            rebuilt_any: false,
            ends: BTreeMap::new(),
            reached: BTreeSet::new(),
            assignments_seen: false,
        }
    }

    /// True while `tp`'s start is not applied yet.
    pub fn is_starting(&self, tp: &TopicPartition) -> bool {
        self.asking.contains_key(tp) || self.seeking.contains_key(tp)
    }

    /// Forgets `tp` (revoked, or assigned anew).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.asking.remove(tp);
        self.seeking.remove(tp);
        self.floors.remove(tp);
        self.rebuilding.remove(tp);
        self.ends.remove(tp);
        self.reached.remove(tp);
    }

    /// True when `offset` precedes the offset `tp`'s current assignment was
    /// seeked to. The loop never hands such a record over, whatever the
    /// client fetched: an `on_assign` start is a guarantee (audit-sink's
    /// database fence counts on it), and librdkafka has had races where a late
    /// offset lookup overrode an accepted seek (confluentinc/librdkafka#2256,
    /// whose maintainer advises checking the offsets received). Such records
    /// are dropped with a warning; the fetch goes on forward to the start.
    pub fn below_start(&self, tp: &TopicPartition, offset: i64) -> bool {
        self.floors.get(tp).is_some_and(|floor| offset < *floor)
    }

    pub fn saw_assignment(&mut self) {
        self.assignments_seen = true;
    }

    /// When a refused seek is tried again.
    pub fn next_due(&self) -> Option<Instant> {
        self.seeking.values().map(|s| s.next_try).min()
    }

    /// True with `until_end` while some partition has not reached its end.
    pub fn awaits_end(&self) -> bool {
        self.until_end
    }

    /// True when `record` precedes its partition's committed offset in a rebuild.
    pub fn replays(&self, record: &super::Record) -> bool {
        self.rebuilding
            .get(&TopicPartition::of(record))
            .is_some_and(|r| record.offset < r.until)
    }

    /// A record of `tp` at `offset`, at or past the committed offset, is
    /// processed normally: its rebuild is over.
    pub fn passed_committed(&mut self, tp: &TopicPartition, offset: i64, membership: &Membership) {
        if self.rebuilding.get(tp).is_some_and(|r| offset >= r.until) {
            self.rebuilding.remove(tp);
            self.report_rebuilding(membership);
        }
    }

    /// The record of `tp` at `offset` was replayed.
    pub fn replayed(&mut self, tp: &TopicPartition, offset: i64, membership: &Membership) {
        if self.rebuilding.get(tp).is_some_and(|r| offset >= r.last) {
            self.rebuilding.remove(tp);
            self.report_rebuilding(membership);
        }
    }

    /// Updates `consumer <group> rebuilding` (once any partition rebuilt).
    pub fn report_rebuilding(&self, membership: &Membership) {
        if self.rebuilt_any {
            let waiting = self.rebuilding.len()
                + self.seeking.values().filter(|s| s.rebuild.is_some()).count();
            membership.conditions.rebuilding_is(waiting);
        }
    }
}

/// A resolved start: where to seek (none: the committed offset) and what to replay.
struct Resolved {
    target: Option<Offset>,
    rebuild: Option<Rebuild>,
}

impl<D: DeadLetterEncoder> Driver<D> {
    /// Asks for the start of each newly assigned partition (they are paused).
    pub(crate) fn ask_starts(&mut self, tps: Vec<TopicPartition>) {
        for tp in tps {
            let Some(generation) = self.membership.generation(&tp) else {
                continue;
            };
            let tx = self.starts.answers_tx.clone();
            let Some(f) = self.starts.on_assign.clone() else {
                let _ = tx.send(Answer {
                    tp,
                    generation,
                    start: StartAt::Committed,
                });
                continue;
            };
            self.starts.asking.insert(tp.clone(), generation);
            let answer = f(tp.topic.clone(), tp.partition);
            let membership = self.membership.clone();
            tokio::spawn(async move {
                let start = answer.await;
                let _ = tx.send(Answer {
                    tp,
                    generation,
                    start,
                });
                membership.nudge();
            });
        }
    }

    /// Applies the answers that arrived and the seeks that are due; calls the
    /// `assigned` hook and resumes the partitions whose start took effect.
    pub(crate) async fn apply_starts<M: Mode>(&mut self, mode: &M) {
        let mut started: Vec<(TopicPartition, Option<Rebuild>)> = Vec::new();
        while let Ok(answer) = self.starts.answers_rx.try_recv() {
            if self.membership.generation(&answer.tp) != Some(answer.generation) {
                continue;
            }
            self.starts.asking.remove(&answer.tp);
            match self.resolve(&answer).await {
                Ok(Resolved {
                    target: Some(target),
                    rebuild,
                }) => {
                    let seek = Seek {
                        generation: answer.generation,
                        target,
                        rebuild,
                        next_try: Instant::now(),
                        tries: 0,
                    };
                    self.starts.seeking.insert(answer.tp, seek);
                }
                Ok(Resolved { target: None, rebuild }) => started.push((answer.tp, rebuild)),
                Err(e) => self.ask_again_later(answer, e),
            }
        }
        started.extend(self.seek_due().await);
        if started.is_empty() {
            return;
        }
        for (tp, rebuild) in &started {
            if let Some(r) = rebuild {
                self.starts.rebuilt_any = true;
                self.starts.rebuilding.insert(tp.clone(), *r);
            }
        }
        self.starts.report_rebuilding(&self.membership);
        let tps: Vec<TopicPartition> = started.into_iter().map(|(tp, _)| tp).collect();
        mode.assigned(&pairs(&tps)).await;
        if let Err(e) = self.member.resume(tps).await {
            tracing::error!(error = %e, group = %self.membership.group, "resuming started partitions failed");
        }
    }

    fn ask_again_later(&mut self, answer: Answer, e: KafkaError) {
        tracing::warn!(error = %e, topic = %answer.tp.topic, partition = answer.tp.partition, "resolving the start position failed; trying again");
        self.starts.asking.insert(answer.tp.clone(), answer.generation);
        let (tx, membership) = (self.starts.answers_tx.clone(), self.membership.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = tx.send(answer);
            membership.nudge();
        });
    }

    /// Tries the due seeks; returns the partitions whose seek was accepted.
    async fn seek_due(&mut self) -> Vec<(TopicPartition, Option<Rebuild>)> {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .starts
            .seeking
            .iter()
            .filter(|(_, s)| s.next_try <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut started = Vec::new();
        for tp in due {
            let Some(seek) = self.starts.seeking.get_mut(&tp) else {
                continue;
            };
            if self.membership.generation(&tp) != Some(seek.generation) {
                self.starts.seeking.remove(&tp);
                continue;
            }
            let target = seek.target;
            match self.member.seek(&tp, target).await {
                Ok(()) => {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, ?target, "partition starts at its assigned position");
                    if let Offset::Offset(o) = target {
                        self.starts.floors.insert(tp.clone(), o);
                    }
                    if let Some(s) = self.starts.seeking.remove(&tp) {
                        started.push((tp, s.rebuild));
                    }
                }
                Err(e) => {
                    seek.tries += 1;
                    seek.next_try = Instant::now() + Duration::from_millis(50);
                    if seek.tries.is_multiple_of(100) {
                        tracing::warn!(error = %e, topic = %tp.topic, partition = tp.partition, tries = seek.tries, "seek to the start position still refused");
                    }
                }
            }
        }
        started
    }

    /// Turns an answer into a seek target (and a rebuild), capturing the
    /// partition's end for `until_end`.
    async fn resolve(&mut self, answer: &Answer) -> Result<Resolved, KafkaError> {
        let tp = &answer.tp;
        let m = self.member.clone();
        let resolved = match answer.start {
            StartAt::Committed => Resolved { target: None, rebuild: None },
            StartAt::Beginning => Resolved { target: Some(Offset::Beginning), rebuild: None },
            StartAt::Offset(o) => Resolved { target: Some(Offset::Offset(o)), rebuild: None },
            StartAt::Timestamp(ms) => Resolved {
                target: Some(m.offset_at(tp, ms).await.map_err(KafkaError::Client)?),
                rebuild: None,
            },
            StartAt::Rebuild { span } if self.starts.transactional => self.resolve_rebuild(tp, span).await?,
            StartAt::Rebuild { .. } => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, "StartAt::Rebuild needs the transactional mode; starting at the committed offset");
                Resolved { target: None, rebuild: None }
            }
        };
        if self.starts.until_end {
            self.capture_end(tp, resolved.target).await?;
        }
        Ok(resolved)
    }

    async fn resolve_rebuild(&self, tp: &TopicPartition, span: Duration) -> Result<Resolved, KafkaError> {
        let m = &self.member;
        let Some(committed) = m.committed(tp).await.map_err(KafkaError::Client)? else {
            return Ok(Resolved { target: None, rebuild: None });
        };
        let (low, _) = m.watermarks(tp).await.map_err(KafkaError::Client)?;
        let (cfg, at) = (self.starts.lookup.clone(), tp.clone());
        let last = crate::blocking::off_worker(move || last_record_before(&cfg, &at, committed, low))
            .await
            .map_err(KafkaError::Client)?;
        let Some((last, timestamp)) = last else {
            return Ok(Resolved { target: None, rebuild: None });
        };
        let span_ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        let from = m
            .offset_at(tp, timestamp.saturating_sub(span_ms))
            .await
            .map_err(KafkaError::Client)?;
        tracing::info!(topic = %tp.topic, partition = tp.partition, ?from, committed, last, "rebuilding: replaying up to the committed offset");
        Ok(Resolved {
            target: Some(from),
            rebuild: Some(Rebuild { until: committed, last }),
        })
    }

    /// Records `tp`'s end (its last stable offset now) for `until_end`.
    async fn capture_end(&mut self, tp: &TopicPartition, target: Option<Offset>) -> Result<(), KafkaError> {
        let (low, end) = self.member.watermarks(tp).await.map_err(KafkaError::Client)?;
        let start = match target {
            Some(Offset::Offset(o)) => o,
            Some(Offset::End) => end,
            Some(_) => low,
            None => match self.member.committed(tp).await.map_err(KafkaError::Client)? {
                Some(c) => c,
                None if self.starts.from_latest => end,
                None => low,
            },
        };
        self.starts.ends.insert(tp.clone(), end);
        if start >= end {
            self.starts.reached.insert(tp.clone());
        }
        Ok(())
    }

    /// With `until_end`: true once every assigned partition was processed up
    /// to the end it had when it was assigned.
    pub(crate) async fn reached_end(&mut self) -> bool {
        let s = &self.starts;
        if !s.until_end || !s.assignments_seen || !s.asking.is_empty() || !s.seeking.is_empty() {
            return false;
        }
        let mut unsure = Vec::new();
        for (tp, owned) in self.membership.all_positions() {
            if self.starts.reached.contains(&tp) {
                continue;
            }
            let Some(&end) = self.starts.ends.get(&tp) else {
                return false;
            };
            if owned.processed.is_some_and(|p| p >= end) {
                self.starts.reached.insert(tp);
            } else if owned.processed >= owned.polled && !self.retries.is_paused(&tp) {
                // Transaction markers are never handed out: ask the consumer's position.
                unsure.push((tp, end));
            } else {
                return false;
            }
        }
        if !unsure.is_empty() {
            let positions = self
                .member
                .positions(unsure.iter().map(|(tp, _)| tp.clone()).collect())
                .await;
            for (tp, end) in unsure {
                if positions.iter().any(|(p, o)| *p == tp && *o >= end) {
                    self.starts.reached.insert(tp);
                } else {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition { topic: "t".into(), partition }
    }

    #[test]
    fn records_before_a_seeked_start_are_below_it_until_the_partition_is_forgotten() {
        let mut starts = Starts::new(None, false, false, false, ClientConfig::new());
        starts.floors.insert(tp(0), 20);
        assert!(starts.below_start(&tp(0), 0));
        assert!(starts.below_start(&tp(0), 19));
        assert!(!starts.below_start(&tp(0), 20));
        assert!(!starts.below_start(&tp(1), 0), "a partition without a seeked start has no floor");
        starts.forget(&tp(0));
        assert!(!starts.below_start(&tp(0), 0), "a new assignment starts without the old floor");
    }
}

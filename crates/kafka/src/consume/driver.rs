//! One run of the loop. Between batches: handle assignment changes, apply
//! start positions, resume partitions whose retry backoff is over, tick,
//! commit. Then gather a batch on the poll thread, admit what belongs to the
//! current assignment, and hand it to the mode; on shutdown, finish the batch
//! in flight (up to the drain deadline), commit, and leave the group.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commits::Commits;
use super::dead_letter::DeadLetterEncoder;
use super::gather::{Plan, Polled};
use super::member::Member;
use super::membership::{Lifecycle, Membership, TopicPartition};
use super::modes::Mode;
use super::retries::{Admission, Retries};
use super::starts::Starts;
use super::transform::Ticks;
use super::{ConsumeError, ConsumerSettings, HandlerError, Record};
use crate::{metrics, producer, Producer};

/// The longest a gather waits for a first record when no timer is due sooner.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The running loop's state.
pub(crate) struct Driver<D> {
    pub member: Member,
    pub membership: Arc<Membership>,
    pub settings: ConsumerSettings,
    /// Dead letters and, in the transactional mode, the outputs.
    pub producer: Producer,
    pub dead_letters: Arc<D>,
    pub service: String,
    pub shutdown: CancellationToken,
    pub retries: Retries,
    pub starts: Starts,
    pub commits: Commits,
    pub ticks: Option<Ticks>,
}

/// `(topic, partition)` pairs, as the handler hooks take them.
pub(crate) fn pairs<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<(String, i32)> {
    tps.into_iter().map(TopicPartition::pair).collect()
}

/// Each partition of `records` with the offset of its first record there.
pub(crate) fn first_offsets(records: &[Record]) -> BTreeMap<TopicPartition, i64> {
    let mut firsts = BTreeMap::new();
    for r in records {
        firsts.entry(TopicPartition::of(r)).or_insert(r.offset);
    }
    firsts
}

impl<D: DeadLetterEncoder> Driver<D> {
    /// Runs until shutdown, a fatal error, or (with `until_end`) the end.
    pub async fn run<M: Mode>(&mut self, mode: &M) -> Result<(), ConsumeError> {
        let drain = Duration::from_millis(self.settings.shutdown_deadline_ms);
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            self.check_producers()?;
            self.between_batches(mode).await?;
            if self.reached_end().await {
                tracing::info!(group = %self.membership.group, "every assigned partition reached the end it had at assignment");
                return Ok(());
            }
            let gathered = self.member.gather(self.plan(mode)).await;
            if let Some(e) = gathered.fatal {
                return Err(crate::KafkaError::Client(e).into());
            }
            self.handle_lifecycle(mode).await;
            // A shutdown during the gather closes the open batch: it is
            // processed (per message: up to the record in hand), then the loop stops.
            let batch = self.admit(gathered.records);
            if batch.is_empty() {
                continue;
            }
            let shutdown = self.shutdown.clone();
            let deadline = async move {
                shutdown.cancelled().await;
                tokio::time::sleep(drain).await;
            };
            tokio::select! {
                r = mode.process(self, batch) => r?,
                () = deadline => {
                    tracing::warn!(deadline = ?drain, "shutdown deadline passed with work in flight; it will be redelivered");
                    return Ok(());
                }
            }
        }
    }

    async fn between_batches<M: Mode>(&mut self, mode: &M) -> Result<(), ConsumeError> {
        self.handle_lifecycle(mode).await;
        self.apply_starts(mode).await;
        self.resume_due_retries().await;
        if self.ticks.as_ref().is_some_and(|t| t.due()) {
            mode.tick(self).await?;
        }
        self.commit_if_due().await;
        Ok(())
    }

    /// Commits what was processed, tells the handler its partitions go away,
    /// and leaves the group.
    pub async fn finish<M: Mode>(mut self, mode: &M) {
        self.commits.settled().await;
        self.member.commit_processed().await;
        let owned = self.membership.owned();
        let Self {
            member, membership, ..
        } = self;
        member.close().await;
        // Revoked by the close (or by a rebalance the loop had no turn for).
        let _ = membership.take_events();
        if !owned.is_empty() {
            mode.revoked(&pairs(&owned)).await;
        }
    }

    fn plan<M: Mode>(&self, mode: &M) -> Plan {
        let now = Instant::now();
        let wake = [
            self.retries.next_due(),
            self.commits.next_due(&self.membership),
            self.starts.next_due(),
            self.ticks.as_ref().map(Ticks::next),
        ]
        .into_iter()
        .flatten()
        .min();
        let idle = if self.starts.awaits_end() { IDLE_POLL / 5 } else { IDLE_POLL };
        Plan {
            max_records: self.settings.max_batch_records.max(1),
            first_within: wake.map_or(idle, |w| w.saturating_duration_since(now).min(idle)),
            fill_within: if mode.fills_batches() {
                Duration::from_millis(self.settings.max_batch_wait_ms)
            } else {
                Duration::ZERO
            },
        }
    }

    /// Applies the assignment changes the rebalance callbacks recorded, in order.
    async fn handle_lifecycle<M: Mode>(&mut self, mode: &M) {
        for event in self.membership.take_events() {
            match event {
                Lifecycle::Revoked(tps) => {
                    for tp in &tps {
                        self.retries.forget(tp);
                        self.starts.forget(tp);
                    }
                    self.starts.report_rebuilding(&self.membership);
                    if !tps.is_empty() {
                        mode.revoked(&pairs(&tps)).await;
                    }
                }
                Lifecycle::Assigned(tps) => {
                    for tp in &tps {
                        self.retries.forget(tp);
                        self.starts.forget(tp);
                    }
                    self.starts.saw_assignment();
                    if self.membership.pause_assigned {
                        self.ask_starts(tps);
                    } else if !tps.is_empty() {
                        mode.assigned(&pairs(&tps)).await;
                    }
                }
            }
        }
    }

    /// Keeps the records that may be processed now: of the partition's current
    /// assignment, at or after its start, its start applied, not waiting for a retry.
    fn admit(&mut self, polled: Vec<Polled>) -> Vec<Record> {
        let mut admitted = Vec::with_capacity(polled.len());
        let mut below_start = 0usize;
        for Polled { record, fetched_in } in polled {
            let tp = TopicPartition::of(&record);
            if !self.membership.is_current(&tp, fetched_in) {
                tracing::debug!(topic = %tp.topic, partition = tp.partition, offset = record.offset, "dropped: fetched under an earlier assignment");
                continue;
            }
            if self.starts.below_start(&tp, record.offset) {
                below_start += 1;
                continue;
            }
            if self.starts.is_starting(&tp)
                || self.retries.admit(&tp, record.offset) == Admission::Drop
            {
                continue;
            }
            self.membership.mark_polled(&tp, record.offset);
            admitted.push(record);
        }
        if below_start > 0 {
            tracing::warn!(records = below_start, group = %self.membership.group, "dropped records fetched below their partition's start (the client did not fetch from the seeked offset)");
        }
        admitted
    }

    /// Fails when the loop's producer, or any producer of the service, hit a
    /// fatal error: the service must stop (and be restarted), never go on
    /// dead-lettering what it cannot produce.
    pub(crate) fn check_producers(&self) -> Result<(), ConsumeError> {
        if let Some(reason) = self.producer.fatal_error() {
            return Err(if self.membership.transactional {
                ConsumeError::Transaction(reason)
            } else {
                ConsumeError::Producer(reason)
            });
        }
        match producer::fatal_error_in(&self.service) {
            Some(reason) => Err(ConsumeError::Producer(reason)),
            None => Ok(()),
        }
    }

    /// Runs one handler call in `span`, marked busy for the watchdog and timed
    /// in `kafka_processing_duration_seconds`.
    pub(crate) async fn timed<T>(
        &self,
        topic: &str,
        span: tracing::Span,
        work: impl Future<Output = T>,
    ) -> T {
        self.membership.set_busy(true);
        let started = Instant::now();
        let out = work.instrument(span).await;
        self.membership.set_busy(false);
        metrics::PROCESSING_DURATION
            .with_label_values(&[topic])
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// `r` is processed (or dead-lettered): its offset may be committed.
    pub(crate) fn done(&mut self, r: &Record) {
        let tp = TopicPartition::of(r);
        self.retries.succeeded(&tp, r.offset);
        self.membership.mark_processed(&tp, r.offset + 1);
        self.commits.processed(1);
    }

    /// Applies a handler's verdict on `r` (per-message mode, batch fallback).
    pub(crate) async fn settle(
        &mut self,
        r: &Record,
        result: Result<(), HandlerError>,
        span: tracing::Span,
    ) -> Result<(), ConsumeError> {
        match result {
            Ok(()) => {
                metrics::MESSAGES_PROCESSED
                    .with_label_values(&[r.topic.as_str()])
                    .inc();
                self.done(r);
                Ok(())
            }
            Err(e) if e.is_fatal() => Err(ConsumeError::Handler(e)),
            Err(e) if e.is_retryable() => {
                self.retry(&TopicPartition::of(r), r.offset, &e).await;
                Ok(())
            }
            Err(e) => self.dead_letter(r, &e, span).await,
        }
    }
}

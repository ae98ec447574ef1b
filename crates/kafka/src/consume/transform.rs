//! The consume-transform-produce mode: a batch's outputs, its dead letters
//! and its input offsets are committed in one Kafka transaction. When the
//! transaction aborts, every partition of the batch is processed again from
//! its first record in the batch — the failing one after the retry backoff,
//! the others at once — and the transform is told to roll its state back.
//! Records of a rebuild are replayed first, outside the transaction; a
//! periodic tick produces in a transaction of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::Offset;
use tracing::Instrument;

use super::dead_letter::DeadLetterEncoder;
use super::driver::{first_offsets, pairs, Driver};
use super::membership::{list, TopicPartition};
use super::modes::Mode;
use super::transaction::{TransactionError, Transactions};
use super::{ConsumeError, HandlerError, Record, Transform};
use crate::producer::{Delivery, ProduceError};
use crate::metrics;

/// The periodic tick's schedule.
#[derive(Debug)]
pub(crate) struct Ticks {
    every: Duration,
    next: Instant,
}

impl Ticks {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: Instant::now() + every,
        }
    }
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }
    pub fn next(&self) -> Instant {
        self.next
    }
}

/// The transactional mode.
pub(crate) struct Transactional<T> {
    pub transform: T,
    pub transactions: Transactions,
}

/// An output on its way, and the input record it came from.
struct Pending {
    delivery: Delivery,
    from: (TopicPartition, i64),
    dead_letter_of: Option<String>,
}

/// A transaction's inputs and outputs so far.
#[derive(Default)]
struct Filled {
    covered: BTreeSet<TopicPartition>,
    positions: BTreeMap<TopicPartition, i64>,
    pending: Vec<Pending>,
    transformed: Vec<String>,
}

/// Why a transaction does not commit.
enum Failure {
    /// Abort; the batch is processed again (`at`: where it failed).
    Retry {
        at: (TopicPartition, i64),
        error: HandlerError,
    },
    /// Stop the loop.
    Fatal(ConsumeError),
}

fn produce_failure(e: ProduceError, at: (TopicPartition, i64)) -> Failure {
    match e {
        ProduceError::Fatal(reason) => Failure::Fatal(ConsumeError::Transaction(reason)),
        e => Failure::Retry {
            at,
            error: HandlerError::unavailable("Produce", e.to_string()),
        },
    }
}

fn transaction_failure(e: TransactionError, at: (TopicPartition, i64)) -> Failure {
    match e {
        TransactionError::Abort(m) => Failure::Retry {
            at,
            error: HandlerError::unavailable("Transaction", m),
        },
        TransactionError::Fatal(m) => Failure::Fatal(ConsumeError::Transaction(m)),
    }
}

impl<T: Transform> Mode for Transactional<T> {
    fn fills_batches(&self) -> bool {
        true
    }

    fn assigned(&self, partitions: &[(String, i32)]) -> impl std::future::Future<Output = ()> + Send {
        self.transform.assigned(partitions)
    }

    fn revoked(&self, partitions: &[(String, i32)]) -> impl std::future::Future<Output = ()> + Send {
        self.transform.revoked(partitions)
    }

    async fn process<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        batch: Vec<Record>,
    ) -> Result<(), ConsumeError> {
        d.check_producers()?;
        let (replays, records): (Vec<Record>, Vec<Record>) =
            batch.into_iter().partition(|r| d.starts.replays(r));
        for r in &records {
            d.starts.passed_committed(&TopicPartition::of(r), r.offset, &d.membership);
        }
        if !replays.is_empty() {
            self.replay(d, &replays).await?;
        }
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| !d.retries.is_paused(&TopicPartition::of(r)))
            .collect();
        let Some(first) = records.first().map(|r| (TopicPartition::of(r), r.offset)) else {
            return Ok(());
        };
        self.transactions
            .begin()
            .await
            .map_err(|e| ConsumeError::Transaction(e.to_string()))?;
        let outcome = match self.fill(d, &records).await {
            Ok(filled) => self.commit(d, filled, first).await,
            Err(failure) => Err(failure),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Fatal(e)) => {
                let _ = self.transactions.abort().await;
                Err(e)
            }
            Err(Failure::Retry { at, error }) => self.abort(d, &records, at, &error).await,
        }
    }

    async fn tick<D: DeadLetterEncoder>(&self, d: &mut Driver<D>) -> Result<(), ConsumeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let span = tracing::info_span!("kafka.tick", now_ms);
        let result = d.timed("(tick)", span.clone(), self.transform.tick(now_ms)).await;
        let outcome = match result {
            Ok(outputs) if outputs.is_empty() => Ok(()),
            Ok(outputs) => self.produce_alone(d, outputs).instrument(span).await,
            Err(e) if e.is_fatal() => return Err(ConsumeError::Handler(e)),
            Err(e) => Err(e),
        };
        let every = d.ticks.as_ref().map_or(Duration::ZERO, |t| t.every);
        let next = match outcome {
            Ok(()) => {
                self.transform.committed().await;
                every
            }
            Err(e) => {
                self.transform.aborted(&[]).await;
                if e.is_fatal() {
                    return Err(ConsumeError::Handler(e));
                }
                tracing::warn!(error = %e, "tick failed; its state was rolled back");
                if e.is_retryable() {
                    d.settings.retry.delay(0).min(every)
                } else {
                    every
                }
            }
        };
        if let Some(t) = d.ticks.as_mut() {
            t.next = Instant::now() + next;
        }
        Ok(())
    }
}

impl<T: Transform> Transactional<T> {
    /// Replays rebuild records (state only) and marks the state final.
    async fn replay<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        replays: &[Record],
    ) -> Result<(), ConsumeError> {
        for r in replays {
            let tp = TopicPartition::of(r);
            if d.retries.is_paused(&tp) {
                continue;
            }
            let span = r.span("kafka.replay");
            match d.timed(&r.topic, span, self.transform.replay(r)).await {
                Ok(()) => d.retries.succeeded(&tp, r.offset),
                Err(e) if e.is_fatal() => return Err(ConsumeError::Handler(e)),
                Err(e) if e.is_retryable() => {
                    d.retry(&tp, r.offset, &e).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, offset = r.offset, error = %e, "replay skipped a record")
                }
            }
            d.starts.replayed(&tp, r.offset, &d.membership);
        }
        self.transform.committed().await;
        Ok(())
    }

    /// Transforms `records` and enqueues their outputs (or dead letters) in
    /// the open transaction; stops at the first failure.
    async fn fill<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        records: &[Record],
    ) -> Result<Filled, Failure> {
        let mut f = Filled::default();
        for r in records {
            let tp = TopicPartition::of(r);
            let at = (tp.clone(), r.offset);
            f.covered.insert(tp.clone());
            let span = r.span("kafka.process");
            let outputs = match d.timed(&r.topic, span.clone(), self.transform.transform(r)).await {
                Ok(outputs) => outputs,
                Err(e) if e.is_fatal() => return Err(Failure::Fatal(ConsumeError::Handler(e))),
                Err(e) if e.is_retryable() => return Err(Failure::Retry { at, error: e }),
                Err(e) => {
                    metrics::CONSUMER_ERRORS
                        .with_label_values(&[r.topic.as_str(), e.error_type()])
                        .inc();
                    let delivery = d
                        .enqueue_dead_letter(r, &e)
                        .instrument(span)
                        .await
                        .map_err(|pe| produce_failure(pe, at.clone()))?;
                    f.pending.push(Pending { delivery, from: at, dead_letter_of: Some(r.topic.clone()) });
                    f.positions.insert(tp, r.offset + 1);
                    continue;
                }
            };
            for out in outputs {
                let delivery = d
                    .producer
                    .enqueue_raw(out)
                    .instrument(span.clone())
                    .await
                    .map_err(|pe| produce_failure(pe, at.clone()))?;
                f.pending.push(Pending { delivery, from: at.clone(), dead_letter_of: None });
            }
            f.positions.insert(tp, r.offset + 1);
            f.transformed.push(r.topic.clone());
        }
        self.close_batch(d, records, &mut f).await?;
        Ok(f)
    }

    /// Enqueues the transform's closing records of the batch (attributed to
    /// its last record).
    async fn close_batch<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        records: &[Record],
        f: &mut Filled,
    ) -> Result<(), Failure> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let at = (TopicPartition::of(last), last.offset);
        let outputs = match self.transform.batch_end().await {
            Ok(outputs) => outputs,
            Err(e) if e.is_retryable() => return Err(Failure::Retry { at, error: e }),
            Err(e) => return Err(Failure::Fatal(ConsumeError::Handler(e))),
        };
        for out in outputs {
            let delivery = d
                .producer
                .enqueue_raw(out)
                .await
                .map_err(|pe| produce_failure(pe, at.clone()))?;
            f.pending.push(Pending { delivery, from: at.clone(), dead_letter_of: None });
        }
        Ok(())
    }

    /// Awaits the outputs, adds the input offsets and commits.
    async fn commit<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        f: Filled,
        first: (TopicPartition, i64),
    ) -> Result<(), Failure> {
        for p in f.pending {
            p.delivery.await.map_err(|e| produce_failure(e, p.from))?;
            if let Some(topic) = p.dead_letter_of {
                metrics::DLQ_WRITES.with_label_values(&[topic.as_str()]).inc();
            }
        }
        if let Err(e) = self.transform.before_commit().await {
            return Err(if e.is_fatal() {
                Failure::Fatal(ConsumeError::Handler(e))
            } else {
                Failure::Retry { at: first, error: e }
            });
        }
        let offsets = list(f.positions.iter().map(|(tp, o)| (tp, Offset::Offset(*o))));
        let group = d.member.group_metadata().ok_or_else(|| {
            Failure::Fatal(ConsumeError::Transaction("the consumer has no group metadata".into()))
        })?;
        self.transactions
            .commit(Some((offsets.clone(), group)))
            .await
            .map_err(|e| transaction_failure(e, first))?;
        for topic in &f.transformed {
            metrics::MESSAGES_PROCESSED.with_label_values(&[topic.as_str()]).inc();
        }
        for (tp, next) in &f.positions {
            d.retries.succeeded(tp, next - 1);
            d.membership.mark_processed(tp, *next);
        }
        d.membership.mark_committed(&offsets);
        tracing::debug!(records = f.transformed.len(), offsets = ?f.positions, "transaction committed");
        self.transform.committed().await;
        Ok(())
    }

    /// Aborts, tells the transform, and rewinds every partition of the batch
    /// to its first record in it: the failing partition after the backoff,
    /// the others now.
    async fn abort<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        records: &[Record],
        at: (TopicPartition, i64),
        error: &HandlerError,
    ) -> Result<(), ConsumeError> {
        self.transactions
            .abort()
            .await
            .map_err(|e| ConsumeError::Transaction(e.to_string()))?;
        let firsts = first_offsets(records);
        tracing::warn!(error = %error, topic = %at.0.topic, partition = at.0.partition, offset = at.1, partitions = firsts.len(), "transaction aborted; its records will be processed again");
        let covered: Vec<TopicPartition> = firsts.keys().cloned().collect();
        self.transform.aborted(&pairs(&covered)).await;
        for (tp, first) in firsts {
            if tp == at.0 {
                d.retry(&tp, first, error).await;
            } else if let Err(e) = d.member.seek(&tp, Offset::Offset(first)).await {
                tracing::warn!(error = %e, topic = %tp.topic, partition = tp.partition, "rewinding failed; retrying the partition after the backoff");
                d.retry(&tp, first, error).await;
            }
        }
        Ok(())
    }

    /// Produces `outputs` in a transaction of their own (no input offsets).
    async fn produce_alone<D: DeadLetterEncoder>(
        &self,
        d: &mut Driver<D>,
        outputs: Vec<crate::OutboundRecord>,
    ) -> Result<(), HandlerError> {
        let fail = |e: TransactionError| match e {
            TransactionError::Abort(m) => HandlerError::unavailable("Transaction", m),
            TransactionError::Fatal(message) => HandlerError::Fatal {
                error_type: "Transaction".into(),
                message,
            },
        };
        self.transactions.begin().await.map_err(fail)?;
        let mut pending = Vec::with_capacity(outputs.len());
        let mut failed = None;
        for out in outputs {
            match d.producer.enqueue_raw(out).await {
                Ok(p) => pending.push(p),
                Err(e) => {
                    failed = Some(HandlerError::from(e));
                    break;
                }
            }
        }
        if failed.is_none() {
            for p in pending {
                if let Err(e) = p.await {
                    failed = Some(HandlerError::from(e));
                    break;
                }
            }
        }
        let committed = match failed {
            Some(e) => Err(e),
            None => self.transactions.commit(None).await.map_err(fail),
        };
        if committed.is_err() {
            self.transactions.abort().await.map_err(fail)?;
        }
        committed
    }
}

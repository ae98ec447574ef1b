//! Partitions waiting out a retry: a retryable failure pauses the partition
//! at the failed record; after the [`RetryPolicy`] backoff the loop seeks back
//! to it and resumes. Nothing after the record is processed or committed
//! meanwhile, and the state goes with the partition when it is revoked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;

use super::dead_letter::DeadLetterEncoder;
use super::driver::Driver;
use super::membership::TopicPartition;
use super::HandlerError;
use crate::{metrics, RetryPolicy};

/// One partition's retry.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// The record to process again.
    offset: i64,
    /// Failures of that record so far.
    attempts: u32,
    /// `Some` while paused; `None` once sought back and resumed.
    resume_at: Option<Instant>,
}

/// What admission does with a record of a partition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Process it.
    Pass,
    /// Drop it: its partition waits for a retry, or it precedes the retried record.
    Drop,
}

/// The partitions waiting out a retry.
#[derive(Debug)]
pub(crate) struct Retries {
    policy: RetryPolicy,
    waiting: BTreeMap<TopicPartition, Retry>,
}

impl Retries {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            waiting: BTreeMap::new(),
        }
    }

    /// `tp` failed at `offset`: returns the backoff and the failures of that record.
    fn failed(&mut self, tp: &TopicPartition, offset: i64) -> (Duration, u32) {
        let retry = self.waiting.entry(tp.clone()).or_insert(Retry {
            offset,
            attempts: 0,
            resume_at: None,
        });
        if retry.offset != offset {
            retry.offset = offset;
            retry.attempts = 0;
        }
        let delay = self.policy.delay(retry.attempts);
        retry.attempts += 1;
        retry.resume_at = Some(Instant::now() + delay);
        (delay, retry.attempts)
    }

    /// True while `tp` is paused for a retry (its records in the current batch wait).
    pub fn is_paused(&self, tp: &TopicPartition) -> bool {
        self.waiting.get(tp).is_some_and(|r| r.resume_at.is_some())
    }

    /// Whether a polled record of `tp` at `offset` may be processed. After
    /// the seek back, the first record at or after the retried offset is
    /// (the retried one may be gone: retention, compaction).
    pub fn admit(&self, tp: &TopicPartition, offset: i64) -> Admission {
        match self.waiting.get(tp) {
            Some(r) if r.resume_at.is_some() || offset < r.offset => Admission::Drop,
            _ => Admission::Pass,
        }
    }

    /// The record at `offset` of `tp` succeeded (or was dead-lettered).
    pub fn succeeded(&mut self, tp: &TopicPartition, offset: i64) {
        if self.waiting.get(tp).is_some_and(|r| r.offset <= offset) {
            self.waiting.remove(tp);
        }
    }

    /// Failures of the record at `offset` of `tp` so far (0 unless it failed retryably).
    pub fn attempts(&self, tp: &TopicPartition, offset: i64) -> u32 {
        self.waiting
            .get(tp)
            .filter(|r| r.offset == offset)
            .map_or(0, |r| r.attempts)
    }

    /// Forgets `tp` (revoked, or assigned anew).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.waiting.remove(tp);
    }

    /// Partitions whose backoff is over, with the offset to seek back to.
    fn due(&self, now: Instant) -> Vec<(TopicPartition, i64)> {
        self.waiting
            .iter()
            .filter(|(_, r)| r.resume_at.is_some_and(|t| t <= now))
            .map(|(tp, r)| (tp.clone(), r.offset))
            .collect()
    }

    fn resumed(&mut self, tp: &TopicPartition) {
        if let Some(r) = self.waiting.get_mut(tp) {
            r.resume_at = None;
        }
    }

    fn postpone(&mut self, tp: &TopicPartition, by: Duration) {
        if let Some(r) = self.waiting.get_mut(tp) {
            r.resume_at = Some(Instant::now() + by);
        }
    }

    /// When the next backoff ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.values().filter_map(|r| r.resume_at).min()
    }
}

impl<D: DeadLetterEncoder> Driver<D> {
    /// Pauses `tp`, to be rewound to `offset` and retried after the backoff;
    /// past the policy's retries `/readyz` reports the partition stuck.
    pub(crate) async fn retry(&mut self, tp: &TopicPartition, offset: i64, error: &HandlerError) {
        metrics::CONSUMER_ERRORS
            .with_label_values(&[tp.topic.as_str(), error.error_type()])
            .inc();
        let (delay, attempts) = self.retries.failed(tp, offset);
        if let Err(e) = self.member.pause(vec![tp.clone()]).await {
            tracing::warn!(error = %e, topic = %tp.topic, partition = tp.partition, "pause failed");
        }
        tracing::warn!(topic = %tp.topic, partition = tp.partition, offset, attempts, ?delay, error = %error, "retryable failure; partition paused");
        if attempts > self.settings.retry.max_retries {
            let reason = format!(
                "{}/{} stuck at offset {offset} after {attempts} attempts: {error}",
                tp.topic, tp.partition
            );
            self.membership.set_stuck(tp, reason);
        }
    }

    /// Seeks back and resumes the partitions whose backoff is over.
    pub(crate) async fn resume_due_retries(&mut self) {
        for (tp, offset) in self.retries.due(Instant::now()) {
            if self.membership.generation(&tp).is_none() {
                // Revoked meanwhile: the new owner starts from the committed offset.
                self.retries.forget(&tp);
                continue;
            }
            let resumed = match self.member.seek(&tp, Offset::Offset(offset)).await {
                Ok(()) => self.member.resume(vec![tp.clone()]).await,
                Err(e) => Err(e),
            };
            match resumed {
                Ok(()) => {
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, offset, "partition resumed for a retry");
                    self.retries.resumed(&tp);
                }
                Err(e) => {
                    tracing::warn!(error = %e, topic = %tp.topic, partition = tp.partition, "seek back for a retry failed; trying again");
                    self.retries.postpone(&tp, Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_at_or_after_the_retried_offset_passes_once_resumed() {
        let mut r = Retries::new(RetryPolicy {
            base_delay_ms: 0,
            max_delay_ms: 0,
            max_retries: 3,
        });
        let tp = TopicPartition::new("t", 0);
        r.failed(&tp, 3);
        assert_eq!(r.admit(&tp, 3), Admission::Drop, "paused");
        assert_eq!(r.due(Instant::now()), vec![(tp.clone(), 3)]);
        r.resumed(&tp);
        assert_eq!(r.admit(&tp, 2), Admission::Drop, "before the retried record");
        assert_eq!(r.admit(&tp, 5), Admission::Pass, "3 and 4 were deleted meanwhile");
        assert_eq!(r.attempts(&tp, 3), 1);
        r.succeeded(&tp, 5);
        assert_eq!(r.attempts(&tp, 3), 0);
        assert!(r.next_due().is_none());
    }
}

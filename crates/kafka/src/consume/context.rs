//! The consumer's librdkafka context: tracks the assignment and processed
//! positions shared with the loop, commits processed offsets when partitions
//! are revoked, refreshes `kafka_consumer_lag` from librdkafka's statistics,
//! and flips the loop's readiness conditions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use dora_telemetry::Readiness;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics;

/// A topic partition.
pub(crate) type Tp = (String, i32);

/// Positions of one assigned partition.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Positions {
    /// Offset after the last processed (or dead-lettered) record.
    pub processed: Option<i64>,
    /// Last committed offset (ours).
    pub committed: Option<i64>,
    /// Offset after the last record handed to the loop.
    pub polled: Option<i64>,
}

/// State shared by the loop and the context.
#[derive(Debug, Default)]
pub(crate) struct LoopState {
    pub assigned: HashSet<Tp>,
    pub positions: HashMap<Tp, Positions>,
    /// Partitions assigned since the loop last looked (for `on_assign`).
    pub newly_assigned: Vec<Tp>,
    /// When the current handler call started.
    pub busy_since: Option<Instant>,
    /// Why a partition is stuck retrying, if one is.
    pub stuck: HashMap<Tp, String>,
}

/// Shared between the loop and the librdkafka callbacks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub group: String,
    pub readiness: Readiness,
    pub read_committed: bool,
    /// Offsets go to the transaction, never to a consumer commit.
    pub transactional: bool,
    pub state: Mutex<LoopState>,
}

impl Shared {
    pub fn new(
        group: &str,
        readiness: Readiness,
        read_committed: bool,
        transactional: bool,
    ) -> Arc<Self> {
        let shared = Arc::new(Self {
            group: group.to_string(),
            readiness,
            read_committed,
            transactional,
            state: Mutex::new(LoopState::default()),
        });
        shared
            .readiness
            .set_not_ready(&shared.assigned_condition(), "not yet joined the group");
        shared.readiness.set_ready(&shared.progress_condition());
        shared.readiness.set_ready(&shared.connection_condition());
        shared
    }

    pub fn lock(&self) -> MutexGuard<'_, LoopState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn assigned_condition(&self) -> String {
        format!("consumer {} assigned", self.group)
    }

    pub fn progress_condition(&self) -> String {
        format!("consumer {} progress", self.group)
    }

    pub fn connection_condition(&self) -> String {
        format!("consumer {} connected", self.group)
    }

    /// The processed positions not yet committed (all of them when `all`).
    pub fn commit_list(&self, only: Option<&HashSet<Tp>>, all: bool) -> TopicPartitionList {
        let state = self.lock();
        let mut tpl = TopicPartitionList::new();
        for (tp, pos) in &state.positions {
            if only.is_some_and(|o| !o.contains(tp)) || !state.assigned.contains(tp) {
                continue;
            }
            if let Some(p) = pos.processed {
                if all || pos.committed.is_none_or(|c| c < p) {
                    // A partition listed twice is impossible: keys are unique.
                    let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(p));
                }
            }
        }
        tpl
    }

    /// Records `tpl`'s offsets as committed.
    pub fn mark_committed(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                let pos = state
                    .positions
                    .entry((e.topic().to_string(), e.partition()))
                    .or_default();
                pos.committed = Some(pos.committed.map_or(o, |c| c.max(o)));
            }
        }
    }

    /// Commits processed offsets synchronously; a failure is a warning (the
    /// records are redelivered, which at-least-once allows).
    pub fn commit_sync<C: Consumer<X>, X: ConsumerContext>(
        &self,
        consumer: &C,
        only: Option<&HashSet<Tp>>,
    ) {
        if self.transactional {
            return;
        }
        let tpl = self.commit_list(only, true);
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                metrics::COMMITS
                    .with_label_values(&[self.group.as_str(), "ok"])
                    .inc();
                self.mark_committed(&tpl);
            }
            Err(e) => {
                metrics::COMMITS
                    .with_label_values(&[self.group.as_str(), "error"])
                    .inc();
                tracing::warn!(error = %e, group = %self.group, "offset commit failed");
            }
        }
    }
}

/// The loop's librdkafka context.
#[derive(Clone)]
pub(crate) struct LoopContext {
    pub shared: Arc<Shared>,
}

impl ClientContext for LoopContext {
    fn stats(&self, statistics: Statistics) {
        let state = self.shared.lock();
        if statistics.brokers.values().any(|b| b.state == "UP") {
            self.shared
                .readiness
                .set_ready(&self.shared.connection_condition());
        }
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                let tp = (topic.clone(), *partition);
                if *partition < 0 || !state.assigned.contains(&tp) {
                    continue;
                }
                let end = if self.shared.read_committed {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let pos = state.positions.get(&tp).copied().unwrap_or_default();
                // Nothing buffered: the consumer's own position also skips
                // transaction markers; otherwise the next unprocessed record.
                let position = match (pos.processed, pos.polled) {
                    (Some(done), Some(polled)) if done >= polled => done.max(p.app_offset),
                    (Some(done), _) => done,
                    (None, _) if p.committed_offset >= 0 => p.committed_offset.max(p.app_offset),
                    (None, _) => p.app_offset,
                };
                if end < 0 || position < 0 {
                    continue;
                }
                metrics::CONSUMER_LAG
                    .with_label_values(&[topic.as_str(), &partition.to_string()])
                    .set((end - position).max(0));
            }
        }
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.shared
                .readiness
                .set_not_ready(&self.shared.connection_condition(), reason.to_string());
        }
        tracing::warn!(error = %error, reason, group = %self.shared.group, "kafka consumer client error");
    }
}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let group = self.shared.group.as_str();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                metrics::REBALANCES
                    .with_label_values(&[group, "revoke"])
                    .inc();
                let revoked: HashSet<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                // Handlers run only between polls and this callback runs inside
                // one, so every processed offset is final: commit them now.
                self.shared.commit_sync(consumer, Some(&revoked));
                let mut state = self.shared.lock();
                for tp in &revoked {
                    state.assigned.remove(tp);
                    state.positions.remove(tp);
                    state.stuck.remove(tp);
                    let _ = metrics::CONSUMER_LAG
                        .remove_label_values(&[tp.0.as_str(), &tp.1.to_string()]);
                }
                drop(state);
                tracing::info!(group, partitions = revoked.len(), "partitions revoked");
                self.shared
                    .readiness
                    .set_not_ready(&self.shared.assigned_condition(), "rebalancing");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                metrics::REBALANCES
                    .with_label_values(&[group, "error"])
                    .inc();
                tracing::warn!(group, error = %e, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let group = self.shared.group.as_str();
            metrics::REBALANCES
                .with_label_values(&[group, "assign"])
                .inc();
            let mut state = self.shared.lock();
            for e in tpl.elements() {
                let tp = (e.topic().to_string(), e.partition());
                state.assigned.insert(tp.clone());
                state.positions.entry(tp.clone()).or_default();
                state.newly_assigned.push(tp);
            }
            let n = state.assigned.len();
            drop(state);
            tracing::info!(group, partitions = n, "partitions assigned");
            self.shared
                .readiness
                .set_ready(&self.shared.assigned_condition());
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let group = self.shared.group.as_str();
        match result {
            Ok(()) => {
                metrics::COMMITS.with_label_values(&[group, "ok"]).inc();
                self.shared.mark_committed(offsets);
            }
            Err(RdKafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::COMMITS.with_label_values(&[group, "error"]).inc();
                tracing::warn!(group, error = %e, "offset commit failed; a later commit carries the positions");
            }
        }
    }
}

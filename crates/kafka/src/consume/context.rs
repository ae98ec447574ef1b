//! The consumer's librdkafka context. Its callbacks run inside a poll, on the
//! loop's poll thread (never an async worker): on revoke it commits the
//! processed offsets synchronously and forgets the partitions, on assign it
//! records them (paused, when their start is still to be applied); it
//! refreshes `kafka_consumer_lag` from librdkafka's statistics and reports
//! the connection on `/readyz`.

use std::collections::BTreeSet;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::membership::{list, Membership, TopicPartition};
use crate::metrics;

/// The loop consumer's librdkafka context.
#[derive(Clone)]
pub(crate) struct GroupContext {
    pub membership: Arc<Membership>,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl GroupContext {
    /// Commits the processed positions of `only` (or all) synchronously and
    /// records the outcome. A failure is a warning: the positions stay
    /// uncommitted, so the next interval commits them again (after a revoke
    /// the records are redelivered, which at-least-once allows). Offsets of
    /// the transactional mode are committed by its transactions only.
    pub fn commit_processed<C: Consumer<X>, X: ConsumerContext>(
        &self,
        consumer: &C,
        only: Option<&BTreeSet<TopicPartition>>,
    ) {
        let m = &self.membership;
        if m.transactional {
            return;
        }
        let tpl = m.uncommitted(only);
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                metrics::COMMITS.with_label_values(&[m.group.as_str(), "ok"]).inc();
                m.mark_committed(&tpl);
            }
            Err(e) => {
                metrics::COMMITS.with_label_values(&[m.group.as_str(), "error"]).inc();
                tracing::warn!(error = %e, group = %m.group, "offset commit failed; the positions stay uncommitted");
            }
        }
    }

    fn revoked(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let m = &self.membership;
        metrics::REBALANCES.with_label_values(&[m.group.as_str(), "revoke"]).inc();
        let revoked = partitions_of(tpl);
        // Handlers run only between polls and this callback runs inside one,
        // so every processed offset is final: commit them now.
        self.commit_processed(consumer, Some(&revoked.iter().cloned().collect()));
        for tp in &revoked {
            let _ = metrics::CONSUMER_LAG
                .remove_label_values(&[tp.topic.as_str(), &tp.partition.to_string()]);
        }
        tracing::info!(group = %m.group, partitions = revoked.len(), "partitions revoked");
        m.revoke(revoked);
        m.conditions.not_assigned("rebalancing");
    }

    fn assigned(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let m = &self.membership;
        metrics::REBALANCES.with_label_values(&[m.group.as_str(), "assign"]).inc();
        let assigned = partitions_of(tpl);
        if m.pause_assigned && !assigned.is_empty() {
            // Nothing of them is fetched until the loop applied their start
            // (pausing also drops whatever was fetched since the assign).
            let paused = list(assigned.iter().map(|tp| (tp, Offset::Invalid)));
            if let Err(e) = consumer.pause(&paused) {
                tracing::error!(error = %e, group = %m.group, "pausing newly assigned partitions failed");
            }
        }
        tracing::info!(group = %m.group, partitions = assigned.len(), "partitions assigned");
        m.assign(assigned);
        m.conditions.is_assigned();
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let m = &self.membership;
        if statistics.brokers.values().any(|b| b.state == "UP") {
            m.conditions.is_connected();
        }
        for (tp, _) in m.all_positions() {
            let Some(p) = statistics
                .topics
                .get(&tp.topic)
                .and_then(|t| t.partitions.get(&tp.partition))
            else {
                continue;
            };
            let end = if m.read_committed { p.ls_offset } else { p.hi_offset };
            m.observe(&tp, [end, p.lo_offset, p.committed_offset, p.app_offset]);
        }
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        let m = &self.membership;
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            m.conditions.not_connected(reason.to_string());
        }
        tracing::warn!(error = %error, reason, group = %m.group, "kafka consumer client error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoked(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                let group = self.membership.group.as_str();
                metrics::REBALANCES.with_label_values(&[group, "error"]).inc();
                tracing::warn!(group, error = %e, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assigned(consumer, tpl);
        }
    }
}

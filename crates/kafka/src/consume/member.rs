//! The loop's group member: a librdkafka `BaseConsumer` touched only on the
//! blocking pool ([`off_worker`]), so its polls, the rebalance callbacks they
//! run, and every seek, commit and offset lookup stay off the async workers.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, Offset};

use super::context::GroupContext;
use super::gather::{gather, Gathered, Plan};
use super::membership::{list, Membership, TopicPartition};
use crate::blocking::off_worker;
use crate::KafkaError;

/// How long one blocking call to the brokers may take.
pub(crate) const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Member::resume`]'s wake-up query may take.
const WAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// The loop's consumer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Member {
    consumer: Arc<BaseConsumer<GroupContext>>,
}

impl Member {
    /// Creates the consumer (it joins the group at [`subscribe`](Self::subscribe)).
    pub fn create(cfg: &ClientConfig, membership: Arc<Membership>) -> Result<Self, KafkaError> {
        let consumer = cfg
            .create_with_context(GroupContext { membership })
            .map_err(KafkaError::Client)?;
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// Subscribes to `topics` (names or `^regex`).
    pub async fn subscribe(&self, topics: Vec<String>) -> Result<(), KafkaError> {
        let c = self.consumer.clone();
        off_worker(move || {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            c.subscribe(&topics)
        })
        .await
        .map_err(KafkaError::Client)
    }

    /// Polls until `plan` is met; rebalance callbacks run here too.
    pub async fn gather(&self, plan: Plan) -> Gathered {
        let c = self.consumer.clone();
        off_worker(move || gather(&c, &plan)).await
    }

    /// Commits every processed position synchronously (interval, shutdown).
    pub async fn commit_processed(&self) {
        let c = self.consumer.clone();
        off_worker(move || c.context().commit_processed(c.as_ref(), None)).await;
    }

    /// Moves `tp`'s fetch position to `offset`; records fetched before are dropped.
    pub async fn seek(&self, tp: &TopicPartition, offset: Offset) -> KafkaResult<()> {
        let (c, tp) = (self.consumer.clone(), tp.clone());
        off_worker(move || c.seek(&tp.topic, tp.partition, offset, BROKER_TIMEOUT)).await
    }

    /// Stops fetching `partitions` (and drops what was fetched of them).
    pub async fn pause(&self, partitions: Vec<TopicPartition>) -> KafkaResult<()> {
        let c = self.consumer.clone();
        off_worker(move || c.pause(&list(partitions.iter().map(|tp| (tp, Offset::Invalid))))).await
    }

    /// Fetches `partitions` again, from now. librdkafka's resume only clears
    /// the pause flag (`rd_kafka_toppar_pause_resume`) without waking the
    /// broker thread, which then starts the fetch at its next periodic serve,
    /// a second later (seen with `debug=fetch`: resume at 08.467, "fetch
    /// decide" at 09.467). A partition started by `on_assign` or `until_end`,
    /// and every partition after a retry backoff, waited that second. One
    /// offset query for all of them (a ListOffsets per leader, sent by that
    /// leader's broker thread) wakes the threads; its answer and errors are
    /// ignored, it only hastens the fetch.
    pub async fn resume(&self, partitions: Vec<TopicPartition>) -> KafkaResult<()> {
        let c = self.consumer.clone();
        off_worker(move || {
            c.resume(&list(partitions.iter().map(|tp| (tp, Offset::Invalid))))?;
            let latest = list(partitions.iter().map(|tp| (tp, Offset::End)));
            let _ = c.offsets_for_times(latest, WAKE_TIMEOUT);
            Ok(())
        })
        .await
    }

    /// The first offset of `tp` at or after `timestamp_ms` (`End` when none).
    pub async fn offset_at(&self, tp: &TopicPartition, timestamp_ms: i64) -> KafkaResult<Offset> {
        let (c, tp) = (self.consumer.clone(), tp.clone());
        off_worker(move || {
            let found = c.offsets_for_times(tp.list(Offset::Offset(timestamp_ms)), BROKER_TIMEOUT)?;
            Ok(found
                .find_partition(&tp.topic, tp.partition)
                .map_or(Offset::End, |e| e.offset()))
        })
        .await
    }

    /// The group's committed offset of `tp`, if it has one.
    pub async fn committed(&self, tp: &TopicPartition) -> KafkaResult<Option<i64>> {
        let (c, tp) = (self.consumer.clone(), tp.clone());
        off_worker(move || {
            let found = c.committed_offsets(tp.list(Offset::Invalid), BROKER_TIMEOUT)?;
            Ok(found
                .find_partition(&tp.topic, tp.partition)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0))
        })
        .await
    }

    /// `tp`'s log start and end (the last stable offset under read_committed).
    pub async fn watermarks(&self, tp: &TopicPartition) -> KafkaResult<(i64, i64)> {
        let (c, tp) = (self.consumer.clone(), tp.clone());
        off_worker(move || c.fetch_watermarks(&tp.topic, tp.partition, BROKER_TIMEOUT)).await
    }

    /// The consumer's fetch position of each of `partitions` (after the last
    /// record handed out, transaction markers included).
    pub async fn positions(&self, partitions: Vec<TopicPartition>) -> Vec<(TopicPartition, i64)> {
        let c = self.consumer.clone();
        off_worker(move || {
            let Ok(all) = c.position() else {
                return Vec::new();
            };
            partitions
                .into_iter()
                .filter_map(|tp| {
                    let o = all.find_partition(&tp.topic, tp.partition)?.offset().to_raw()?;
                    (o >= 0).then_some((tp, o))
                })
                .collect()
        })
        .await
    }

    /// The consumer's group metadata, for offsets sent to a transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// Leaves the group: the revoke callback commits what was processed. The
    /// consumer is closed and dropped on the blocking pool.
    pub async fn close(self) {
        let c = self.consumer;
        off_worker(move || {
            c.unsubscribe();
            match Arc::try_unwrap(c) {
                Ok(consumer) => drop(consumer),
                Err(_) => tracing::error!("the consumer is still in use at close; it closes when the last user drops it"),
            }
        })
        .await;
    }
}

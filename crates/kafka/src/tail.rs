//! Following a whole topic without a consumer group: a [`TopicTail`] reads
//! every partition from its first record on and keeps reading what is
//! written afterwards, for a service that keeps a topic's content in memory
//! (agent-gateway's view of the compacted `agent-health`).
//!
//! It is a plain assigned consumer (the one `dora_kafka::inspect` reads
//! with): its `group.id` (librdkafka requires one) is never joined and nothing
//! is committed under it, so no group is created on the brokers and no
//! rebalance touches it.
//! It reads `read_committed`. Every batch carries, besides its records, the
//! consumer's position on each partition after them; positions also move past
//! transaction markers and aborted records, which are never handed out. So a
//! caller that applied a batch knows exactly how far it has read, and can
//! wait until it passed an [`Ends`] lookup (the high watermarks, open
//! transactions included: everything written before the lookup, once those
//! transactions are settled). Polling runs on a blocking thread and hands
//! batches over through a bounded channel (bounded memory); dropping the
//! tail stops the thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::inspect::{partition_ids, reading_consumer, record_of};
use crate::consume::Record;
use crate::{KafkaError, KafkaSettings};

/// Records per batch at most.
const BATCH: usize = 500;
/// Batches buffered between the polling thread and the caller.
const BUFFERED_BATCHES: usize = 4;
/// How long one poll waits for a record.
const POLL: Duration = Duration::from_millis(100);
/// Timeout of the metadata and watermark requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One batch read from the topic.
#[derive(Debug, Clone, Default)]
pub struct Tailed {
    /// Records, in offset order per partition.
    pub records: Vec<Record>,
    /// `(partition, position)`: the offset the tail reads next on each
    /// partition whose position moved, once `records` are applied.
    pub positions: Vec<(i32, i64)>,
}

/// Where a partition stood at an [`Ends`] lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEnd {
    /// Partition.
    pub partition: i32,
    /// First offset still in the log.
    pub low: i64,
    /// High watermark: the offset after the last record written, committed
    /// or not yet.
    pub high: i64,
}

impl PartitionEnd {
    /// True when a reader at `position` (`None`: nothing fetched yet) has
    /// read everything this end covers.
    pub fn reached_by(&self, position: Option<i64>) -> bool {
        self.high <= self.low || position.is_some_and(|p| p >= self.high)
    }
}

/// Looks up the current ends of a tailed topic's partitions. Cheap to clone.
#[derive(Clone)]
pub struct Ends {
    topic: String,
    partitions: Arc<Vec<i32>>,
    consumer: Arc<BaseConsumer>,
}

impl Ends {
    /// Every partition's low and high watermark now (`read_uncommitted`, so
    /// records of transactions still open count: a reader passes such an end
    /// only once they were committed or aborted).
    pub async fn now(&self) -> Result<Vec<PartitionEnd>, KafkaError> {
        let this = self.clone();
        crate::blocking::off_worker(move || {
            this.partitions
                .iter()
                .map(|&partition| {
                    let (low, high) = this
                        .consumer
                        .fetch_watermarks(&this.topic, partition, REQUEST_TIMEOUT)
                        .map_err(KafkaError::Client)?;
                    Ok(PartitionEnd {
                        partition,
                        low,
                        high,
                    })
                })
                .collect()
        })
        .await
    }
}

/// Reads a whole topic and follows it (see the module documentation).
pub struct TopicTail {
    topic: String,
    partitions: Vec<i32>,
    ends: Ends,
    batches: mpsc::Receiver<Result<Tailed, KafkaError>>,
}

impl TopicTail {
    /// Looks up the topic's partitions and starts reading each from its
    /// first record. A topic that does not exist is [`KafkaError::Admin`].
    pub async fn open(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        let (settings, name) = (settings.clone(), topic.to_string());
        let (consumer, partitions, lookup) =
            crate::blocking::off_worker(move || open_blocking(&settings, &name)).await?;
        let (tx, rx) = mpsc::channel(BUFFERED_BATCHES);
        let (name, list) = (topic.to_string(), partitions.clone());
        // The reading thread lives as long as the tail: a blocking call like
        // any other, through the runtime's one helper, awaited by its own task.
        tokio::spawn(crate::blocking::off_worker(move || {
            follow(&consumer, &name, &list, &tx)
        }));
        Ok(Self {
            topic: topic.to_string(),
            ends: Ends {
                topic: topic.to_string(),
                partitions: Arc::new(partitions.clone()),
                consumer: Arc::new(lookup),
            },
            partitions,
            batches: rx,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partitions read.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// A lookup of the partitions' current ends.
    pub fn ends(&self) -> Ends {
        self.ends.clone()
    }

    /// The next batch: records, or only positions that moved (past markers
    /// or aborted records). An error is one the consumer cannot recover
    /// from; transient broker errors are retried inside. `None` only if the
    /// polling thread ended.
    pub async fn next(&mut self) -> Option<Result<Tailed, KafkaError>> {
        self.batches.recv().await
    }
}

fn open_blocking(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<(BaseConsumer, Vec<i32>, BaseConsumer), KafkaError> {
    let consumer = reading_consumer(settings, "read_committed")?;
    let mut partitions = partition_ids(&consumer, topic, REQUEST_TIMEOUT)?;
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(KafkaError::Admin(format!("topic {topic} not found")));
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(KafkaError::Client)?;
    }
    consumer.assign(&tpl).map_err(KafkaError::Client)?;
    let lookup = reading_consumer(settings, "read_uncommitted")?;
    Ok((consumer, partitions, lookup))
}

/// Polls until the receiver is gone, sending records and moved positions.
fn follow(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    tx: &mpsc::Sender<Result<Tailed, KafkaError>>,
) {
    let mut sent: HashMap<i32, i64> = HashMap::new();
    let mut warned_at: Option<Instant> = None;
    while !tx.is_closed() {
        let mut batch = Tailed::default();
        while batch.records.len() < BATCH {
            let wait = if batch.records.is_empty() { POLL } else { Duration::ZERO };
            match consumer.poll(wait) {
                Some(Ok(m)) => batch.records.push(record_of(&m)),
                Some(Err(e)) => {
                    // Broker and network errors are transient for a consumer
                    // with no group: librdkafka keeps fetching once they clear.
                    if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(error = %e, topic, "tailing the topic: consumer error; still reading");
                        warned_at = Some(Instant::now());
                    }
                    break;
                }
                None => break,
            }
        }
        batch.positions = match moved_positions(consumer, topic, partitions, &mut sent) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if batch.records.is_empty() && batch.positions.is_empty() {
            continue;
        }
        if tx.blocking_send(Ok(batch)).is_err() {
            return;
        }
    }
}

/// The positions that changed since the last call.
fn moved_positions(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    sent: &mut HashMap<i32, i64>,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let positions = consumer.position().map_err(KafkaError::Client)?;
    let mut moved = Vec::new();
    for &p in partitions {
        let Some(pos) = positions
            .find_partition(topic, p)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
        else {
            continue;
        };
        if sent.get(&p) != Some(&pos) {
            sent.insert(p, pos);
            moved.push((p, pos));
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_reached_at_its_high_watermark_and_an_empty_partition_at_once() {
        let end = PartitionEnd {
            partition: 0,
            low: 3,
            high: 10,
        };
        assert!(!end.reached_by(None));
        assert!(!end.reached_by(Some(9)));
        assert!(end.reached_by(Some(10)));
        assert!(end.reached_by(Some(12)));
        let empty = PartitionEnd {
            partition: 1,
            low: 7,
            high: 7,
        };
        assert!(empty.reached_by(None));
    }
}

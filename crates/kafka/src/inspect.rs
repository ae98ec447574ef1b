//! Read-only access to topics for operator commands and state rebuilds: the
//! topic names of the cluster, and the committed records of a topic (or of
//! some of its partitions) from given offsets up to the end they had when the
//! read began.
//!
//! A [`TopicReader`] is a plain assigned consumer: no consumer group, nothing
//! committed, no rebalance, so reading never disturbs a service that consumes
//! the same topic. It reads `read_committed`: records of aborted transactions
//! are never returned, and the end of a partition is its last stable offset
//! when the reader opened (the high watermark, or the first offset of the
//! oldest transaction still open), so an open transaction never makes a read
//! wait. Polling runs on a blocking thread and hands records over in batches
//! through a bounded channel, so a large topic is read in bounded memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::blocking::off_worker;
use crate::consume::{Record, RecordHeader};
use crate::{KafkaError, KafkaSettings};

/// Records per batch handed to the reader's caller.
const BATCH: usize = 500;
/// Batches buffered between the polling thread and the caller.
const BUFFERED_BATCHES: usize = 4;

/// The names of every topic of the cluster (internal ones excluded), sorted.
pub async fn topic_names(
    settings: &KafkaSettings,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let settings = settings.clone();
    off_worker(move || {
        let consumer: BaseConsumer = settings
            .client_config()?
            .create()
            .map_err(KafkaError::Client)?;
        let md = consumer
            .fetch_metadata(None, timeout)
            .map_err(KafkaError::Client)?;
        let mut names: Vec<String> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        Ok(names)
    })
    .await
}

/// One partition of a read: where it starts and the end it is read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// Partition.
    pub partition: i32,
    /// First offset still in the log when the read began.
    pub low: i64,
    /// Last stable offset when the read began (the high watermark unless a
    /// transaction was open): the read stops before it.
    pub end: i64,
}

/// What to read: a topic, optionally only some partitions and from given offsets.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Topic.
    pub topic: String,
    /// Partitions to read; `None` for all of them.
    pub partitions: Option<Vec<i32>>,
    /// Offset to start at per partition; the log start for partitions not listed.
    pub from: HashMap<i32, i64>,
    /// Longest a partition may make no progress towards its end (e.g. its
    /// leader is unavailable) before the read fails.
    pub stall_timeout: Duration,
    /// Read up to the high watermark at open instead of the last stable
    /// offset: transactions open at that moment are waited for (at most
    /// `stall_timeout` without progress) and their records returned if they
    /// commit. For state rebuilds that must see every transaction a previous
    /// owner committed, whose markers may still be on their way.
    pub through_open_transactions: bool,
}

impl ReadRequest {
    /// Every partition of `topic`, from the log start, with a 30 s stall timeout.
    pub fn whole(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
            partitions: None,
            from: HashMap::new(),
            stall_timeout: Duration::from_secs(30),
            through_open_transactions: false,
        }
    }

    /// Reads through transactions open at the start (see the field).
    pub fn through_open_transactions(mut self) -> Self {
        self.through_open_transactions = true;
        self
    }

    /// Only `partition`.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partitions = Some(vec![partition]);
        self
    }
}

/// Reads committed records of a topic up to the end its partitions had when
/// the reader was opened. Dropping it stops the polling thread.
pub struct TopicReader {
    ranges: Vec<PartitionRange>,
    batches: mpsc::Receiver<Result<Vec<Record>, KafkaError>>,
}

impl TopicReader {
    /// Looks up the partitions and their watermarks and starts reading.
    /// A topic that does not exist is [`KafkaError::Admin`] naming it.
    pub async fn open(settings: &KafkaSettings, request: ReadRequest) -> Result<Self, KafkaError> {
        let settings = settings.clone();
        let (tx, rx) = mpsc::channel(BUFFERED_BATCHES);
        let (ranges_tx, ranges_rx) = tokio::sync::oneshot::channel();
        // Detached: the reading goes on while the caller takes the batches.
        tokio::spawn(off_worker(move || {
            let opened = open_blocking(&settings, &request);
            let (consumer, ranges) = match opened {
                Ok(x) => x,
                Err(e) => {
                    let _ = ranges_tx.send(Err(e));
                    return;
                }
            };
            if ranges_tx.send(Ok(ranges.clone())).is_err() {
                return;
            }
            if let Err(e) = poll_blocking(&consumer, &request, &ranges, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        }));
        let ranges = ranges_rx
            .await
            .map_err(|_| KafkaError::Admin("reader task ended before it opened".into()))??;
        Ok(Self {
            ranges,
            batches: rx,
        })
    }

    /// The partitions being read, with the end each is read up to.
    pub fn ranges(&self) -> &[PartitionRange] {
        &self.ranges
    }

    /// The next batch of records (in offset order per partition), or `None`
    /// once every partition reached its end.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<Record>, KafkaError>> {
        self.batches.recv().await
    }
}

/// Where `request` starts reading `partition`, whose log starts at `low`.
fn start_of(request: &ReadRequest, partition: i32, low: i64) -> i64 {
    request.from.get(&partition).copied().unwrap_or(low).max(low)
}

/// A group-less consumer for reading (`isolation.level` as given): its
/// `group.id` is never joined and nothing is committed under it, so no group
/// exists on the brokers. Also used by [`crate::tail`].
pub(crate) fn reading_consumer(settings: &KafkaSettings, isolation: &str) -> Result<BaseConsumer, KafkaError> {
    let mut cfg = settings.client_config()?;
    // A group id is required by librdkafka even for assign(); nothing is committed.
    cfg.set("group.id", format!("dora-inspect-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", isolation)
        .set("auto.offset.reset", "earliest");
    cfg.create().map_err(KafkaError::Client)
}

/// The partition ids of `topic`; an error names a topic that does not exist.
pub(crate) fn partition_ids(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Vec<i32>, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(KafkaError::Client)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaError::Admin(format!("topic {topic} not found")))?;
    if let Some(e) = t.error() {
        let code = RDKafkaErrorCode::from(e);
        return Err(KafkaError::Admin(format!("topic {topic}: {code}")));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

fn open_blocking(
    settings: &KafkaSettings,
    request: &ReadRequest,
) -> Result<(BaseConsumer, Vec<PartitionRange>), KafkaError> {
    let timeout = Duration::from_secs(10);
    let consumer = reading_consumer(settings, "read_committed")?;
    let topic = request.topic.as_str();
    let ids = partition_ids(&consumer, topic, timeout)?;
    if let Some(missing) = request.partitions.iter().flatten().find(|p| !ids.contains(p)) {
        return Err(KafkaError::Admin(format!("topic {topic} has no partition {missing}")));
    }
    // read_committed watermarks end at the last stable offset; a
    // read_uncommitted client sees the high watermark.
    let high_watermarks = if request.through_open_transactions {
        Some(reading_consumer(settings, "read_uncommitted")?)
    } else {
        None
    };
    let mut ranges = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for partition in ids {
        if request.partitions.as_ref().is_some_and(|only| !only.contains(&partition)) {
            continue;
        }
        let (low, end) = high_watermarks
            .as_ref()
            .unwrap_or(&consumer)
            .fetch_watermarks(topic, partition, timeout)
            .map_err(KafkaError::Client)?;
        ranges.push(PartitionRange { partition, low, end });
        let start = start_of(request, partition, low);
        if start < end {
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(KafkaError::Client)?;
        }
    }
    ranges.sort_by_key(|r| r.partition);
    if tpl.count() > 0 {
        consumer.assign(&tpl).map_err(KafkaError::Client)?;
    }
    Ok((consumer, ranges))
}

/// The partitions still to read: next offset expected and end, by partition.
type Pending = HashMap<i32, (i64, i64)>;

fn poll_blocking(
    consumer: &BaseConsumer,
    request: &ReadRequest,
    ranges: &[PartitionRange],
    tx: &mpsc::Sender<Result<Vec<Record>, KafkaError>>,
) -> Result<(), KafkaError> {
    let mut pending: Pending = ranges
        .iter()
        .map(|r| (r.partition, (start_of(request, r.partition, r.low), r.end)))
        .filter(|(_, (start, end))| start < end)
        .collect();
    let mut batch = Vec::with_capacity(BATCH);
    let mut progress_at = Instant::now();
    while !pending.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                progress_at = Instant::now();
                let Some((next, end)) = pending.get_mut(&m.partition()) else {
                    continue;
                };
                if m.offset() >= *end {
                    pending.remove(&m.partition());
                    continue;
                }
                *next = m.offset() + 1;
                if *next >= *end {
                    pending.remove(&m.partition());
                }
                batch.push(record_of(&m));
                if batch.len() >= BATCH {
                    if tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                        return Ok(());
                    }
                    progress_at = Instant::now();
                }
            }
            Some(Err(e)) => return Err(KafkaError::Client(e)),
            None => drop_finished(consumer, request, &mut pending, progress_at)?,
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
    Ok(())
}

/// After a poll that returned nothing: drops the partitions whose position
/// reached their end (transaction markers and aborted records are never
/// delivered, so the position tells); an error when nothing moved for the
/// request's stall timeout.
fn drop_finished(
    consumer: &BaseConsumer,
    request: &ReadRequest,
    pending: &mut Pending,
    progress_at: Instant,
) -> Result<(), KafkaError> {
    let topic = request.topic.as_str();
    let position = consumer.position().map_err(KafkaError::Client)?;
    pending.retain(|p, (_, end)| {
        let pos = position
            .find_partition(topic, *p)
            .and_then(|e| e.offset().to_raw())
            .unwrap_or(-1);
        pos < *end
    });
    match pending.iter().next() {
        Some((p, (next, end))) if progress_at.elapsed() > request.stall_timeout => Err(KafkaError::Admin(format!(
            "reading {topic}/{p}: no progress from offset {next} towards {end} within {:?}",
            request.stall_timeout
        ))),
        _ => Ok(()),
    }
}

/// A consumed message as the platform's [`Record`].
pub(crate) fn record_of<M: Message>(m: &M) -> Record {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| RecordHeader {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: m.timestamp().to_millis(),
    }
}

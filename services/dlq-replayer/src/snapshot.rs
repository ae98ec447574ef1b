//! Reading dead-letter topics: which topics are dead-letter topics, and the
//! entries of one (or of one partition) up to its last stable offset, folded
//! into a [`Ledger`]. The commands read this way before they act; the
//! service rebuilds a newly assigned partition this way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dora_kafka::inspect::{topic_names, PartitionRange, ReadRequest, TopicReader};
use dora_kafka::{topics, KafkaSettings};
use dora_schema::Codec;

use crate::ledger::Ledger;
use crate::letter::{Entry, Letter};

/// The dead-letter topic an operator means by `name`: `agent-events` and
/// `agent-events-dlq` both mean `agent-events-dlq`.
pub fn dlq_topic_named(name: &str) -> String {
    if name.ends_with(topics::DLQ_SUFFIX) {
        name.to_string()
    } else {
        topics::dlq_topic(name)
    }
}

/// The existing topics matching the dead-letter `pattern`, sorted.
pub async fn dlq_topics(kafka: &KafkaSettings, pattern: &str) -> Result<Vec<String>> {
    let regex = regex::Regex::new(pattern).with_context(|| format!("dlq.pattern {pattern:?}"))?;
    let names = topic_names(kafka, Duration::from_secs(10)).await?;
    Ok(names.into_iter().filter(|n| regex.is_match(n)).collect())
}

/// Reads the entries of `request` in order and hands each to `on_entry`;
/// returns the partitions read with the end each was read to.
pub async fn read_entries(
    kafka: &KafkaSettings,
    codec: &Codec,
    request: ReadRequest,
    mut on_entry: impl FnMut(Entry),
) -> Result<Vec<PartitionRange>> {
    let topic = request.topic.clone();
    let mut reader = TopicReader::open(kafka, request).await?;
    while let Some(batch) = reader.next_batch().await {
        for record in batch? {
            let entry = Entry::read(codec, &record).await.with_context(|| {
                format!("reading {topic}/{}/{}", record.partition, record.offset)
            })?;
            on_entry(entry);
        }
    }
    Ok(reader.ranges().to_vec())
}

/// A dead-letter topic as the commands see it: every letter and marker up
/// to the end each partition had when the read began.
pub struct Snapshot {
    /// The topic.
    pub topic: String,
    /// Every letter read, resolved ones included, in offset order per
    /// partition (shared: a plan selects letters without copying them).
    pub letters: Vec<Arc<Letter>>,
    /// Waiting and resolved letters (as indexes into `letters`) and counts.
    pub ledger: Ledger<usize>,
    /// The partitions and the end each was read to.
    pub ranges: Vec<PartitionRange>,
}

impl Snapshot {
    /// Reads `topic` whole. A topic that does not exist is an error naming it.
    pub async fn read(kafka: &KafkaSettings, codec: &Codec, topic: &str) -> Result<Snapshot> {
        let mut ledger = Ledger::default();
        let mut letters = Vec::new();
        let read = read_entries(
            kafka,
            codec,
            ReadRequest::whole(topic),
            |entry| match entry {
                Entry::Letter(letter) => {
                    ledger.letter(&letter.position, letters.len());
                    letters.push(Arc::from(letter));
                }
                Entry::Resolutions(resolutions) => {
                    for r in &resolutions {
                        ledger.resolve(r);
                    }
                }
            },
        )
        .await;
        let ranges = match read {
            Ok(r) => r,
            Err(e) if format!("{e:#}").contains(&format!("topic {topic} not found")) => {
                bail!("there is no dead-letter topic {topic}")
            }
            Err(e) => return Err(e),
        };
        Ok(Snapshot {
            topic: topic.to_string(),
            letters,
            ledger,
            ranges,
        })
    }

    /// Reads on from where the last read ended, up to the current last
    /// stable offsets, folding what was written since (e.g. the markers of
    /// an order just carried out).
    pub async fn read_on(&mut self, kafka: &KafkaSettings, codec: &Codec) -> Result<()> {
        let mut request = ReadRequest::whole(&self.topic);
        request.from = self.ranges.iter().map(|r| (r.partition, r.end)).collect();
        let (ledger, letters) = (&mut self.ledger, &mut self.letters);
        let ranges = read_entries(kafka, codec, request, |entry| match entry {
            Entry::Letter(letter) => {
                ledger.letter(&letter.position, letters.len());
                letters.push(Arc::from(letter));
            }
            Entry::Resolutions(resolutions) => {
                for r in &resolutions {
                    ledger.resolve(r);
                }
            }
        })
        .await?;
        self.ranges = ranges;
        Ok(())
    }

    /// Whether the letter is still waiting.
    pub fn is_waiting(&self, letter: &Letter) -> bool {
        self.ledger.is_waiting(&letter.position)
    }

    /// The waiting letters, partition by partition in offset order.
    pub fn waiting(&self) -> impl Iterator<Item = &Arc<Letter>> {
        self.ledger
            .waiting(&self.topic)
            .map(|(_, i)| &self.letters[*i])
    }
}

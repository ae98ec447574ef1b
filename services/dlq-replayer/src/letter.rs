//! What a record of a `<topic>-dlq` topic is: a dead letter (Avro
//! `DeadLetter`, the seed's JSON, or bytes that are neither) or a resolution
//! marker that says earlier dead letters were replayed or parked.

use std::borrow::Cow;
use std::fmt;

use dora_kafka::consume::{Record, RecordHeader};
use dora_schema::{Codec, DeadLetter, SchemaError};

/// Header of a resolution marker: `replayed` or `parked`.
pub const RESOLUTION_HEADER: &str = "dora-dlq-resolution";
/// Header of a resolution marker: the letters it resolves, all on the
/// marker's own dead-letter partition, written `topic/partition/offset,offset,...`
/// ([`marker_letters`]). Markers written before 2026-11-27 name one letter
/// (`topic/partition/offset`), which is the same format with one offset.
pub const RESOLVES_HEADER: &str = "dora-dlq-letter";
/// Most letters one marker names: a transaction's letters of one partition
/// are split over several markers past it, so its header stays below
/// 21 KiB (at most 20 digits and a comma per offset, plus the topic).
pub const MARKER_LETTERS: usize = 1000;
/// Header of a resolution marker: who resolved it.
pub const RESOLVED_BY_HEADER: &str = "dora-dlq-by";
/// Header of a replayed record: how many times it was replayed (1, 2, ...).
pub const REPLAY_COUNT_HEADER: &str = "dora-replay-count";
/// Header of a replayed record: the dead letter it was replayed from.
pub const REPLAY_OF_HEADER: &str = "dora-replay-of";
/// Header of a replayed record: who replayed it.
pub const REPLAYED_BY_HEADER: &str = "dora-replayed-by";

/// Where a record sits: topic, partition, offset. Written `topic/partition/offset`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl Position {
    /// The position of `record`.
    pub fn of(record: &Record) -> Self {
        Self {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        }
    }

    /// Parses `topic/partition/offset` (Kafka topic names contain no `/`).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.rsplitn(3, '/');
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        let topic = parts.next().filter(|t| !t.is_empty())?.to_string();
        Some(Self {
            topic,
            partition,
            offset,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// How a dead letter was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Written back to its original topic.
    Replayed,
    /// Moved to `<topic>-dlq-parked`.
    Parked,
}

impl Action {
    /// `replayed` or `parked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replayed => "replayed",
            Action::Parked => "parked",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "replayed" => Some(Action::Replayed),
            "parked" => Some(Action::Parked),
            _ => None,
        }
    }
}

/// What a marker on a dead-letter topic says about one letter it names: the
/// letter at `letter` was resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The resolved letter.
    pub letter: Position,
    /// Replayed or parked.
    pub action: Action,
    /// Who did it (an operator's name or `dlq-replayer`).
    pub by: String,
    /// When, epoch ms (the marker's timestamp).
    pub at: Option<i64>,
}

impl Resolution {
    /// The resolutions a resolution marker record says, one per letter it
    /// names (old single-letter markers and multi-letter ones alike); `None`
    /// when `record` is not a well-formed marker.
    pub fn of_marker(record: &Record) -> Option<Vec<Resolution>> {
        let action = Action::parse(record.header_str(RESOLUTION_HEADER)?)?;
        let letters = parse_marker_letters(record.header_str(RESOLVES_HEADER)?)?;
        let by = record.header_str(RESOLVED_BY_HEADER).unwrap_or("unknown");
        Some(
            letters
                .into_iter()
                .map(|letter| Resolution {
                    letter,
                    action,
                    by: by.to_string(),
                    at: record.timestamp,
                })
                .collect(),
        )
    }
}

/// The [`RESOLVES_HEADER`] of a marker naming `offsets` of `topic`'s
/// `partition`: `topic/partition/offset,offset,...`.
pub fn marker_letters(topic: &str, partition: i32, offsets: &[i64]) -> String {
    let offsets: Vec<String> = offsets.iter().map(i64::to_string).collect();
    format!("{topic}/{partition}/{}", offsets.join(","))
}

/// Parses [`marker_letters`] (one offset or more, so old single-letter
/// markers too); `None` when malformed.
pub fn parse_marker_letters(text: &str) -> Option<Vec<Position>> {
    let (head, offsets) = text.rsplit_once('/')?;
    let (topic, partition) = head.rsplit_once('/')?;
    let partition: i32 = partition.parse().ok()?;
    if topic.is_empty() {
        return None;
    }
    offsets
        .split(',')
        .map(|o| {
            Some(Position {
                topic: topic.to_string(),
                partition,
                offset: o.parse().ok()?,
            })
        })
        .collect()
}

/// How a dead letter's value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Avro `DeadLetter` (the platform's consume loop).
    Avro,
    /// The seed's JSON (`DeadLetterQueueHandler.send_to_dlq`): no original
    /// position, key or headers.
    SeedJson,
    /// Neither: kept as bytes.
    Unreadable,
}

/// A dead letter as read from its topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Letter {
    /// Where it sits on the dead-letter topic.
    pub position: Position,
    /// The dead-letter record's key (the original key for the platform's letters).
    pub key: Option<Vec<u8>>,
    /// The dead-letter record's headers.
    pub headers: Vec<RecordHeader>,
    /// The dead-letter record's value, byte-exact (what parking moves).
    pub value: Vec<u8>,
    /// The dead-letter record's timestamp, epoch ms.
    pub record_time: Option<i64>,
    /// How the value was written.
    pub format: Format,
    /// The decoded dead letter; `Err` with the reason when it does not decode.
    pub dead_letter: Result<DeadLetter, String>,
}

/// One record of a dead-letter topic.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A dead letter.
    Letter(Box<Letter>),
    /// A resolution marker: the letters it resolves.
    Resolutions(Vec<Resolution>),
}

/// The `errorType` of letters whose value is not a dead letter.
pub const UNREADABLE: &str = "<unreadable>";

impl Entry {
    /// Reads a record of a dead-letter topic. Only a registry outage is an
    /// error (retry later); a value that is not a dead letter is a
    /// [`Format::Unreadable`] letter.
    pub async fn read(codec: &Codec, record: &Record) -> Result<Entry, SchemaError> {
        if let Some(resolutions) = Resolution::of_marker(record) {
            return Ok(Entry::Resolutions(resolutions));
        }
        let value = record.payload().to_vec();
        let (format, dead_letter) = match codec.decode::<DeadLetter>(&record.topic, &value).await {
            Ok(d) => {
                let format = match dora_schema::framing(&value) {
                    Ok(dora_schema::Framing::LegacyJson) => Format::SeedJson,
                    _ => Format::Avro,
                };
                (format, Ok(d))
            }
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => (Format::Unreadable, Err(e.to_string())),
        };
        Ok(Entry::Letter(Box::new(Letter {
            position: Position::of(record),
            key: record.key.clone(),
            headers: record.headers.clone(),
            value,
            record_time: record.timestamp,
            format,
            dead_letter,
        })))
    }
}

impl Letter {
    /// The failure's type, or [`UNREADABLE`].
    pub fn error_type(&self) -> &str {
        self.dead_letter
            .as_ref()
            .map_or(UNREADABLE, |d| d.error_type.as_str())
    }

    /// Why it failed (the reason it does not decode, for an unreadable one).
    pub fn error_message(&self) -> &str {
        match &self.dead_letter {
            Ok(d) => &d.error_message,
            Err(reason) => reason,
        }
    }

    /// The service that gave up on it (`unknown` when not said).
    pub fn failed_by(&self) -> &str {
        self.dead_letter
            .as_ref()
            .map_or("unknown", |d| d.failed_by.as_str())
    }

    /// When it was dead-lettered, epoch ms (the record's time when unreadable).
    pub fn dead_lettered_at(&self) -> i64 {
        match &self.dead_letter {
            Ok(d) => d.timestamp,
            Err(_) => self.record_time.unwrap_or(0),
        }
    }

    /// The topic it came from, when known.
    pub fn original_topic(&self) -> Option<&str> {
        self.dead_letter
            .as_ref()
            .ok()
            .map(|d| d.original_topic.as_str())
    }

    /// The original key as text (lossy), when it had one.
    pub fn original_key_text(&self) -> Option<Cow<'_, str>> {
        let key = match &self.dead_letter {
            Ok(d) => d.original_key.as_deref(),
            Err(_) => self.key.as_deref(),
        }?;
        Some(String::from_utf8_lossy(key))
    }

    /// How often the original record was replayed already: its
    /// `dora-replay-count` header (0 without one).
    pub fn replays(&self) -> u32 {
        self.dead_letter
            .as_ref()
            .ok()
            .and_then(|d| {
                d.original_headers
                    .iter()
                    .rev()
                    .find(|h| h.key == REPLAY_COUNT_HEADER)
            })
            .and_then(|h| h.value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Letters for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use dora_schema::DeadLetterHeader;

    /// A dead letter of `agent-events`, partition 2, offset 41, key `agent-1`.
    pub fn dead_letter() -> DeadLetter {
        DeadLetter {
            original_topic: "agent-events".into(),
            original_partition: 2,
            original_offset: 41,
            original_key: Some(b"agent-1".to_vec()),
            original_message: vec![0, 0, 0, 0, 7, 1, 2],
            original_headers: vec![
                DeadLetterHeader {
                    key: "traceparent".into(),
                    value: Some(b"00-abc-def-01".to_vec()),
                },
                DeadLetterHeader {
                    key: "empty".into(),
                    value: None,
                },
            ],
            original_timestamp: Some(1_000),
            error_message: "registry down".into(),
            error_type: "RegistryUnavailable".into(),
            retry_count: 3,
            processing_attempts: 4,
            timestamp: 2_000,
            failed_by: "report-ingest/report-ingest".into(),
        }
    }

    /// The letter at `agent-events-dlq/0/<offset>` holding `d`.
    pub fn letter(offset: i64, d: DeadLetter) -> Letter {
        Letter {
            position: Position {
                topic: "agent-events-dlq".into(),
                partition: 0,
                offset,
            },
            key: d.original_key.clone(),
            headers: vec![RecordHeader {
                key: "producer".into(),
                value: Some(b"report-ingest".to_vec()),
            }],
            value: vec![0, 0, 0, 0, 9, 42],
            record_time: Some(d.timestamp),
            format: Format::Avro,
            dead_letter: Ok(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_and_parse_back() {
        let p = Position {
            topic: "agent-events-dlq".into(),
            partition: 2,
            offset: 41,
        };
        assert_eq!(p.to_string(), "agent-events-dlq/2/41");
        assert_eq!(Position::parse(&p.to_string()), Some(p));
        assert_eq!(Position::parse("x/1"), None);
        assert_eq!(Position::parse("/1/2"), None);
        assert_eq!(Position::parse("t/a/2"), None);
    }

    #[test]
    fn replays_are_counted_from_the_original_headers() {
        let mut d = fixtures::dead_letter();
        assert_eq!(fixtures::letter(0, d.clone()).replays(), 0);
        d.original_headers.push(dora_schema::DeadLetterHeader {
            key: REPLAY_COUNT_HEADER.into(),
            value: Some(b"2".to_vec()),
        });
        assert_eq!(fixtures::letter(0, d).replays(), 2);
    }
}

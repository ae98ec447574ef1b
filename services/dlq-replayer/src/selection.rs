//! Which dead letters an operator's command acts on: filters by error type,
//! failing service, dead-letter time, key and original position, and the
//! rules that say whether a letter may be replayed at all.

use std::fmt;

use crate::letter::{Format, Letter};

/// Filters of `inspect`, `replay` and `park`; every filter set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The letter's `errorType`, exactly.
    pub error_type: Option<String>,
    /// The letter's `failedBy`, exactly.
    pub failed_by: Option<String>,
    /// Dead-lettered at or after this time, epoch ms.
    pub since: Option<i64>,
    /// Dead-lettered before this time, epoch ms.
    pub until: Option<i64>,
    /// The original key as UTF-8, exactly.
    pub key: Option<String>,
    /// The original partition.
    pub original_partition: Option<i32>,
    /// The original offset.
    pub original_offset: Option<i64>,
    /// Offsets on the dead-letter topic.
    pub dlq_offsets: Vec<i64>,
}

impl Filter {
    /// Whether `letter` matches every filter set.
    pub fn matches(&self, letter: &Letter) -> bool {
        let d = letter.dead_letter.as_ref().ok();
        let at = letter.dead_lettered_at();
        self.error_type
            .as_deref()
            .is_none_or(|t| t == letter.error_type())
            && self
                .failed_by
                .as_deref()
                .is_none_or(|f| f == letter.failed_by())
            && self.since.is_none_or(|s| at >= s)
            && self.until.is_none_or(|u| at < u)
            && self
                .key
                .as_deref()
                .is_none_or(|k| letter.original_key_text().as_deref() == Some(k))
            && self
                .original_partition
                .is_none_or(|p| d.is_some_and(|d| d.original_partition == p))
            && self
                .original_offset
                .is_none_or(|o| d.is_some_and(|d| d.original_offset == o))
            && (self.dlq_offsets.is_empty() || self.dlq_offsets.contains(&letter.position.offset))
    }

    /// True when no filter is set (everything matches).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// Why a dead letter may not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The value is not a dead letter.
    Unreadable(String),
    /// The seed's JSON dead letter keeps neither the original key nor headers.
    SeedJson,
    /// It says it came from another topic than the one its dead-letter topic belongs to.
    ForeignTopic {
        /// Its `originalTopic`.
        original: String,
        /// The topic its dead-letter topic belongs to.
        expected: String,
    },
    /// Its topic is not one a replay may write to.
    NotInCatalog(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unreadable(why) => write!(f, "not a dead letter ({why}); park it instead"),
            Refusal::SeedJson => f.write_str(
                "the seed's JSON dead letter keeps neither the original key nor its headers, so it cannot be replayed byte-exact; park it instead",
            ),
            Refusal::ForeignTopic { original, expected } => write!(
                f,
                "it says it came from {original}, but it sits on the dead-letter topic of {expected}; a replay only goes back where a letter came from"
            ),
            Refusal::NotInCatalog(topic) => write!(
                f,
                "{topic} is not a topic of the platform's catalog (dlq.replay_topics)"
            ),
        }
    }
}

/// The topic a dead-letter topic belongs to (`agent-events-dlq` -> `agent-events`).
pub fn source_topic(dlq_topic: &str) -> Option<&str> {
    dlq_topic.strip_suffix(dora_kafka::topics::DLQ_SUFFIX)
}

/// Whether `letter` may be replayed to its original topic; `replay_topics`
/// are the topics a replay may write to.
pub fn replayable(letter: &Letter, replay_topics: &[String]) -> Result<(), Refusal> {
    let d = match (&letter.format, &letter.dead_letter) {
        (_, Err(why)) => return Err(Refusal::Unreadable(why.clone())),
        (Format::SeedJson, _) => return Err(Refusal::SeedJson),
        (_, Ok(d)) => d,
    };
    let expected = source_topic(&letter.position.topic).unwrap_or(&letter.position.topic);
    if d.original_topic != expected {
        return Err(Refusal::ForeignTopic {
            original: d.original_topic.clone(),
            expected: expected.to_string(),
        });
    }
    if !replay_topics.contains(&d.original_topic) {
        return Err(Refusal::NotInCatalog(d.original_topic.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letter::fixtures::{dead_letter, letter};

    fn topics() -> Vec<String> {
        vec!["agent-events".to_string()]
    }

    #[test]
    fn every_filter_must_match() {
        let l = letter(7, dead_letter());
        assert!(Filter::default().matches(&l));
        let f = |f: Filter| f.matches(&l);
        assert!(f(Filter {
            error_type: Some("RegistryUnavailable".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            error_type: Some("Registry".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            failed_by: Some("report-ingest/report-ingest".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            since: Some(2_000),
            until: Some(2_001),
            ..Default::default()
        }));
        assert!(!f(Filter {
            since: Some(2_001),
            ..Default::default()
        }));
        assert!(
            !f(Filter {
                until: Some(2_000),
                ..Default::default()
            }),
            "until is exclusive"
        );
        assert!(f(Filter {
            key: Some("agent-1".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            key: Some("agent-2".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            original_partition: Some(2),
            original_offset: Some(41),
            ..Default::default()
        }));
        assert!(!f(Filter {
            original_partition: Some(2),
            original_offset: Some(40),
            ..Default::default()
        }));
        assert!(f(Filter {
            dlq_offsets: vec![3, 7],
            ..Default::default()
        }));
        assert!(!f(Filter {
            dlq_offsets: vec![3],
            ..Default::default()
        }));
        assert!(!f(Filter {
            error_type: Some("RegistryUnavailable".into()),
            key: Some("x".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn a_replay_goes_only_where_the_letter_came_from_and_only_to_the_catalog() {
        assert_eq!(replayable(&letter(0, dead_letter()), &topics()), Ok(()));
        let mut foreign = dead_letter();
        foreign.original_topic = "risk-assessments".into();
        assert!(matches!(
            replayable(&letter(0, foreign), &topics()),
            Err(Refusal::ForeignTopic { .. })
        ));
        assert_eq!(
            replayable(&letter(0, dead_letter()), &[]),
            Err(Refusal::NotInCatalog("agent-events".into()))
        );
        let mut seed = letter(0, dead_letter());
        seed.format = crate::letter::Format::SeedJson;
        assert_eq!(replayable(&seed, &topics()), Err(Refusal::SeedJson));
        let mut unreadable = letter(0, dead_letter());
        unreadable.dead_letter = Err("unknown magic byte".into());
        assert!(matches!(
            replayable(&unreadable, &topics()),
            Err(Refusal::Unreadable(_))
        ));
        assert!(Refusal::SeedJson.to_string().contains("park"));
    }
}

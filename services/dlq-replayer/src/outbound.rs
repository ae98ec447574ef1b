//! The records a replay or a parking writes, all in one Kafka transaction:
//! per letter the replayed record (byte-exact, on its original topic and
//! partition) or the parked letter (on `<topic>-dlq-parked`); per transaction
//! one resolution marker per dead-letter partition and action naming every
//! letter it resolved there, and the audit event on `user-activities`.

use std::borrow::Cow;

use dora_kafka::audit::{event_record, user_activity};
use dora_kafka::consume::RecordHeader;
use dora_kafka::OutboundRecord;
use dora_schema::{Codec, SchemaError};
use serde::Serialize;
use serde_json::json;

use crate::letter::{
    marker_letters, Action, Letter, MARKER_LETTERS, REPLAYED_BY_HEADER, REPLAY_COUNT_HEADER,
    REPLAY_OF_HEADER, RESOLUTION_HEADER, RESOLVED_BY_HEADER, RESOLVES_HEADER,
};

/// Header of a parked letter: where it was on the dead-letter topic.
pub const PARKED_FROM_HEADER: &str = "dora-parked-from";
/// Header of a parked letter: who parked it.
pub const PARKED_BY_HEADER: &str = "dora-parked-by";
/// Header of a parked letter: why.
pub const PARKED_REASON_HEADER: &str = "dora-parked-reason";

/// Headers a replay sets; an earlier replay's are dropped from the original's.
const REPLAY_HEADERS: [&str; 3] = [REPLAY_COUNT_HEADER, REPLAY_OF_HEADER, REPLAYED_BY_HEADER];

/// Who acts on a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// An operator's name, or the service's.
    pub name: String,
    /// True for the service's automatic retry.
    pub automatic: bool,
}

/// The original record of `letter`, byte-exact: its original topic and
/// partition, key, value and headers (an earlier replay's headers dropped),
/// followed by the replay headers (count, the position it came from, who).
/// `letter` must be [`replayable`](crate::selection::replayable).
pub fn replayed_record(letter: &Letter, actor: &Actor) -> Option<OutboundRecord> {
    let d = letter.dead_letter.as_ref().ok()?;
    let original: Vec<RecordHeader> = d
        .original_headers
        .iter()
        .filter(|h| !REPLAY_HEADERS.contains(&h.key.as_str()))
        .map(|h| RecordHeader {
            key: h.key.clone(),
            value: h.value.clone(),
        })
        .collect();
    let mut record = OutboundRecord::new(&d.original_topic, None, d.original_message.clone())
        .with_exact_headers(original)
        .with_header(REPLAY_COUNT_HEADER, (letter.replays() + 1).to_string())
        .with_header(REPLAY_OF_HEADER, letter.position.to_string())
        .with_header(REPLAYED_BY_HEADER, actor.name.as_bytes());
    record.key = d.original_key.clone();
    if d.original_partition >= 0 {
        record = record.to_partition(d.original_partition);
    }
    Some(record)
}

/// The parking-lot topic of a dead-letter topic (`agent-events-dlq` -> `agent-events-dlq-parked`).
pub fn parking_topic(dlq_topic: &str) -> String {
    format!("{dlq_topic}-parked")
}

/// `letter` moved to the parking lot: the dead-letter record byte-exact
/// (key, value, headers), plus where it came from, who parked it and why.
pub fn parked_record(letter: &Letter, actor: &Actor, reason: &str) -> OutboundRecord {
    let headers = letter.headers.clone();
    let mut record = OutboundRecord::new(
        parking_topic(&letter.position.topic),
        None,
        letter.value.clone(),
    )
    .with_exact_headers(headers)
    .with_header(PARKED_FROM_HEADER, letter.position.to_string())
    .with_header(PARKED_BY_HEADER, actor.name.as_bytes())
    .with_header(PARKED_REASON_HEADER, reason.as_bytes());
    record.key = letter.key.clone();
    record
}

/// One letter a transaction resolves, and how: what its resolution marker
/// and its audit event say about it.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// The letter.
    pub letter: &'a Letter,
    /// Replayed or parked.
    pub action: Action,
    /// Why.
    pub reason: &'a str,
}

/// The resolution markers of one transaction's letters (`resolved`, in the
/// order resolved): one per dead-letter topic, partition and action, on that
/// partition, naming its letters in order ([`marker_letters`]), split past
/// [`MARKER_LETTERS`]; all by `actor`. A letter is resolved exactly when the
/// transaction holding its marker commits, the same one as its replay.
pub fn resolution_markers(resolved: &[Resolved<'_>], actor: &Actor) -> Vec<OutboundRecord> {
    let mut groups: Vec<(&str, i32, Action, Vec<i64>)> = Vec::new();
    for r in resolved {
        let p = &r.letter.position;
        let open = groups
            .iter()
            .rposition(|(t, n, a, _)| *t == p.topic && *n == p.partition && *a == r.action);
        match open {
            Some(i) if groups[i].3.len() < MARKER_LETTERS => groups[i].3.push(p.offset),
            _ => groups.push((&p.topic, p.partition, r.action, vec![p.offset])),
        }
    }
    groups
        .into_iter()
        .map(|(topic, partition, action, offsets)| {
            OutboundRecord::new(topic, None, Vec::new())
                .to_partition(partition)
                .with_header(RESOLUTION_HEADER, action.as_str())
                .with_header(RESOLVES_HEADER, marker_letters(topic, partition, &offsets))
                .with_header(RESOLVED_BY_HEADER, actor.name.as_bytes())
        })
        .collect()
}

/// Most bytes of records one audit event names (its JSON `records`); a
/// larger set is split over several events, so an event stays far below the
/// broker's record size limit whatever the keys are.
const AUDIT_EVENT_BUDGET: usize = 256 * 1024;

/// What an audit event says about one letter it names (an element of its
/// `details.records`): the letter's position and original record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditedLetter<'a> {
    dlq_partition: i32,
    dlq_offset: i64,
    original_topic: Option<&'a str>,
    original_partition: Option<i32>,
    original_offset: Option<i64>,
    original_key: Option<Cow<'a, str>>,
    error_type: &'a str,
    failed_by: &'a str,
    replay_count: u32,
}

impl<'a> AuditedLetter<'a> {
    /// What the audit event says about `r`.
    pub fn of(r: &Resolved<'a>) -> Self {
        let (letter, d) = (r.letter, r.letter.dead_letter.as_ref().ok());
        AuditedLetter {
            dlq_partition: letter.position.partition,
            dlq_offset: letter.position.offset,
            original_topic: d.map(|d| d.original_topic.as_str()),
            original_partition: d.map(|d| d.original_partition),
            original_offset: d.map(|d| d.original_offset),
            original_key: letter.original_key_text(),
            error_type: letter.error_type(),
            failed_by: letter.failed_by(),
            replay_count: match r.action {
                Action::Replayed => letter.replays() + 1,
                Action::Parked => letter.replays(),
            },
        }
    }
}

/// The audit events of one transaction's replays and parkings, encoded for
/// `audit_topic`: one event per dead-letter topic, action and reason
/// (who: `actor`; what: `dlq.replay` or `dlq.park` on the dead-letter topic;
/// which records: `details.records`, each letter's position and original
/// record, [`AuditedLetter`]), split when the records exceed [`AUDIT_EVENT_BUDGET`].
pub async fn audit_events(
    codec: &Codec,
    audit_topic: &str,
    actor: &Actor,
    resolved: &[Resolved<'_>],
) -> Result<Vec<OutboundRecord>, SchemaError> {
    let mut out = Vec::new();
    for (topic, action, reason, records) in audit_groups(resolved) {
        let verb = match action {
            Action::Replayed => "dlq.replay",
            Action::Parked => "dlq.park",
        };
        let details = json!({
            "dlqTopic": topic,
            "reason": reason,
            "automatic": actor.automatic,
            "count": records.len(),
            "records": records,
        });
        let event = user_activity(&actor.name, verb, topic, details, chrono::Utc::now());
        out.push(event_record(codec, audit_topic, &event).await?);
    }
    Ok(out)
}

/// An audit event's group of letters: dead-letter topic, action, reason, records.
type AuditGroup<'a> = (&'a str, Action, &'a str, Vec<AuditedLetter<'a>>);

/// `resolved` grouped by dead-letter topic, action and reason (in order of
/// first appearance), each group cut into pieces of at most
/// [`AUDIT_EVENT_BUDGET`] bytes of records.
fn audit_groups<'a>(resolved: &[Resolved<'a>]) -> Vec<AuditGroup<'a>> {
    let mut groups: Vec<(AuditGroup<'a>, usize)> = Vec::new();
    for r in resolved {
        let record = AuditedLetter::of(r);
        let size = dora_schema::json_len(&record);
        let topic = r.letter.position.topic.as_str();
        let open = groups
            .iter()
            .rposition(|((t, a, why, _), _)| *t == topic && *a == r.action && *why == r.reason);
        match open {
            Some(i) if groups[i].1.saturating_add(size) <= AUDIT_EVENT_BUDGET => {
                groups[i].0 .3.push(record);
                groups[i].1 += size;
            }
            _ => groups.push(((topic, r.action, r.reason, vec![record]), size)),
        }
    }
    groups.into_iter().map(|(g, _)| g).collect()
}

/// How a loop treats a failure to encode a resolution's audit event: a
/// registry outage is retried; anything else (the event does not fit its
/// schema) stops the loop, as a dead letter of a dead letter helps no one.
pub fn encode_failure(e: SchemaError) -> dora_kafka::HandlerError {
    if e.is_retryable() {
        dora_kafka::HandlerError::unavailable("AuditEncode", e.to_string())
    } else {
        dora_kafka::HandlerError::Fatal {
            error_type: "AuditEncode".into(),
            message: e.to_string(),
        }
    }
}

/// The record that resolves `letter` (the replayed record or the parked
/// letter); its marker and audit event close the transaction
/// ([`closing_records`]). `None` for a replay of a letter that does not
/// decode (refused before).
pub fn resolving_record(
    letter: &Letter,
    action: Action,
    actor: &Actor,
    reason: &str,
) -> Option<OutboundRecord> {
    match action {
        Action::Replayed => replayed_record(letter, actor),
        Action::Parked => Some(parked_record(letter, actor, reason)),
    }
}

/// The records that close a transaction resolving `resolved`: its
/// resolution markers ([`resolution_markers`]) and audit events
/// ([`audit_events`]), to be written in that same transaction.
pub async fn closing_records(
    codec: &Codec,
    audit_topic: &str,
    actor: &Actor,
    resolved: &[Resolved<'_>],
) -> Result<Vec<OutboundRecord>, SchemaError> {
    let mut out = resolution_markers(resolved, actor);
    out.extend(audit_events(codec, audit_topic, actor, resolved).await?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letter::fixtures::{dead_letter, letter};
    use dora_schema::DeadLetterHeader;

    fn operator() -> Actor {
        Actor {
            name: "alice".into(),
            automatic: false,
        }
    }

    fn headers(r: &OutboundRecord) -> Vec<(String, Option<Vec<u8>>)> {
        r.exact_headers
            .iter()
            .flatten()
            .map(|h| (h.key.clone(), h.value.clone()))
            .chain(r.headers.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
            .collect()
    }

    #[test]
    fn a_replay_is_the_original_byte_exact_plus_the_replay_headers() {
        let d = dead_letter();
        let r = replayed_record(&letter(7, d.clone()), &operator()).unwrap();
        assert_eq!(r.topic, "agent-events");
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.key, d.original_key);
        assert_eq!(r.payload, d.original_message);
        assert_eq!(
            headers(&r),
            vec![
                ("traceparent".into(), Some(b"00-abc-def-01".to_vec())),
                ("empty".into(), None),
                (REPLAY_COUNT_HEADER.into(), Some(b"1".to_vec())),
                (
                    REPLAY_OF_HEADER.into(),
                    Some(b"agent-events-dlq/0/7".to_vec())
                ),
                (REPLAYED_BY_HEADER.into(), Some(b"alice".to_vec())),
            ]
        );
    }

    #[test]
    fn a_second_replay_counts_on_and_drops_the_first_replays_headers() {
        let mut d = dead_letter();
        d.original_headers.extend([
            DeadLetterHeader {
                key: REPLAY_COUNT_HEADER.into(),
                value: Some(b"1".to_vec()),
            },
            DeadLetterHeader {
                key: REPLAY_OF_HEADER.into(),
                value: Some(b"agent-events-dlq/0/3".to_vec()),
            },
            DeadLetterHeader {
                key: REPLAYED_BY_HEADER.into(),
                value: Some(b"bob".to_vec()),
            },
        ]);
        let r = replayed_record(&letter(9, d), &operator()).unwrap();
        let h = headers(&r);
        assert_eq!(
            h.iter().filter(|(k, _)| k == REPLAY_COUNT_HEADER).count(),
            1
        );
        assert!(h.contains(&(REPLAY_COUNT_HEADER.into(), Some(b"2".to_vec()))));
        assert!(h.contains(&(
            REPLAY_OF_HEADER.into(),
            Some(b"agent-events-dlq/0/9".to_vec())
        )));
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn a_parked_letter_is_the_dead_letter_record_byte_exact_with_where_from_and_why() {
        let l = letter(7, dead_letter());
        let r = parked_record(&l, &operator(), "poison");
        assert_eq!(r.topic, "agent-events-dlq-parked");
        assert_eq!(r.payload, l.value);
        assert_eq!(r.key, l.key);
        let h = headers(&r);
        assert_eq!(h[0], ("producer".into(), Some(b"report-ingest".to_vec())));
        assert!(h.contains(&(
            PARKED_FROM_HEADER.into(),
            Some(b"agent-events-dlq/0/7".to_vec())
        )));
        assert!(h.contains(&(PARKED_REASON_HEADER.into(), Some(b"poison".to_vec()))));
    }

    #[test]
    fn one_audit_event_per_topic_action_and_reason_cut_at_its_budget() {
        let l = letter(7, dead_letter());
        let replayed = Resolved {
            letter: &l,
            action: Action::Replayed,
            reason: "fixed",
        };
        let record = AuditedLetter::of(&replayed);
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"dlqPartition":0,"dlqOffset":7,"originalTopic":"agent-events","originalPartition":2,"originalOffset":41,"originalKey":"agent-1","errorType":"RegistryUnavailable","failedBy":"report-ingest/report-ingest","replayCount":1}"#
        );
        assert_eq!(dora_schema::json_len(&record), text.len());
        let parked = Resolved {
            action: Action::Parked,
            ..replayed
        };
        let per_event = AUDIT_EVENT_BUDGET / text.len();
        let mut resolved = vec![replayed; per_event + 1];
        resolved.insert(1, parked);
        let groups = audit_groups(&resolved);
        let shape: Vec<(Action, usize)> = groups.iter().map(|g| (g.1, g.3.len())).collect();
        assert_eq!(
            shape,
            [
                (Action::Replayed, per_event),
                (Action::Parked, 1),
                (Action::Replayed, 1)
            ]
        );
        assert!(groups
            .iter()
            .all(|g| g.0 == "agent-events-dlq" && g.2 == "fixed"));
        assert_eq!(
            serde_json::to_value(&groups[1].3[0]).unwrap()["replayCount"],
            0
        );
    }

    #[test]
    fn one_marker_per_partition_and_action_names_its_letters_cut_at_its_limit() {
        let at = |partition: i32, offset: i64, action: Action| {
            let mut l = letter(offset, dead_letter());
            l.position.partition = partition;
            (l, action)
        };
        let mut letters = vec![
            at(0, 7, Action::Parked),
            at(1, 3, Action::Parked),
            at(0, 9, Action::Parked),
            at(0, 8, Action::Replayed),
        ];
        letters.extend((0..MARKER_LETTERS as i64 + 1).map(|o| at(2, o, Action::Replayed)));
        let resolved: Vec<Resolved<'_>> = letters
            .iter()
            .map(|(letter, action)| Resolved {
                letter,
                action: *action,
                reason: "fixed",
            })
            .collect();
        let markers = resolution_markers(&resolved, &operator());
        let shape: Vec<(i32, String, usize)> = markers
            .iter()
            .map(|m| {
                let h = headers(m);
                assert!(m.payload.is_empty());
                assert!(h.contains(&(RESOLVED_BY_HEADER.into(), Some(b"alice".to_vec()))));
                let action = h.iter().find(|(k, _)| k == RESOLUTION_HEADER).unwrap();
                let letters = h.iter().find(|(k, _)| k == RESOLVES_HEADER).unwrap();
                let letters = String::from_utf8(letters.1.clone().unwrap()).unwrap();
                let positions = crate::letter::parse_marker_letters(&letters).unwrap();
                assert!(positions
                    .iter()
                    .all(|p| p.partition == m.partition.unwrap()));
                let action = String::from_utf8(action.1.clone().unwrap()).unwrap();
                (m.partition.unwrap(), action, positions.len())
            })
            .collect();
        assert_eq!(
            shape,
            [
                (0, "parked".into(), 2),
                (1, "parked".into(), 1),
                (0, "replayed".into(), 1),
                (2, "replayed".into(), MARKER_LETTERS),
                (2, "replayed".into(), 1),
            ]
        );
        assert!(markers.iter().all(|m| m.topic == "agent-events-dlq"));
        assert_eq!(
            headers(&markers[0])
                .into_iter()
                .find(|(k, _)| k == RESOLVES_HEADER),
            Some((
                RESOLVES_HEADER.into(),
                Some(b"agent-events-dlq/0/7,9".to_vec())
            ))
        );
        let biggest = markers
            .iter()
            .flat_map(headers)
            .map(|(_, v)| v.map_or(0, |v| v.len()));
        assert!(
            biggest.max().unwrap() < 64 * 1024,
            "a marker's headers stay bounded"
        );
    }
}

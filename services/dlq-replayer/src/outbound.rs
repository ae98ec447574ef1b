//! The records a replay or a parking writes, all in one Kafka transaction:
//! the replayed record (byte-exact, on its original topic and partition) or
//! the parked letter (on `<topic>-dlq-parked`), the resolution marker on the
//! dead-letter topic, and the audit event on `user-activities`.

use dora_kafka::audit::{event_record, user_activity};
use dora_kafka::consume::RecordHeader;
use dora_kafka::OutboundRecord;
use dora_schema::{Codec, SchemaError};
use serde_json::json;

use crate::letter::{
    Action, Letter, Position, REPLAYED_BY_HEADER, REPLAY_COUNT_HEADER, REPLAY_OF_HEADER,
    RESOLUTION_HEADER, RESOLVED_BY_HEADER, RESOLVES_HEADER,
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

/// The marker that resolves `letter`, on its dead-letter topic and partition.
pub fn resolution_marker(letter: &Position, action: Action, actor: &Actor) -> OutboundRecord {
    OutboundRecord::new(&letter.topic, None, Vec::new())
        .to_partition(letter.partition)
        .with_header(RESOLUTION_HEADER, action.as_str())
        .with_header(RESOLVES_HEADER, letter.to_string())
        .with_header(RESOLVED_BY_HEADER, actor.name.as_bytes())
}

/// The audit event of a replay or parking (who, what, which record), encoded
/// for `audit_topic`.
pub async fn audit_event(
    codec: &Codec,
    audit_topic: &str,
    letter: &Letter,
    action: Action,
    actor: &Actor,
    reason: &str,
) -> Result<OutboundRecord, SchemaError> {
    let d = letter.dead_letter.as_ref().ok();
    let details = json!({
        "dlqTopic": letter.position.topic,
        "dlqPartition": letter.position.partition,
        "dlqOffset": letter.position.offset,
        "originalTopic": d.map(|d| d.original_topic.as_str()),
        "originalPartition": d.map(|d| d.original_partition),
        "originalOffset": d.map(|d| d.original_offset),
        "originalKey": letter.original_key_text(),
        "errorType": letter.error_type(),
        "failedBy": letter.failed_by(),
        "replayCount": match action {
            Action::Replayed => letter.replays() + 1,
            Action::Parked => letter.replays(),
        },
        "automatic": actor.automatic,
        "reason": reason,
    });
    let verb = match action {
        Action::Replayed => "dlq.replay",
        Action::Parked => "dlq.park",
    };
    let event = user_activity(
        &actor.name,
        verb,
        &letter.position.to_string(),
        details,
        chrono::Utc::now(),
    );
    event_record(codec, audit_topic, &event).await
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

/// Everything that resolves `letter` in one transaction: the replayed record
/// (or the parked letter), the marker and the audit event. Nothing for a
/// replay of a letter that does not decode (refused before).
pub async fn resolution(
    codec: &Codec,
    audit_topic: &str,
    letter: &Letter,
    action: Action,
    actor: &Actor,
    reason: &str,
) -> Result<Vec<OutboundRecord>, SchemaError> {
    let output = match action {
        Action::Replayed => match replayed_record(letter, actor) {
            Some(record) => record,
            None => return Ok(Vec::new()),
        },
        Action::Parked => parked_record(letter, actor, reason),
    };
    Ok(vec![
        output,
        resolution_marker(&letter.position, action, actor),
        audit_event(codec, audit_topic, letter, action, actor, reason).await?,
    ])
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
    fn the_marker_sits_on_the_letters_partition_and_names_it() {
        let l = letter(7, dead_letter());
        let m = resolution_marker(&l.position, Action::Parked, &operator());
        assert_eq!(
            (m.topic.as_str(), m.partition),
            ("agent-events-dlq", Some(0))
        );
        assert!(m.payload.is_empty());
        let h = headers(&m);
        assert!(h.contains(&(RESOLUTION_HEADER.into(), Some(b"parked".to_vec()))));
        assert!(h.contains(&(
            RESOLVES_HEADER.into(),
            Some(b"agent-events-dlq/0/7".to_vec())
        )));
    }
}

//! The seed's audit producer as a small shared API: any service records a user
//! activity (`AuditEvent`, Avro) on `user-activities`, keyed by the UTC hour
//! bucket `YYYY-MM-DD-HH`.

use chrono::{DateTime, Utc};
use dora_schema::{AuditEvent, Codec, SchemaError};
use serde_json::Value;

use crate::producer::{Delivery, OutboundRecord, ProduceError, Producer};
use crate::topics::USER_ACTIVITIES;

/// The partition key of an audit event at `at`: the UTC hour bucket `YYYY-MM-DD-HH`.
pub fn hour_bucket(at: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Written out (chrono's strftime parses its pattern on every call: a
    // measurable share of an audited gRPC submission); years outside
    // 0..=9999 keep chrono's own rendering.
    match at.year() {
        y @ 0..=9999 => format!("{y:04}-{:02}-{:02}-{:02}", at.month(), at.day(), at.hour()),
        _ => at.format("%Y-%m-%d-%H").to_string(),
    }
}

/// The event the seed's `send_user_activity` builds: a fresh UUID, `at` as
/// timestamp, and the ip address, user agent and session id lifted from `details`.
pub fn user_activity(
    user_id: &str,
    action: &str,
    resource: &str,
    details: Value,
    at: DateTime<Utc>,
) -> AuditEvent {
    let field = |k: &str| details.get(k).and_then(Value::as_str).map(str::to_string);
    AuditEvent {
        // A v4 UUID from the thread's CSPRNG (rand's ThreadRng, seeded from
        // the OS): `Uuid::new_v4` makes a getrandom syscall per id, ~2 % of a
        // bulk gRPC submission's CPU in report-ingest.
        event_id: uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string(),
        timestamp: at.timestamp_millis(),
        user_id: user_id.to_string(),
        action: action.to_string(),
        resource: resource.to_string(),
        ip_address: field("ip_address"),
        user_agent: field("user_agent"),
        session_id: field("session_id"),
        details,
    }
}

/// The shared audit producer. Cheap to clone.
#[derive(Clone)]
pub struct AuditProducer {
    producer: Producer,
    codec: Codec,
    topic: String,
}

impl std::fmt::Debug for AuditProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl AuditProducer {
    /// An audit producer writing to `user-activities` through `producer`.
    pub fn new(producer: Producer, codec: Codec) -> Self {
        Self::with_topic(producer, codec, USER_ACTIVITIES)
    }

    /// The same, writing to another topic (tests use a unique one).
    pub fn with_topic(producer: Producer, codec: Codec, topic: &str) -> Self {
        Self {
            producer,
            codec,
            topic: topic.to_string(),
        }
    }

    /// Records a user activity now; returns once it is queued. Await the
    /// [`Delivery`] when the caller must know it is durable.
    pub async fn send_user_activity(
        &self,
        user_id: &str,
        action: &str,
        resource: &str,
        details: Value,
    ) -> Result<Delivery, ProduceError> {
        self.send(&user_activity(
            user_id,
            action,
            resource,
            details,
            Utc::now(),
        ))
        .await
    }

    /// The record of `event` (keyed by the hour bucket of its timestamp) for
    /// a consume-transform-produce step, whose transaction produces it.
    pub async fn record(&self, event: &AuditEvent) -> Result<OutboundRecord, SchemaError> {
        event_record(&self.codec, &self.topic, event).await
    }

    /// The topic audit events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records `event`, keyed by the hour bucket of its timestamp.
    pub async fn send(&self, event: &AuditEvent) -> Result<Delivery, ProduceError> {
        self.producer
            .enqueue(&self.codec, &self.topic, Some(&key_of(event)), event)
            .await
    }
}

/// The record of `event` on `topic` (keyed by the hour bucket of its
/// timestamp) for a consume-transform-produce step whose transaction
/// produces it, when there is no [`AuditProducer`] (e.g. dlq-replayer writes
/// each replay's audit event in the replay's transaction).
pub async fn event_record(
    codec: &Codec,
    topic: &str,
    event: &AuditEvent,
) -> Result<OutboundRecord, SchemaError> {
    OutboundRecord::avro(codec, topic, Some(&key_of(event)), event).await
}

/// The partition key of `event`: the hour bucket of its timestamp.
fn key_of(event: &AuditEvent) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(event.timestamp).unwrap_or_else(Utc::now);
    hour_bucket(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn key_is_the_utc_hour_bucket() {
        let at = Utc.with_ymd_and_hms(2026, 3, 7, 9, 59, 59).unwrap();
        assert_eq!(hour_bucket(at), "2026-03-07-09");
        for at in [
            Utc.with_ymd_and_hms(999, 1, 2, 3, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(12_345, 6, 7, 8, 0, 0).unwrap(),
        ] {
            assert_eq!(hour_bucket(at), at.format("%Y-%m-%d-%H").to_string());
        }
    }

    #[test]
    fn event_ids_are_random_v4_uuids() {
        let ids: std::collections::HashSet<_> = (0..1000)
            .map(|_| user_activity("u", "a", "r", Value::Null, Utc::now()).event_id)
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let id = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(id.get_version(), Some(uuid::Version::Random));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn lifts_client_fields_from_details_like_the_seed() {
        let details = serde_json::json!({"ip_address": "10.0.0.1", "user_agent": "ua", "session_id": "s", "x": [1]});
        let a = user_activity("u", "login", "/", details.clone(), Utc::now());
        assert_eq!(a.ip_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(a.user_agent.as_deref(), Some("ua"));
        assert_eq!(a.session_id.as_deref(), Some("s"));
        assert_eq!(a.details, details);
        assert_eq!(
            uuid::Uuid::parse_str(&a.event_id)
                .unwrap()
                .get_version_num(),
            4
        );
    }
}

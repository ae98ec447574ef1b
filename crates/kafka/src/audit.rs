//! The seed's audit producer as a small shared API: any service records a user
//! activity on `user-activities`, keyed by the UTC hour bucket `YYYY-MM-DD-HH`.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::producer::{
    Delivery, OutboundRecord, ProduceError, Producer, AVRO_CONTENT_TYPE, CONTENT_TYPE_HEADER,
};
use crate::topics::USER_ACTIVITIES;

/// One user activity, as the seed's `send_user_activity` builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserActivity {
    /// `eventId`: a fresh UUID v4.
    pub event_id: String,
    /// `timestamp`: epoch milliseconds.
    pub timestamp: i64,
    /// `userId`.
    pub user_id: String,
    /// `action`.
    pub action: String,
    /// `resource`.
    pub resource: String,
    /// `details`: free-form JSON, kept as given.
    pub details: Value,
    /// `ipAddress`, from `details.ip_address`.
    pub ip_address: Option<String>,
    /// `userAgent`, from `details.user_agent`.
    pub user_agent: Option<String>,
    /// `sessionId`, from `details.session_id`.
    pub session_id: Option<String>,
}

impl UserActivity {
    /// Builds the event the seed builds: new id, `at` as timestamp, and the
    /// ip address, user agent and session id lifted from `details`.
    pub fn new(
        user_id: &str,
        action: &str,
        resource: &str,
        details: Value,
        at: DateTime<Utc>,
    ) -> Self {
        let field = |k: &str| details.get(k).and_then(Value::as_str).map(str::to_string);
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
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
}

/// The partition key of an audit event at `at`: the UTC hour bucket `YYYY-MM-DD-HH`.
pub fn hour_bucket(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d-%H").to_string()
}

/// Encodes a [`UserActivity`] as the `user-activities` value (the schema
/// crate's `AuditEvent`, Avro).
pub trait AuditEncoder: Send + Sync + 'static {
    /// The value bytes for `topic`; on failure the message and whether trying
    /// again later may succeed.
    fn encode_activity(
        &self,
        topic: &str,
        activity: &UserActivity,
    ) -> impl Future<Output = Result<Vec<u8>, (String, bool)>> + Send;
}

/// The shared audit producer.
#[derive(Debug, Clone)]
pub struct AuditProducer<E> {
    producer: Producer,
    encoder: std::sync::Arc<E>,
    topic: String,
}

impl<E: AuditEncoder> AuditProducer<E> {
    /// An audit producer writing to `user-activities` through `producer`.
    pub fn new(producer: Producer, encoder: std::sync::Arc<E>) -> Self {
        Self::with_topic(producer, encoder, USER_ACTIVITIES)
    }

    /// The same, writing to another topic (tests use a unique one).
    pub fn with_topic(producer: Producer, encoder: std::sync::Arc<E>, topic: &str) -> Self {
        Self {
            producer,
            encoder,
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
        let now = Utc::now();
        self.send(UserActivity::new(user_id, action, resource, details, now))
            .await
    }

    /// Records `activity`, keyed by the hour bucket of its timestamp.
    pub async fn send(&self, activity: UserActivity) -> Result<Delivery, ProduceError> {
        let at =
            DateTime::<Utc>::from_timestamp_millis(activity.timestamp).unwrap_or_else(Utc::now);
        let payload = self
            .encoder
            .encode_activity(&self.topic, &activity)
            .await
            .map_err(|(message, retryable)| ProduceError::Encode { message, retryable })?;
        let record = OutboundRecord::new(&self.topic, Some(&hour_bucket(at)), payload)
            .with_header(CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE);
        self.producer.enqueue_raw(record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn key_is_the_utc_hour_bucket() {
        let at = Utc.with_ymd_and_hms(2026, 3, 7, 9, 59, 59).unwrap();
        assert_eq!(hour_bucket(at), "2026-03-07-09");
    }

    #[test]
    fn lifts_client_fields_from_details_like_the_seed() {
        let details = serde_json::json!({"ip_address": "10.0.0.1", "user_agent": "ua", "session_id": "s", "x": [1]});
        let a = UserActivity::new("u", "login", "/", details.clone(), Utc::now());
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

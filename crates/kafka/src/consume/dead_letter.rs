//! Dead letters: the encoder seam that turns a rejected record into the bytes
//! of a `DeadLetter` (implemented by the schema crate's codec, Avro), and how
//! the loop writes one to `<topic>-dlq` with the original key.

use std::future::Future;

use tracing::Instrument;

use super::driver::Driver;
use super::membership::TopicPartition;
use super::{ConsumeError, HandlerError, Record};
use crate::producer::{Delivery, OutboundRecord, ProduceError, AVRO_CONTENT_TYPE, CONTENT_TYPE_HEADER};
use crate::{metrics, topics};

/// Encodes the dead letter of a record a handler rejected: original topic,
/// partition, offset, key, bytes, headers and timestamp, the error's text and
/// type, the retries spent and the service that gave up.
pub trait DeadLetterEncoder: Send + Sync + 'static {
    /// The value to write on `dlq_topic`; on failure the message and whether
    /// trying again later may succeed (e.g. registry unavailable).
    fn encode_dead_letter(
        &self,
        dlq_topic: &str,
        record: &Record,
        error: &HandlerError,
        retry_count: u32,
        failed_by: &str,
    ) -> impl Future<Output = Result<Vec<u8>, (String, bool)>> + Send;
}

/// The dead letter of `record`: everything a byte-exact replay needs, plus the
/// error and the attempts spent (`retry_count` retries + this last attempt).
pub fn dead_letter_of(
    record: &Record,
    error: &HandlerError,
    retry_count: u32,
    failed_by: &str,
) -> dora_schema::DeadLetter {
    let retries = i32::try_from(retry_count).unwrap_or(i32::MAX);
    dora_schema::DeadLetter {
        original_topic: record.topic.clone(),
        original_partition: record.partition,
        original_offset: record.offset,
        original_key: record.key.clone(),
        original_message: record.payload().to_vec(),
        original_headers: record
            .headers
            .iter()
            .map(|h| dora_schema::DeadLetterHeader {
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect(),
        original_timestamp: record.timestamp,
        error_message: error.message().to_string(),
        error_type: error.error_type().to_string(),
        retry_count: retries,
        processing_attempts: retries.saturating_add(1),
        timestamp: chrono::Utc::now().timestamp_millis(),
        failed_by: failed_by.to_string(),
    }
}

/// The platform's encoder: an Avro `DeadLetter` under `<dlq topic>-value`.
impl DeadLetterEncoder for dora_schema::Codec {
    async fn encode_dead_letter(
        &self,
        dlq_topic: &str,
        record: &Record,
        error: &HandlerError,
        retry_count: u32,
        failed_by: &str,
    ) -> Result<Vec<u8>, (String, bool)> {
        let letter = dead_letter_of(record, error, retry_count, failed_by);
        self.encode(dlq_topic, &letter)
            .await
            .map_err(|e| (e.to_string(), e.is_retryable()))
    }
}

impl<D: DeadLetterEncoder> Driver<D> {
    /// Encodes `r`'s dead letter and enqueues it on `<topic>-dlq`, keyed as `r`.
    pub(crate) async fn enqueue_dead_letter(
        &self,
        r: &Record,
        e: &HandlerError,
    ) -> Result<Delivery, ProduceError> {
        let dlq = topics::dlq_topic(&r.topic);
        let retries = self.retries.attempts(&TopicPartition::of(r), r.offset);
        let payload = self
            .dead_letters
            .encode_dead_letter(&dlq, r, e, retries, &self.service)
            .await
            .map_err(|(message, retryable)| ProduceError::Encode { message, retryable })?;
        let mut out = OutboundRecord::new(dlq, None, payload)
            .with_header(CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE);
        out.key = r.key.clone();
        self.producer.enqueue_raw(out).await
    }

    /// Dead-letters `r` (rejected with `e`) and waits for the brokers' ack;
    /// then `r` counts as done. A write that fails is retried like a
    /// dependency outage; a fatal producer stops the loop instead.
    pub(crate) async fn dead_letter(
        &mut self,
        r: &Record,
        e: &HandlerError,
        span: tracing::Span,
    ) -> Result<(), ConsumeError> {
        self.check_producers()?;
        metrics::CONSUMER_ERRORS
            .with_label_values(&[r.topic.as_str(), e.error_type()])
            .inc();
        let sent = async { self.enqueue_dead_letter(r, e).await?.await }
            .instrument(span)
            .await;
        match sent {
            Ok(_) => {
                metrics::DLQ_WRITES.with_label_values(&[r.topic.as_str()]).inc();
                tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, error = %e, "dead-lettered");
                self.done(r);
                Ok(())
            }
            Err(ProduceError::Fatal(reason)) => Err(ConsumeError::Producer(reason)),
            Err(pe) => {
                let err = HandlerError::unavailable("DeadLetterWrite", pe.to_string());
                self.retry(&TopicPartition::of(r), r.offset, &err).await;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::RecordHeader;

    #[test]
    fn keeps_everything_a_replay_needs() {
        let r = Record {
            topic: "t".into(),
            partition: 2,
            offset: 41,
            key: Some(b"k".to_vec()),
            payload: Some(vec![0, 1, 255]),
            headers: vec![RecordHeader {
                key: "h".into(),
                value: None,
            }],
            timestamp: Some(7),
        };
        let d = dead_letter_of(&r, &HandlerError::rejected("Invalid", "no id"), 2, "svc");
        assert_eq!(
            (
                d.original_partition,
                d.original_offset,
                d.original_timestamp
            ),
            (2, 41, Some(7))
        );
        assert_eq!(d.original_message, vec![0, 1, 255]);
        assert_eq!(d.original_key.as_deref(), Some(&b"k"[..]));
        assert_eq!(d.original_headers.len(), 1);
        assert_eq!((d.retry_count, d.processing_attempts), (2, 3));
        assert_eq!(
            (
                d.error_type.as_str(),
                d.error_message.as_str(),
                d.failed_by.as_str()
            ),
            ("Invalid", "no id", "svc")
        );
    }
}

//! How the loop turns a failed record into the bytes of a dead letter: the
//! encoder seam, implemented by the schema crate's codec (Avro `DeadLetter`).

use std::future::Future;

use super::{HandlerError, Record};

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

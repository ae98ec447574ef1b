//! What a service plugs into the loop: the handler traits of the three modes
//! (per message, batch, consume-transform-produce), their partition lifecycle
//! hooks, and the error a handler returns to say what the loop should do.

use std::future::Future;
use std::sync::Arc;

use super::Record;
use crate::producer::{OutboundRecord, ProduceError};

/// What a handler says about a record it could not process.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency is unavailable (broker, registry, database): retry the
    /// same record after a backoff; never dead-letter it.
    #[error("{error_type}: {message}")]
    Retryable {
        /// Short name of the failure (the `error_type` label, the DLQ's `errorType`).
        error_type: String,
        /// What happened.
        message: String,
    },
    /// The record itself is bad (undecodable, invalid, rejected): dead-letter
    /// it and move on.
    #[error("{error_type}: {message}")]
    Permanent {
        /// Short name of the failure.
        error_type: String,
        /// What happened.
        message: String,
    },
    /// The service cannot go on (e.g. its producer was fenced by a newer
    /// instance): the loop stops with an error, dead-letters nothing and
    /// commits nothing past the record, so the process exits non-zero and is
    /// restarted.
    #[error("{error_type}: {message}")]
    Fatal {
        /// Short name of the failure.
        error_type: String,
        /// What happened.
        message: String,
    },
}

fn short_type_name<E>() -> String {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

impl HandlerError {
    /// A retryable error named after `E`'s type (as the seed's `type(e).__name__`).
    pub fn retryable<E: std::fmt::Display>(error: E) -> Self {
        Self::Retryable {
            error_type: short_type_name::<E>(),
            message: error.to_string(),
        }
    }

    /// A permanent error named after `E`'s type.
    pub fn permanent<E: std::fmt::Display>(error: E) -> Self {
        Self::Permanent {
            error_type: short_type_name::<E>(),
            message: error.to_string(),
        }
    }

    /// A permanent error with an explicit type name.
    pub fn rejected(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// A retryable error with an explicit type name.
    pub fn unavailable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retryable {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// True for [`HandlerError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// True for [`HandlerError::Fatal`].
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal { .. })
    }

    /// The error's type name.
    pub fn error_type(&self) -> &str {
        match self {
            Self::Retryable { error_type, .. }
            | Self::Permanent { error_type, .. }
            | Self::Fatal { error_type, .. } => error_type,
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. }
            | Self::Permanent { message, .. }
            | Self::Fatal { message, .. } => message,
        }
    }
}

impl From<dora_schema::SchemaError> for HandlerError {
    /// A registry outage is retryable; an undecodable or invalid value is permanent.
    fn from(e: dora_schema::SchemaError) -> Self {
        if e.is_retryable() {
            Self::retryable(e)
        } else {
            Self::permanent(e)
        }
    }
}

impl From<ProduceError> for HandlerError {
    /// A fatal producer stops the loop; a delivery that may succeed later is
    /// retried; a record the brokers refuse (too large, invalid) is permanent.
    fn from(e: ProduceError) -> Self {
        let (error_type, message) = (e.error_type(), e.to_string());
        match e {
            ProduceError::Fatal(_) => Self::Fatal {
                error_type,
                message,
            },
            e if e.is_retryable() => Self::Retryable {
                error_type,
                message,
            },
            _ => Self::Permanent {
                error_type,
                message,
            },
        }
    }
}

/// Per-message mode: one record at a time, in partition order.
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. The loop runs it inside a span (topic, partition,
    /// offset, key) whose parent is the producer's span.
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called when `partitions` were assigned, after their start positions are
    /// applied and before their first record. Default: nothing.
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }

    /// Called when `partitions` were taken away; no record of them is handled
    /// afterwards, so state kept for them can be dropped. Default: nothing.
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }
}

/// Batch mode: up to `max_batch_records` records, gathered for at most
/// `max_batch_wait_ms`.
pub trait BatchHandler: Send + Sync + 'static {
    /// Processes the batch as a whole. A [`HandlerError::Retryable`] retries
    /// the whole batch after the backoff (every partition of it paused and
    /// rewound to its first record in the batch); a [`HandlerError::Permanent`]
    /// hands each record to [`handle_one`](Self::handle_one), so one bad item
    /// does not fail the others.
    fn handle_batch(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Processes one record of a batch that failed permanently.
    fn handle_one(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// See [`Handler::assigned`]. Default: nothing.
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }

    /// See [`Handler::revoked`]. Default: nothing.
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }
}

/// Consume-transform-produce mode: each batch of input records, their outputs
/// and their offsets are committed in one Kafka transaction.
pub trait Transform: Send + Sync + 'static {
    /// The records to produce for `record` (possibly none).
    fn transform(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send;

    /// The records that close a batch, produced in the same transaction
    /// after the outputs of its last record (e.g. one summary of what the
    /// batch did). A retryable error aborts the transaction and the batch is
    /// processed again ([`aborted`](Self::aborted) is called); any other
    /// error stops the loop. Default: nothing.
    fn batch_end(&self) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Called after the batch's outputs were acknowledged and before the
    /// transaction commits; an error aborts the transaction and the batch is
    /// retried. Default: nothing.
    fn before_commit(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// Rebuilds state from a record that was already processed before a
    /// restart or rebalance ([`StartAt::Rebuild`](super::StartAt::Rebuild)):
    /// nothing is produced, committed or dead-lettered for it. A retryable
    /// error retries it; a permanent one skips it. Default: nothing.
    fn replay(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = record;
        async { Ok(()) }
    }

    /// The state changes made so far are final: called after a transaction
    /// committed, and after a batch of replayed records. Default: nothing.
    fn committed(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A transaction was aborted: every record [`transform`](Self::transform)
    /// saw since the last [`committed`](Self::committed) will be handed to it
    /// again, so a stateful transform restores the state it had then (e.g. a
    /// snapshot taken at the first change). `partitions` are those the aborted
    /// transaction covered (none for a [`tick`](Self::tick)). Default: nothing.
    fn aborted(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }

    /// Runs between batches every [`tick_every`](super::ConsumeLoop::tick_every)
    /// period with the wall clock in epoch milliseconds; its records are
    /// produced and committed in a transaction of their own. Default: nothing.
    fn tick(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send {
        let _ = now_ms;
        async { Ok(Vec::new()) }
    }

    /// See [`Handler::assigned`]. With [`StartAt::Rebuild`](super::StartAt::Rebuild)
    /// it is called before the partition's first replayed record. Default: nothing.
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }

    /// See [`Handler::revoked`]. Default: nothing.
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        let _ = partitions;
        async {}
    }
}

impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(record)
    }
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).assigned(partitions)
    }
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).revoked(partitions)
    }
}

impl<B: BatchHandler> BatchHandler for Arc<B> {
    fn handle_batch(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle_batch(records)
    }
    fn handle_one(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle_one(record)
    }
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).assigned(partitions)
    }
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).revoked(partitions)
    }
}

impl<T: Transform> Transform for Arc<T> {
    fn transform(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send {
        (**self).transform(record)
    }
    fn batch_end(&self) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send {
        (**self).batch_end()
    }
    fn before_commit(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).before_commit()
    }
    fn replay(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).replay(record)
    }
    fn committed(&self) -> impl Future<Output = ()> + Send {
        (**self).committed()
    }
    fn aborted(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).aborted(partitions)
    }
    fn tick(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<OutboundRecord>, HandlerError>> + Send {
        (**self).tick(now_ms)
    }
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).assigned(partitions)
    }
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        (**self).revoked(partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_is_the_short_type_name() {
        let e = HandlerError::permanent(std::fmt::Error);
        assert_eq!(e.error_type(), "Error");
        assert!(!e.is_retryable());
        let e = HandlerError::retryable("db down".to_string());
        assert_eq!(e.error_type(), "String");
        assert!(e.is_retryable());
    }

    #[test]
    fn a_fatal_produce_error_is_a_fatal_handler_error() {
        let e = HandlerError::from(ProduceError::Fatal("fenced".into()));
        assert!(e.is_fatal() && !e.is_retryable(), "{e:?}");
        let e = HandlerError::from(ProduceError::Encode {
            message: "registry down".into(),
            retryable: true,
        });
        assert!(e.is_retryable(), "{e:?}");
    }
}

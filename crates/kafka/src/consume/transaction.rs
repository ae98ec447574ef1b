//! The transactional producer's calls, off the async workers, handled as
//! librdkafka documents (rdkafka.h, "Transactional producer API"): a
//! retriable error means call the same function again (it resumes what is in
//! progress, e.g. a commit that timed out); an error that requires an abort
//! means abort the transaction; a fatal error, or any other, means stop.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;
use rdkafka::TopicPartitionList;

use crate::blocking::off_worker;
use crate::{Producer, RetryPolicy};

/// Why a transaction call did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransactionError {
    /// The transaction must be aborted; its inputs are processed again.
    #[error("transaction must be aborted: {0}")]
    Abort(String),
    /// The producer cannot go on.
    #[error("{0}")]
    Fatal(String),
}

/// What librdkafka says to do about `e`.
fn verdict(e: &RdKafkaError) -> Verdict {
    match e {
        RdKafkaError::Transaction(te) if te.is_fatal() => Verdict::Fatal,
        RdKafkaError::Transaction(te) if te.txn_requires_abort() => Verdict::Abort,
        RdKafkaError::Transaction(te) if te.is_retriable() => Verdict::Retry,
        // commit_transaction flushes first; a flush timeout is a timeout of the call.
        RdKafkaError::Flush(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::OperationTimedOut) => {
            Verdict::Retry
        }
        _ => Verdict::Fatal,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Retry,
    Abort,
    Fatal,
}

/// Transactions of the loop's transactional producer.
#[derive(Clone)]
pub(crate) struct Transactions {
    producer: Producer,
    timeout: Duration,
    policy: RetryPolicy,
}

impl Transactions {
    pub fn new(producer: &Producer, timeout: Duration, policy: RetryPolicy) -> Self {
        Self {
            producer: producer.clone(),
            timeout,
            policy,
        }
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<(), TransactionError> {
        let p = self.producer.clone();
        self.call("begin_transaction", move || p.inner.begin_transaction())
            .await
    }

    /// Adds the consumed `offsets` (with the group's metadata) and commits.
    pub async fn commit(
        &self,
        offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    ) -> Result<(), TransactionError> {
        if let Some((tpl, group)) = offsets {
            let (p, timeout) = (self.producer.clone(), self.timeout);
            let group = std::sync::Arc::new(group);
            self.call("send_offsets_to_transaction", move || {
                p.inner.send_offsets_to_transaction(&tpl, &group, timeout)
            })
            .await?;
        }
        let (p, timeout) = (self.producer.clone(), self.timeout);
        self.call("commit_transaction", move || p.inner.commit_transaction(timeout))
            .await
    }

    /// Aborts the transaction; only a fatal error stops it.
    pub async fn abort(&self) -> Result<(), TransactionError> {
        let (p, timeout) = (self.producer.clone(), self.timeout);
        match self
            .call("abort_transaction", move || p.inner.abort_transaction(timeout))
            .await
        {
            Err(TransactionError::Abort(m)) => Err(TransactionError::Fatal(m)),
            other => other,
        }
    }

    /// Calls `op` until it succeeds, again while its error is retriable.
    async fn call<F>(&self, name: &'static str, op: F) -> Result<(), TransactionError>
    where
        F: Fn() -> KafkaResult<()> + Clone + Send + 'static,
    {
        let mut attempt: u32 = 0;
        loop {
            let e = match off_worker(op.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match verdict(&e) {
                Verdict::Retry => {
                    attempt += 1;
                    if attempt == 1 || attempt.is_multiple_of(50) {
                        tracing::warn!(call = name, attempt, error = %e, "retriable transaction error; calling again");
                    }
                    if !is_timeout(&e) {
                        tokio::time::sleep(self.policy.delay(attempt.min(16) - 1)).await;
                    }
                }
                Verdict::Abort => return Err(TransactionError::Abort(format!("{name}: {e}"))),
                Verdict::Fatal => return Err(TransactionError::Fatal(format!("{name}: {e}"))),
            }
        }
    }
}

/// A timeout already waited; calling again right away resumes the operation.
fn is_timeout(e: &RdKafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::MessageTimedOut)
    ) || matches!(e, RdKafkaError::Flush(_))
}

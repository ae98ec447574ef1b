//! The loop's modes behind one interface: per message ([`Each`]), batch
//! ([`Batches`]) and consume-transform-produce (`transform.rs`). A mode
//! processes an admitted batch and forwards the partition lifecycle hooks.

use std::future::Future;

use super::dead_letter::DeadLetterEncoder;
use super::driver::{first_offsets, Driver};
use super::membership::TopicPartition;
use super::{BatchHandler, ConsumeError, Handler, Record};
use crate::metrics;

/// What the driver needs from a mode.
pub(crate) trait Mode: Send + Sync {
    /// Gather batches for `max_batch_wait_ms` (`false`: take what is fetched).
    fn fills_batches(&self) -> bool;

    /// `partitions` were assigned and their start applied.
    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send;

    /// `partitions` were taken away.
    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send;

    /// Processes an admitted batch; an error stops the loop.
    fn process<D: DeadLetterEncoder>(
        &self,
        driver: &mut Driver<D>,
        batch: Vec<Record>,
    ) -> impl Future<Output = Result<(), ConsumeError>> + Send;

    /// Runs the periodic tick (the transactional mode only).
    fn tick<D: DeadLetterEncoder>(
        &self,
        driver: &mut Driver<D>,
    ) -> impl Future<Output = Result<(), ConsumeError>> + Send {
        let _ = driver;
        async { Ok(()) }
    }
}

/// Per-message mode.
pub(crate) struct Each<H>(pub H);

impl<H: Handler> Mode for Each<H> {
    fn fills_batches(&self) -> bool {
        false
    }

    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        self.0.assigned(partitions)
    }

    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        self.0.revoked(partitions)
    }

    async fn process<D: DeadLetterEncoder>(
        &self,
        driver: &mut Driver<D>,
        batch: Vec<Record>,
    ) -> Result<(), ConsumeError> {
        for r in &batch {
            if driver.shutdown.is_cancelled() {
                // The rest was only fetched, not started: it is redelivered.
                break;
            }
            if driver.retries.is_paused(&TopicPartition::of(r)) {
                continue;
            }
            let span = r.span("kafka.process");
            let result = driver.timed(&r.topic, span.clone(), self.0.handle(r)).await;
            driver.settle(r, result, span).await?;
            // Records fetched together may take long one by one: commit on time.
            driver.commit_if_due().await;
        }
        Ok(())
    }
}

/// Batch mode.
pub(crate) struct Batches<B>(pub B);

impl<B: BatchHandler> Mode for Batches<B> {
    fn fills_batches(&self) -> bool {
        true
    }

    fn assigned(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        self.0.assigned(partitions)
    }

    fn revoked(&self, partitions: &[(String, i32)]) -> impl Future<Output = ()> + Send {
        self.0.revoked(partitions)
    }

    async fn process<D: DeadLetterEncoder>(
        &self,
        driver: &mut Driver<D>,
        batch: Vec<Record>,
    ) -> Result<(), ConsumeError> {
        let topic = batch[0].topic.clone();
        let span = tracing::info_span!("kafka.process_batch", otel.kind = "consumer", topic = %topic, records = batch.len());
        let result = driver.timed(&topic, span, self.0.handle_batch(&batch)).await;
        match result {
            Ok(()) => {
                for r in &batch {
                    metrics::MESSAGES_PROCESSED
                        .with_label_values(&[r.topic.as_str()])
                        .inc();
                    driver.done(r);
                }
                Ok(())
            }
            Err(e) if e.is_fatal() => Err(ConsumeError::Handler(e)),
            Err(e) if e.is_retryable() => {
                // A dependency is down: the whole batch again after the backoff.
                for (tp, first) in first_offsets(&batch) {
                    driver.retry(&tp, first, &e).await;
                }
                Ok(())
            }
            Err(e) => {
                metrics::CONSUMER_ERRORS
                    .with_label_values(&[topic.as_str(), e.error_type()])
                    .inc();
                tracing::warn!(error = %e, records = batch.len(), "batch failed; processing its records one by one");
                for r in &batch {
                    if driver.retries.is_paused(&TopicPartition::of(r)) {
                        continue;
                    }
                    let span = r.span("kafka.process");
                    let result = driver.timed(&r.topic, span.clone(), self.0.handle_one(r)).await;
                    driver.settle(r, result, span).await?;
                }
                Ok(())
            }
        }
    }
}

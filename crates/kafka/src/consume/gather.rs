//! Gathering one batch on the poll thread: poll until the first record (or
//! the loop's next timer), then keep filling up to the batch size for the
//! fill time; stop early when a rebalance happened or a shutdown began. A
//! nudge (a partition's start answer arrived) ends only a gather that has no
//! record yet: an open batch is never cut short by another partition's start.
//! Each record is tagged with the rebalance counter at its poll.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;

use super::context::GroupContext;
use super::Record;
use crate::inspect::record_of;
use crate::metrics;

/// How long one poll blocks at most, so an interrupt is seen within it.
const SLICE: Duration = Duration::from_millis(50);

/// What one gather waits for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The most records to gather.
    pub max_records: usize,
    /// How long to wait for the first record.
    pub first_within: Duration,
    /// After the first record, how long to keep polling for more; zero takes
    /// only what is already fetched.
    pub fill_within: Duration,
}

/// A record with the rebalance counter at its poll.
#[derive(Debug)]
pub(crate) struct Polled {
    pub record: Record,
    pub fetched_in: u64,
}

/// What one gather got.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub records: Vec<Polled>,
    /// The consumer hit an error it cannot recover from.
    pub fatal: Option<RdKafkaError>,
}

/// Polls `consumer` until `plan` is met (blocking: runs on the poll thread).
pub(crate) fn gather(consumer: &BaseConsumer<GroupContext>, plan: &Plan) -> Gathered {
    let membership = &consumer.context().membership;
    let mut out = Gathered::default();
    let first_until = Instant::now() + plan.first_within;
    let mut fill_until: Option<Instant> = None;
    while out.records.len() < plan.max_records {
        let remaining = fill_until
            .unwrap_or(first_until)
            .saturating_duration_since(Instant::now());
        match consumer.poll(remaining.min(SLICE)) {
            Some(Ok(m)) => {
                out.records.push(Polled {
                    record: record_of(&m),
                    fetched_in: membership.rebalances(),
                });
                fill_until.get_or_insert_with(|| Instant::now() + plan.fill_within);
            }
            Some(Err(e @ RdKafkaError::MessageConsumptionFatal(_))) => {
                out.fatal = Some(e);
                break;
            }
            Some(Err(e)) => {
                metrics::CONSUMER_ERRORS.with_label_values(&["", "KafkaError"]).inc();
                tracing::warn!(error = %e, group = %membership.group, "consume error");
            }
            None if remaining.is_zero() => break,
            None => {}
        }
        if membership.take_interrupt() || (out.records.is_empty() && membership.take_nudge()) {
            break;
        }
    }
    out
}

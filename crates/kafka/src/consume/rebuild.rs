//! `StartAt::Rebuild`'s lookup: the last readable record before a partition's
//! committed offset (its timestamp says where the replay starts), read with a
//! short-lived assign-only consumer under the loop's isolation level, so
//! transaction markers and aborted records are skipped as the loop skips them.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset};

use super::member::BROKER_TIMEOUT;
use super::membership::TopicPartition;

/// A partition replaying up to its committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rebuild {
    /// The committed offset `C`: records before it are replayed.
    pub until: i64,
    /// The last readable record before `C`: replaying it ends the rebuild.
    pub last: i64,
}

/// The `ClientConfig` of the lookup reader: `base` (connection settings)
/// with the loop's isolation level, never joining a group or committing.
pub(crate) fn lookup_config(mut base: ClientConfig, isolation_level: &str) -> ClientConfig {
    base.set("group.id", format!("dora-rebuild-lookup-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation_level);
    base
}

/// The offset and timestamp (epoch ms) of the last readable record of `tp`
/// before `before`, or `None` when there is none at or after `low` (the log
/// start). Blocking: runs on the blocking pool.
pub(crate) fn last_record_before(
    cfg: &ClientConfig,
    tp: &TopicPartition,
    before: i64,
    low: i64,
) -> KafkaResult<Option<(i64, i64)>> {
    if before <= low {
        return Ok(None);
    }
    let reader: BaseConsumer = cfg.create()?;
    let mut window: i64 = 16;
    loop {
        let from = before.saturating_sub(window).max(low);
        reader.assign(&tp.list(Offset::Offset(from)))?;
        let last = read_until(&reader, before)?;
        if last.is_some() || from == low {
            return Ok(last);
        }
        // Only markers or aborted records in the window: look further back.
        window = window.saturating_mul(8);
    }
}

/// Reads the assigned partition up to `before` (or its end); the last record seen.
fn read_until(reader: &BaseConsumer, before: i64) -> KafkaResult<Option<(i64, i64)>> {
    let deadline = Instant::now() + BROKER_TIMEOUT;
    let mut last = None;
    loop {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.offset() < before => {
                last = Some((m.offset(), m.timestamp().to_millis().unwrap_or(0)));
            }
            Some(Ok(_)) | Some(Err(RdKafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => return Err(e),
            None if Instant::now() >= deadline => {
                return Err(RdKafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                ))
            }
            None => {}
        }
    }
}

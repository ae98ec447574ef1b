//! Where a newly assigned partition starts: at the database's head for it
//! (`audit.sink_offsets.next_offset`, moved in the same transaction as the
//! rows), never at the group's Kafka commit, which is only advisory. A crash
//! between the database commit and the Kafka commit therefore re-reads
//! nothing, and a Kafka commit ahead of the database (lost database commit,
//! database restored from a backup, a group moved by hand) skips nothing.
//! A partition the database has never stored starts at the log's beginning:
//! the audit trail takes everything still retained.
//!
//! The consume loop keeps the partition paused until the answer is applied;
//! while the database is unreachable the lookup is retried with backoff.

use std::future::Future;
use std::time::Duration;

use dora_kafka::StartAt;
use tokio_util::sync::CancellationToken;

use crate::db::{classify, classify_pool, Failure, Pool};
use crate::health::DbHealth;

/// The database's next offset for `topic`/`partition`, if it has stored any record of it.
pub async fn stored_next_offset(pool: &Pool, topic: &str, partition: i32) -> Result<Option<i64>, Failure> {
    let client = pool.get().await.map_err(|e| classify_pool(&e))?;
    let row = client
        .query_opt(
            "SELECT next_offset FROM audit.sink_offsets WHERE topic = $1 AND kafka_partition = $2",
            &[&topic, &partition],
        )
        .await
        .map_err(|e| classify(&e))?;
    Ok(row.map(|r| r.get(0)))
}

/// The start for a next offset found in the database (`None`: never stored).
pub fn start_for(next_offset: Option<i64>) -> StartAt {
    match next_offset {
        Some(offset) => StartAt::Offset(offset),
        None => StartAt::Beginning,
    }
}

/// The `on_assign` callback: looks the partition up in the database,
/// retrying (and reporting to `health`) while the database fails. When
/// `shutdown` comes first it answers `Committed`: the loop is stopping and
/// processes nothing more, and the fence would skip anything stored anyway.
pub fn from_database(
    pool: Pool,
    health: DbHealth,
    shutdown: CancellationToken,
) -> impl Fn(String, i32) -> std::pin::Pin<Box<dyn Future<Output = StartAt> + Send>> + Send + Sync + 'static {
    move |topic, partition| {
        let (pool, health, shutdown) = (pool.clone(), health.clone(), shutdown.clone());
        Box::pin(async move {
            let mut delay = Duration::from_millis(250);
            loop {
                match stored_next_offset(&pool, &topic, partition).await {
                    Ok(next) => {
                        health.success();
                        let start = start_for(next);
                        tracing::info!(topic, partition, ?start, "partition starts at the database's offset");
                        return start;
                    }
                    Err(e) => {
                        health.failure(&e.to_string());
                        tracing::warn!(topic, partition, error = %e, retry_in = ?delay, "looking up the database's offset failed");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return StartAt::Committed,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_head_decides_and_an_unknown_partition_starts_at_the_beginning() {
        assert_eq!(start_for(Some(42)), StartAt::Offset(42));
        assert_eq!(start_for(Some(0)), StartAt::Offset(0));
        assert_eq!(start_for(None), StartAt::Beginning);
    }
}

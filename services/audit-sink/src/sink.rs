//! The batch handler the consume loop drives: decode every record of a batch,
//! store the batch in one transaction, and tell the loop what a failure means
//! (database down: retry the batch, partitions paused; a bad item: the loop
//! goes record by record and the bad one is linked as rejected and
//! dead-lettered with the database's reason).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dora_kafka::{BatchHandler, HandlerError, Record};
use dora_schema::Codec;

use crate::db::Failure;
use crate::health::DbHealth;
use crate::intake::{decode, Item, Topics};
use crate::settings::FaultPoint;
use crate::store::{BatchReport, Rejection, Store};
use crate::metrics;

/// audit-sink's [`BatchHandler`].
pub struct Sink {
    codec: Codec,
    topics: Topics,
    store: Store,
    health: DbHealth,
    fault: Option<FaultPoint>,
    lag_warn: Duration,
    last_lag_warning: Mutex<Option<Instant>>,
}

impl Sink {
    /// A handler decoding with `codec` and writing through `store`.
    pub fn new(
        codec: Codec,
        topics: Topics,
        store: Store,
        health: DbHealth,
        fault: Option<FaultPoint>,
        lag_warn: Duration,
    ) -> Self {
        if let Some(f) = fault {
            tracing::warn!(fault = ?f, "TEST HOOK ARMED: this process will kill itself at the fault point");
        }
        Self { codec, topics, store, health, fault, lag_warn, last_lag_warning: Mutex::new(None) }
    }

    async fn store(&self, items: &[Item<'_>], operation: &str) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = self.store.store(items).await;
        metrics::db_seconds(operation, started.elapsed().as_secs_f64());
        match result {
            Ok(report) => {
                self.health.success();
                self.account(&report);
                if self.fault == Some(FaultPoint::ExitAfterDbCommit) && report.audit_rows + report.report_rows > 0 {
                    crash_at("exit_after_db_commit");
                }
                Ok(())
            }
            Err(Failure::Transient(m)) => {
                self.health.failure(&m);
                Err(HandlerError::unavailable("DatabaseUnavailable", m))
            }
            Err(Failure::Refused(m)) => {
                self.health.success();
                Err(HandlerError::rejected("DatabaseRejected", m))
            }
        }
    }

    fn account(&self, r: &BatchReport) {
        metrics::rows_stored("audit_events", r.audit_rows);
        metrics::rows_stored("compliance_reports", r.report_rows);
        metrics::records("stored", r.audit_rows + r.report_rows);
        metrics::records("duplicate", r.duplicates);
        metrics::records("redelivered", r.redelivered);
        metrics::staged(r.staged);
        for (topic, partition, links) in &r.chain_lengths {
            metrics::chain_length(topic, *partition, *links);
        }
        if let Some(ts) = r.newest_timestamp_ms {
            metrics::newest_stored(ts);
            let age = chrono::Utc::now().timestamp_millis() - ts;
            if age > self.lag_warn.as_millis() as i64 {
                let mut last = self.last_lag_warning.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(age_ms = age, limit_ms = self.lag_warn.as_millis() as u64,
                        "audit-sink is behind: it is storing records older than the limit");
                    *last = Some(Instant::now());
                }
            }
        }
    }

    /// Links `record` as rejected and returns the error the loop dead-letters it with.
    async fn reject(&self, record: &Record, error: HandlerError) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = self.store.reject(record, error.message()).await;
        metrics::db_seconds("reject", started.elapsed().as_secs_f64());
        match result {
            Ok(Rejection::Recorded(reason)) => {
                self.health.success();
                metrics::records("rejected", 1);
                Err(HandlerError::rejected(error.error_type(), reason))
            }
            Ok(Rejection::AlreadyStored) => Ok(()),
            Err(Failure::Transient(m)) | Err(Failure::Refused(m)) => {
                self.health.failure(&m);
                Err(HandlerError::unavailable("DatabaseUnavailable", m))
            }
        }
    }
}

/// The fault point: SIGKILL, so nothing after the database commit runs (in
/// particular not the consume loop's Kafka commit).
fn crash_at(point: &str) {
    tracing::error!(point, "fault point reached: killing this process (test hook)");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

impl BatchHandler for Sink {
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandlerError> {
        let mut items = Vec::with_capacity(records.len());
        for r in records {
            items.push(decode(&self.codec, &self.topics, r).await?);
        }
        metrics::batch(items.len());
        self.store(&items, "batch").await
    }

    async fn handle_one(&self, record: &Record) -> Result<(), HandlerError> {
        let item = match decode(&self.codec, &self.topics, record).await {
            Ok(item) => item,
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => return self.reject(record, e).await,
        };
        match self.store(std::slice::from_ref(&item), "item").await {
            Err(e) if !e.is_retryable() => self.reject(record, e).await,
            other => other,
        }
    }
}

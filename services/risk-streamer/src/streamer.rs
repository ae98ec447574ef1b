//! The consume loop's transform: risk assessments in, alert transitions out,
//! in the loop's Kafka transactions; the state rebuilt by replay and the
//! alert history at assignment, rolled back on abort, and checked for quiet
//! organisations on the loop's tick.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use dora_kafka::consume::{HandlerError, Record, Transform};
use dora_kafka::{KafkaSettings, OutboundRecord, RetryPolicy};
use dora_schema::{Codec, ComplianceReport};

use crate::alert::{Edge, Transition};
use crate::metrics;
use crate::partition::{Admission, Observation};
use crate::restore::AlertHistory;
use crate::settings::RiskSettings;
use crate::state::{RiskState, TopicPartition};
use crate::wire::{self, Assessment, NotCounted};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// risk-streamer's [`Transform`].
pub struct RiskStreamer {
    codec: Codec,
    kafka: KafkaSettings,
    risk: RiskSettings,
    retry: RetryPolicy,
    state: Mutex<RiskState>,
    /// Set when the alert history could not be read: the loop is stopped
    /// (processing without it could repeat or lose a transition).
    failed: Mutex<Option<String>>,
}

impl RiskStreamer {
    /// A transform with `risk`'s rules (already validated) that reads the
    /// alert history with `kafka`, retrying as `retry` says.
    pub fn new(
        codec: Codec,
        kafka: KafkaSettings,
        risk: RiskSettings,
        retry: RetryPolicy,
    ) -> anyhow::Result<Arc<Self>> {
        let rules = risk.rules().map_err(anyhow::Error::msg)?;
        Ok(Arc::new(Self {
            codec,
            kafka,
            risk,
            retry,
            state: Mutex::new(RiskState::new(rules)),
            failed: Mutex::new(None),
        }))
    }

    fn state(&self) -> MutexGuard<'_, RiskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_failed(&self) -> Result<(), HandlerError> {
        match self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(reason) => Err(HandlerError::Fatal {
                error_type: "AlertHistoryUnavailable".into(),
                message: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The assessment in `record`; `None` when it does not count (no score,
    /// or a tombstone), an error when it is undecodable or invalid.
    async fn assessment(&self, record: &Record) -> Result<Option<Assessment>, HandlerError> {
        let Some(payload) = record.payload.as_deref() else {
            return Ok(None);
        };
        let report: ComplianceReport = self.codec.decode(&record.topic, payload).await?;
        match wire::assessment(report, record.timestamp) {
            Ok(a) => Ok(Some(a)),
            Err(NotCounted::NoScore) => Ok(None),
            Err(NotCounted::Invalid(reason)) => {
                Err(HandlerError::rejected("InvalidRiskAssessment", reason))
            }
        }
    }

    /// The alert records of `transitions`.
    async fn alerts(
        &self,
        transitions: &[Transition],
        now_ms: i64,
    ) -> Result<Vec<OutboundRecord>, HandlerError> {
        let rules = *self.state().rules();
        let mut out = Vec::with_capacity(transitions.len());
        for t in transitions {
            let alert = wire::alert(t, &rules, now_ms);
            tracing::info!(
                organization_id = %alert.organization_id,
                state = %alert.state,
                window_end = alert.window_end,
                average = alert.average_risk_score,
                samples = alert.sample_count,
                "risk alert"
            );
            out.push(
                OutboundRecord::avro(
                    &self.codec,
                    &self.risk.alerts_topic,
                    Some(&alert.organization_id),
                    &alert,
                )
                .await?,
            );
        }
        Ok(out)
    }

    /// Reads the committed alerts back, retrying; on failure the loop stops.
    async fn read_history(&self) {
        let started = Instant::now();
        let stall = std::time::Duration::from_millis(self.risk.history_stall_timeout_ms);
        let read = self
            .retry
            .retry(
                || AlertHistory::read(&self.kafka, &self.codec, &self.risk.alerts_topic, stall),
                |_| true,
            )
            .await;
        metrics::history_read(started.elapsed().as_secs_f64());
        match read {
            Ok(history) => self.state().install_history(history),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), topic = %self.risk.alerts_topic, "cannot read the alert history; stopping");
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("reading {}: {e:#}", self.risk.alerts_topic));
            }
        }
    }
}

fn observation(a: &Assessment) -> Observation<'_> {
    Observation {
        organization_id: &a.organization_id,
        timestamp_ms: a.timestamp_ms,
        score: a.score,
        report_id: &a.report_id,
    }
}

impl Transform for RiskStreamer {
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.check_failed()?;
        let Some(a) = self.assessment(record).await? else {
            metrics::skipped("no_score");
            return Ok(Vec::new());
        };
        let tp: TopicPartition = (record.topic.clone(), record.partition);
        let now = now_ms();
        let started = Instant::now();
        let (admission, transitions) = self.state().process(&tp, &observation(&a), now);
        metrics::window_update(started.elapsed().as_secs_f64());
        if let Admission::Late { closed_until_ms } = admission {
            tracing::warn!(
                partition = record.partition,
                offset = record.offset,
                organization_id = %a.organization_id,
                timestamp = a.timestamp_ms,
                closed_until_ms,
                behind_ms = closed_until_ms - a.timestamp_ms,
                "late risk assessment left out of the window"
            );
        }
        self.alerts(&transitions, now).await
    }

    async fn replay(&self, record: &Record) -> Result<(), HandlerError> {
        self.check_failed()?;
        let a = match self.assessment(record).await {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(()),
            // dead-lettered when it was processed; a retryable error is retried
            Err(e) if e.is_retryable() => return Err(e),
            Err(_) => return Ok(()),
        };
        let tp: TopicPartition = (record.topic.clone(), record.partition);
        self.state().replay(&tp, &observation(&a), now_ms());
        metrics::replayed();
        Ok(())
    }

    async fn committed(&self) {
        let (done, organizations) = {
            let mut state = self.state();
            (state.committed(), state.organizations())
        };
        metrics::alerts(done.raised, done.cleared);
        metrics::late(done.late);
        metrics::organizations(organizations);
    }

    async fn aborted(&self, _partitions: &[(String, i32)]) {
        self.state().aborted();
    }

    async fn tick(&self, now_ms: i64) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.check_failed()?;
        let (transitions, bytes) = {
            let mut state = self.state();
            (state.tick(now_ms), state.heap_bytes())
        };
        // once per tick, not per transaction: it walks every organisation
        metrics::window_bytes(bytes);
        debug_assert!(transitions.iter().all(|t| t.edge == Edge::Cleared));
        self.alerts(&transitions, now_ms).await
    }

    async fn assigned(&self, partitions: &[(String, i32)]) {
        self.read_history().await;
        self.state().assign(partitions);
    }

    async fn revoked(&self, partitions: &[(String, i32)]) {
        self.state().revoke(partitions);
    }
}

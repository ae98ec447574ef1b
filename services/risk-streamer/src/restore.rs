//! What the committed alerts say about each organisation, read back from the
//! alerts topic when partitions are assigned: the alert state a rebuild
//! cannot derive from the replayed input (see the crate docs, "Exactly once").

use std::collections::HashMap;
use std::time::Duration;

use dora_kafka::inspect::{ReadRequest, TopicReader};
use dora_kafka::KafkaSettings;
use dora_schema::{Codec, RiskAlert, RiskAlertState};

use crate::alert::{AlertState, Edge};
use crate::partition::Hint;

/// The facts of one committed alert the rebuild needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedAlert {
    /// The organisation.
    pub organization_id: String,
    /// Which edge.
    pub edge: Edge,
    /// The second the window was evaluated at.
    pub second: i64,
    /// Scores in the window (0: the window was empty).
    pub sample_count: u64,
    /// When the breach was detected.
    pub detected_at: Option<i64>,
}

impl CommittedAlert {
    /// The facts of an alert record; `None` for a state this reader does not know.
    pub fn of(alert: &RiskAlert) -> Option<Self> {
        let edge = match alert.state {
            RiskAlertState::Raised => Edge::Raised,
            RiskAlertState::Cleared => Edge::Cleared,
            RiskAlertState::Unknown => return None,
        };
        Some(Self {
            organization_id: alert.organization_id.clone(),
            edge,
            second: alert.window_end.div_euclid(1000) - 1,
            sample_count: u64::try_from(alert.sample_count).unwrap_or(0),
            detected_at: alert.detected_at,
        })
    }
}

/// Per organisation: the state of its latest committed alert and the latest
/// second its window was declared empty.
#[derive(Debug, Default)]
pub struct AlertHistory {
    by_org: HashMap<String, Hint>,
}

impl AlertHistory {
    /// Folds in one committed alert (in the order they were written).
    pub fn record(&mut self, alert: CommittedAlert) {
        let hint = self.by_org.entry(alert.organization_id).or_default();
        if hint.decided_through.is_none_or(|last| alert.second >= last) {
            hint.decided_through = Some(alert.second);
            hint.state = match alert.edge {
                Edge::Raised => AlertState::Raised {
                    detected_at: alert.detected_at,
                },
                Edge::Cleared => AlertState::Clear,
            };
        }
        if alert.edge == Edge::Cleared && alert.sample_count == 0 {
            hint.emptied_at = Some(
                hint.emptied_at
                    .map_or(alert.second, |e| e.max(alert.second)),
            );
        }
    }

    /// What the committed alerts say about `organization_id`.
    pub fn hint(&self, organization_id: &str) -> Option<Hint> {
        self.by_org.get(organization_id).copied()
    }

    /// Takes an organisation out (its state is now this instance's own);
    /// [`put_back`](Self::put_back) returns it if that turns out premature.
    pub fn take(&mut self, organization_id: &str) -> Option<(String, Hint)> {
        self.by_org.remove_entry(organization_id)
    }

    /// Returns what [`take`](Self::take) took.
    pub fn put_back(&mut self, taken: (String, Hint)) {
        self.by_org.insert(taken.0, taken.1);
    }

    /// Organisations with a committed alert.
    pub fn len(&self) -> usize {
        self.by_org.len()
    }

    /// True when no alert was read.
    pub fn is_empty(&self) -> bool {
        self.by_org.is_empty()
    }

    /// Reads every committed alert of `topic`, waiting for transactions still
    /// open when the read began (a previous owner's last one may not have its
    /// commit markers yet). Undecodable records are skipped with a warning:
    /// they were never written by this service.
    pub async fn read(
        kafka: &KafkaSettings,
        codec: &Codec,
        topic: &str,
        stall_timeout: Duration,
    ) -> anyhow::Result<Self> {
        tracing::info!(topic, "reading the alert history");
        let mut request = ReadRequest::whole(topic).through_open_transactions();
        request.stall_timeout = stall_timeout;
        let mut reader = TopicReader::open(kafka, request).await?;
        let mut history = Self::default();
        let mut skipped = 0u64;
        while let Some(batch) = reader.next_batch().await {
            for record in batch? {
                let Some(payload) = record.payload.as_deref() else {
                    continue;
                };
                match codec.decode::<RiskAlert>(topic, payload).await {
                    Ok(alert) => {
                        if let Some(alert) = CommittedAlert::of(&alert) {
                            history.record(alert);
                        }
                    }
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "undecodable record on the alerts topic skipped");
                    }
                }
            }
        }
        tracing::info!(organizations = history.len(), skipped, "alert history read");
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(edge: Edge, second: i64, sample_count: u64) -> CommittedAlert {
        CommittedAlert {
            organization_id: "org".into(),
            edge,
            second,
            sample_count,
            detected_at: Some(7),
        }
    }

    #[test]
    fn the_latest_alert_gives_the_state_and_empty_clears_give_the_floor() {
        let mut h = AlertHistory::default();
        assert_eq!(h.hint("org"), None);
        h.record(alert(Edge::Raised, 10, 5));
        assert_eq!(
            h.hint("org"),
            Some(Hint {
                state: AlertState::Raised {
                    detected_at: Some(7)
                },
                emptied_at: None,
                decided_through: Some(10)
            })
        );
        h.record(alert(Edge::Cleared, 20, 0));
        h.record(alert(Edge::Raised, 30, 4));
        h.record(alert(Edge::Cleared, 40, 3));
        assert_eq!(
            h.hint("org"),
            Some(Hint {
                state: AlertState::Clear,
                emptied_at: Some(20),
                decided_through: Some(40)
            })
        );
        // an older alert read later (another partition) does not win
        h.record(alert(Edge::Raised, 35, 4));
        assert_eq!(h.hint("org").unwrap().state, AlertState::Clear);
        let taken = h.take("org").unwrap();
        assert!(h.is_empty());
        h.put_back(taken);
        assert_eq!(h.hint("org").unwrap().state, AlertState::Clear);
    }

    #[test]
    fn an_alert_record_says_its_window_and_state() {
        let record = RiskAlert {
            alert_id: "a".into(),
            organization_id: "org-x".into(),
            average_risk_score: 0.0,
            threshold: 0.8,
            window_start: 701_000,
            window_end: 1_001_000,
            sample_count: 0,
            timestamp: 1,
            state: RiskAlertState::Cleared,
            clear_threshold: Some(0.75),
            peak_risk_score: None,
            top_report_ids: vec![],
            detected_at: Some(3),
            initial_notification_due_by: None,
        };
        let c = CommittedAlert::of(&record).unwrap();
        assert_eq!((c.edge, c.second, c.sample_count), (Edge::Cleared, 1000, 0));
        let unknown = RiskAlert {
            state: RiskAlertState::Unknown,
            ..record
        };
        assert_eq!(CommittedAlert::of(&unknown), None);
    }
}

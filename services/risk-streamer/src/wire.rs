//! The edges of the service: a risk assessment (Avro or the seed's JSON) as
//! what the window needs, and a transition as a `RiskAlert`.

use dora_schema::{ComplianceReport, RiskAlert, RiskAlertState};

use crate::alert::{Edge, Rules, Transition};
use crate::window::{score_of, score_value, Score};

/// What one assessment contributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// The assessed organisation.
    pub organization_id: String,
    /// The report.
    pub report_id: String,
    /// Its riskScore.
    pub score: Score,
    /// Event time: the Kafka record's timestamp (the report's own when the
    /// record has none), epoch ms.
    pub timestamp_ms: i64,
}

/// Why an assessment does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotCounted {
    /// It has no riskScore (the seed sends `null` while a score is pending):
    /// skipped and counted, not dead-lettered.
    NoScore,
    /// It is invalid for a risk window (names the field): dead-lettered.
    Invalid(String),
}

/// The contribution of `report`, read from a record with Kafka timestamp
/// `record_timestamp`.
pub fn assessment(
    report: ComplianceReport,
    record_timestamp: Option<i64>,
) -> Result<Assessment, NotCounted> {
    if report.organization_id.trim().is_empty() {
        return Err(NotCounted::Invalid("organizationId is empty".into()));
    }
    let score = match report.risk_score {
        None => return Err(NotCounted::NoScore),
        Some(s) => score_of(s).map_err(NotCounted::Invalid)?,
    };
    Ok(Assessment {
        organization_id: report.organization_id,
        report_id: report.report_id,
        score,
        timestamp_ms: record_timestamp
            .filter(|t| *t >= 0)
            .unwrap_or(report.timestamp),
    })
}

/// The alert record of a transition produced at `now_ms`.
pub fn alert(t: &Transition, rules: &Rules, now_ms: i64) -> RiskAlert {
    RiskAlert {
        alert_id: t.alert_id(),
        organization_id: t.organization_id.to_string(),
        average_risk_score: t.totals.average(),
        threshold: score_value(rules.raise_above),
        window_start: t.window_start_ms(),
        window_end: t.window_end_ms(),
        sample_count: i32::try_from(t.totals.count).unwrap_or(i32::MAX),
        timestamp: now_ms,
        state: match t.edge {
            Edge::Raised => RiskAlertState::Raised,
            Edge::Cleared => RiskAlertState::Cleared,
        },
        clear_threshold: Some(score_value(rules.clear_below)),
        peak_risk_score: t.peak.map(score_value),
        top_report_ids: t.top_reports.clone(),
        detected_at: t.detected_at,
        initial_notification_due_by: t.notification_due_by(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Totals;
    use dora_schema::ReportType;
    use serde_json::json;

    fn report(score: Option<f64>) -> ComplianceReport {
        ComplianceReport {
            report_id: "r-1".into(),
            organization_id: "org-a".into(),
            timestamp: 1_000,
            report_type: ReportType::RiskAssessment,
            risk_score: score,
            risk_level: None,
            data: json!({}),
            version: "1.0".into(),
        }
    }

    #[test]
    fn event_time_is_the_records_timestamp_and_scores_are_checked() {
        let a = assessment(report(Some(0.87)), Some(5_000)).unwrap();
        assert_eq!(
            (a.score, a.timestamp_ms, a.report_id.as_str()),
            (870_000_000, 5_000, "r-1")
        );
        assert_eq!(
            assessment(report(Some(0.5)), None).unwrap().timestamp_ms,
            1_000
        );
        assert_eq!(assessment(report(None), Some(1)), Err(NotCounted::NoScore));
        assert!(
            matches!(assessment(report(Some(7.0)), Some(1)), Err(NotCounted::Invalid(m)) if m.contains("riskScore"))
        );
        let nameless = ComplianceReport {
            organization_id: " ".into(),
            ..report(Some(0.1))
        };
        assert!(
            matches!(assessment(nameless, Some(1)), Err(NotCounted::Invalid(m)) if m.contains("organizationId"))
        );
    }

    #[test]
    fn an_alert_carries_the_window_the_hysteresis_and_the_dora_clock() {
        let rules = Rules {
            window_secs: 300,
            lateness_ms: 30_000,
            raise_above: 800_000_000,
            clear_below: 750_000_000,
            top_reports: 3,
        };
        let t = Transition {
            organization_id: "org-a".into(),
            edge: Edge::Raised,
            second: 1_000,
            window_secs: 300,
            totals: Totals {
                sum: 1_700_000_000,
                count: 2,
            },
            peak: Some(900_000_000),
            top_reports: vec!["r-9".into(), "r-1".into()],
            detected_at: Some(2_000_000),
        };
        let a = alert(&t, &rules, 2_000_001);
        assert_eq!(a.state, RiskAlertState::Raised);
        assert_eq!(
            (a.window_start, a.window_end, a.sample_count),
            (701_000, 1_001_000, 2)
        );
        assert!((a.average_risk_score - 0.85).abs() < 1e-12);
        assert_eq!(
            (a.threshold, a.clear_threshold, a.peak_risk_score),
            (0.8, Some(0.75), Some(0.9))
        );
        assert_eq!(
            a.initial_notification_due_by,
            Some(2_000_000 + 24 * 3_600_000)
        );
        assert_eq!(a.alert_id, "org-a/RAISED/1001000");
        assert_eq!(a.timestamp, 2_000_001);
    }
}

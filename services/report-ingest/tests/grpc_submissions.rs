//! Submissions over gRPC: a gap and a risk assessment land on their topics as
//! Confluent-framed Avro, keyed by organisation, with the seed's fields; each
//! has its audit event on user-activities; the same request id submitted
//! again yields a record with the same report id.

mod common;

use anyhow::{ensure, Context, Result};
use common::Scenario;
use dora_schema::{ReportType, RiskLevel};
use dora_testkit as tk;
use report_ingest::client;
use serde_json::json;

#[tokio::test]
async fn submissions_become_reports_with_audit_events_and_keep_their_id_on_retry() -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut ingest = scenario.start(&tk::unique("report-ingest")).await?;
    let mut c = scenario
        .client(&mut ingest, "risk-team", &["org-a", "org-b"])
        .await?;

    let gap_data = json!({"framework": "DORA", "gaps": [{"article": "Art. 11", "status": "missing"}], "summary": {"missing": 1}});
    let gap = c
        .submit_gap_assessment(client::gap_request("org-a", &gap_data.to_string(), "req-1"))
        .await?
        .into_inner();
    let risk_data = json!({"factors": {"third_party": 0.9}});
    let risk = c
        .submit_risk_assessment(client::risk_request(
            "org-b",
            &risk_data.to_string(),
            "req-2",
            Some(0.87),
            Some("HIGH"),
        )?)
        .await?
        .into_inner();
    // A client that lost the answer sends the same request again.
    let again = c
        .submit_gap_assessment(client::gap_request("org-a", &gap_data.to_string(), "req-1"))
        .await?
        .into_inner();
    ensure!(
        again.report_id == gap.report_id,
        "a retry changed the report id"
    );
    ensure!(gap.report_id != risk.report_id);
    ensure!(gap.topic == scenario.gap_topic && risk.topic == scenario.risk_topic);
    // Each answer names where its report is.
    for answer in [&gap, &risk, &again] {
        scenario.holds_answered_report(answer).await?;
    }

    // Answered only after the ack: the records are there now.
    let reports = scenario.reports().await?;
    ensure!(reports.len() == 3, "{reports:?}");
    let gaps: Vec<_> = reports
        .iter()
        .filter(|(_, r)| r.report_type == ReportType::GapAssessment)
        .collect();
    ensure!(
        gaps.len() == 2
            && gaps
                .iter()
                .all(|(k, r)| k == "org-a" && r.report_id == gap.report_id)
    );
    let (_, g) = gaps[0];
    ensure!(g.organization_id == "org-a" && g.data == gap_data && g.version == "1.0");
    ensure!(g.risk_score.is_none() && g.risk_level.is_none() && g.timestamp == gap.timestamp);
    let (key, r) = reports
        .iter()
        .find(|(_, r)| r.report_type == ReportType::RiskAssessment)
        .context("risk report")?;
    ensure!(key == "org-b" && r.report_id == risk.report_id);
    ensure!(r.risk_score == Some(0.87) && r.risk_level == Some(RiskLevel::High));
    ensure!(
        r.data
            == json!({"factors": {"third_party": 0.9}, "overall_score": 0.87, "risk_level": "HIGH"}),
        "{}",
        r.data
    );

    let audits = scenario.audit_events().await?;
    ensure!(audits.len() == 3, "{audits:?}");
    for a in &audits {
        ensure!(
            a.user_id == "risk-team" && a.ip_address.as_deref() == Some("127.0.0.1"),
            "{a:?}"
        );
    }
    let gap_audits = audits
        .iter()
        .filter(|a| a.resource == gap.report_id && a.action == "SUBMIT_GAP_ASSESSMENT")
        .count();
    ensure!(gap_audits == 2, "{audits:?}");
    let risk_audit = audits
        .iter()
        .find(|a| a.resource == risk.report_id)
        .context("risk audit")?;
    ensure!(
        risk_audit.action == "SUBMIT_RISK_ASSESSMENT"
            && risk_audit.details["request_id"] == "req-2"
    );

    let status = ingest.process.terminate(tk::DEADLINE).await?;
    ensure!(status.success(), "exit {status}\n{}", ingest.process.log());
    Ok(())
}

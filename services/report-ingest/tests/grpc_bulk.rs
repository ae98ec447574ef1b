//! SubmitAssessments: a mixed call (a valid gap and risk assessment, an
//! invalid one, one for an organisation the caller may not submit for, an
//! empty item) is answered per submission in order, with the unary calls'
//! codes and the field named under its index; exactly the valid ones are on
//! their topics, each with its audit event. The same call again yields the
//! same report ids. Over the item limit, empty, or without a token, the whole call
//! is refused and nothing is produced. `report-submit` submits an array file
//! with it, one line per item.

mod common;

use anyhow::{ensure, Context, Result};
use common::Scenario;
use dora_proto::report::v1 as pb;
use dora_proto::report::v1::report_ingest_client::ReportIngestClient;
use dora_testkit as tk;
use pb::submission::Assessment as Item;
use pb::submission_result::Outcome;
use report_ingest::client;
use serde_json::{json, Value};
use tonic::Code;

fn item(a: Item) -> pb::Submission {
    pb::Submission {
        assessment: Some(a),
    }
}

/// Valid gap (org-a), valid risk (org-b), invalid gap, another organisation, empty.
fn mixed() -> Result<Vec<pb::Submission>> {
    let gap = json!({"gaps": [{"article": "Art. 11", "status": "missing"}]}).to_string();
    let bad = json!({"gaps": [{"article": 9}, {"article": "Art. 99"}]}).to_string();
    Ok(vec![
        item(Item::Gap(client::gap_request("org-a", &gap, "bulk-0"))),
        item(Item::Risk(client::risk_request(
            "org-b",
            "{}",
            "bulk-1",
            Some(0.91),
            Some("CRITICAL"),
        )?)),
        item(Item::Gap(client::gap_request("org-a", &bad, "bulk-2"))),
        item(Item::Gap(client::gap_request("org-c", &gap, "bulk-3"))),
        pb::Submission { assessment: None },
    ])
}

/// The report ids of the accepted items; the refused ones checked.
fn check_results(scenario: &Scenario, results: &[pb::SubmissionResult]) -> Result<[String; 2]> {
    ensure!(results.len() == 5, "{results:?}");
    let report = |i: usize| match &results[i].outcome {
        Some(Outcome::Report(r)) => Ok(r.clone()),
        other => anyhow::bail!("item {i}: {other:?}"),
    };
    let error = |i: usize, code: Code, field: &str| match &results[i].outcome {
        Some(Outcome::Error(e)) if e.code == code as i32 && e.message.starts_with(field) => Ok(()),
        other => anyhow::bail!("item {i}: expected {code:?} naming {field}, got {other:?}"),
    };
    let (gap, risk) = (report(0)?, report(1)?);
    ensure!(gap.topic == scenario.gap_topic && risk.topic == scenario.risk_topic);
    error(
        2,
        Code::InvalidArgument,
        "submissions[2].data_json.gaps[1].article: ",
    )?;
    error(
        3,
        Code::PermissionDenied,
        "submissions[3].organization_id: ",
    )?;
    error(4, Code::InvalidArgument, "submissions[4]: ")?;
    Ok([gap.report_id, risk.report_id])
}

/// Each report answered in `results` is at the topic, partition and offset
/// its answer names (positions exist only once the broker acknowledged).
async fn answered_positions_hold_their_reports(
    scenario: &Scenario,
    results: &[pb::SubmissionResult],
) -> Result<()> {
    for result in results {
        if let Some(Outcome::Report(answer)) = &result.outcome {
            scenario.holds_answered_report(answer).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_bulk_call_is_answered_per_submission_and_a_retry_keeps_the_ids() -> Result<()> {
    let scenario = Scenario::new().await?;
    let limit = [("DORA_INGEST__MAX_BULK_SUBMISSIONS", "5".to_string())];
    let mut ingest = scenario
        .start_with(&tk::unique("report-ingest"), &limit)
        .await?;
    let url = ingest.grpc_url().await?;
    let mut c = scenario
        .client(&mut ingest, "risk-team", &["org-a", "org-b"])
        .await?;
    let call = |s: Vec<pb::Submission>| pb::SubmitAssessmentsRequest { submissions: s };

    let results = c
        .submit_assessments(call(mixed()?))
        .await?
        .into_inner()
        .results;
    let ids = check_results(&scenario, &results)?;
    answered_positions_hold_their_reports(&scenario, &results).await?;
    // Answered after the acks: exactly the two valid reports are there, keyed by organisation.
    let reports = scenario.reports().await?;
    let mut found: Vec<(String, String)> = reports
        .iter()
        .map(|(k, r)| (k.clone(), r.report_id.clone()))
        .collect();
    found.sort();
    let mut want = vec![
        ("org-a".to_string(), ids[0].clone()),
        ("org-b".into(), ids[1].clone()),
    ];
    want.sort();
    ensure!(found == want, "{found:?}");
    let risk = reports
        .iter()
        .find(|(_, r)| r.report_id == ids[1])
        .context("risk")?;
    ensure!(risk.1.risk_score == Some(0.91), "{:?}", risk.1);
    let audits = scenario.audit_events().await?;
    let mut audited: Vec<(&str, &str, &Value)> = audits
        .iter()
        .map(|a| {
            (
                a.resource.as_str(),
                a.action.as_str(),
                &a.details["request_id"],
            )
        })
        .collect();
    audited.sort_by_key(|a| a.2.to_string());
    ensure!(
        audited
            == [
                (ids[0].as_str(), "SUBMIT_GAP_ASSESSMENT", &json!("bulk-0")),
                (ids[1].as_str(), "SUBMIT_RISK_ASSESSMENT", &json!("bulk-1")),
            ],
        "{audits:?}"
    );
    ensure!(audits.iter().all(|a| a.user_id == "risk-team"));

    // The same call again (a client that lost the answer): the same report ids.
    let again = c
        .submit_assessments(call(mixed()?))
        .await?
        .into_inner()
        .results;
    ensure!(
        check_results(&scenario, &again)? == ids,
        "a retried call changed the ids"
    );
    ensure!(scenario.records_on_outputs().await? == 8);

    // Over the limit, and without a token: the whole call refused, nothing produced.
    let mut six = mixed()?;
    six.push(six[0].clone());
    let err = c.submit_assessments(call(six)).await.unwrap_err();
    ensure!(
        err.code() == Code::InvalidArgument && err.message().starts_with("submissions: 6 given"),
        "{err:?}"
    );
    let err = c.submit_assessments(call(vec![])).await.unwrap_err();
    ensure!(
        err.code() == Code::InvalidArgument && err.message().starts_with("submissions: 0 given"),
        "{err:?}"
    );
    let err = ReportIngestClient::new(client::connect(&url).await?)
        .submit_assessments(call(mixed()?))
        .await
        .unwrap_err();
    ensure!(err.code() == Code::Unauthenticated, "{err:?}");
    ensure!(
        scenario.records_on_outputs().await? == 8,
        "a refused call produced something"
    );

    let status = ingest.process.terminate(tk::DEADLINE).await?;
    ensure!(status.success(), "exit {status}\n{}", ingest.process.log());
    Ok(())
}

#[tokio::test]
async fn report_submit_sends_an_array_file_in_one_call_and_prints_a_line_per_item() -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut ingest = scenario.start(&tk::unique("report-ingest")).await?;
    let url = ingest.grpc_url().await?;
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, scenario.token("operator", &["org-a"])?)?;
    let array = dir.path().join("batch.json");
    let items = json!([{"gaps": [{"article": 28}]}, {"gaps": [{"article": 46}]}, {"gaps": []}]);
    std::fs::write(&array, items.to_string())?;
    let single = dir.path().join("one.json");
    std::fs::write(&single, r#"{"gaps": [], "note": "one"}"#)?;
    let submit = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_report-submit"))
            .args(["--url", &url, "--token-file"])
            .arg(&token)
            .args(["gap", "--org", "org-a"])
            .arg(file)
            .output()
    };

    let out = submit(&array)?;
    ensure!(!out.status.success(), "an item was refused: exit status 1");
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(lines.len() == 3, "{lines:?}");
    ensure!(lines.iter().enumerate().all(|(i, l)| l["index"] == i));
    ensure!(lines[0]["report_id"].is_string() && lines[2]["report_id"].is_string());
    ensure!(
        lines[1]["error"]["code"] == "InvalidArgument",
        "{}",
        lines[1]
    );
    let message = lines[1]["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.starts_with("submissions[1].data_json.gaps[0].article"),
        "{message}"
    );

    let out = submit(&single)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        line["report_id"].is_string() && line.get("index").is_none(),
        "{line}"
    );

    let mut ids: Vec<String> = scenario
        .reports()
        .await?
        .into_iter()
        .map(|(_, r)| r.report_id)
        .collect();
    ids.sort();
    let mut printed = vec![
        lines[0]["report_id"].as_str(),
        lines[2]["report_id"].as_str(),
        line["report_id"].as_str(),
    ]
    .into_iter()
    .map(|s| s.unwrap_or_default().to_string())
    .collect::<Vec<_>>();
    printed.sort();
    ensure!(ids == printed, "{ids:?} vs {printed:?}");
    let status = ingest.process.terminate(tk::DEADLINE).await?;
    ensure!(status.success(), "exit {status}\n{}", ingest.process.log());
    Ok(())
}

//! A report-ingest client as operators, tests and the benchmark use it:
//! connect, authenticate with a bearer token, and build submissions from an
//! assessment file (the seed's dicts as JSON).

use std::time::Duration;

use anyhow::{bail, Context};
use dora_auth::BearerToken;
use dora_proto::report::v1 as pb;
use dora_proto::report::v1::report_ingest_client::ReportIngestClient;
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::assessment::REPORT_ID_NAMESPACE;

/// A client whose calls carry a bearer token.
pub type ReportClient = ReportIngestClient<InterceptedService<Channel, BearerToken>>;

/// Connects to report-ingest at `url` (e.g. `http://127.0.0.1:50052`).
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// A client on `channel` authenticating with `token`.
pub fn with_token(channel: Channel, token: &str) -> anyhow::Result<ReportClient> {
    Ok(ReportIngestClient::with_interceptor(
        channel,
        BearerToken::new(token).context("the token is not valid header text")?,
    ))
}

/// The request id of a submission when the operator gives none: derived from
/// what is submitted, so running the same command again is the same submission.
pub fn content_request_id(kind: &str, organization_id: &str, assessment: &[u8]) -> String {
    let mut name = format!("{kind}\n{organization_id}\n").into_bytes();
    name.extend_from_slice(assessment);
    format!(
        "file-{}",
        uuid::Uuid::new_v5(&REPORT_ID_NAMESPACE, &name).simple()
    )
}

/// A gap assessment submission of `assessment` (a JSON object's text).
pub fn gap_request(
    organization_id: &str,
    assessment: &str,
    request_id: &str,
) -> pb::SubmitGapAssessmentRequest {
    pb::SubmitGapAssessmentRequest {
        organization_id: organization_id.to_string(),
        data_json: assessment.to_string(),
        request_id: request_id.to_string(),
    }
}

/// A risk assessment submission; score and level default to the assessment's
/// `overall_score` and `risk_level` (the seed's `risk_data` keys).
pub fn risk_request(
    organization_id: &str,
    assessment: &str,
    request_id: &str,
    score: Option<f64>,
    level: Option<&str>,
) -> anyhow::Result<pb::SubmitRiskAssessmentRequest> {
    let data: Value = serde_json::from_str(assessment).context("the assessment is not JSON")?;
    let overall_score = score.or_else(|| data.get("overall_score").and_then(Value::as_f64));
    let risk_level = match level {
        Some(l) => l.to_string(),
        None => match data.get("risk_level").and_then(Value::as_str) {
            Some(l) => l.to_string(),
            None => bail!("no risk level: pass --level or put risk_level in the assessment"),
        },
    };
    Ok(pb::SubmitRiskAssessmentRequest {
        organization_id: organization_id.to_string(),
        overall_score,
        risk_level,
        data_json: assessment.to_string(),
        request_id: request_id.to_string(),
    })
}

/// Which kind of assessment a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Gap assessments.
    Gap,
    /// Risk assessments, with the score and level given on the command line (if any).
    Risk,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Gap => "gap",
            FileKind::Risk => "risk",
        }
    }
}

/// The submissions of an array of assessments (JSON objects) of one kind for
/// `organization_id`: item `j`'s request id is `<request_id>-<j>`, or without
/// one derived from the item's contents (so submitting the same file again
/// yields the same report ids). Risk items take score and level from
/// `score`/`level` or from their own `overall_score`/`risk_level`.
pub fn submissions(
    kind: FileKind,
    organization_id: &str,
    items: &[Value],
    request_id: Option<&str>,
    risk: (Option<f64>, Option<&str>),
) -> anyhow::Result<Vec<pb::Submission>> {
    use pb::submission::Assessment;
    let mut out = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let text = item.to_string();
        let id = match request_id {
            Some(r) => format!("{r}-{j}"),
            None => content_request_id(kind.name(), organization_id, text.as_bytes()),
        };
        let assessment = match kind {
            FileKind::Gap => Assessment::Gap(gap_request(organization_id, &text, &id)),
            FileKind::Risk => Assessment::Risk(
                risk_request(organization_id, &text, &id, risk.0, risk.1)
                    .with_context(|| format!("assessment [{j}]"))?,
            ),
        };
        out.push(pb::Submission {
            assessment: Some(assessment),
        });
    }
    Ok(out)
}

/// One line of output for submission `index`'s result: where its report
/// went, or its error (code name and message).
pub fn result_line(index: usize, result: &pb::SubmissionResult) -> Value {
    use pb::submission_result::Outcome;
    match &result.outcome {
        Some(Outcome::Report(r)) => serde_json::json!({"index": index, "report_id": r.report_id,
            "timestamp": r.timestamp, "topic": r.topic, "partition": r.partition, "offset": r.offset}),
        Some(Outcome::Error(e)) => serde_json::json!({"index": index,
            "error": {"code": format!("{:?}", tonic::Code::from_i32(e.code)), "message": e.message}}),
        None => {
            serde_json::json!({"index": index, "error": {"code": "Unknown", "message": "no outcome"}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_is_the_same_submission() {
        let a = content_request_id("gap", "org-1", b"{}");
        assert_eq!(a, content_request_id("gap", "org-1", b"{}"));
        assert_ne!(a, content_request_id("risk", "org-1", b"{}"));
        assert_ne!(a, content_request_id("gap", "org-2", b"{}"));
        assert_ne!(a, content_request_id("gap", "org-1", b"{ }"));
    }

    #[test]
    fn array_items_get_their_own_request_ids() {
        let items = vec![
            serde_json::json!({"gaps": []}),
            serde_json::json!({"gaps": [1]}),
        ];
        let ids = |r: Option<&str>| -> Vec<String> {
            submissions(FileKind::Gap, "o", &items, r, (None, None))
                .unwrap()
                .into_iter()
                .map(|s| match s.assessment {
                    Some(pb::submission::Assessment::Gap(g)) => g.request_id,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(ids(Some("batch")), ["batch-0", "batch-1"]);
        let derived = ids(None);
        assert_ne!(derived[0], derived[1]);
        assert_eq!(derived, ids(None));
        let risky = [serde_json::json!({"overall_score": 0.5})];
        let e = submissions(FileKind::Risk, "o", &risky, None, (None, None)).unwrap_err();
        assert!(format!("{e:#}").starts_with("assessment [0]"), "{e:#}");
    }

    #[test]
    fn risk_requests_read_score_and_level_from_the_seeds_keys() {
        let r = risk_request(
            "o",
            r#"{"overall_score": 0.87, "risk_level": "HIGH"}"#,
            "r",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (r.overall_score, r.risk_level.as_str()),
            (Some(0.87), "HIGH")
        );
        let r = risk_request(
            "o",
            r#"{"overall_score": 0.87, "risk_level": "HIGH"}"#,
            "r",
            Some(0.5),
            Some("LOW"),
        )
        .unwrap();
        assert_eq!((r.overall_score, r.risk_level.as_str()), (Some(0.5), "LOW"));
        assert!(risk_request("o", "{}", "r", Some(0.5), None).is_err());
    }
}

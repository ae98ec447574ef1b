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

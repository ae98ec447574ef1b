//! Refused submissions: no or a forged token, another organisation, an
//! out-of-range score, NaN, an unknown risk level, an unknown DORA article,
//! oversize data, invalid UTF-8, a missing request id: each gets its status
//! code naming the field, and nothing reaches the report or audit topics
//! (only the one valid submission sent last).

mod common;

use anyhow::{ensure, Result};
use common::Scenario;
use dora_proto::report::v1 as pb;
use dora_proto::report::v1::report_ingest_client::ReportIngestClient;
use dora_testkit as tk;
use report_ingest::client;
use tonic::Code;

/// `SubmitGapAssessmentRequest` with `data_json` declared as bytes: same wire
/// format, but it can carry invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGapRequest {
    #[prost(string, tag = "1")]
    organization_id: String,
    #[prost(bytes = "vec", tag = "2")]
    data_json: Vec<u8>,
    #[prost(string, tag = "3")]
    request_id: String,
}

async fn submit_raw(url: &str, token: &str, req: RawGapRequest) -> Result<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(client::connect(url).await?);
    grpc.ready().await?;
    let mut request = tonic::Request::new(req);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/dora.report.v1.ReportIngest/SubmitGapAssessment",
    );
    let codec = tonic_prost::ProstCodec::<RawGapRequest, pb::SubmitReportResponse>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => anyhow::bail!("invalid UTF-8 was accepted"),
        Err(status) => Ok(status),
    }
}

fn risk(score: Option<f64>, level: &str) -> pb::SubmitRiskAssessmentRequest {
    pb::SubmitRiskAssessmentRequest {
        organization_id: "org-a".into(),
        overall_score: score,
        risk_level: level.into(),
        data_json: "{}".into(),
        request_id: "req-risk".into(),
    }
}

#[tokio::test]
async fn refused_submissions_get_their_code_and_produce_nothing() -> Result<()> {
    let scenario = Scenario::new().await?;
    let mut ingest = scenario.start(&tk::unique("report-ingest")).await?;
    let url = ingest.grpc_url().await?;
    let gap = |org: &str, data: &str| client::gap_request(org, data, "req-gap");

    // No token, and a token signed with another key.
    let err = ReportIngestClient::new(client::connect(&url).await?)
        .submit_gap_assessment(gap("org-a", "{}"))
        .await
        .unwrap_err();
    ensure!(err.code() == Code::Unauthenticated, "{err:?}");
    let forged = dora_auth::TokenKey::new(&[7u8; 32])?.issue(
        &dora_auth::Grant::new(
            "mallory",
            "report-ingest",
            std::time::Duration::from_secs(60),
        )
        .with_org("org-a"),
    )?;
    let err = client::with_token(client::connect(&url).await?, &forged)?
        .submit_gap_assessment(gap("org-a", "{}"))
        .await
        .unwrap_err();
    ensure!(err.code() == Code::Unauthenticated, "{err:?}");

    // A principal of org-a submitting for org-b, both kinds.
    let mut c = scenario.client(&mut ingest, "team-a", &["org-a"]).await?;
    let err = c
        .submit_gap_assessment(gap("org-b", "{}"))
        .await
        .unwrap_err();
    ensure!(
        err.code() == Code::PermissionDenied && err.message().starts_with("organization_id"),
        "{err:?}"
    );
    let err = c
        .submit_risk_assessment(pb::SubmitRiskAssessmentRequest {
            organization_id: "org-b".into(),
            ..risk(Some(0.5), "LOW")
        })
        .await
        .unwrap_err();
    ensure!(err.code() == Code::PermissionDenied, "{err:?}");

    // Invalid fields, each named.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(65_536));
    let gap_cases: Vec<(pb::SubmitGapAssessmentRequest, &str)> = vec![
        (
            gap("org-a", r#"{"gaps": [{"article": "Art. 99"}]}"#),
            "data_json.gaps[0].article",
        ),
        (
            gap("org-a", r#"{"findings": [{"article": 4}]}"#),
            "data_json.findings[0].article",
        ),
        (gap("org-a", &big), "data_json"),
        (gap("org-a", "[1, 2]"), "data_json"),
        (gap("org a", "{}"), "organization_id"),
        (client::gap_request("org-a", "{}", ""), "request_id"),
    ];
    for (req, field) in gap_cases {
        let err = c.submit_gap_assessment(req).await.unwrap_err();
        ensure!(err.code() == Code::InvalidArgument, "{field}: {err:?}");
        ensure!(
            err.message().starts_with(field),
            "expected {field} to be named: {}",
            err.message()
        );
    }
    let risk_cases: Vec<(pb::SubmitRiskAssessmentRequest, &str)> = vec![
        (risk(Some(1.5), "HIGH"), "overall_score"),
        (risk(Some(-0.01), "LOW"), "overall_score"),
        (risk(Some(f64::NAN), "HIGH"), "overall_score"),
        (risk(None, "HIGH"), "overall_score"),
        (risk(Some(0.5), "EXTREME"), "risk_level"),
        (risk(Some(0.5), "UNKNOWN"), "risk_level"),
        (
            pb::SubmitRiskAssessmentRequest {
                data_json: r#"{"overall_score": 0.1}"#.into(),
                ..risk(Some(0.5), "LOW")
            },
            "data_json.overall_score",
        ),
    ];
    for (req, field) in risk_cases {
        let err = c.submit_risk_assessment(req).await.unwrap_err();
        ensure!(err.code() == Code::InvalidArgument, "{field}: {err:?}");
        ensure!(
            err.message().starts_with(field),
            "expected {field} to be named: {}",
            err.message()
        );
    }

    // Invalid UTF-8 in a string field: INVALID_ARGUMENT naming the field.
    let status = submit_raw(
        &url,
        &scenario.token("team-a", &["org-a"])?,
        RawGapRequest {
            organization_id: "org-a".into(),
            data_json: vec![b'{', 0xff, 0xfe, b'}'],
            request_id: "req-utf8".into(),
        },
    )
    .await?;
    ensure!(
        status.code() == Code::InvalidArgument && status.message().contains("data_json"),
        "{status:?}"
    );

    // A request frame over the 128 KiB request limit.
    let err = c
        .submit_gap_assessment(gap("org-a", &"x".repeat(140_000)))
        .await
        .unwrap_err();
    ensure!(err.code() == Code::OutOfRange, "{err:?}");

    // Nothing of that reached a topic; one valid submission does, with its audit event.
    ensure!(
        scenario.records_on_outputs().await? == 0,
        "a refused submission reached a topic"
    );
    c.submit_risk_assessment(risk(Some(0.5), "MEDIUM")).await?;
    ensure!(
        scenario.records_on_outputs().await? == 2,
        "exactly the valid report and its audit event"
    );

    let status = ingest.process.terminate(tk::DEADLINE).await?;
    ensure!(status.success(), "exit {status}\n{}", ingest.process.log());
    Ok(())
}

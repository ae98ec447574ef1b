//! `report-submit`: submits a gap or risk assessment from a JSON file to
//! report-ingest, as an operator would, and prints where the report went.
//!
//! `report-submit --token-file t gap --org bank-1 assessment.json`
//! `report-submit --token-file t risk --org bank-1 risk.json` (score and level
//! from the file's `overall_score` / `risk_level`, or `--score` / `--level`).
//! Without `--request-id` the request id is derived from the file's contents:
//! running the same command again yields the same report id.
//!
//! A file holding an array of assessments (JSON objects, all of the command's
//! kind and organisation) is submitted with SubmitAssessments, `--bulk` per
//! call; one line per assessment, in the file's order: where its report went
//! or its error. Item `j`'s request id is `<--request-id>-<j>`, or derived
//! from the item's contents. Exit status 1 when any item was refused.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use report_ingest::client::{self, FileKind, ReportClient};
use serde_json::Value;

/// Submit an assessment to report-ingest.
#[derive(Debug, Parser)]
#[command(name = "report-submit", version)]
struct Args {
    /// report-ingest's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    url: String,
    /// File holding the bearer token (`dora-token --audience report-ingest --org ...`).
    #[arg(long, env = "REPORT_SUBMIT_TOKEN_FILE")]
    token_file: PathBuf,
    /// Assessments per SubmitAssessments call when the file holds an array
    /// (at most the service's `max_bulk_submissions`, 500 by default).
    #[arg(long, default_value_t = 500)]
    bulk: usize,
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Debug, Subcommand)]
enum Kind {
    /// A DORA gap assessment.
    Gap {
        /// The assessed organisation.
        #[arg(long)]
        org: String,
        /// The submission's id (default: derived from the file's contents).
        #[arg(long)]
        request_id: Option<String>,
        /// The assessment: a JSON object, or an array of them.
        file: PathBuf,
    },
    /// A risk assessment.
    Risk {
        /// The assessed organisation.
        #[arg(long)]
        org: String,
        /// The submission's id (default: derived from the file's contents).
        #[arg(long)]
        request_id: Option<String>,
        /// Overall score in [0, 1] (default: the file's `overall_score`).
        #[arg(long)]
        score: Option<f64>,
        /// LOW, MEDIUM, HIGH or CRITICAL (default: the file's `risk_level`).
        #[arg(long)]
        level: Option<String>,
        /// The assessment: a JSON object, or an array of them.
        file: PathBuf,
    },
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = read(&args.token_file)?;
    let mut client = client::with_token(client::connect(&args.url).await?, token.trim())?;
    let (kind, org, request_id, file, risk) = match &args.kind {
        Kind::Gap {
            org,
            request_id,
            file,
        } => (FileKind::Gap, org, request_id, file, (None, None)),
        Kind::Risk {
            org,
            request_id,
            score,
            level,
            file,
        } => (
            FileKind::Risk,
            org,
            request_id,
            file,
            (*score, level.as_deref()),
        ),
    };
    let text = read(file)?;
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) {
        let submissions = client::submissions(kind, org, &items, request_id.as_deref(), risk)?;
        return submit_all(&mut client, submissions, args.bulk).await;
    }
    let answer = match kind {
        FileKind::Gap => {
            let id = request_id
                .clone()
                .unwrap_or_else(|| client::content_request_id("gap", org, text.as_bytes()));
            client
                .submit_gap_assessment(client::gap_request(org, &text, &id))
                .await
        }
        FileKind::Risk => {
            let id = request_id
                .clone()
                .unwrap_or_else(|| client::content_request_id("risk", org, text.as_bytes()));
            let req = client::risk_request(org, &text, &id, risk.0, risk.1)?;
            client.submit_risk_assessment(req).await
        }
    };
    let r = answer
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    println!(
        "{}",
        serde_json::json!({"report_id": r.report_id, "timestamp": r.timestamp, "topic": r.topic, "partition": r.partition, "offset": r.offset})
    );
    Ok(())
}

/// Submits `submissions` `bulk` per call, printing one line per submission;
/// fails when any was refused.
async fn submit_all(
    client: &mut ReportClient,
    submissions: Vec<dora_proto::report::v1::Submission>,
    bulk: usize,
) -> anyhow::Result<()> {
    let (mut index, mut refused) = (0, 0);
    for chunk in submissions.chunks(bulk.max(1)) {
        let request = dora_proto::report::v1::SubmitAssessmentsRequest {
            submissions: chunk.to_vec(),
        };
        let results = client
            .submit_assessments(request)
            .await
            .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
            .into_inner()
            .results;
        for result in &results {
            let line = client::result_line(index, result);
            refused += usize::from(line.get("error").is_some());
            println!("{line}");
            index += 1;
        }
    }
    anyhow::ensure!(refused == 0, "{refused} of {index} assessments refused");
    Ok(())
}

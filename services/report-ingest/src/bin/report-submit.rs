//! `report-submit`: submits a gap or risk assessment from a JSON file to
//! report-ingest, as an operator would, and prints where the report went.
//!
//! `report-submit --token-file t gap --org bank-1 assessment.json`
//! `report-submit --token-file t risk --org bank-1 risk.json` (score and level
//! from the file's `overall_score` / `risk_level`, or `--score` / `--level`).
//! Without `--request-id` the request id is derived from the file's contents:
//! running the same command again yields the same report id.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use report_ingest::client;

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
        /// The assessment: a JSON object.
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
        /// The assessment: a JSON object.
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
    let answer = match &args.kind {
        Kind::Gap {
            org,
            request_id,
            file,
        } => {
            let text = read(file)?;
            let id = request_id
                .clone()
                .unwrap_or_else(|| client::content_request_id("gap", org, text.as_bytes()));
            client
                .submit_gap_assessment(client::gap_request(org, &text, &id))
                .await
        }
        Kind::Risk {
            org,
            request_id,
            score,
            level,
            file,
        } => {
            let text = read(file)?;
            let id = request_id
                .clone()
                .unwrap_or_else(|| client::content_request_id("risk", org, text.as_bytes()));
            let req = client::risk_request(org, &text, &id, *score, level.as_deref())?;
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

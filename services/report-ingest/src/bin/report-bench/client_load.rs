//! The gRPC load in a process of its own: report-bench starts itself again
//! with `--client-of ADDR` (token in `REPORT_BENCH_TOKEN`), so the service's
//! process CPU is the service's alone and the client's is counted apart. The
//! child connects `--channels` connections, makes [`WARM_UP_CALLS`] untimed
//! calls per caller, says `warm`, waits for `go` on stdin, makes
//! `--submissions` calls with `--callers` tasks, each awaiting its answer
//! (the report id, sent after the broker acknowledged) before the next, and
//! answers `done <seconds> <cpu seconds>`. With `--health-load` the calls
//! are the standard gRPC health check the same server answers instead: the
//! cost of a unary call through this gRPC stack with nothing behind it. With
//! `--bulk-load` each call is one SubmitAssessments of `--bulk` submissions,
//! and `--submissions` counts submissions, not calls.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use dora_proto::report::v1 as pb;
use report_ingest::client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::baselines::cpu_seconds;
use crate::{Args, WARM_UP_CALLS};

/// The environment variable the child reads its bearer token from.
const TOKEN_VAR: &str = "REPORT_BENCH_TOKEN";

/// The assessment every call submits.
pub const DATA: &str = r#"{"framework":"DORA","gaps":[{"article":"Art. 11","status":"missing"}]}"#;

/// What the client process's calls are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SubmitGapAssessment, `--callers` concurrent.
    Unary,
    /// The gRPC health check, `--callers` concurrent.
    Health,
    /// SubmitAssessments of `--bulk` submissions, `--bulk-callers` concurrent.
    Bulk,
}

/// The client process, warmed up and waiting for `go`.
pub struct Load {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Load {
    /// Starts the client process against `addr` and waits until it is warm.
    pub async fn start(addr: &str, token: &str, args: &Args, mode: Mode) -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        let (mut callers, mut submissions) = (args.callers, args.submissions);
        match mode {
            Mode::Unary => {}
            Mode::Health => {
                command.arg("--health-load");
            }
            Mode::Bulk => {
                command.args(["--bulk-load", "--bulk", &args.bulk.to_string()]);
                callers = args.bulk_callers;
                submissions = crate::bulk_submissions(args);
            }
        }
        let mut child = command
            .args(["--client-of", addr])
            .args(["--submissions", &submissions.to_string()])
            .args(["--callers", &callers.to_string()])
            .args(["--channels", &args.channels.to_string()])
            .env(TOKEN_VAR, token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the client process")?;
        let stdout = child.stdout.take().context("client stdout")?;
        let mut load = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        load.expect("warm").await?;
        Ok(load)
    }

    async fn expect(&mut self, word: &str) -> anyhow::Result<String> {
        match self.lines.next_line().await? {
            Some(line) if line.starts_with(word) => Ok(line),
            other => bail!("the client process said {other:?}, not {word}"),
        }
    }

    /// Lets the timed calls go; returns their seconds and the client's CPU seconds.
    pub async fn run(mut self) -> anyhow::Result<(f64, f64)> {
        let stdin = self.child.stdin.as_mut().context("client stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        let line = self.expect("done").await?;
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "the client process failed: {status}");
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        match f[..] {
            [seconds, cpu] => Ok((seconds, cpu)),
            _ => bail!("the client process said {line:?}"),
        }
    }
}

/// One caller's clients: it submits, or with `--health-load` checks health.
struct Caller {
    submit: client::ReportClient,
    health: Option<HealthClient<tonic::transport::Channel>>,
    /// Submissions per call, with `--bulk-load`.
    bulk: Option<usize>,
}

impl Caller {
    /// One call, answered (a health check must answer SERVING, a bulk call
    /// must have every submission accepted).
    async fn call(&mut self, request_id: &str) -> anyhow::Result<()> {
        if let Some(n) = self.bulk {
            let submissions = (0..n)
                .map(|j| pb::Submission {
                    assessment: Some(pb::submission::Assessment::Gap(client::gap_request(
                        "org-bench",
                        DATA,
                        &format!("bulk-{request_id}-{j}"),
                    ))),
                })
                .collect();
            let results = self
                .submit
                .submit_assessments(pb::SubmitAssessmentsRequest { submissions })
                .await?
                .into_inner()
                .results;
            let accepted = results
                .iter()
                .filter(|r| matches!(r.outcome, Some(pb::submission_result::Outcome::Report(_))))
                .count();
            anyhow::ensure!(accepted == n, "{accepted} of {n} accepted: {results:?}");
            return Ok(());
        }
        match &mut self.health {
            Some(h) => {
                let status = h
                    .check(HealthCheckRequest::default())
                    .await?
                    .into_inner()
                    .status;
                anyhow::ensure!(status == ServingStatus::Serving as i32, "health: {status}");
            }
            None => {
                let request = client::gap_request("org-bench", DATA, request_id);
                self.submit.submit_gap_assessment(request).await?;
            }
        }
        Ok(())
    }
}

/// The child's side (`--client-of ADDR`).
pub async fn serve_load(addr: &str, args: &Args) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_VAR).with_context(|| format!("{TOKEN_VAR} is not set"))?;
    let mut channels = Vec::new();
    for _ in 0..args.channels {
        channels.push(client::connect(&format!("http://{addr}")).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(tokio::sync::Barrier::new(args.callers + 1));
    let go = Arc::new(tokio::sync::Barrier::new(args.callers + 1));
    let mut callers = Vec::new();
    for i in 0..args.callers {
        let channel = channels[i % channels.len()].clone();
        let mut c = Caller {
            submit: client::with_token(channel.clone(), &token)?,
            health: args.health_load.then(|| HealthClient::new(channel)),
            bulk: args.bulk_load.then_some(args.bulk.max(1)),
        };
        let calls = match args.bulk_load {
            true => args.submissions / args.bulk.max(1) as u64,
            false => args.submissions,
        };
        let (next, n, ready, go) = (next.clone(), calls, ready.clone(), go.clone());
        callers.push(tokio::spawn(async move {
            for w in 0..WARM_UP_CALLS {
                c.call(&format!("warm-{i}-{w}")).await?;
            }
            ready.wait().await;
            go.wait().await;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return anyhow::Ok(());
                }
                c.call(&format!("req-{k}")).await?;
            }
        }));
    }
    ready.wait().await;
    println!("warm");
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    anyhow::ensure!(line.trim() == "go", "expected go, got {line:?}");
    let (cpu0, started) = (cpu_seconds(), Instant::now());
    go.wait().await;
    for c in callers {
        c.await??;
    }
    println!(
        "done {} {}",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );
    Ok(())
}

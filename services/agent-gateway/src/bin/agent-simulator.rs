//! `agent-simulator`: drives agent-gateway with N simulated agents over gRPC
//! streams and prints acknowledged events, errors and latency percentiles
//! (and, with `--print-health`, the agents' health as the gateway reports it).

use std::path::PathBuf;
use std::time::Duration;

use agent_gateway::auth::TokenKey;
use agent_gateway::simulator::{self, SimulationPlan};
use anyhow::Context;
use clap::Parser;
use dora_proto::agent::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

/// Simulate AI agents against agent-gateway.
#[derive(Debug, Parser)]
#[command(name = "agent-simulator", version)]
struct Args {
    /// Gateway address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    gateway: String,
    /// Number of agents (one stream each).
    #[arg(long, default_value_t = 8)]
    agents: usize,
    /// Agent ids are `<prefix>-<n>`. Default `sim-<run id>`: agent health is
    /// kept on a compacted topic across runs, so each run drives agents of its own.
    #[arg(long)]
    agent_prefix: Option<String>,
    /// Total events per second; 0 = as fast as acks allow.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Events a stream may have waiting for acks.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Organisations the gap and risk assessments are about (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "org-0,org-1,org-2,org-3,org-4,org-5,org-6"
    )]
    orgs: Vec<String>,
    /// How many of `--orgs` (from the first) are assessed with sustained risk above 0.8.
    #[arg(long, default_value_t = 2)]
    high_risk_orgs: usize,
    /// Fraction of task completions followed by an error report.
    #[arg(long, default_value_t = 0.1)]
    error_ratio: f64,
    /// The gateway's token signing key file.
    #[arg(long, env = "DORA_GATEWAY__TOKEN_KEY_FILE")]
    key_file: PathBuf,
    /// After sending, print the agents' health table as the gateway reports it.
    #[arg(long)]
    print_health: bool,
    /// Seconds to let health settle before printing it.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent_prefix = args.agent_prefix.clone().unwrap_or_else(|| {
        let run = uuid::Uuid::new_v4().simple().to_string();
        format!("sim-{}", &run[..6])
    });
    let key = TokenKey::from_file(&args.key_file)
        .with_context(|| format!("token key file {}", args.key_file.display()))?;
    let plan = SimulationPlan {
        gateway: args.gateway.clone(),
        agents: args.agents,
        agent_prefix: agent_prefix.clone(),
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_secs),
        window: args.window,
        error_ratio: args.error_ratio,
        organizations: simulator::Organizations {
            names: args.orgs.clone(),
            high_risk: args.high_risk_orgs,
        },
    };
    let bar = if args.quiet || args.rate <= 0.0 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((args.rate * args.duration_secs) as u64)
    };
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} acked ({per_sec})",
    )?);
    let b = bar.clone();
    let report = simulator::run(&plan, &key, move |acked| b.set_position(acked)).await?;
    bar.finish_and_clear();
    println!(
        "agents: {agent_prefix}-0 .. {agent_prefix}-{}",
        args.agents.saturating_sub(1)
    );
    print!("{}", report.summary());
    if args.print_health {
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
        let channel = simulator::connect(&args.gateway).await?;
        let mut client = simulator::client_with_token(
            channel,
            &agent_gateway::auth::reader_token(&key, "agent-simulator", Duration::from_secs(60))?,
        )?;
        let agents = client
            .list_agents(pb::ListAgentsRequest::default())
            .await?
            .into_inner()
            .agents;
        let ours = simulator::driven_by(&plan, agents);
        print!("\n{}", simulator::health_table(&ours));
    }
    if !report.stream_failures.is_empty() {
        anyhow::bail!("{} agent streams failed", report.stream_failures.len());
    }
    Ok(())
}

//! `agent-token`: issues a bearer token for one agent id, signed with the
//! gateway's key file (the same file as `DORA_GATEWAY__TOKEN_KEY_FILE`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// Issue an agent-gateway bearer token.
#[derive(Debug, Parser)]
#[command(name = "agent-token", version)]
struct Args {
    /// The agent id the token speaks for.
    agent_id: String,
    /// File holding the HMAC signing key.
    #[arg(long, env = "DORA_GATEWAY__TOKEN_KEY_FILE")]
    key_file: PathBuf,
    /// Validity in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    ttl_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("reading key file {}", args.key_file.display()))?;
    let key = agent_gateway::auth::TokenKey::new(key.trim_end_matches(['\n', '\r']).as_bytes())?;
    println!(
        "{}",
        key.issue(&args.agent_id, Duration::from_secs(args.ttl_secs))?
    );
    Ok(())
}

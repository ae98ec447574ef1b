//! `dora-token`: issues a bearer token for one principal and one service,
//! signed with that service's key file (the file `DORA_<SECTION>__TOKEN_KEY_FILE`
//! names; read as raw bytes).
//!
//! `dora-token --audience agent-gateway agent-7` (an agent),
//! `dora-token --audience agent-gateway --role reader dashboard` (reads every agent),
//! `dora-token --audience report-ingest --org bank-1 --org bank-2 risk-team`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dora_auth::{Grant, Role, TokenKey};

/// Issue a bearer token for a DORA platform gRPC service.
#[derive(Debug, Parser)]
#[command(name = "dora-token", version)]
struct Args {
    /// The principal the token speaks for (agent-gateway: the agent id).
    subject: String,
    /// The service the token is for: `agent-gateway` or `report-ingest`.
    #[arg(long)]
    audience: String,
    /// File holding the service's signing key (raw bytes, at least 32).
    #[arg(long)]
    key_file: PathBuf,
    /// An organisation the principal may act for (repeatable).
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// A role of the principal (repeatable).
    #[arg(long = "role", value_enum)]
    roles: Vec<Role>,
    /// Validity in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    ttl_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = TokenKey::from_file(&args.key_file)
        .with_context(|| format!("key file {}", args.key_file.display()))?;
    let grant = Grant {
        orgs: args.orgs,
        roles: args.roles,
        ..Grant::new(
            args.subject,
            args.audience,
            Duration::from_secs(args.ttl_secs),
        )
    };
    println!("{}", key.issue(&grant)?);
    Ok(())
}

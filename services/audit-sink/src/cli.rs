//! The subcommands of the `audit-sink` binary: `migrate` (owner: schema and
//! writer login), `verify` (walk and recompute every chain) and `export` (a
//! period of the trail with chain positions and hashes). They read the same
//! settings as the service (`DORA_POSTGRES__*`).

use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use anyhow::Context;
use clap::{Parser, Subcommand};
use dora_service::{EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE};

use crate::settings::Settings;
use crate::{db, export, verify};

/// Chains `verify` walks at once (one connection each, one shared snapshot).
pub const VERIFY_WORKERS: usize = 4;

/// Exit code of `verify` when a chain is broken.
pub const EXIT_BROKEN: u8 = 1;

/// Command line of the `audit-sink` binary.
#[derive(Debug, Parser)]
#[command(name = "audit-sink", about = "The audit trail and assessment archive in PostgreSQL")]
pub struct Cli {
    /// Without a subcommand: run the sink.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the migrations and create or update the writer login (needs
    /// postgres.admin_user and its password), then exit.
    Migrate,
    /// Recompute every hash chain; exit 0 with the counts when intact, 1
    /// naming each broken link (topic, partition, position, offset, row).
    Verify {
        /// Chains walked at once, each on a connection of its own.
        #[arg(long, default_value_t = VERIFY_WORKERS)]
        workers: usize,
    },
    /// Write the audit trail (or the assessment archive) of a period, each
    /// row with its chain position and hash.
    Export {
        /// Which rows: the audit trail or the compliance reports.
        #[arg(long, value_enum, default_value = "audit-events")]
        table: export::Table,
        /// Start of the period (inclusive): RFC 3339 or a date (UTC midnight).
        #[arg(long, value_parser = parse_time)]
        from: DateTime<Utc>,
        /// End of the period (exclusive): RFC 3339 or a date (UTC midnight).
        #[arg(long, value_parser = parse_time)]
        to: DateTime<Utc>,
        /// Only this user's activities (audit events).
        #[arg(long, conflicts_with = "organization")]
        user: Option<String>,
        /// Only this organisation's reports (compliance reports).
        #[arg(long)]
        organization: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: export::Format,
        /// Also write the Avro writer schemas the exported rows name to this
        /// file (JSON lines), to decode their values without the registry.
        #[arg(long)]
        schemas: Option<std::path::PathBuf>,
    },
}

/// `2026-11-27T09:00:00Z` or `2026-11-27`.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

/// Runs a subcommand and returns the process exit code.
pub async fn run(command: Command) -> ExitCode {
    let settings: Settings = match dora_config::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("audit-sink: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match execute(command, &settings).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("audit-sink: {e:#}");
            let unreachable = e
                .chain()
                .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
                .is_some_and(|pg| pg.as_db_error().is_none());
            ExitCode::from(if unreachable { EXIT_UNAVAILABLE } else { EXIT_FAILURE })
        }
    }
}

async fn execute(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    let pg = &settings.postgres;
    match command {
        Command::Migrate => {
            let _telemetry = dora_telemetry::init("audit-sink", &settings.common.telemetry);
            db::migrate(pg).await?;
            println!("audit-sink: schema at version {}, writer login {} provisioned", db::expected_version(), pg.user);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { workers } => {
            let (connector, cfg) = (db::Connector::new(pg)?, pg.config_for(&pg.user, pg.password.as_ref()));
            let mut client = connector.connect(&cfg).await?;
            let verdict = verify::verify_concurrently(&mut client, workers, || async { Ok(connector.connect(&cfg).await?) }).await?;
            println!("{verdict}");
            Ok(if verdict.intact() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_BROKEN) })
        }
        Command::Export { table, from, to, user, organization, format, schemas } => {
            let owner = match (table, user, organization) {
                (export::Table::AuditEvents, _, Some(_)) => anyhow::bail!("--organization filters compliance reports; use --user for audit events"),
                (export::Table::ComplianceReports, Some(_), _) => anyhow::bail!("--user filters audit events; use --organization for compliance reports"),
                (_, user, organization) => user.or(organization),
            };
            let mut client = db::Connector::new(pg)?.connect(&pg.config_for(&pg.user, pg.password.as_ref())).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut schemas_out = match &schemas {
                Some(path) => Some(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
                )),
                None => None,
            };
            let outputs = (&mut out as &mut dyn std::io::Write, schemas_out.as_mut().map(|s| s as &mut dyn std::io::Write));
            let n = export::export(&mut client, table, (from, to), owner.as_deref(), format, outputs).await?;
            eprintln!("audit-sink: exported {n} rows of {table:?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_dates() {
        assert_eq!(parse_time("2026-11-27").unwrap().to_rfc3339(), "2026-11-27T00:00:00+00:00");
        assert_eq!(parse_time("2026-11-27T10:00:00+01:00").unwrap().to_rfc3339(), "2026-11-27T09:00:00+00:00");
        assert!(parse_time("yesterday").is_err());
    }
}

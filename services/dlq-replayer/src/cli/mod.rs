//! The operator's commands of the `dlq-replayer` binary: `list`, `inspect`,
//! `replay` and `park`. They read the same settings as the service
//! (`DORA_*`, `DORA_CONFIG`), log to standard error and print their result
//! on standard output (a table, or JSON lines with `--json`).

mod act;
mod show;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};
use dora_service::{EXIT_AUTH, EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE};

use crate::selection::Filter;
use crate::Settings;

/// Exit code when a command could not do all it was asked (some letters
/// refused, or a replay stopped before it finished: run it again to resume).
pub const EXIT_INCOMPLETE: u8 = 1;

/// Command line of the `dlq-replayer` binary.
#[derive(Debug, Parser)]
#[command(
    name = "dlq-replayer",
    about = "Dead-letter topics: list, inspect, replay, park; without a subcommand, the service that retries transient failures"
)]
pub struct Cli {
    /// Without a subcommand: run the service.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Each dead-letter topic with its letters waiting, oldest and newest, and
    /// counts by error type and by failing service.
    List {
        /// Only this dead-letter topic (`agent-events` or `agent-events-dlq`).
        #[arg(long)]
        topic: Option<String>,
        /// One JSON object per topic instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The dead letters: error, original position, key, headers and value
    /// (decoded where it decodes).
    Inspect {
        /// Only this dead-letter topic.
        #[arg(long)]
        topic: Option<String>,
        /// Which letters.
        #[command(flatten)]
        select: Select,
        /// Also letters already replayed or parked.
        #[arg(long)]
        all: bool,
        /// At most this many letters.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per letter instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the selected waiting letters back to the topic they came from,
    /// byte-exact, each exactly once; resumable (run the same command again).
    Replay {
        /// Topic, selection and options.
        #[command(flatten)]
        act: Act,
        /// At most this many records per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Move the selected waiting letters to `<topic>-dlq-parked` without replaying them.
    Park {
        /// Topic, selection and options.
        #[command(flatten)]
        act: Act,
        /// Why they are parked (kept on the parked record and in the audit trail).
        #[arg(long, default_value = "parked by an operator")]
        reason: String,
    },
}

/// Filters shared by `inspect`, `replay` and `park`.
#[derive(Debug, Args, Clone)]
pub struct Select {
    /// Only letters of this errorType.
    #[arg(long)]
    error_type: Option<String>,
    /// Only letters failed by this service (failedBy).
    #[arg(long)]
    failed_by: Option<String>,
    /// Dead-lettered at or after (RFC 3339, a date, or epoch ms).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Dead-lettered before (RFC 3339, a date, or epoch ms).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Only letters whose original key is this (UTF-8).
    #[arg(long)]
    key: Option<String>,
    /// Only letters read from this original partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Only letters read from this original offset.
    #[arg(long)]
    offset: Option<i64>,
    /// Only these offsets of the dead-letter topic (repeatable).
    #[arg(long = "dlq-offset")]
    dlq_offsets: Vec<i64>,
}

impl Select {
    fn filter(&self) -> Filter {
        Filter {
            error_type: self.error_type.clone(),
            failed_by: self.failed_by.clone(),
            since: self.since,
            until: self.until,
            key: self.key.clone(),
            original_partition: self.partition,
            original_offset: self.offset,
            dlq_offsets: self.dlq_offsets.clone(),
        }
    }
}

/// What `replay` and `park` share.
#[derive(Debug, Args, Clone)]
pub struct Act {
    /// The dead-letter topic (`agent-events` or `agent-events-dlq`).
    #[arg(long)]
    topic: String,
    /// Which letters.
    #[command(flatten)]
    select: Select,
    /// Print what would be done; write nothing, move no offset.
    #[arg(long)]
    dry_run: bool,
    /// Who acts, for the audit trail. Default: $USER.
    #[arg(long = "as")]
    operator: Option<String>,
    /// Print one JSON object per letter instead of text.
    #[arg(long)]
    json: bool,
}

/// `2026-11-27T09:00:00Z`, `2026-11-27` (UTC midnight) or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| format!("{s:?} is neither RFC 3339, YYYY-MM-DD nor epoch milliseconds"))
}

/// Epoch ms as RFC 3339 (UTC, milliseconds).
pub(crate) fn time_text(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Runs a subcommand and returns the process exit code.
pub async fn run(command: Command) -> ExitCode {
    let settings: Settings = match dora_config::load::<dora_service::CommonSettings>()
        .and_then(|_| dora_config::load())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dlq-replayer: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _telemetry = dora_telemetry::init_for_command("dlq-replayer", &settings.common.telemetry);
    if let Err(e) =
        dora_kafka::check_connection(&settings.common.kafka, Duration::from_secs(30)).await
    {
        eprintln!("dlq-replayer: {e}");
        return ExitCode::from(match e {
            dora_kafka::KafkaError::Authentication(_) => EXIT_AUTH,
            dora_kafka::KafkaError::Config(_) => EXIT_CONFIG,
            _ => EXIT_UNAVAILABLE,
        });
    }
    let codec = match dora_schema::Codec::new(&settings.registry) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dlq-replayer: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match command {
        Command::List { topic, json } => {
            show::list(&settings, &codec, topic.as_deref(), json).await
        }
        Command::Inspect {
            topic,
            select,
            all,
            limit,
            json,
        } => {
            let view = show::View { all, limit, json };
            show::inspect(&settings, &codec, topic.as_deref(), &select.filter(), view).await
        }
        Command::Replay { act, rate } => act::replay(&settings, codec, &act, rate).await,
        Command::Park { act, reason } => act::park(&settings, codec, &act, &reason).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dlq-replayer: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_dates_or_epoch_ms() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2026-11-27"), Ok(1_795_737_600_000));
        assert_eq!(
            parse_time("2026-11-27T01:00:00+01:00"),
            Ok(1_795_737_600_000)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(time_text(1_795_737_600_000), "2026-11-27T00:00:00.000Z");
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "dlq-replayer",
            "replay",
            "--topic",
            "agent-events",
            "--error-type",
            "X",
            "--rate",
            "5",
            "--dry-run",
            "--dlq-offset",
            "3",
            "--dlq-offset",
            "4",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Replay { act, rate }) => {
                assert_eq!(rate, Some(5.0));
                assert!(act.dry_run);
                assert_eq!(act.select.filter().dlq_offsets, vec![3, 4]);
                assert_eq!(act.select.filter().error_type.as_deref(), Some("X"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["dlq-replayer"])
            .unwrap()
            .command
            .is_none());
        assert!(
            Cli::try_parse_from(["dlq-replayer", "replay"]).is_err(),
            "--topic is required"
        );
    }
}

//! dlq-replayer binary: without a subcommand it runs the service through the
//! shared boot sequence; `list`, `inspect`, `replay` and `park` are the
//! operator's commands (see [`dlq_replayer::cli`]).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match dlq_replayer::cli::Cli::parse().command {
        None => {
            dora_service::main::<dlq_replayer::Settings, _, _>("dlq-replayer", dlq_replayer::run)
                .await
        }
        Some(command) => dlq_replayer::cli::run(command).await,
    }
}

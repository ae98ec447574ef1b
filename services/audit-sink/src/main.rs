//! audit-sink binary: without a subcommand it runs the sink through the
//! shared service sequence; `migrate`, `verify` and `export` are the owner's
//! and the auditor's tools (see [`audit_sink::cli`]).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = audit_sink::cli::Cli::parse();
    match cli.command {
        None => {
            dora_service::main::<audit_sink::Settings, _, _>("audit-sink", audit_sink::run)
                .await
        }
        Some(command) => audit_sink::cli::run(command).await,
    }
}

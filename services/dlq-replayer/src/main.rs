//! dlq-replayer binary: boots through the shared service sequence and runs [`dlq_replayer::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dora_service::main::<dlq_replayer::Settings, _, _>("dlq-replayer", dlq_replayer::run).await
}

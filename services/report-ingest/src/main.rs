//! report-ingest binary: boots through the shared service sequence and runs [`report_ingest::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dora_service::main::<report_ingest::Settings, _, _>("report-ingest", report_ingest::run).await
}

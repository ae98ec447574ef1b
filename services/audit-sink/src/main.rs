//! audit-sink binary: boots through the shared service sequence and runs [`audit_sink::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dora_service::main::<audit_sink::Settings, _, _>("audit-sink", audit_sink::run).await
}

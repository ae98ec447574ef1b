//! risk-streamer binary: boots through the shared service sequence and runs [`risk_streamer::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dora_service::main::<risk_streamer::Settings, _, _>("risk-streamer", risk_streamer::run).await
}

//! agent-gateway binary: boots through the shared service sequence and runs [`agent_gateway::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dora_service::main::<agent_gateway::Settings, _, _>("agent-gateway", agent_gateway::run).await
}

//! The smallest service on the boot sequence, for the boot tests: besides the
//! admin server it binds a second listener (as a gRPC server would), announces
//! it as `extra`, declares itself started and waits for SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use dora_service::{BaseSettings, ServiceContext};

async fn run(_settings: BaseSettings<0>, ctx: ServiceContext) -> anyhow::Result<()> {
    let extra = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the extra listener")?;
    ctx.announce("extra", extra.local_addr()?)
        .context("announcing the extra listener")?;
    ctx.started();
    ctx.shutdown.cancelled().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    dora_service::main::<BaseSettings<0>, _, _>("idle-service", run).await
}

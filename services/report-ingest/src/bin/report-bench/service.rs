//! report-ingest in report-bench's own process (its gRPC load from a client
//! process of its own, `client_load.rs`): start it, time a load against it,
//! and `--bulk-only`, the bulk row alone for profiling the service.

use std::time::Duration;

use dora_telemetry::ServiceContext;

use crate::baselines::{cpu_seconds, Rate};
use crate::client_load::{self, Mode};
use crate::{bulk_submissions, unique, Args};

/// report-ingest running in this process for a run, on its own group and token key.
pub struct Service {
    ctx: ServiceContext,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its gRPC address.
    pub addr: String,
    /// A token of its key for `bench`, submitting for `org-bench`.
    pub token: String,
}

impl Service {
    /// Shuts it down; its result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.ctx.shutdown.cancel();
        self.task.await?
    }
}

/// Starts report-ingest with `settings` (gRPC on a port of its own); the
/// settings it runs with.
pub async fn start_service(
    settings: &report_ingest::Settings,
) -> anyhow::Result<(report_ingest::Settings, Service)> {
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut settings = settings.clone();
    settings.ingest.grpc_listen = "127.0.0.1:0".parse()?;
    settings.ingest.auth.token_key = Some(key.clone().into_bytes().into());
    settings.consumer.group_id = unique("bench-report-ingest");
    settings.consumer.transactional_id = Some(unique("bench-report-ingest"));
    let announce = std::env::temp_dir().join(unique("report-bench-announce"));
    let ctx = ServiceContext::new("report-ingest").announcing_to(Some(announce.clone()));
    let task = tokio::spawn(report_ingest::run(settings.clone(), ctx.clone()));
    let addr = loop {
        let text = std::fs::read_to_string(&announce).unwrap_or_default();
        if let Some((_, a)) = dora_telemetry::read_announcements(&text)
            .into_iter()
            .find(|(n, _)| n == "grpc")
        {
            break a;
        }
        anyhow::ensure!(
            !task.is_finished(),
            "report-ingest stopped before it listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = std::fs::remove_file(&announce);
    let token = dora_auth::TokenKey::new(key.as_bytes())?.issue(
        &dora_auth::Grant::new("bench", "report-ingest", Duration::from_secs(3600))
            .with_org("org-bench"),
    )?;
    let addr = addr.to_string();
    Ok((
        settings,
        Service {
            ctx,
            task,
            addr,
            token,
        },
    ))
}

/// `--bulk-only`: the bulk row alone (for profiling the service's process).
pub async fn bulk_only(settings: &report_ingest::Settings, args: &Args) -> anyhow::Result<()> {
    let (_, service) = start_service(settings).await?;
    let (bulk, client_cpu) = timed_load(&service.addr, &service.token, args, Mode::Bulk).await?;
    service.stop().await?;
    eprintln!(
        "SubmitAssessments: {:.0} submissions/s, service {:.1} us, client {client_cpu:.1} us CPU per submission",
        bulk.per_s, bulk.cpu_us
    );
    Ok(())
}

/// The rate of `--submissions` (calls, or submissions for [`Mode::Bulk`])
/// from a warmed-up client process, with the service's CPU per submission
/// (this process's) and the client's.
pub async fn timed_load(
    addr: &str,
    token: &str,
    args: &Args,
    mode: Mode,
) -> anyhow::Result<(Rate, f64)> {
    let load = client_load::Load::start(addr, token, args, mode).await?;
    let n = match mode {
        Mode::Bulk => bulk_submissions(args) as f64,
        _ => args.submissions as f64,
    };
    let cpu0 = cpu_seconds();
    let (seconds, client_cpu) = load.run().await?;
    let rate = Rate {
        per_s: n / seconds,
        cpu_us: (cpu_seconds() - cpu0) * 1e6 / n,
    };
    Ok((rate, client_cpu * 1e6 / n))
}

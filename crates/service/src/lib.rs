//! The one boot sequence of every service binary: load settings (exit 78 on bad
//! settings), initialise telemetry, check the Kafka connection (exit 77 on
//! rejected credentials, 69 when unreachable), serve the admin endpoints with
//! `/readyz` held at [`STARTING`] until the service says it has started,
//! announce the admin address, run the service until SIGTERM/SIGINT, drain,
//! exit 0 (70 when the service fails while running).
//!
//! It composes the settings loader (`dora-config`), telemetry and the admin
//! server (`dora-telemetry`) and the Kafka connection check (`dora-kafka`); a
//! service's `main.rs` is one call to [`main`].

mod settings;

use std::future::Future;
use std::process::ExitCode;

use dora_kafka::KafkaError;
use dora_telemetry::Readiness;

pub use dora_telemetry::{ServiceContext, STARTING};
pub use settings::{BaseSettings, CommonSettings, ServiceSettings};

/// Exit code for unusable settings (`EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for rejected credentials (`EX_NOPERM`).
pub const EXIT_AUTH: u8 = 77;
/// Exit code for an unreachable dependency (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a failure while running (`EX_SOFTWARE`).
pub const EXIT_FAILURE: u8 = 70;

/// The machine's host name (a pod's name in Kubernetes), or `local`: what
/// makes a default `transactional.id` stable across restarts of one host or
/// pod and distinct between them.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// Runs a service binary: see the crate docs for the sequence and exit codes.
pub async fn main<S, F, Fut>(name: &'static str, run: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(S, ServiceContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // The common sections first: services embed them with `#[serde(flatten)]`,
    // which hides the failing key from serde; loaded alone, errors name it.
    let settings: S = match dora_config::load::<CommonSettings>().and_then(|_| dora_config::load())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _telemetry = dora_telemetry::init(name, settings.telemetry());

    match dora_kafka::check_connection(settings.kafka(), settings.startup_timeout()).await {
        Ok(brokers) => tracing::info!(brokers, "kafka reachable"),
        Err(e) => {
            tracing::error!(error = %e, "kafka connection check failed");
            eprintln!("{name}: {e}");
            return ExitCode::from(match e {
                KafkaError::Authentication(_) => EXIT_AUTH,
                KafkaError::Config(_) => EXIT_CONFIG,
                _ => EXIT_UNAVAILABLE,
            });
        }
    }

    let ctx = ServiceContext::new(name).announcing_to(settings.admin().announce_path.clone());
    ctx.readiness.set_not_ready(STARTING, "service is starting");
    let admin = match serve_admin(&settings, &ctx).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let signal_token = ctx.shutdown.clone();
    tokio::spawn(async move {
        dora_telemetry::shutdown_signal().await;
        signal_token.cancel();
    });

    let result = run(settings, ctx).await;
    admin.task.abort();
    match result {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "service failed");
            eprintln!("{name}: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Serves the admin endpoints on `admin.listen` and announces the bound address.
async fn serve_admin<S: ServiceSettings>(
    settings: &S,
    ctx: &ServiceContext,
) -> anyhow::Result<dora_telemetry::AdminServer> {
    let readiness: Readiness = ctx.readiness.clone();
    let admin = dora_telemetry::serve_admin(settings.admin().listen, readiness).await?;
    if let Err(e) = ctx.announce("admin", admin.local_addr) {
        admin.task.abort();
        let path = settings
            .admin()
            .announce_path
            .as_deref()
            .unwrap_or(std::path::Path::new(""));
        anyhow::bail!("cannot write admin.announce_path {}: {e}", path.display());
    }
    Ok(admin)
}

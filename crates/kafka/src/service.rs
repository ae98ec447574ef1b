//! The one boot sequence of every service binary: load settings (exit 78 on bad
//! settings), initialise telemetry, check the Kafka connection (exit 77 on bad
//! credentials, 69 when unreachable), serve the admin endpoints, run the
//! service until SIGTERM/SIGINT, drain, exit 0.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use dora_telemetry::{AdminSettings, Readiness, TelemetrySettings};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{KafkaError, KafkaSettings};

/// Exit code for unusable settings (`EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for rejected credentials (`EX_NOPERM`).
pub const EXIT_AUTH: u8 = 77;
/// Exit code for an unreachable dependency (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a failure while running (`EX_SOFTWARE`).
pub const EXIT_FAILURE: u8 = 70;

/// What every service's settings type exposes to the boot sequence: its
/// [`CommonSettings`] (embedded with `#[serde(flatten)]`).
pub trait ServiceSettings: Serialize + DeserializeOwned + Default + Send + 'static {
    /// The common sections.
    fn common(&self) -> &CommonSettings;
    /// Kafka connection settings.
    fn kafka(&self) -> &KafkaSettings {
        &self.common().kafka
    }
    /// Logging and tracing settings.
    fn telemetry(&self) -> &TelemetrySettings {
        &self.common().telemetry
    }
    /// Admin HTTP settings.
    fn admin(&self) -> &AdminSettings {
        &self.common().admin
    }
    /// Longest time the start-up connection check may take. Default 30 s.
    fn startup_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The settings sections every service has; a service embeds this with
/// `#[serde(flatten)]` next to its own section.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CommonSettings {
    /// Section `kafka`.
    pub kafka: KafkaSettings,
    /// Section `telemetry`.
    pub telemetry: TelemetrySettings,
    /// Section `admin`.
    pub admin: AdminSettings,
}

impl CommonSettings {
    /// Defaults with the admin server on `127.0.0.1:<port>` (each service's port
    /// from the design's address table).
    pub fn with_admin_port(port: u16) -> Self {
        let mut s = Self::default();
        s.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        s
    }
}

/// Settings of a service that has only the common sections, with its admin
/// server on `127.0.0.1:<ADMIN_PORT>` by default. (De)serializes exactly as
/// [`CommonSettings`]; serde's derive does not take const generics.
#[derive(Debug, Clone)]
pub struct BaseSettings<const ADMIN_PORT: u16> {
    /// Kafka, telemetry and admin sections.
    pub common: CommonSettings,
}

impl<const ADMIN_PORT: u16> Serialize for BaseSettings<ADMIN_PORT> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.common.serialize(serializer)
    }
}

impl<'de, const ADMIN_PORT: u16> serde::Deserialize<'de> for BaseSettings<ADMIN_PORT> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        CommonSettings::deserialize(deserializer).map(|common| Self { common })
    }
}

impl<const ADMIN_PORT: u16> Default for BaseSettings<ADMIN_PORT> {
    fn default() -> Self {
        Self { common: CommonSettings::with_admin_port(ADMIN_PORT) }
    }
}

impl<const ADMIN_PORT: u16> ServiceSettings for BaseSettings<ADMIN_PORT> {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

impl ServiceSettings for CommonSettings {
    fn common(&self) -> &CommonSettings {
        self
    }
}

/// The readiness condition the boot sequence holds until the service calls
/// [`ServiceContext::started`]: `/readyz` is never 200 before the service has
/// registered its own conditions.
pub const STARTING: &str = "starting";

/// Handles a running service receives from the boot sequence.
#[derive(Clone)]
pub struct ServiceContext {
    /// Service name (also the Kafka `client.id` prefix).
    pub name: &'static str,
    /// Readiness conditions served by `/readyz`.
    pub readiness: Readiness,
    /// Cancelled when the process is asked to stop; the service then drains and returns.
    pub shutdown: CancellationToken,
}

impl ServiceContext {
    /// Declares start-up done: call once the service has registered its own
    /// readiness conditions (which may still be not ready). A consume loop
    /// does this itself when it has registered its conditions; a service with
    /// other components calls it after registering theirs.
    pub fn started(&self) {
        self.readiness.set_ready(STARTING);
    }
}

/// Runs a service binary: see the module docs for the sequence and exit codes.
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

    match crate::check_connection(settings.kafka(), settings.startup_timeout()).await {
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

    let readiness = Readiness::new();
    readiness.set_not_ready(STARTING, "service is starting");
    let admin = match dora_telemetry::serve_admin(settings.admin().listen, readiness.clone()).await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        dora_telemetry::shutdown_signal().await;
        signal_token.cancel();
    });

    let ctx = ServiceContext {
        name,
        readiness,
        shutdown,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_settings_default_to_their_admin_port_and_read_env_like_common() {
        let s: BaseSettings<9105> = dora_config::load_from(&[]).unwrap();
        assert_eq!(s.admin().listen.port(), 9105);
        let vars = vec![("DORA_KAFKA__BOOTSTRAP_SERVERS".to_string(), "b:9092".to_string())];
        let s: BaseSettings<9105> = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.kafka().bootstrap_servers, "b:9092");
        assert_eq!(s.admin().listen.port(), 9105);
    }
}

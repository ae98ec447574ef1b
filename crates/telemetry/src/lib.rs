//! Telemetry for every service: tracing subscriber (JSON or pretty, env filter),
//! OpenTelemetry export over OTLP when an endpoint is configured, W3C trace
//! context propagation helpers, Prometheus exposition and the admin HTTP server
//! (`/metrics`, `/healthz`, `/readyz`), and the [`ServiceContext`] a running
//! service hands its components (name, readiness, shutdown, address announcements).
//!
//! *Architecture invariant*: this crate knows nothing about Kafka; the Kafka
//! runtime carries trace context in record headers through [`propagation`].

mod context;
pub mod propagation;
mod tracing_setup;

pub use context::{read_announcements, ServiceContext, STARTING};
pub use tracing_setup::{init, init_for_command, otel_layer, TelemetryGuard};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Telemetry settings shared by every service (section `telemetry`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// Log format: `json` or `pretty`. Default `json`.
    pub log_format: String,
    /// `tracing` env-filter directive. Default `info`; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// OTLP gRPC endpoint for traces (e.g. `http://127.0.0.1:4317`). Default: none, no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: "json".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
        }
    }
}

/// Admin HTTP settings (section `admin`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:0` (each
    /// service overrides with its port from the design's address table).
    pub listen: SocketAddr,
    /// File to which the service appends `<listener>=<host:port>` once each of
    /// its listeners is bound (`admin`, and e.g. `grpc`), so whoever started it
    /// on port 0 learns the addresses ([`ServiceContext::announce`]). Default:
    /// none, nothing is written.
    pub announce_path: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce_path: None,
        }
    }
}

/// Named readiness conditions; `/readyz` answers 200 only when every one holds.
///
/// Components register a condition (e.g. `kafka-connected`, `partitions-assigned`)
/// and flip it as their state changes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<String, Condition>>>,
}

#[derive(Debug, Clone)]
struct Condition {
    ready: bool,
    reason: String,
}

impl Readiness {
    /// A readiness with no conditions (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `name` as ready.
    pub fn set_ready(&self, name: &str) {
        self.set(name, true, "ok");
    }

    /// Marks `name` as not ready, with a reason shown by `/readyz`.
    pub fn set_not_ready(&self, name: &str, reason: impl Into<String>) {
        self.set(name, false, reason.into());
    }

    fn set(&self, name: &str, ready: bool, reason: impl Into<String>) {
        let mut map = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            name.to_string(),
            Condition {
                ready,
                reason: reason.into(),
            },
        );
    }

    /// True when every registered condition is ready.
    pub fn is_ready(&self) -> bool {
        let map = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        map.values().all(|c| c.ready)
    }

    /// One line per condition: `name: ok` or `name: <reason>`.
    pub fn report(&self) -> String {
        let map = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, c)| format!("{k}: {}\n", if c.ready { "ok" } else { &c.reason }))
            .collect()
    }
}

/// The running admin server.
pub struct AdminServer {
    /// The address it listens on (useful when bound to port 0).
    pub local_addr: SocketAddr,
    /// The server task.
    pub task: JoinHandle<()>,
}

/// Errors starting the admin server.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The admin address could not be bound.
    #[error("cannot bind admin address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Serves `/metrics` (the Prometheus default registry), `/healthz` (alive) and
/// `/readyz` (every readiness condition holds) until the task is dropped or aborted.
pub async fn serve_admin(
    addr: SocketAddr,
    readiness: Readiness,
) -> Result<AdminServer, TelemetryError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    tracing::info!(%local_addr, "admin server listening");
    Ok(AdminServer { local_addr, task })
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, readiness.report())
}

async fn metrics() -> impl IntoResponse {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", prometheus::TEXT_FORMAT)],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler; waiting for ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_requires_every_condition() {
        let r = Readiness::new();
        assert!(r.is_ready());
        r.set_not_ready("kafka", "no metadata yet");
        r.set_ready("registry");
        assert!(!r.is_ready());
        assert!(r.report().contains("kafka: no metadata yet"));
        r.set_ready("kafka");
        assert!(r.is_ready());
    }
}

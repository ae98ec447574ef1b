//! Serving one gRPC API the way every service of the platform does: the API
//! next to the standard gRPC health service (SERVING while up, NOT_SERVING
//! once draining) and server reflection for every `proto/*.proto`, TLS when
//! configured; on shutdown stop accepting, let in-flight calls complete (at
//! most a drain timeout), return.

use std::convert::Infallible;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Server, ServerTlsConfig};

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The TLS settings were refused by the transport.
    #[error("gRPC TLS: {0}")]
    Tls(String),
    /// The server failed while running or draining.
    #[error("gRPC server: {0}")]
    Transport(String),
}

/// Serves `api` (with health and reflection) on `listener` until `shutdown`,
/// then waits at most `drain` for in-flight calls before returning.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    api: S,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), ServeError>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let stop = shutdown.clone();
    let server = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(api)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            stop.cancelled().await
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(|e| ServeError::Transport(e.to_string())),
        _ = shutdown.cancelled() => {}
    }
    reporter.set_not_serving::<S>().await;
    match tokio::time::timeout(drain, server).await {
        Ok(r) => r.map_err(|e| ServeError::Transport(e.to_string())),
        Err(_) => {
            tracing::warn!(
                ?drain,
                "in-flight gRPC calls did not finish in time; stopping anyway"
            );
            Ok(())
        }
    }
}

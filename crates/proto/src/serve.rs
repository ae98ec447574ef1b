//! Serving one gRPC API the way every service of the platform does: the API
//! next to the standard gRPC health service (SERVING while up, NOT_SERVING
//! once draining) and server reflection for every `proto/*.proto`, TLS when
//! configured; on shutdown stop accepting, let in-flight calls complete (at
//! most a drain timeout), return.
//!
//! A connection the server is done with is read to its end before it is
//! closed ([`Lingering`]): closing a socket with bytes unread, or getting
//! bytes after closing it, makes the kernel answer with a TCP reset, and a
//! client whose last response (a stream's trailers) is still in its receive
//! buffer loses it ("connection reset") — seen at shutdown, when the last
//! stream ends while its client still sends HTTP/2 window updates.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Server, ServerTlsConfig};

/// Longest a finished connection is read, waiting for the client to close it.
pub const LINGER: Duration = Duration::from_secs(2);

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
    let closing = TaskTracker::new();
    let incoming = {
        let closing = closing.clone();
        TcpListenerStream::new(listener).map(move |io| io.map(|io| Lingering::new(io, closing.clone())))
    };
    let server = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(api)
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(|e| ServeError::Transport(e.to_string())),
        _ = shutdown.cancelled() => {}
    }
    reporter.set_not_serving::<S>().await;
    let until = Instant::now() + drain;
    let served = match tokio::time::timeout_at(until, server).await {
        Ok(r) => r.map_err(|e| ServeError::Transport(e.to_string())),
        Err(_) => {
            tracing::warn!(
                ?drain,
                "in-flight gRPC calls did not finish in time; stopping anyway"
            );
            Ok(())
        }
    };
    closing.close();
    let _ = tokio::time::timeout_at(until.max(Instant::now() + LINGER), closing.wait()).await;
    served
}

/// An accepted connection that, once dropped by the server, is shut down for
/// writing and read until the client closes it (at most [`LINGER`]) on a
/// task of `closing`, so that nothing the client still sends meets a closed
/// socket (see the module's documentation).
pub struct Lingering {
    io: Option<TcpStream>,
    closing: TaskTracker,
}

impl Lingering {
    fn new(io: TcpStream, closing: TaskTracker) -> Self {
        Self {
            io: Some(io),
            closing,
        }
    }

    fn io(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.io.as_mut().expect("present until dropped"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.closing.spawn(async move {
            let _ = io.shutdown().await;
            let mut unread = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while let Ok(1..) = io.read(&mut unread).await {}
            })
            .await;
        });
    }
}

impl Connected for Lingering {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.as_ref().expect("present until dropped").connect_info()
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }
}

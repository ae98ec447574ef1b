//! The global tracing subscriber: env filter, JSON or pretty logs, and an
//! OpenTelemetry layer exporting over OTLP/gRPC when an endpoint is configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::TelemetrySettings;

/// Keeps the trace exporter alive; dropping it flushes and shuts the exporter
/// down. Hold it for the lifetime of `main`.
#[must_use = "dropping the guard shuts the trace exporter down"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// True when spans are exported (an OTLP endpoint was configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("trace exporter shutdown: {e}");
            }
        }
    }
}

/// A `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
///
/// [`init`] uses it with the OTLP exporter; tests use it with an in-memory
/// exporter to assert on trace ids.
pub fn otel_layer<S>(
    provider: &SdkTracerProvider,
    service: &str,
) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_string()))
}

/// Installs the global tracing subscriber. Call once, first thing in `main`,
/// from inside the Tokio runtime (the OTLP exporter needs it).
///
/// With `otlp_endpoint` unset nothing is exported and nothing is logged about
/// it. A subscriber installed earlier (e.g. by a test) is left in place.
pub fn init(service: &str, settings: &TelemetrySettings) -> TelemetryGuard {
    install(service, settings, false)
}

/// [`init`] for a one-shot command whose standard output is its result
/// (e.g. `dlq-replayer list --json`): logs go to standard error.
pub fn init_for_command(service: &str, settings: &TelemetrySettings) -> TelemetryGuard {
    install(service, settings, true)
}

fn install(service: &str, settings: &TelemetrySettings, to_stderr: bool) -> TelemetryGuard {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_filter));
    let provider = settings
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
        .and_then(|endpoint| match otlp_provider(service, endpoint) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("{service}: OTLP exporter for {endpoint} not started: {e}");
                None
            }
        });
    let otel = provider.as_ref().map(|p| otel_layer(p, service));
    let fmt = match (settings.log_format == "pretty", to_stderr) {
        (true, false) => tracing_subscriber::fmt::layer().boxed(),
        (true, true) => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        (false, false) => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
        (false, true) => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if result.is_ok() {
        tracing::info!(service, otlp = provider.is_some(), "telemetry initialised");
    }
    TelemetryGuard { provider }
}

fn otlp_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_string())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_exports_nothing() {
        let guard = init("test", &TelemetrySettings::default());
        assert!(!guard.exporting());
    }
}

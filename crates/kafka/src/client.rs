//! Client context that remembers the last client-level error, and the start-up
//! connection check that turns it into one clear line (wrong SCRAM password,
//! untrusted certificate, unreachable broker) instead of a retry storm.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaError, KafkaSettings};

/// A client context that records the most recent error librdkafka reported
/// through its error callback (authentication and TLS failures arrive there).
#[derive(Debug, Clone, Default)]
pub struct ErrorRecordingContext {
    last_error: Arc<Mutex<Option<(RDKafkaErrorCode, String)>>>,
}

impl ErrorRecordingContext {
    /// The most recent error, if any.
    pub fn last_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientContext for ErrorRecordingContext {
    fn error(&self, error: RdKafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .unwrap_or(RDKafkaErrorCode::Unknown);
        tracing::warn!(error = %error, reason, "kafka client error");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((code, reason.to_string()));
    }
}

impl ConsumerContext for ErrorRecordingContext {}

/// Connects with `settings` and fetches cluster metadata within `timeout`.
///
/// Returns the number of brokers on success. On failure the error says what
/// went wrong in one line: [`KafkaError::Authentication`] for bad credentials,
/// [`KafkaError::Unreachable`] otherwise, carrying librdkafka's reason.
pub async fn check_connection(
    settings: &KafkaSettings,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let settings = settings.clone();
    crate::blocking::off_worker(move || check_connection_blocking(&settings, timeout)).await
}

fn check_connection_blocking(
    settings: &KafkaSettings,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let context = ErrorRecordingContext::default();
    let mut cfg = settings.client_config()?;
    // A few connection attempts while we check, not a storm.
    cfg.set("reconnect.backoff.ms", "500")
        .set("reconnect.backoff.max.ms", "5000");
    let consumer: BaseConsumer<ErrorRecordingContext> = cfg
        .create_with_context(context.clone())
        .map_err(KafkaError::Client)?;
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_metadata(None, remaining.min(Duration::from_secs(2))) {
            Ok(md) => return Ok(md.brokers().len()),
            Err(error) => {
                // Error callbacks are served by polling; authentication and TLS
                // failures arrive there and will not heal by retrying.
                let _ = consumer.poll(Duration::from_millis(100));
                let last = context.last_error();
                let permanent = matches!(&last, Some((code, _)) if matches!(code, RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL));
                if permanent || Instant::now() >= deadline {
                    return Err(classify(&settings.bootstrap_servers, error, last));
                }
            }
        }
    }
}

fn classify(
    servers: &str,
    error: RdKafkaError,
    last: Option<(RDKafkaErrorCode, String)>,
) -> KafkaError {
    match last {
        Some((RDKafkaErrorCode::Authentication, reason)) => {
            KafkaError::Authentication(format!("{servers}: {reason}"))
        }
        Some((_, reason))
            if reason.contains("SASL authentication")
                || reason.contains("Authentication failed") =>
        {
            KafkaError::Authentication(format!("{servers}: {reason}"))
        }
        Some((_, reason)) => KafkaError::Unreachable(format!("{servers}: {reason}")),
        None => KafkaError::Unreachable(format!("{servers}: {error}")),
    }
}

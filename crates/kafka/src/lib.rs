//! The Kafka runtime every service uses: settings -> rdkafka clients, topic
//! catalog and provisioning, connection checks. The only crate that builds
//! rdkafka clients.

pub mod client;
pub mod service;
pub mod settings;
pub mod topics;

pub use client::{check_connection, ErrorRecordingContext};
pub use settings::{KafkaSettings, SaslMechanism, SecurityProtocol};

/// Errors of the Kafka runtime.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Settings are missing or contradict each other (the message names the setting).
    #[error("kafka settings: {0}")]
    Config(String),
    /// The brokers rejected our credentials.
    #[error("kafka authentication failed: {0}")]
    Authentication(String),
    /// The brokers could not be reached or the TLS handshake failed.
    #[error("kafka unreachable: {0}")]
    Unreachable(String),
    /// An admin operation failed.
    #[error("kafka admin: {0}")]
    Admin(String),
    /// librdkafka refused to create a client or an operation failed.
    #[error("kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
}
